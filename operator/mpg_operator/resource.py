"""The ``ManagedPostgres`` custom resource: spec and status models.

These pydantic models are the single source of truth for the CRD (see :mod:`mpg_operator.crd`):
field descriptions become ``kubectl explain`` text, ``json_schema_extra`` carries the CEL rules.
No field has a schema default: defaults live in code (:meth:`ManagedPostgresSpec.effective`) and
show in status, so GitOps tools see no drift between what was applied and what is stored.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

GROUP = "clickhouse.cloud"
VERSION = "v1alpha1"
KIND = "ManagedPostgres"
PLURAL = "managedpostgreses"
SINGULAR = "managedpostgres"
SHORT_NAMES = ["mpg"]
API_VERSION = f"{GROUP}/{VERSION}"

DEFAULT_HA_TYPE = "none"
TAG_PATTERN = r"^[a-zA-Z0-9._-]+$"
MAX_USER_TAGS = 47  # the API allows 50; the operator adds three ownership tags
RESERVED_TAG_PREFIXES = ("chc_", "mpg-operator.")


TagValue = Annotated[str, Field(min_length=1, max_length=256, pattern=TAG_PATTERN)]


def _immutable(field: str) -> dict[str, Any]:
    return {
        "x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": f"{field} is immutable"}
        ]
    }


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
        description="Name of the Secret, in the namespace of the ManagedPostgres.",
    )


class ManagedPostgresSpec(_Model):
    """Desired state of a ClickHouse Cloud Managed Postgres service."""

    provider: str = Field(
        description="Cloud provider of the service. Immutable.",
        json_schema_extra={"enum": ["aws", "gcp"], **_immutable("provider")},
    )
    region: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9][a-z0-9-]*[a-z0-9]$",
        description="Cloud region of the service, e.g. us-west-2. Immutable.",
        json_schema_extra=_immutable("region"),
    )
    size: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$",
        description=(
            "Instance size, e.g. r8gd.large. Can be changed (resize). The list of sizes "
            "changes over time, so ClickHouse Cloud validates it: an unknown size shows "
            "as condition Synced=False with the API's message."
        ),
    )
    postgres_version: str | None = Field(
        default=None,
        alias="postgresVersion",
        description='Major PostgreSQL version ("17" or "18"). Immutable. Defaults to the server default (17).',
        json_schema_extra={"enum": ["17", "18"], **_immutable("postgresVersion")},
    )
    ha_type: str | None = Field(
        default=None,
        alias="haType",
        description=(
            "High availability: none (no standby), async (one asynchronous standby) or "
            "sync (two synchronous standbys). Defaults to none. Can be changed."
        ),
        json_schema_extra={"enum": ["none", "async", "sync"]},
    )
    service_name: str | None = Field(
        default=None,
        alias="serviceName",
        min_length=1,
        max_length=50,
        description=(
            "Name of the remote service (1-50 characters). Defaults to metadata.name. "
            "Can be changed: a rename changes the hostname and CA certificate, and the "
            "connection Secret follows."
        ),
    )
    tags: dict[str, TagValue] | None = Field(
        default=None,
        description=(
            "Tags of the remote service. Keys and values: letters, digits, '.', '_' and '-' "
            "(keys up to 128, values 1-256 characters); keys starting with chc_ or "
            "mpg-operator. are reserved."
        ),
        json_schema_extra={
            "maxProperties": MAX_USER_TAGS,
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(k, k.size() <= 128 && k.matches('^[a-zA-Z0-9._-]+$'))",
                    "message": "tag keys must be 1-128 characters of letters, digits, '.', '_' or '-'",
                },
                {
                    "rule": "self.all(k, !k.startsWith('chc_') && !k.startsWith('mpg-operator.'))",
                    "message": "tag keys starting with chc_ or mpg-operator. are reserved",
                },
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
    connection_secret: SecretReference | None = Field(
        default=None,
        alias="connectionSecret",
        description=(
            "Secret the operator writes the connection details to (host, port, username, "
            "password, database, sslmode, uri, jdbcUrl, ca.crt). Defaults to <metadata.name>-connection."
        ),
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


class Condition(_Model):
    """A metav1.Condition."""

    type: str = Field(description="Ready or Synced.")
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


class ManagedPostgresStatus(_Model):
    """Observed state, written by the operator only."""

    service_id: str | None = Field(default=None, alias="serviceId", description="ID of the remote service.")
    state: str | None = Field(default=None, description="State of the remote service, verbatim (e.g. creating, running).")
    service_name: str | None = Field(default=None, alias="serviceName", description="Observed name of the remote service.")
    hostname: str | None = Field(default=None, description="Hostname of the service.")
    port: int | None = Field(default=None, description="PostgreSQL port.")
    username: str | None = Field(default=None, description="Superuser name.")
    is_primary: bool | None = Field(default=None, alias="isPrimary", description="False for a read replica.")
    provider: str | None = Field(default=None, description="Observed cloud provider.")
    region: str | None = Field(default=None, description="Observed region.")
    size: str | None = Field(default=None, description="Observed instance size.")
    ha_type: str | None = Field(default=None, alias="haType", description="Observed high-availability type.")
    postgres_version: str | None = Field(default=None, alias="postgresVersion", description="Observed major version.")
    tags: dict[str, str] | None = Field(default=None, description="Observed tags (without the operator's ownership tags).")
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
    last_synced_at: str | None = Field(
        default=None, alias="lastSyncedAt", description="When the service was last compared with the spec."
    )
    observed_generation: int | None = Field(
        default=None,
        alias="observedGeneration",
        description="The generation that is fully applied (service running with the spec's values, Secret published).",
    )
    conditions: list[Condition] | None = Field(default=None, description="Ready and Synced conditions.")
