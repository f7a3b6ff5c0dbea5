"""The connection Secret: its keys, its bookkeeping annotations, and password generation."""

from __future__ import annotations

import hashlib
import json
import secrets
import string
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

from mpg_operator.cloud.ids import canonical_id, same_id

ANNOTATION_PREFIX = "mpg-operator.clickhouse.cloud"
ANN_SERVICE_ID = f"{ANNOTATION_PREFIX}/service-id"
ANN_SERVICE_NAME = f"{ANNOTATION_PREFIX}/service-name"
ANN_PASSWORD_DIGEST = f"{ANNOTATION_PREFIX}/password-digest"
ANN_PASSWORD_VERSION = f"{ANNOTATION_PREFIX}/password-version"
ANN_LAYOUT = f"{ANNOTATION_PREFIX}/layout"
"""What the operator wrote last (keys, and the labels and annotations of the spec), as JSON: what it
removes when the spec's layout changes, leaving what anybody else put in the Secret."""
ANN_HAND_OVER_TO = f"{ANNOTATION_PREFIX}/hand-over-to"
"""Set by a user on an existing Secret (value: the ManagedPostgres name) to let the operator take it over."""
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "mpg-operator"
LABEL_INSTANCE_OF = f"{ANNOTATION_PREFIX}/managedpostgres"

DATABASE = "postgres"
SSLMODE = "require"
PORT = 5432
POOLER_PORT = 6432
"""PgBouncer (transaction pooling) listens on the service's own hostname at this port."""
REQUIRED_KEYS = (
    "host",
    "port",
    "username",
    "password",
    "database",
    "sslmode",
    "uri",
    "jdbcUrl",
    "ca.crt",
    "poolerHost",
    "poolerPort",
    "poolerUri",
)
PASSWORD_KEY = "password"
PASSWORDLESS_KEYS = tuple(k for k in REQUIRED_KEYS if k != PASSWORD_KEY)


@dataclass(frozen=True)
class SecretShape:
    """What the user asked of the Secret besides its name: a key prefix, labels, annotations."""

    key_prefix: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


class SecretConflictError(Exception):
    """The connection Secret exists and is not this resource's to write (left untouched)."""


class SecretRejectedError(Exception):
    """Kubernetes refused to store the connection Secret (e.g. an invalid name); says why."""


def label_value(name: str) -> str:
    """``name`` as a label value (at most 63 characters): longer names are cut and end in a digest."""
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[:52].rstrip('.-_')}-{digest}"


def generate_password(length: int = 32) -> str:
    """A strong password that meets the API's rules (>= 12 chars, lower, upper, digit)."""
    alphabet = string.ascii_letters + string.digits + "-_"
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(length))
        if (
            any(c.islower() for c in candidate)
            and any(c.isupper() for c in candidate)
            and any(c.isdigit() for c in candidate)
        ):
            return candidate


def password_acceptable(password: str | None) -> bool:
    """True when ``password`` meets the API's password rules."""
    return bool(
        password
        and 12 <= len(password) <= 1024
        and any(c.islower() for c in password)
        and any(c.isupper() for c in password)
        and any(c.isdigit() for c in password)
    )


def new_password_version() -> str:
    """An opaque token naming one password the API accepted (recorded in status and on the Secret)."""
    return uuid.uuid4().hex[:16]


def password_digest(service_id: str, password: str) -> str:
    """Digest recording that ``password`` was accepted by the API for ``service_id`` (in its canonical
    form: the same digest whatever case the id was written in)."""
    return hashlib.sha256(f"{canonical_id(service_id)}\0{password}".encode()).hexdigest()[:40]


@dataclass(frozen=True)
class Endpoint:
    """Where the service is reached (from the API; port is always 5432)."""

    hostname: str
    username: str
    ca_pem: str
    port: int = PORT
    database: str = DATABASE
    """The database the Secret names (a PostgresRole's Secret names its application's database)."""


