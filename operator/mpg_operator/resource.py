"""The ``ManagedPostgres`` custom resource: spec and status models.

These pydantic models are the single source of truth for the CRD (see :mod:`mpg_operator.crd`):
field descriptions become ``kubectl explain`` text, ``json_schema_extra`` carries the CEL rules.
No field has a schema default: defaults live in code (:func:`mpg_operator.reconcile.desired.desired_from`) and
show in status, so GitOps tools see no drift between what was applied and what is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from mpg_operator.cloud.ids import CanonicalId

GROUP = "clickhouse.cloud"
VERSION = "v1alpha1"
KIND = "ManagedPostgres"
PLURAL = "managedpostgreses"
SINGULAR = "managedpostgres"
SHORT_NAMES = ["mpg"]
API_VERSION = f"{GROUP}/{VERSION}"

DEFAULT_HA_TYPE = "none"
ANNOTATION_PAUSED = f"{GROUP}/paused"
"""``"true"`` stops every remote call for the resource (deletion's too) until removed."""
ANNOTATION_ROTATE_PASSWORD = f"{GROUP}/rotate-password"
"""Any new value (a token) has the password rotated once; the token done is recorded in status."""
ANNOTATION_RESTART = f"{GROUP}/restart"
"""Any new value (a token) has the service restarted once; the token done is recorded in status."""
ANNOTATION_SWITCHOVER = f"{GROUP}/switchover"
"""Any new value (a token) has a primary with a standby switched over once."""
ANNOTATION_PROMOTE = f"{GROUP}/promote"
"""Any new value (a token) has a read replica promoted to an independent primary, once."""
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
TAG_PATTERN = r"^[a-zA-Z0-9._-]+$"
MAX_USER_TAGS = 47  # the API allows 50; the operator adds three ownership tags
RESERVED_TAG_PREFIXES = ("chc_", "mpg-operator.")


MAX_NAME_LENGTH = 63  # metadata.name goes into a label value
MAX_SERVICE_NAME_LENGTH = 50  # the API's limit for a service name
SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"  # RFC 1123 subdomain
REGION_PATTERN = r"^[a-z0-9][a-z0-9-]*[a-z0-9]$"
SIZE_PATTERN = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"

Rule = dict[str, JsonValue]


def _rule(rule: str, message: str) -> Rule:
    return {"rule": rule, "message": message}


def _cel(*rules: Rule, drop: tuple[str, ...] = ()) -> Callable[[dict[str, Any]], None]:
    """``json_schema_extra`` that adds CEL rules to a field's schema.

    ``drop`` removes keywords (e.g. ``pattern``) from the CRD only: the pydantic model keeps
    checking them, while the CRD says what is wrong in words instead of a regular expression.
    """

    def extra(schema: dict[str, Any]) -> None:
        for key in drop:
            schema.pop(key, None)
            for option in schema.get("anyOf", []):  # an optional field: the string is one option
                option.pop(key, None)
        if rules:
            schema.setdefault("x-kubernetes-validations", []).extend(rules)

    return extra


def _immutable(field: str) -> Rule:
    return _rule("self == oldSelf", f"{field} is immutable: it cannot be changed after creation")


TagValue = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        pattern=TAG_PATTERN,
        json_schema_extra=_cel(
            _rule(
                f"self.matches('{TAG_PATTERN}')",
                "tag values must be 1-256 characters of letters, digits, '.', '_' or '-' (no spaces, '/' or ':')",
            ),
            drop=("pattern",),
        ),
    ),
]

ROOT_VALIDATIONS: list[JsonValue] = [
    _rule(
        f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
        f"metadata.name must be at most {MAX_NAME_LENGTH} characters: the operator uses it as a label value",
    ),
    _rule(
        f"has(self.spec.serviceName) || self.metadata.name.size() <= {MAX_SERVICE_NAME_LENGTH}",
        f"metadata.name is longer than {MAX_SERVICE_NAME_LENGTH} characters, the limit of a ClickHouse Cloud "
        f"service name, and spec.serviceName is not set: set spec.serviceName (1-{MAX_SERVICE_NAME_LENGTH} "
        "characters) or use a shorter metadata.name",
    ),
    _rule(
        "has(self.spec.connectionSecret) || !has(self.spec.credentialsRef) "
        "|| self.spec.credentialsRef.name != self.metadata.name + '-connection'",
        "the default connection Secret <metadata.name>-connection is the spec.credentialsRef Secret: set "
        "spec.connectionSecret.name to another Secret (the operator never writes into the API-key Secret)",
    ),
]
"""Rules on the whole object (only there can CEL read ``metadata.name``); see :mod:`mpg_operator.crd`."""

