"""The bad-input corpus: ManagedPostgres resources a hostile or careless user might apply.

Each case is data: a name, the manifest, and what the user must see.

* ``rejected_by_crd`` -- ``kubectl apply`` fails; ``message`` is a substring of the API server's
  answer. Nothing is stored, so the operator never sees it and no API call is spent. ``old`` (if
  set) is applied first: the case is an update (transition rules).
* ``condition`` -- only the operator or the ClickHouse Cloud API can judge the input (an unknown
  size, a wrong organization id, a Secret that is taken...). The resource is stored; the operator
  must set ``condition`` (Synced or Ready) to False with ``reason`` and a message containing
  ``message``, post a Warning event, and spend no avoidable mutating API call: at most
  ``mutating_calls`` POST/PATCH/DELETE requests (an unknown size costs the one rejected POST, and
  it is not sent again).

``credentials`` says how the test builds the case's ``credentialsRef`` Secret (``<case>-creds``):
``fresh`` is a new API key of a new organization (so the simulator's requests can be counted per
case by the organization in their path); the other values break it in one way (see
:data:`CREDENTIALS_KINDS`). ``setup`` objects are applied first (a ManagedPostgres in ``setup`` gets
fresh credentials of its own and is waited for until Ready).

Used by ``tests/campaigns/test_bad_input.py`` and listed in ``docs/reliability.md`` ("Bad input").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "clickhouse.cloud/v1alpha1"
KIND = "ManagedPostgres"
NAMESPACE = "default"

CRD = "rejected_by_crd"
CONDITION = "condition"

CREDENTIALS_KINDS = {
    "fresh": "a new API key of a new organization",
    "missing": "the Secret does not exist",
    "no-keySecret": "the Secret lacks the key keySecret",
    "no-organizationId": "the Secret lacks the key organizationId",
    "empty-keyId": "keyId is an empty string",
    "wrong-keySecret": "keyId exists, keySecret is wrong",
    "unknown-keyId": "keyId unknown to ClickHouse Cloud",
    "wrong-org": "organizationId is a UUID of no organization of the key",
    "org-not-uuid": "organizationId is not a UUID",
    "none": "no credentialsRef at all (and the operator has no default Secret)",
}

_DROP = object()


@dataclass(frozen=True)
class BadInput:
    name: str
    manifest: dict[str, Any]
    expect: str  # CRD or CONDITION
    message: str  # substring of the rejection or of the condition message
    what: str = ""  # the input, in words (docs table)
    old: dict[str, Any] | None = None  # applied first (operator cases: until Ready), then ``manifest`` (an update)
    reason: str | None = None  # CONDITION cases
    condition: str = "Synced"
    credentials: str = "fresh"
    mutating_calls: int = 0
    setup: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def where(self) -> str:
        if self.expect == CONDITION and self.old is not None:
            return "API (rejected update)"
        if self.expect == CRD:
            return "CRD (on update)" if self.old is not None else "CRD"
        if self.mutating_calls:
            return "API (rejected request)"
        if self.credentials in ("wrong-keySecret", "unknown-keyId", "wrong-org", "org-not-uuid"):
            return "API (the first read is refused; no mutating call)"
        if self.reason == SECRET_CONFLICT:
            return "operator (before any mutating call)"
        return "operator (no API call)"


def mp(name: str, **spec: Any) -> dict[str, Any]:
    """A valid ManagedPostgres manifest, changed by ``spec`` (``_DROP`` removes a field)."""
    body: dict[str, Any] = {"provider": "aws", "region": "us-west-2", "size": "r8gd.large"}
    for key, value in spec.items():
        if value is _DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": body,
    }


def _crd(
    name: str, what: str, message: str, *, meta_name: str | None = None, old: dict | None = None, **spec: Any
) -> BadInput:
    return BadInput(name=name, manifest=mp(meta_name or name, **spec), expect=CRD, message=message, what=what, old=old)


def _update(name: str, what: str, message: str, old_spec: dict[str, Any], new_spec: dict[str, Any]) -> BadInput:
    return BadInput(
        name=name, manifest=mp(name, **new_spec), expect=CRD, message=message, what=what, old=mp(name, **old_spec)
    )


# --- messages (substrings of what kubectl apply prints) -------------------------------------

NAME_63 = "metadata.name must be at most 63 characters"
NAME_50 = "metadata.name is longer than 50 characters"
REGION = "region must be a cloud region name such as us-west-2"
SIZE = "size must be an instance size such as r8gd.large"
CONTROL = "serviceName must not contain control characters"
TAG_KEY = "tag keys must be 1-128 characters of letters, digits"
TAG_VALUE = "tag values must be 1-256 characters of letters, digits"
RESERVED = "tag keys starting with chc_ (reserved by ClickHouse Cloud) or mpg-operator."
SECRET_NAME = "must be a valid Secret name"
VERSION_IMMUTABLE = "postgresVersion is immutable: it cannot be added, removed or changed after creation"
SAME_SECRET = "spec.connectionSecret.name must differ from spec.credentialsRef.name"
DEFAULT_IS_CREDENTIALS = "the default connection Secret <metadata.name>-connection is the spec.credentialsRef Secret"


def _crd_cases() -> list[BadInput]:
    c: list[BadInput] = []
    # metadata.name (root-level rules)
    c.append(_crd("name-64", "metadata.name of 64 characters", NAME_63, meta_name="n" * 64, serviceName="ok"))
    c.append(_crd("name-200", "metadata.name of 200 characters", NAME_63, meta_name="n" * 200, serviceName="ok"))
    c.append(
        _crd(
            "name-51-default-service-name",
            "metadata.name of 51 characters, no serviceName",
            NAME_50,
            meta_name="n" * 51,
        )
    )
    c.append(
        _crd(
            "name-63-default-service-name",
            "metadata.name of 63 characters, no serviceName",
            NAME_50,
            meta_name="a" * 30 + "." + "b" * 32,
        )
    )
    # whole spec
    missing_spec = mp("no-spec")
    del missing_spec["spec"]
    c.append(BadInput("no-spec", missing_spec, CRD, "spec: Required value", what="no spec"))
    # provider
    c.append(_crd("provider-azure", "provider azure", 'spec.provider: Unsupported value: "azure"', provider="azure"))
    c.append(_crd("provider-upper", "provider AWS (upper case)", 'Unsupported value: "AWS"', provider="AWS"))
    c.append(_crd("provider-empty", "provider empty", 'spec.provider: Unsupported value: ""', provider=""))
    c.append(_crd("provider-missing", "no provider", "spec.provider: Required value", provider=_DROP))
    # region
    c.append(_crd("region-missing", "no region", "spec.region: Required value", region=_DROP))
    c.append(_crd("region-upper", "region US-WEST-2", REGION, region="US-WEST-2"))
    c.append(_crd("region-space", "region 'us west 2'", REGION, region="us west 2"))
    c.append(_crd("region-underscore", "region us_west_2", REGION, region="us_west_2"))
    c.append(_crd("region-leading-dash", "region -us-west-2", REGION, region="-us-west-2"))
    c.append(_crd("region-trailing-dash", "region us-west-2-", REGION, region="us-west-2-"))
    c.append(_crd("region-dot", "region us.west.2", REGION, region="us.west.2"))
    c.append(_crd("region-empty", "region empty", "spec.region in body should be at least 1 chars long", region=""))
    c.append(_crd("region-too-long", "region of 64 characters", "spec.region: Too long", region="r" * 64))
    c.append(_crd("region-number", "region 2 (a number)", "spec.region in body must be of type string", region=2))
    # size
    c.append(_crd("size-missing", "no size", "spec.size: Required value", size=_DROP))
    c.append(_crd("size-upper", "size R8GD.LARGE", SIZE, size="R8GD.LARGE"))
    c.append(_crd("size-space", "size 'r8gd large'", SIZE, size="r8gd large"))
    c.append(_crd("size-leading-dot", "size .large", SIZE, size=".large"))
    c.append(_crd("size-slash", "size r8gd/large", SIZE, size="r8gd/large"))
    c.append(_crd("size-empty", "size empty", "spec.size in body should be at least 1 chars long", size=""))
    c.append(_crd("size-too-long", "size of 64 characters", "spec.size: Too long", size="s" * 64))
    c.append(_crd("size-number", "size 8 (a number)", "spec.size in body must be of type string", size=8))
    # read replicas and restores
    c.append(
        _crd(
            "replica-with-provider",
            "a read replica that sets provider (inherited from the primary)",
            "provider must not be set on a read replica",
            readReplicaOf={"name": "primary"},
        )
    )
    c.append(
        _crd(
            "restore-two-sources",
            "restoreFrom naming both a ManagedPostgres and a serviceId",
            "restoreFrom needs exactly one of managedPostgres",
            restoreFrom={
                "managedPostgres": "primary",
                "serviceId": "00000000-0000-4000-8000-000000000000",
                "pointInTime": "2026-06-01T12:00:00Z",
            },
        )
    )
    c.append(
        _crd(
            "replica-and-restore",
            "readReplicaOf and restoreFrom together",
            "readReplicaOf and restoreFrom are mutually exclusive",
            readReplicaOf={"name": "primary"},
            restoreFrom={"managedPostgres": "primary", "pointInTime": "2026-06-01T12:00:00Z"},
            provider=_DROP,
            region=_DROP,
        )
    )
    # postgresVersion
    c.append(
        _crd(
            "version-16", 'postgresVersion "16"', 'spec.postgresVersion: Unsupported value: "16"', postgresVersion="16"
        )
    )
    c.append(_crd("version-minor", 'postgresVersion "18.1"', 'Unsupported value: "18.1"', postgresVersion="18.1"))
    c.append(
        _crd(
            "version-number",
            "postgresVersion 18 (a number)",
            "spec.postgresVersion in body must be of type string",
            postgresVersion=18,
        )
    )
    # haType
    c.append(_crd("ha-upper", "haType Sync", 'spec.haType: Unsupported value: "Sync"', haType="Sync"))
    c.append(_crd("ha-unknown", "haType multi", 'spec.haType: Unsupported value: "multi"', haType="multi"))
    c.append(_crd("ha-bool", "haType true (a boolean)", "spec.haType in body must be of type string", haType=True))
    # serviceName
    c.append(
        _crd(
            "service-name-empty",
            "serviceName empty",
            "spec.serviceName in body should be at least 1 chars long",
            serviceName="",
        )
    )
    c.append(
        _crd("service-name-51", "serviceName of 51 characters", "spec.serviceName: Too long", serviceName="s" * 51)
    )
    for label, char in (
        ("tab", "\t"),
        ("newline", "\n"),
        ("cr", "\r"),
        ("nul", "\x00"),
        ("esc", "\x1b"),
        ("del", "\x7f"),
        ("nel", "\x85"),
    ):
        c.append(
            _crd(
                f"service-name-{label}",
                f"serviceName with a control character ({label}, U+{ord(char):04X})",
                CONTROL,
                serviceName=f"orders{char}db",
            )
        )
    c.append(
        _crd(
            "service-name-number",
            "serviceName 42 (a number)",
            "spec.serviceName in body must be of type string",
            serviceName=42,
        )
    )
    # tags
    for case, key in (
        ("tag-chc", "chc_team"),
        ("tag-chc-upper", "CHC_team"),
        ("tag-chc-mixed", "Chc_team"),
        ("tag-mpg-operator", "mpg-operator.uid"),
        ("tag-mpg-operator-upper", "MPG-Operator.name"),
    ):
        c.append(_crd(case, f"tag key {key} (reserved prefix)", RESERVED, tags={key: "x"}))
    c.append(_crd("tag-key-slash", "tag key app.kubernetes.io/name", TAG_KEY, tags={"app.kubernetes.io/name": "x"}))
    c.append(_crd("tag-key-space", "tag key 'cost center'", TAG_KEY, tags={"cost center": "x"}))
    c.append(_crd("tag-key-colon", "tag key team:db", TAG_KEY, tags={"team:db": "x"}))
    c.append(_crd("tag-key-129", "tag key of 129 characters", TAG_KEY, tags={"k" * 129: "x"}))
    c.append(_crd("tag-key-empty", "tag key empty", TAG_KEY, tags={"": "x"}))
    c.append(_crd("tag-key-unicode", "tag key équipe", TAG_KEY, tags={"équipe": "x"}))
    c.append(
        _crd(
            "tag-value-empty",
            "tag value empty",
            "spec.tags.team in body should be at least 1 chars long",
            tags={"team": ""},
        )
    )
    c.append(_crd("tag-value-space", "tag value 'data eng'", TAG_VALUE, tags={"team": "data eng"}))
    c.append(_crd("tag-value-slash", "tag value a/b", TAG_VALUE, tags={"team": "a/b"}))
    c.append(_crd("tag-value-257", "tag value of 257 characters", "spec.tags.team: Too long", tags={"team": "v" * 257}))
    c.append(
        _crd(
            "tag-value-number",
            "tag value 5 (a number)",
            "spec.tags.team in body must be of type string",
            tags={"team": 5},
        )
    )
    c.append(
        _crd(
            "tags-48",
            "48 tags (the API allows 50, the operator adds 3)",
            "spec.tags: Too many: 48: must have at most 47",
            tags={f"t{i}": "v" for i in range(48)},
        )
    )
    c.append(
        _crd(
            "tags-list",
            "tags as a list of key/value objects",
            "spec.tags in body must be of type object",
            tags=[{"key": "team", "value": "db"}],
        )
    )
    # credentialsRef
    c.append(
        _crd(
            "credentials-bad-name",
            "credentialsRef.name Bad_Name",
            f'spec.credentialsRef.name: Invalid value: "Bad_Name": {SECRET_NAME}',
            credentialsRef={"name": "Bad_Name"},
        )
    )
    c.append(
        _crd("credentials-leading-dash", "credentialsRef.name -creds", SECRET_NAME, credentialsRef={"name": "-creds"})
    )
    c.append(
        _crd("credentials-trailing-dot", "credentialsRef.name creds.", SECRET_NAME, credentialsRef={"name": "creds."})
    )
    c.append(
        _crd(
            "credentials-slash",
            "credentialsRef.name other-ns/creds",
            SECRET_NAME,
            credentialsRef={"name": "other-ns/creds"},
        )
    )
    c.append(
        _crd(
            "credentials-empty",
            "credentialsRef.name empty",
            "spec.credentialsRef.name in body should be at least 1 chars long",
            credentialsRef={"name": ""},
        )
    )
    c.append(
        _crd(
            "credentials-254",
            "credentialsRef.name of 254 characters",
            "spec.credentialsRef.name: Too long",
            credentialsRef={"name": "c" * 254},
        )
    )
    c.append(
        _crd(
            "credentials-no-name",
            "credentialsRef without name",
            "spec.credentialsRef.name: Required value",
            credentialsRef={},
        )
    )
    c.append(
        _crd(
            "credentials-string",
            "credentialsRef: creds (a string)",
            "spec.credentialsRef in body must be of type object",
            credentialsRef="creds",
        )
    )
    # connectionSecret
    c.append(
        _crd(
            "connection-bad-name",
            "connectionSecret.name Bad_Name",
            f'spec.connectionSecret.name: Invalid value: "Bad_Name": {SECRET_NAME}',
            connectionSecret={"name": "Bad_Name"},
        )
    )
    c.append(
        _crd("connection-upper", "connectionSecret.name Orders-DB", SECRET_NAME, connectionSecret={"name": "Orders-DB"})
    )
    c.append(
        _crd(
            "connection-space", "connectionSecret.name 'orders db'", SECRET_NAME, connectionSecret={"name": "orders db"}
        )
    )
    c.append(
        _crd(
            "connection-double-dot",
            "connectionSecret.name orders..db",
            SECRET_NAME,
            connectionSecret={"name": "orders..db"},
        )
    )
    c.append(
        _crd(
            "connection-254",
            "connectionSecret.name of 254 characters",
            "spec.connectionSecret.name: Too long",
            connectionSecret={"name": "c" * 254},
        )
    )
    c.append(
        _crd(
            "connection-no-name",
            "connectionSecret without name",
            "spec.connectionSecret.name: Required value",
            connectionSecret={},
        )
    )
    c.append(
        _crd(
            "connection-is-credentials",
            "connectionSecret.name = credentialsRef.name",
            SAME_SECRET,
            credentialsRef={"name": "clickhouse-cloud"},
            connectionSecret={"name": "clickhouse-cloud"},
        )
    )
    c.append(
        _crd(
            "default-connection-is-credentials",
            "credentialsRef.name = <metadata.name>-connection, no connectionSecret",
            DEFAULT_IS_CREDENTIALS,
            credentialsRef={"name": "default-connection-is-credentials-connection"},
        )
    )
    # deletionPolicy
    c.append(
        _crd(
            "deletion-lower",
            "deletionPolicy delete",
            'spec.deletionPolicy: Unsupported value: "delete"',
            deletionPolicy="delete",
        )
    )
    c.append(
        _crd(
            "deletion-retain",
            "deletionPolicy Retain",
            'spec.deletionPolicy: Unsupported value: "Retain"',
            deletionPolicy="Retain",
        )
    )
    # updates: transition rules
    c.append(
        _update(
            "version-added", "postgresVersion added after creation", VERSION_IMMUTABLE, {}, {"postgresVersion": "18"}
        )
    )
    c.append(
        _update(
            "version-removed",
            "postgresVersion removed after creation",
            VERSION_IMMUTABLE,
            {"postgresVersion": "18"},
            {},
        )
    )
    c.append(
        _update(
            "version-changed",
            "postgresVersion 17 -> 18",
            VERSION_IMMUTABLE,
            {"postgresVersion": "17"},
            {"postgresVersion": "18"},
        )
    )
    c.append(
        _update(
            "provider-changed",
            "provider aws -> gcp",
            'spec.provider: Invalid value: "gcp": provider is immutable',
            {},
            {"provider": "gcp"},
        )
    )
    c.append(
        _update(
            "region-changed",
            "region us-west-2 -> eu-west-1",
            'spec.region: Invalid value: "eu-west-1": region is immutable',
            {},
            {"region": "eu-west-1"},
        )
    )
    c.append(_update("update-bad-tag", "tag key CHC_x added by an update", RESERVED, {}, {"tags": {"CHC_x": "1"}}))
    c.append(
        _update(
            "update-bad-service-name",
            "serviceName with a newline set by an update",
            CONTROL,
            {},
            {"serviceName": "a\nb"},
        )
    )
    # configuration
    c.append(
        _crd(
            "pgconfig-unknown-key",
            "pgConfig shared_buffers (not a parameter the API accepts)",
            "pgConfig keys must be parameters ClickHouse Cloud accepts",
            pgConfig={"shared_buffers": "1GB"},
        )
    )
    c.append(
        _crd(
            "pgconfig-number",
            "pgConfig max_connections 200 (a number)",
            "spec.pgConfig.max_connections in body must be of type string",
            pgConfig={"max_connections": 200},
        )
    )
    c.append(
        _crd(
            "pgconfig-enum",
            "pgConfig wal_compression gzip",
            "pgConfig.wal_compression must be one of: off, on, lz4, zstd",
            pgConfig={"wal_compression": "gzip"},
        )
    )
    c.append(
        _crd(
            "pgconfig-empty-value",
            "pgConfig work_mem empty",
            "pgConfig values must be non-empty strings without control characters",
            pgConfig={"work_mem": ""},
        )
    )
    c.append(
        _crd(
            "pgbouncer-bad-key",
            "pgBouncerConfig key 'Pool Mode'",
            "pgBouncerConfig keys are PgBouncer parameter names",
            pgBouncerConfig={"Pool Mode": "session"},
        )
    )
    c.append(
        _crd(
            "pgbouncer-too-many",
            "pgBouncerConfig with 65 keys",
            "spec.pgBouncerConfig: Too many",
            pgBouncerConfig={f"k{i}": "1" for i in range(65)},
        )
    )
    c.append(
        _crd(
            "restart-policy-unknown",
            "restartPolicy Always",
            'spec.restartPolicy: Unsupported value: "Always"',
            restartPolicy="Always",
        )
    )
    return c


# --- input only the operator or the API can judge -------------------------------------------

INVALID_SPEC = "TerminalInvalidSpec"
CREDENTIALS_ERROR = "TerminalCredentialsError"
SECRET_CONFLICT = "TerminalSecretConflict"


def _op(
    name: str,
    what: str,
    reason: str,
    message: str,
    *,
    credentials: str = "fresh",
    mutating_calls: int = 0,
    condition: str = "Synced",
    setup: tuple[dict[str, Any], ...] = (),
    old_spec: dict[str, Any] | None = None,
    **spec: Any,
) -> BadInput:
    spec.setdefault("credentialsRef", {"name": f"{name}-creds"})
    old = None
    if old_spec is not None:
        old = mp(name, **{**old_spec, "credentialsRef": spec["credentialsRef"]})
    return BadInput(
        name=name,
        manifest=mp(name, **spec),
        expect=CONDITION,
        message=message,
        what=what,
        reason=reason,
        condition=condition,
        credentials=credentials,
        mutating_calls=mutating_calls,
        setup=setup,
        old=old,
    )


def _unrelated_secret(name: str, **extra_meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE, **extra_meta},
        "stringData": {"password": "not-yours", "host": "elsewhere.example"},
    }


def _operator_cases() -> list[BadInput]:
    c: list[BadInput] = []
    # The API judges these (the list changes over time): one rejected request, never re-sent.
    c.append(
        _op(
            "op-unknown-size",
            "size r9zz.huge (well-formed, unknown to the API)",
            INVALID_SPEC,
            "r9zz.huge",
            mutating_calls=1,
            size="r9zz.huge",
        )
    )
    c.append(
        _op(
            "op-unknown-size-gcp-style",
            "size c4-highmem-4 on aws (a GCP size)",
            INVALID_SPEC,
            "c4-highmem-4",
            mutating_calls=1,
            size="c4-highmem-4",
        )
    )
    c.append(
        _op(
            "op-resize-unknown-size",
            "resize of a running service to size r9zz.huge",
            INVALID_SPEC,
            "r9zz.huge",
            mutating_calls=1,
            old_spec={},
            size="r9zz.huge",
        )
    )
    c.append(
        _op(
            "op-unknown-region",
            "region mars-north-1 (well-formed, unknown to the API)",
            INVALID_SPEC,
            "mars-north-1",
            mutating_calls=1,
            region="mars-north-1",
        )
    )
    c.append(
        _op(
            "op-provider-not-offered",
            "provider gcp where the organization only has aws",
            INVALID_SPEC,
            "gcp",
            mutating_calls=1,
            provider="gcp",
        )
    )
    # Credentials: named Secret and keys, no mutating call (nothing can be created).
    c.append(
        _op(
            "op-credentials-missing",
            "credentialsRef Secret does not exist",
            CREDENTIALS_ERROR,
            "op-credentials-missing-creds",
            credentials="missing",
        )
    )
    c.append(
        _op(
            "op-credentials-no-keysecret",
            "credentialsRef Secret lacks keySecret",
            CREDENTIALS_ERROR,
            "keySecret",
            credentials="no-keySecret",
        )
    )
    c.append(
        _op(
            "op-credentials-no-org",
            "credentialsRef Secret lacks organizationId",
            CREDENTIALS_ERROR,
            "organizationId",
            credentials="no-organizationId",
        )
    )
    c.append(
        _op(
            "op-credentials-empty-keyid",
            "credentialsRef Secret with an empty keyId",
            CREDENTIALS_ERROR,
            "keyId",
            credentials="empty-keyId",
        )
    )
    c.append(
        _op(
            "op-credentials-wrong-secret",
            "wrong keySecret for an existing keyId",
            CREDENTIALS_ERROR,
            "keySecret",
            credentials="wrong-keySecret",
        )
    )
    c.append(
        _op(
            "op-credentials-unknown-key",
            "keyId unknown to ClickHouse Cloud",
            CREDENTIALS_ERROR,
            "keyId",
            credentials="unknown-keyId",
        )
    )
    c.append(
        _op(
            "op-wrong-organization",
            "organizationId of no organization of the key",
            CREDENTIALS_ERROR,
            "organizationId",
            credentials="wrong-org",
        )
    )
    c.append(
        _op(
            "op-organization-not-uuid",
            "organizationId not a UUID",
            CREDENTIALS_ERROR,
            "organizationId",
            credentials="org-not-uuid",
        )
    )
    c.append(
        _op(
            "op-no-credentials",
            "no credentialsRef, no operator default Secret",
            CREDENTIALS_ERROR,
            "spec.credentialsRef is not set",
            credentials="none",
            credentialsRef=_DROP,
        )
    )
    # Connection Secrets the operator does not own: never overwritten, nothing created.
    c.append(
        _op(
            "op-secret-taken",
            "connectionSecret names an existing unrelated Secret",
            SECRET_CONFLICT,
            "app-config",
            condition="Ready",
            connectionSecret={"name": "app-config"},
            setup=(_unrelated_secret("app-config"),),
        )
    )
    c.append(
        _op(
            "op-default-secret-taken",
            "default connection Secret `<name>-connection` exists, not the operator's",
            SECRET_CONFLICT,
            "op-default-secret-taken-connection",
            condition="Ready",
            setup=(_unrelated_secret("op-default-secret-taken-connection"),),
        )
    )
    c.append(
        _op(
            "op-secret-owned-by-other",
            "connectionSecret owned by another controller (ownerReference)",
            SECRET_CONFLICT,
            "tls-bundle",
            condition="Ready",
            connectionSecret={"name": "tls-bundle"},
            setup=(
                _unrelated_secret(
                    "tls-bundle",
                    ownerReferences=[
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": "web",
                            "uid": "00000000-0000-4000-8000-000000000001",
                            "controller": True,
                        }
                    ],
                ),
            ),
        )
    )
    c.append(
        _op(
            "op-secret-shared",
            "two resources name the same connectionSecret (the second one)",
            SECRET_CONFLICT,
            "shared-connection",
            condition="Ready",
            connectionSecret={"name": "shared-connection"},
            setup=(
                mp(
                    "op-secret-shared-first",
                    credentialsRef={"name": "op-secret-shared-first-creds"},
                    connectionSecret={"name": "shared-connection"},
                ),
            ),
        )
    )
    return c


CASES: list[BadInput] = _crd_cases() + _operator_cases()
CRD_CASES = [case for case in CASES if case.expect == CRD]
OPERATOR_CASES = [case for case in CASES if case.expect == CONDITION]


def manifest_of(case: BadInput) -> dict[str, Any]:
    return copy.deepcopy(case.manifest)


def markdown_table() -> str:
    """The corpus as the table of docs/reliability.md ("Bad input"): ``python tests/campaigns/bad_inputs.py``."""

    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    rows = ["| case | input | outcome | where rejected |", "|---|---|---|---|"]
    for case in CASES:
        if case.expect == CRD:
            outcome = f"rejected: `{esc(case.message)}`"
        else:
            calls = (
                "no mutating call"
                if not case.mutating_calls
                else (f"{case.mutating_calls} rejected request, not re-sent")
            )
            outcome = (
                f"{case.condition}=False `{case.reason}`, message contains `{esc(case.message)}`, "
                f"Warning event, {calls}"
            )
        rows.append(f"| `{case.name}` | {esc(case.what)} | {outcome} | {case.where} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