@dataclass(frozen=True)
class SecretLayout:
    """What the operator wrote to a connection Secret: its keys (with their prefix), and which labels
    and annotations came from the spec. Recorded on the Secret (annotation ``layout``)."""

    key_prefix: str = ""
    keys: frozenset[str] = frozenset()
    labels: frozenset[str] = frozenset()
    annotations: frozenset[str] = frozenset()

    def to_annotation(self) -> str:
        return json.dumps(
            {
                "keyPrefix": self.key_prefix,
                "keys": sorted(self.keys),
                "labels": sorted(self.labels),
                "annotations": sorted(self.annotations),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_annotation(cls, text: str | None) -> SecretLayout | None:
        """The recorded layout; ``None`` when there is none or it cannot be read (edited by hand)."""
        try:
            raw = json.loads(text or "")
            layout = cls(
                key_prefix=str(raw["keyPrefix"]),
                keys=frozenset(str(k) for k in raw["keys"]),
                labels=frozenset(str(k) for k in raw["labels"]),
                annotations=frozenset(str(k) for k in raw["annotations"]),
            )
        except (ValueError, TypeError, KeyError):
            return None
        return layout if all(k.startswith(layout.key_prefix) for k in layout.keys) else None

    @classmethod
    def of(cls, shape: SecretShape, keys: Iterable[str]) -> SecretLayout:
        """The layout of a write of ``keys`` in the shape the spec asks for."""
        return cls(shape.key_prefix, frozenset(keys), frozenset(shape.labels), frozenset(shape.annotations))


@dataclass(frozen=True)
class ObservedSecret:
    """The connection Secret as read from Kubernetes (decoded).

    Its values are read where the operator last wrote them (``key_prefix`` of the recorded layout),
    not where the spec asks for them now: a change of the prefix is a change of layout, and the
    password the API accepted is found and re-published under the new one (never replaced).
    """

    data: dict[str, str] = field(default_factory=dict, repr=False)
    annotations: dict[str, str] = field(default_factory=dict)
    controller_uid: str | None = None
    """uid of the object named by the Secret's controller ownerReference, if any."""
    labels: dict[str, str] = field(default_factory=dict)
    controller_name: str | None = None
    """Name of the ManagedPostgres that is the Secret's controller (``None``: no ManagedPostgres is)."""

    @property
    def written(self) -> SecretLayout | None:
        """The layout the operator recorded with its last write (``None``: none recorded)."""
        return SecretLayout.from_annotation(self.annotations.get(ANN_LAYOUT))

    @property
    def key_prefix(self) -> str:
        """The prefix of the keys the operator wrote: the recorded one; for a Secret written before
        layouts were recorded, the prefix under which the confirmed password sits."""
        written = self.written
        if written is not None:
            return written.key_prefix
        service_id, digest = self.annotations.get(ANN_SERVICE_ID), self.annotations.get(ANN_PASSWORD_DIGEST)
        if service_id and digest:
            for key, value in self.data.items():
                if key.endswith(PASSWORD_KEY) and password_digest(service_id, value) == digest:
                    return key[: -len(PASSWORD_KEY)]
        return self.legacy_prefix

    legacy_prefix: str = ""
    """For a Secret with no recorded layout and no confirmed password: the prefix to assume (the spec's)."""

    def value(self, key: str) -> str | None:
        """The value of one of the operator's keys (``key`` without the prefix)."""
        return self.data.get(self.key_prefix + key) or None

    def layout_current(self, shape: SecretShape) -> bool:
        """True when the Secret is laid out as ``shape`` asks (prefix, and the spec's labels and
        annotations with their values, none of the operator's earlier ones left over)."""
        written = self.written
        if self.key_prefix != shape.key_prefix:
            return False
        if any(self.labels.get(k) != v for k, v in shape.labels.items()):
            return False
        if any(self.annotations.get(k) != v for k, v in shape.annotations.items()):
            return False
        if written is None:
            return True  # nothing recorded to remove; the layout is recorded with the next write
        return written.labels == frozenset(shape.labels) and written.annotations == frozenset(shape.annotations)

    def leftovers(self, new: SecretLayout) -> SecretLayout:
        """What the operator wrote before and does not write now (to be removed): keys, labels and
        annotations the spec no longer asks for, never what somebody else added."""
        written = self.written
        if written is None:  # from before layouts were recorded: the operator's keys under its old prefix
            prefix = self.key_prefix
            old_keys = frozenset(prefix + k for k in REQUIRED_KEYS if prefix + k in self.data)
            return SecretLayout(prefix, old_keys - new.keys)
        return SecretLayout(
            written.key_prefix,
            written.keys - new.keys,
            written.labels - new.labels,
            written.annotations - new.annotations,
        )

    @property
    def password(self) -> str | None:
        return self.value(PASSWORD_KEY)

    def owned_by(self, uid: str) -> bool:
        return self.controller_uid == uid

    def claimable_by(self, uid: str, name: str) -> bool:
        """The operator may write this Secret for the resource ``uid``/``name``: it owns it, or the
        Secret has no controller and was handed over (annotation ``hand-over-to: <name>``)."""
        if self.controller_uid is not None:
            return self.controller_uid == uid
        return self.annotations.get(ANN_HAND_OVER_TO) == name

    def left_by_earlier(self, uid: str, name: str) -> bool:
        """The Secret's controller is an earlier ManagedPostgres of this name (deleted, then created
        again): that owner is gone, so the garbage collector deletes the Secret soon. Until then it is
        not this resource's to write, but waiting, not a conflict for the user to solve."""
        return self.controller_name == name and self.controller_uid not in (None, uid)

    def password_written_here(self, service_id: str) -> bool:
        """True when the operator wrote the stored password (its digest is on the Secret): not a
        password a user put there to have it set."""
        pw = self.password
        return bool(pw) and self.annotations.get(ANN_PASSWORD_DIGEST) == password_digest(service_id, pw or "")

    def password_confirmed(self, service_id: str, version: str | None) -> bool:
        """True when the stored password is the one the API accepted last for this service.

        The digest proves the password was accepted once; ``version`` (from status) proves it is
        the latest one accepted: a Secret left over from earlier (connection Secret renamed A -> B
        -> A) carries an older version and is not trusted.
        """
        if not self.password_written_here(service_id):
            return False
        return version is None or self.annotations.get(ANN_PASSWORD_VERSION) == version

    def endpoint_current(self, service_id: str, service_name: str | None) -> bool:
        """True when host, CA and URIs were written for this service id and its current name."""
        return (
            all(self.value(k) for k in PASSWORDLESS_KEYS)
            and same_id(self.annotations.get(ANN_SERVICE_ID), service_id)
            and (service_name is None or self.annotations.get(ANN_SERVICE_NAME) == service_name)
        )


def secret_data(endpoint: Endpoint, password: str | None, key_prefix: str = "") -> dict[str, str]:
    """All keys of the connection Secret (``password=None``: what can be known without it)."""
    user = quote(endpoint.username, safe="")
    credentials = f"{user}:{quote(password, safe='')}" if password is not None else user
    host = endpoint.hostname
    database = endpoint.database
    data = {
        "host": host,
        "port": str(endpoint.port),
        "username": endpoint.username,
        "database": database,
        "sslmode": SSLMODE,
        "uri": f"postgresql://{credentials}@{host}:{endpoint.port}/{database}?sslmode={SSLMODE}",
        "jdbcUrl": f"jdbc:postgresql://{host}:{endpoint.port}/{database}?sslmode={SSLMODE}",
        "ca.crt": endpoint.ca_pem,
        "poolerHost": host,
        "poolerPort": str(POOLER_PORT),
        "poolerUri": f"postgresql://{credentials}@{host}:{POOLER_PORT}/{database}?sslmode={SSLMODE}",
    }
    if password is not None:
        data[PASSWORD_KEY] = password
    return {key_prefix + k: v for k, v in data.items()}


def secret_annotations(service_id: str, service_name: str, password: str, version: str | None) -> dict[str, str | None]:
    """Bookkeeping annotations. ``version`` names the password the API accepted; ``None`` removes
    digest and version (the password is not confirmed yet)."""
    return {
        ANN_SERVICE_ID: service_id,
        ANN_SERVICE_NAME: service_name,
        ANN_PASSWORD_DIGEST: password_digest(service_id, password) if version else None,
        ANN_PASSWORD_VERSION: version,
        ANN_HAND_OVER_TO: None,
    }


@dataclass(frozen=True)
class SecretWrite:
    """One write of the connection Secret: ``None`` values remove what the operator wrote before."""

    data: dict[str, str | None] | None = field(repr=False)
    """``None``: only make sure the Secret exists and is the resource's (no endpoint known yet)."""
    labels: dict[str, str | None]
    annotations: dict[str, str | None]


def secret_write(
    shape: SecretShape,
    endpoint: Endpoint | None,
    password: str | None,
    *,
    service_id: str,
    service_name: str,
    version: str | None,
    before: ObservedSecret | None,
) -> SecretWrite:
    """The Secret's keys, labels and annotations in the layout ``shape`` asks for, the operator's
    bookkeeping (service, password digest and version, the layout itself), and the removal of what the
    operator wrote before under another layout; keys, labels and annotations of anybody else stay."""
    labels: dict[str, str | None] = dict(shape.labels)
    annotations: dict[str, str | None] = dict(shape.annotations)
    if endpoint is None:
        return SecretWrite(None, labels, annotations)
    data: dict[str, str | None] = dict(secret_data(endpoint, password, shape.key_prefix))
    layout = SecretLayout.of(shape, data)
    if before is not None:
        leftovers = before.leftovers(layout)
        data.update(dict.fromkeys(leftovers.keys))
        labels.update(dict.fromkeys(leftovers.labels))
        annotations.update(dict.fromkeys(leftovers.annotations))
    annotations.update(secret_annotations(service_id, service_name, password or "", version if password else None))
    annotations[ANN_LAYOUT] = layout.to_annotation()
    return SecretWrite(data, labels, annotations)