SPEC_VALIDATIONS: list[JsonValue] = [
    _rule(
        "has(self.postgresVersion) == has(oldSelf.postgresVersion)"
        " && (!has(self.postgresVersion) || self.postgresVersion == oldSelf.postgresVersion)",
        "postgresVersion is immutable: it cannot be added, removed or changed after creation",
    ),
    _rule(
        "!has(oldSelf.serviceId) || (has(self.serviceId) && self.serviceId == oldSelf.serviceId)",
        "serviceId cannot be changed or removed once set (it names the service this resource manages)",
    ),
    _rule(
        "!has(self.connectionSecret) || !has(self.credentialsRef) "
        "|| self.connectionSecret.name != self.credentialsRef.name",
        "spec.connectionSecret.name must differ from spec.credentialsRef.name: the operator never writes "
        "database credentials into the API-key Secret",
    ),
]

# --- read replicas and point-in-time restores ----------------------------------------------------

INHERITED_BY_REPLICA = ("provider", "region", "postgresVersion")
"""What a read replica takes from its primary and cannot set (the readReplica request has no such field)."""

REPLICA_AND_RESTORE_VALIDATIONS: list[JsonValue] = [
    _rule(
        "has(self.readReplicaOf) == has(oldSelf.readReplicaOf)"
        " && (!has(self.readReplicaOf) || self.readReplicaOf == oldSelf.readReplicaOf)",
        "readReplicaOf is immutable: it cannot be added, removed or changed after creation",
    ),
    _rule(
        "has(self.restoreFrom) == has(oldSelf.restoreFrom)"
        " && (!has(self.restoreFrom) || self.restoreFrom == oldSelf.restoreFrom)",
        "restoreFrom is immutable: it cannot be added, removed or changed after creation",
    ),
    _rule(
        "!has(self.readReplicaOf) || !has(self.restoreFrom)",
        "readReplicaOf and restoreFrom are mutually exclusive: a service is either a read replica or a restore",
    ),
    _rule(
        "!has(self.serviceId) || (!has(self.readReplicaOf) && !has(self.restoreFrom))",
        "serviceId adopts an existing service: it cannot be combined with readReplicaOf or restoreFrom, "
        "which create a new one",
    ),
    *(
        _rule(
            f"!has(self.readReplicaOf) || !has(self.{field})",
            f"{field} must not be set on a read replica (readReplicaOf): it is inherited from the primary",
        )
        for field in INHERITED_BY_REPLICA
    ),
    *(
        _rule(
            f"has(self.{field}) || has(self.readReplicaOf) || has(self.restoreFrom)",
            f"spec.{field}: Required value (only a read replica or a restore inherits it)",
        )
        for field in ("provider", "region")
    ),
    _rule(
        "has(self.size) || has(self.readReplicaOf) || has(self.restoreFrom)",
        "spec.size: Required value (only a read replica or a restore inherits it)",
    ),
]
"""Rules of spec.readReplicaOf and spec.restoreFrom (kept apart from the others for readability)."""


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class DeletionPolicy(StrEnum):
    DELETE = "Delete"
    ORPHAN = "Orphan"


class SecretReference(_Model):
    """A Secret in the same namespace as the ManagedPostgres."""

    name: str = Field(
        min_length=1,
        max_length=253,
        description=(
            "Name of the Secret, in the namespace of the ManagedPostgres: a valid Secret name "
            "(lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, "
            "at most 253 characters)."
        ),
        json_schema_extra=_cel(
            _rule(
                f"self.matches('{SECRET_NAME_PATTERN}')",
                "must be a valid Secret name: lower-case letters, digits, '-' and '.', starting and ending "
                "with a letter or digit (RFC 1123 subdomain)",
            )
        ),
    )


class ManagementPolicy(StrEnum):
    FULL = "Full"
    OBSERVE = "Observe"


class AdoptionPolicy(StrEnum):
    REATTACH = "Reattach"
    NEVER = "Never"


class RestartPolicy(StrEnum):
    NEVER = "Never"
    ON_CONFIG_CHANGE = "OnConfigChange"


PG_CONFIG_KEYS = (
    "max_connections",
    "default_transaction_isolation",
    "ssl_min_protocol_version",
    "maintenance_work_mem",
    "work_mem",
    "effective_cache_size",
    "random_page_cost",
    "effective_io_concurrency",
    "max_worker_processes",
    "max_parallel_workers",
    "max_parallel_workers_per_gather",
    "max_parallel_maintenance_workers",
    "statement_timeout",
    "lock_timeout",
    "idle_session_timeout",
    "idle_in_transaction_session_timeout",
    "transaction_timeout",
    "wal_sender_timeout",
    "wal_keep_size",
    "min_wal_size",
    "max_wal_size",
    "max_slot_wal_keep_size",
    "wal_compression",
    "autovacuum_max_workers",
    "autovacuum_naptime",
    "autovacuum_work_mem",
    "autovacuum_vacuum_scale_factor",
    "autovacuum_analyze_scale_factor",
    "autovacuum_vacuum_insert_scale_factor",
    "autovacuum_vacuum_cost_limit",
    "autovacuum_vacuum_cost_delay",
)
"""The PostgreSQL parameters the API accepts in ``pgConfig`` (its OpenAPI schema); others are dropped."""

