"""The connection Secret: its keys, its bookkeeping annotations, and password generation."""

from __future__ import annotations

import hashlib
import secrets
import string
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote

ANNOTATION_PREFIX = "mpg-operator.clickhouse.cloud"
ANN_SERVICE_ID = f"{ANNOTATION_PREFIX}/service-id"
ANN_SERVICE_NAME = f"{ANNOTATION_PREFIX}/service-name"
ANN_PASSWORD_DIGEST = f"{ANNOTATION_PREFIX}/password-digest"
ANN_PASSWORD_VERSION = f"{ANNOTATION_PREFIX}/password-version"
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
    """Digest recording that ``password`` was accepted by the API for ``service_id``."""
    return hashlib.sha256(f"{service_id}\0{password}".encode()).hexdigest()[:40]


@dataclass(frozen=True)
class Endpoint:
    """Where the service is reached (from the API; port is always 5432)."""

    hostname: str
    username: str
    ca_pem: str
    port: int = PORT


@dataclass(frozen=True)
class ObservedSecret:
    """The connection Secret as read from Kubernetes (decoded)."""

    data: dict[str, str] = field(default_factory=dict, repr=False)
    annotations: dict[str, str] = field(default_factory=dict)
    controller_uid: str | None = None
    """uid of the object named by the Secret's controller ownerReference, if any."""
    key_prefix: str = ""

    def value(self, key: str) -> str | None:
        """The value of one of the operator's keys (``key`` without the prefix)."""
        return self.data.get(self.key_prefix + key) or None

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

    def password_confirmed(self, service_id: str, version: str | None) -> bool:
        """True when the stored password is the one the API accepted last for this service.

        The digest proves the password was accepted once; ``version`` (from status) proves it is
        the latest one accepted: a Secret left over from earlier (connection Secret renamed A -> B
        -> A) carries an older version and is not trusted.
        """
        pw = self.password
        if not pw or self.annotations.get(ANN_PASSWORD_DIGEST) != password_digest(service_id, pw):
            return False
        return version is None or self.annotations.get(ANN_PASSWORD_VERSION) == version

    def endpoint_current(self, service_id: str, service_name: str | None) -> bool:
        """True when host, CA and URIs were written for this service id and its current name."""
        return (
            all(self.value(k) for k in PASSWORDLESS_KEYS)
            and self.annotations.get(ANN_SERVICE_ID) == service_id
            and (service_name is None or self.annotations.get(ANN_SERVICE_NAME) == service_name)
        )


def secret_data(endpoint: Endpoint, password: str | None, key_prefix: str = "") -> dict[str, str]:
    """All keys of the connection Secret (``password=None``: what can be known without it)."""
    user = quote(endpoint.username, safe="")
    credentials = f"{user}:{quote(password, safe='')}" if password is not None else user
    host = endpoint.hostname
    data = {
        "host": host,
        "port": str(endpoint.port),
        "username": endpoint.username,
        "database": DATABASE,
        "sslmode": SSLMODE,
        "uri": f"postgresql://{credentials}@{host}:{endpoint.port}/{DATABASE}?sslmode={SSLMODE}",
        "jdbcUrl": f"jdbc:postgresql://{host}:{endpoint.port}/{DATABASE}?sslmode={SSLMODE}",
        "ca.crt": endpoint.ca_pem,
        "poolerHost": host,
        "poolerPort": str(POOLER_PORT),
        "poolerUri": f"postgresql://{credentials}@{host}:{POOLER_PORT}/{DATABASE}?sslmode={SSLMODE}",
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