PG_CONFIG_ENUMS = {
    "default_transaction_isolation": ("read committed", "repeatable read", "serializable"),
    "ssl_min_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "wal_compression": ("off", "on", "lz4", "zstd"),
}
MAX_PG_BOUNCER_KEYS = 64
CONFIG_VALUE_MAX_LENGTH = 256


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _config_values_rule(field: str) -> Rule:
    return _rule(
        "self.all(k, self[k].size() > 0 && !self[k].matches('[\\\\x00-\\\\x1f\\\\x7f-\\\\x9f]'))",
        f'{field} values must be non-empty strings without control characters (quote numbers: "200")',
    )


PG_CONFIG_RULES: list[Rule] = [
    _rule(
        f"self.all(k, k in {_cel_list(PG_CONFIG_KEYS)})",
        "pgConfig keys must be parameters ClickHouse Cloud accepts: " + ", ".join(PG_CONFIG_KEYS),
    ),
    *(
        _rule(
            f"!has(self.{key}) || self.{key} in {_cel_list(values)}",
            f"pgConfig.{key} must be one of: {', '.join(values)}",
        )
        for key, values in PG_CONFIG_ENUMS.items()
    ),
    _config_values_rule("pgConfig"),
]

PG_BOUNCER_CONFIG_RULES: list[Rule] = [
    _rule(
        "self.all(k, k.matches('^[a-z_][a-z0-9_]*$'))",
        "pgBouncerConfig keys are PgBouncer parameter names: lower-case letters, digits and '_'",
    ),
    _config_values_rule("pgBouncerConfig"),
]


class OnServiceMissing(StrEnum):
    FAIL = "Fail"
    RECREATE = "Recreate"


_FORBIDDEN_METADATA_KEYS = (
    "self.all(k, !k.startsWith('argocd.argoproj.io/') && k != 'app.kubernetes.io/instance' "
    "&& k != 'app.kubernetes.io/managed-by' && !k.startsWith('mpg-operator.clickhouse.cloud/'))"
)


class ConnectionSecretSpec(SecretReference):
    """The connection Secret the operator writes: its name and shape."""

    key_prefix: str | None = Field(
        default=None,
        alias="keyPrefix",
        max_length=64,
        description="Prefix of every key the operator writes, e.g. DB_ gives DB_host, DB_password, DB_uri, ...",
        json_schema_extra=_cel(
            _rule("self.matches('^[-._a-zA-Z0-9]*$')", "keyPrefix may only contain letters, digits, '-', '_' and '.'")
        ),
    )
    labels: dict[str, str] | None = Field(
        default=None,
        description=(
            "Labels to put on the Secret. Argo CD tracking labels (app.kubernetes.io/instance, "
            "argocd.argoproj.io/*) and the operator's own are not allowed: the Secret is the operator's, "
            "not part of an application."
        ),
        json_schema_extra=_cel(
            _rule(_FORBIDDEN_METADATA_KEYS, "labels must not be Argo CD tracking labels or the operator's own")
        ),
    )
    annotations: dict[str, str] | None = Field(
        default=None,
        description="Annotations to put on the Secret (not argocd.argoproj.io/* or the operator's own).",
        json_schema_extra=_cel(
            _rule(_FORBIDDEN_METADATA_KEYS, "annotations must not be Argo CD's or the operator's own")
        ),
    )


class PasswordSecretReference(SecretReference):
    """A key of a Secret in the same namespace that holds the password to use."""

    key: str = Field(
        min_length=1,
        max_length=253,
        description="The key of the Secret that holds the password.",
        json_schema_extra=_cel(
            _rule(
                f"self.matches('{SECRET_KEY_PATTERN}')", "key must be a Secret key: letters, digits, '-', '_' and '.'"
            )
        ),
    )


MANAGED_POSTGRES_NAME_PATTERN = SECRET_NAME_PATTERN  # a ManagedPostgres name: an RFC 1123 subdomain


class ReadReplicaOf(_Model):
    """The primary of a read replica: a ManagedPostgres in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        description=(
            "Name of the primary's ManagedPostgres, in the same namespace. The replica is created once the "
            "primary's service is running and has its first backup, in the primary's organization."
        ),
        json_schema_extra=_cel(
            _rule(
                f"self.matches('{MANAGED_POSTGRES_NAME_PATTERN}')",
                "readReplicaOf.name must be the name of a ManagedPostgres (lower-case letters, digits, '-' and '.')",
            )
        ),
    )


class RestoreFrom(_Model):
    """The source and the time of a point-in-time restore."""

    model_config = ConfigDict(
        populate_by_name=True,
        extra="ignore",
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "has(self.managedPostgres) != has(self.serviceId)",
                    "restoreFrom needs exactly one of managedPostgres (a ManagedPostgres in this namespace) "
                    "and serviceId (a service of the same organization)",
                )
            ]
        },
    )

    managed_postgres: str | None = Field(
        default=None,
        alias="managedPostgres",
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        description="Name of the source ManagedPostgres, in the same namespace (its status.serviceId is restored).",
        json_schema_extra=_cel(
            _rule(
                f"self.matches('{MANAGED_POSTGRES_NAME_PATTERN}')",
                "restoreFrom.managedPostgres must be the name of a ManagedPostgres (lower-case letters, digits, "
                "'-' and '.')",
            )
        ),
    )
    service_id: str | None = Field(
        default=None,
        alias="serviceId",
        pattern=UUID_PATTERN,
        description="Id of the source service, in the organization of this resource's API key.",
        json_schema_extra=_cel(
            _rule(f"self.matches('{UUID_PATTERN}')", "restoreFrom.serviceId must be a service id (a UUID)"),
            drop=("pattern",),
        ),
    )
    point_in_time: str = Field(
        alias="pointInTime",
        description=(
            "The moment to restore, as an RFC 3339 time (e.g. 2026-06-01T12:00:00Z); it must be within the "
            "source's backup window (by default the last 7 days, and not before its first backup)."
        ),
        json_schema_extra={"format": "date-time"},
    )

    @field_validator("point_in_time")
    @classmethod
    def _rfc3339(cls, value: str) -> str:
        """The CRD checks the format too; checked here for a cluster whose CRD lacks it."""
        from datetime import datetime

        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"pointInTime {value!r} is not an RFC 3339 time") from None
        if moment.tzinfo is None:
            raise ValueError(f"pointInTime {value!r} has no time zone (add Z for UTC)")
        return value


class ManagedPostgresSpec(_Model):
    """Desired state of a ClickHouse Cloud Managed Postgres service."""

    model_config = ConfigDict(
        populate_by_name=True,
        extra="ignore",
        json_schema_extra={"x-kubernetes-validations": SPEC_VALIDATIONS + REPLICA_AND_RESTORE_VALIDATIONS},
    )

    provider: str | None = Field(
        default=None,
        description=(
            "Cloud provider of the service: aws or gcp. Required, except on a read replica (which inherits it "
            "from its primary and must not set it) and a restore (which inherits it from its source). Immutable."
        ),
        json_schema_extra={"enum": ["aws", "gcp"], "x-kubernetes-validations": [_immutable("provider")]},
    )
    region: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=REGION_PATTERN,
        description=(
            "Cloud region of the service, e.g. us-west-2 (lower-case letters, digits and '-'). Required, "
            "except on a read replica (inherited from the primary; must not be set) and a restore (inherited "
            "from the source). Immutable. ClickHouse Cloud decides which regions exist: an unknown region shows as "
            "condition Synced=False with the API's message."
        ),
        json_schema_extra=_cel(
            _rule(
                f"self.matches('{REGION_PATTERN}')",
                "region must be a cloud region name such as us-west-2: lower-case letters, digits and '-', "
                "starting and ending with a letter or digit",
            ),
            _immutable("region"),
            drop=("pattern",),
        ),
    )
    size: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=SIZE_PATTERN,
        description=(
            "Instance size, e.g. r8gd.large (lower-case letters, digits, '.' and '-'). Can be "
            "changed (resize). The list of sizes changes over time, so ClickHouse Cloud validates "
            "it: an unknown size shows as condition Synced=False with the API's message. Required, except on "
            "a read replica (it has its primary's size; the API refuses any change to a replica, so a size set "
            "here must equal it until the replica is promoted) and a restore (it starts with the backup's "
            "size; a size set here is applied by an update once the restore is running)."
        ),
        json_schema_extra=_cel(
            _rule(
                f"self.matches('{SIZE_PATTERN}')",
                "size must be an instance size such as r8gd.large: lower-case letters, digits, '.' and '-', "
                "starting and ending with a letter or digit",
            ),
            drop=("pattern",),
        ),
    )
    postgres_version: str | None = Field(
        default=None,
        alias="postgresVersion",
        description=(
            'Major PostgreSQL version ("17" or "18"). Defaults to the server default (17). Immutable: '
            "it cannot be added, removed or changed after creation. A read replica must not set it (it has its "
            "primary's); a restore has its source's."
        ),
        json_schema_extra={"enum": ["17", "18"]},
    )
    ha_type: str | None = Field(
        default=None,
        alias="haType",
        description=(
            "High availability: none (no standby), async (one asynchronous standby) or "
            "sync (two synchronous standbys). Defaults to none. Can be changed. A read replica's is assigned "
            "by ClickHouse Cloud and cannot be changed until it is promoted; a restore's is applied by an "
            "update once it is running (unset: left as assigned)."
        ),
        json_schema_extra={"enum": ["none", "async", "sync"]},
    )
    service_name: str | None = Field(
        default=None,
        alias="serviceName",
        min_length=1,
        max_length=MAX_SERVICE_NAME_LENGTH,
        description=(
            "Name of the remote service (1-50 characters, spaces allowed, no control characters). "
            "Defaults to metadata.name, which must then be at most 50 characters. Can be changed: "
            "a rename changes the hostname and CA certificate, and the connection Secret follows."
        ),
        json_schema_extra=_cel(
            _rule(
                "!self.matches('[\\\\x00-\\\\x1f\\\\x7f-\\\\x9f]')",
                "serviceName must not contain control characters (tab, newline, ...)",
            )
        ),
    )
    tags: dict[str, TagValue] | None = Field(
        default=None,
        description=(
            "Tags of the remote service, at most 47 (the API allows 50; the operator adds three). "
            "Keys and values: letters, digits, '.', '_' and '-' (keys 1-128, values 1-256 "
            "characters); keys starting with chc_ or mpg-operator. (in any case) are reserved."
        ),
        json_schema_extra={
            "maxProperties": MAX_USER_TAGS,
            "x-kubernetes-validations": [
                _rule(
                    f"self.all(k, k.size() <= 128 && k.matches('{TAG_PATTERN}'))",
                    "tag keys must be 1-128 characters of letters, digits, '.', '_' or '-' (no spaces, '/' or ':')",
                ),
                _rule(
                    "self.all(k, !k.matches('(?i)^(chc_|mpg-operator[.])'))",
                    "tag keys starting with chc_ (reserved by ClickHouse Cloud) or mpg-operator. (reserved by "
                    "the operator) are not allowed, in any case (CHC_x, Chc_x too)",
                ),
            ],
        },
    )
    credentials_ref: SecretReference | None = Field(
        default=None,
        alias="credentialsRef",
        description=(
            "Secret with the ClickHouse Cloud API key: keys keyId, keySecret and "
            "organizationId. Defaults to the operator-wide default Secret."
        ),
    )
    connection_secret: ConnectionSecretSpec | None = Field(
        default=None,
        alias="connectionSecret",
        description=(
            "Secret the operator writes the connection details to (host, port, username, "
            "password, database, sslmode, uri, jdbcUrl, ca.crt, and the PgBouncer endpoint poolerHost, "
            "poolerPort, poolerUri). Defaults to <metadata.name>-connection. Must not be the "
            "credentialsRef Secret. The operator writes only a Secret it created for this resource, or one "
            "handed over with the annotation mpg-operator.clickhouse.cloud/hand-over-to: <metadata.name>."
        ),
    )
    password_secret_ref: PasswordSecretReference | None = Field(
        default=None,
        alias="passwordSecretRef",
        description=(
            "Bring your own password: the operator sets the password from this Secret's key on the "
            "service (the connection Secret gets it first) and again whenever it changes. Without it, "
            "the operator generates passwords."
        ),
    )
    service_id: str | None = Field(
        default=None,
        alias="serviceId",
        pattern=UUID_PATTERN,
        description=(
            "Adopt an existing service by its id instead of creating one. Its password cannot be read "
            "back, so the operator sets a new one (or the passwordSecretRef one) and publishes it. A "
            "service another ManagedPostgres owns is refused. Cannot be changed once set."
        ),
        json_schema_extra=_cel(
            _rule(f"self.matches('{UUID_PATTERN}')", "serviceId must be a service id (a UUID)"), drop=("pattern",)
        ),
    )
    adoption_policy: str | None = Field(
        default=None,
        alias="adoptionPolicy",
        description=(
            "When no service carries this resource's uid but one carries its namespace/name (the cluster "
            "was rebuilt, or the resource was deleted with deletionPolicy Orphan and applied again): "
            "Reattach (the default) takes that service over, with a new password; Never waits with a "
            "condition naming the service (adopt it with spec.serviceId)."
        ),
        json_schema_extra={"enum": [p.value for p in AdoptionPolicy]},
    )
    management_policy: str | None = Field(
        default=None,
        alias="managementPolicy",
        description=(
            "Full (the default): create, update and delete the service. Observe: only look — status and "
            "conditions mirror the service (found by spec.serviceId or this resource's owner tags), the "
            "Secret gets what can be known (no password unless passwordSecretRef); nothing is ever "
            "created, changed or deleted."
        ),
        json_schema_extra={"enum": [p.value for p in ManagementPolicy]},
    )
    deletion_protection: bool | None = Field(
        default=None,
        alias="deletionProtection",
        description=(
            "true: the chart's ValidatingAdmissionPolicy refuses to delete this resource; if it is deleted "
            "anyway, the operator keeps the service (as with deletionPolicy Orphan) and says so."
        ),
    )
    on_service_missing: str | None = Field(
        default=None,
        alias="onServiceMissing",
        description=(
            "When the service is gone (a GET answered 404, e.g. deleted in the console): Fail (the default) "
            "reports Ready=False, reason TerminalServiceMissing, and creates nothing; Recreate creates a new, "
            "empty service with new credentials."
        ),
        json_schema_extra={"enum": [p.value for p in OnServiceMissing]},
    )
    deletion_policy: str | None = Field(
        default=None,
        alias="deletionPolicy",
        description=(
            "What happens to the remote service when this resource is deleted: Delete "
            "(the default, unless the operator is configured otherwise) or Orphan (keep it)."
        ),
        json_schema_extra={"enum": ["Delete", "Orphan"]},
    )
    pg_config: dict[str, Annotated[str, Field(max_length=CONFIG_VALUE_MAX_LENGTH)]] | None = Field(
        default=None,
        alias="pgConfig",
        max_length=len(PG_CONFIG_KEYS),
        description=(
            'PostgreSQL parameters, as strings (e.g. max_connections: "200", work_mem: "8MB"); only the '
            "parameters ClickHouse Cloud accepts (the CRD lists them). Applied when the service is created and "
            "whenever they change; a key removed here is removed from the service; parameters set outside "
            "this resource are left alone. Some parameters take effect only after a restart: see "
            "restartPolicy and status.pendingRestart. A value the API does not keep shows as condition "
            "Synced=False (reason TerminalConfigurationRejected) and is not sent again until the spec changes."
        ),
        json_schema_extra=_cel(*PG_CONFIG_RULES),
    )
    pg_bouncer_config: dict[str, Annotated[str, Field(max_length=CONFIG_VALUE_MAX_LENGTH)]] | None = Field(
        default=None,
        alias="pgBouncerConfig",
        max_length=MAX_PG_BOUNCER_KEYS,
        description=(
            'PgBouncer parameters, as strings (e.g. default_pool_size: "16"; at most 64). Applied like pgConfig.'
        ),
        json_schema_extra=_cel(*PG_BOUNCER_CONFIG_RULES),
    )
    restart_policy: str | None = Field(
        default=None,
        alias="restartPolicy",
        description=(
            "When a configuration change needs a restart to take effect: Never (the default: "
            "status.pendingRestart turns true and the condition RestartRequired says which parameters; restart "
            "with the annotation clickhouse.cloud/restart: <token>) or OnConfigChange (the operator restarts the "
            "service, at most once per configuration change)."
        ),
        json_schema_extra={"enum": [p.value for p in RestartPolicy]},
    )

    # --- read replicas and point-in-time restores ---------------------------------------------

    read_replica_of: ReadReplicaOf | None = Field(
        default=None,
        alias="readReplicaOf",
        description=(
            "Make this service a read replica of another ManagedPostgres in the namespace. A replica inherits "
            "provider, region, postgresVersion (must not be set here), size and haType from its primary and "
            "cannot be changed through the API (serviceName and tags are sent when it is created); it has its "
            "own connection Secret with the primary's password, which follows the primary's rotations. "
            "The primary cannot be deleted while the replica exists (its deletion waits). Promote it with the "
            "annotation clickhouse.cloud/promote: <token>; it is then an independent primary (status."
            "readReplicaOf.released) that can be changed. Immutable: cannot be added or removed later."
        ),
    )
    restore_from: RestoreFrom | None = Field(
        default=None,
        alias="restoreFrom",
        description=(
            "Create this service as a point-in-time restore (a clone) of another service's backup: "
            "managedPostgres (a ManagedPostgres in the namespace) or serviceId, and pointInTime. The restore "
            "inherits provider, region and postgresVersion from its source; size and haType, when set, are "
            "applied once it is running. Its password is unknown, so the operator sets a new one (Secret "
            "first). A pointInTime outside the source's backup window is refused (condition "
            "TerminalRestoreRefused with the API's message). Immutable: cannot be added or removed later."
        ),
    )

    @model_validator(mode="after")
    def _inherited_fields(self) -> ManagedPostgresSpec:
        """The CRD says the same; checked here too, for a cluster whose CRD lacks the rules."""
        if self.read_replica_of is not None and self.restore_from is not None:
            raise ValueError("readReplicaOf and restoreFrom are mutually exclusive")
        if self.service_id is not None and (self.read_replica_of is not None or self.restore_from is not None):
            raise ValueError("serviceId cannot be combined with readReplicaOf or restoreFrom")
        if self.read_replica_of is not None:
            for field, value in (
                ("provider", self.provider),
                ("region", self.region),
                ("postgresVersion", self.postgres_version),
            ):
                if value is not None:
                    raise ValueError(f"{field} must not be set on a read replica: it is inherited from the primary")
        elif self.restore_from is None:
            missing = [
                f for f, v in (("provider", self.provider), ("region", self.region), ("size", self.size)) if not v
            ]
            if missing:
                raise ValueError(f"{', '.join(missing)} required (only a read replica or a restore inherits them)")
        if self.restore_from is not None:
            source = self.restore_from
            if (source.managed_postgres is None) == (source.service_id is None):
                raise ValueError("restoreFrom needs exactly one of managedPostgres and serviceId")
        return self

    @field_validator("pg_config")
    @classmethod
    def _known_parameters(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        """The CRD says the same; checked here too, for a cluster whose CRD lacks the rules."""
        for key, item in (value or {}).items():
            if key not in PG_CONFIG_KEYS:
                raise ValueError(f"{key} is not a parameter ClickHouse Cloud accepts in pgConfig")
            allowed = PG_CONFIG_ENUMS.get(key)
            if allowed and item not in allowed:
                raise ValueError(f"pgConfig.{key} must be one of: {', '.join(allowed)}")
            if not item:
                raise ValueError(f"pgConfig.{key} is empty")
        return value


class Condition(_Model):
    """A metav1.Condition."""

    type: str = Field(description="Ready, Synced or RestartRequired.")
    status: str = Field(description="True, False or Unknown.", json_schema_extra={"enum": ["True", "False", "Unknown"]})
    reason: str = Field(description="CamelCase reason; reasons starting with Terminal need a change by the user.")
    message: str = Field(default="", description="Human-readable details.")
    observed_generation: int | None = Field(
        default=None, alias="observedGeneration", description="The generation this condition was computed for."
    )
    last_transition_time: str | None = Field(
        default=None, alias="lastTransitionTime", description="When the status last changed (RFC 3339)."
    )


class PendingUpdate(_Model):
    """An update request in flight (the API applies size and HA changes late)."""

    digest: str = Field(description="Digest of the fields sent.")
    sent_at: str = Field(alias="sentAt", description="When the update was sent (RFC 3339).")
    matched_at: str | None = Field(
        default=None,
        alias="matchedAt",
        description="When the service first showed the update; it counts as applied once it still does a while later.",
    )


class ConfigurationStatus(_Model):
    """What the operator last applied of spec.pgConfig and spec.pgBouncerConfig."""

    digest: str | None = Field(default=None, description="Digest of the configuration applied or being applied.")
    sending_digest: str | None = Field(
        default=None,
        alias="sendingDigest",
        description="Set before a configuration is sent; cleared with the answer (a crash in between re-sends it).",
    )
    pg_keys: list[str] | None = Field(
        default=None,
        alias="pgKeys",
        description="pgConfig keys this resource manages (removed when dropped from spec).",
    )
    pg_bouncer_keys: list[str] | None = Field(
        default=None, alias="pgBouncerKeys", description="pgBouncerConfig keys this resource manages."
    )
    applied_at: str | None = Field(default=None, alias="appliedAt", description="When it was last sent (RFC 3339).")
    verified_at: str | None = Field(
        default=None, alias="verifiedAt", description="When the service last showed it (RFC 3339)."
    )
    dropped_keys: list[str] | None = Field(
        default=None,
        alias="droppedKeys",
        description="Keys the API did not keep (unknown parameter or value): not sent again until the spec changes.",
    )
    restart_parameters: list[str] | None = Field(
        default=None,
        alias="restartParameters",
        description="Parameters that take effect only after a restart, as the API said.",
    )


class CommandRecord(_Model):
    """A state command (restart, switchover, promote) asked for by an annotation token or the restart policy."""

    token: str = Field(
        description="The annotation's token, or config-<digest> for a restart after a configuration change."
    )
    phase: str = Field(
        description=(
            "Sending (recorded before the request), Sent (acknowledged), Unknown (the outcome was lost: not sent "
            "again), Failed (the API refused it)."
        ),
        json_schema_extra={"enum": ["Sending", "Sent", "Unknown", "Failed"]},
    )
    at: str | None = Field(default=None, description="When the phase was recorded (RFC 3339).")
    message: str | None = Field(default=None, description="The API's answer when it refused the command.")


class CommandsStatus(_Model):
    restart: CommandRecord | None = Field(default=None, description="The last restart asked for.")
    switchover: CommandRecord | None = Field(default=None, description="The last switchover asked for.")
    promote: CommandRecord | None = Field(default=None, description="The last promotion of a read replica asked for.")


class ReadReplicaStatus(_Model):
    """The primary of a read replica, and whether promotion released it."""

    name: str = Field(description="Name of the primary's ManagedPostgres.")
    service_id: CanonicalId | None = Field(default=None, alias="serviceId", description="The primary's service id.")
    released: bool | None = Field(
        default=None,
        description="true once the replica was promoted: it is an independent primary, no longer tied to it.",
    )
    released_at: str | None = Field(default=None, alias="releasedAt", description="When it was released (RFC 3339).")


class RestoredFromStatus(_Model):
    """What a restore was created from."""

    service_id: CanonicalId | None = Field(default=None, alias="serviceId", description="The source service's id.")
    point_in_time: str | None = Field(default=None, alias="pointInTime", description="The time restored (RFC 3339).")


class BackupWaitStatus(_Model):
    """A read replica waiting for its primary's first backup (the API refuses to create it before)."""

    attempts: int = Field(description="Create requests refused so far for lack of a backup.")
    retry_after: str = Field(alias="retryAfter", description="When the create is sent again (RFC 3339).")


class ManagedPostgresStatus(_Model):
    """Observed state, written by the operator only."""

    service_id: CanonicalId | None = Field(default=None, alias="serviceId", description="ID of the remote service.")
    state: str | None = Field(
        default=None, description="State of the remote service, verbatim (e.g. creating, running)."
    )
    service_name: str | None = Field(
        default=None, alias="serviceName", description="Observed name of the remote service."
    )
    hostname: str | None = Field(default=None, description="Hostname of the service.")
    port: int | None = Field(default=None, description="PostgreSQL port.")
    username: str | None = Field(default=None, description="Superuser name.")
    is_primary: bool | None = Field(default=None, alias="isPrimary", description="False for a read replica.")
    provider: str | None = Field(default=None, description="Observed cloud provider.")
    region: str | None = Field(default=None, description="Observed region.")
    size: str | None = Field(default=None, description="Observed instance size.")
    ha_type: str | None = Field(default=None, alias="haType", description="Observed high-availability type.")
    postgres_version: str | None = Field(default=None, alias="postgresVersion", description="Observed major version.")
    tags: dict[str, str] | None = Field(
        default=None, description="Observed tags (without the operator's ownership tags)."
    )
    created_at: str | None = Field(default=None, alias="createdAt", description="When the service was created.")
    connection_secret_name: str | None = Field(
        default=None, alias="connectionSecretName", description="Name of the Secret with the connection details."
    )
    deletion_policy: str | None = Field(
        default=None, alias="deletionPolicy", description="Effective deletion policy (spec or operator default)."
    )
    credentials_secret_name: str | None = Field(
        default=None,
        alias="credentialsSecretName",
        description="The API-key Secret this resource holds a finalizer on, so it outlives the resource's deletion.",
    )
    create_pending_since: str | None = Field(
        default=None,
        alias="createPendingSince",
        description="Set before a create request is sent and cleared once its outcome is known.",
    )
    pending_update: PendingUpdate | None = Field(
        default=None,
        alias="pendingUpdate",
        description="The last update sent to the service; cleared once the service shows it.",
    )
    create_attempts: int | None = Field(
        default=None,
        alias="createAttempts",
        description="Create requests sent without a service to show for them; later attempts wait longer (backoff).",
    )
    organization_id: CanonicalId | None = Field(
        default=None,
        alias="organizationId",
        description=(
            "The ClickHouse Cloud organization the service lives in. A credentialsRef that points to "
            "another organization cannot reach it: the operator then changes nothing and says so."
        ),
    )
    password_rotation_token: str | None = Field(
        default=None,
        alias="passwordRotationToken",
        description="The last clickhouse.cloud/rotate-password token acted on.",
    )
    password_version: str | None = Field(
        default=None,
        alias="passwordVersion",
        description=(
            "Opaque token of the password the API accepted last; the connection Secret carries the same "
            "token when its password is that one (not the password or a digest of it)."
        ),
    )
    configuration: ConfigurationStatus | None = Field(
        default=None, description="What was applied of spec.pgConfig and spec.pgBouncerConfig."
    )
    pending_restart: bool | None = Field(
        default=None,
        alias="pendingRestart",
        description="A configuration change waits for a restart to take effect (see restartPolicy).",
    )
    commands: CommandsStatus | None = Field(
        default=None, description="State commands asked for by annotation or by the restart policy, each sent once."
    )
    read_replica_of: ReadReplicaStatus | None = Field(
        default=None, alias="readReplicaOf", description="For a read replica: its primary, and whether it was released."
    )
    restored_from: RestoredFromStatus | None = Field(
        default=None, alias="restoredFrom", description="For a restore: the source service and the time restored."
    )
    waiting_for_backup: BackupWaitStatus | None = Field(
        default=None,
        alias="waitingForBackup",
        description="For a read replica not created yet: the primary has no backup yet; when to try again.",
    )
    observed_generation: int | None = Field(
        default=None,
        alias="observedGeneration",
        description="The generation that is fully applied (service running with the spec's values, Secret published).",
    )
    conditions: list[Condition] | None = Field(
        default=None, description="Ready, Synced and (with a configuration) RestartRequired conditions."
    )
