"""What the user asked for: a ManagedPostgres spec resolved against the operator's defaults."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from mpg_operator.cloud.ids import canonical_id
from mpg_operator.cloud.models import (
    PostgresReadReplicaRequest,
    PostgresRestoreRequest,
    PostgresServiceCreateRequest,
    PostgresServicePatchRequest,
    Tag,
)
from mpg_operator.reconcile.connection import SecretShape
from mpg_operator.resource import (
    ANNOTATION_PAUSED,
    ANNOTATION_PROMOTE,
    ANNOTATION_RESTART,
    ANNOTATION_ROTATE_PASSWORD,
    ANNOTATION_SWITCHOVER,
    DEFAULT_HA_TYPE,
    AdoptionPolicy,
    DeletionPolicy,
    ManagedPostgresSpec,
    ManagementPolicy,
    OnServiceMissing,
    RestartPolicy,
)

TAG_UID = "mpg-operator.uid"
TAG_NAMESPACE = "mpg-operator.namespace"
TAG_NAME = "mpg-operator.name"
OWNER_TAGS = (TAG_UID, TAG_NAMESPACE, TAG_NAME)


@dataclass(frozen=True)
class OperatorDefaults:
    """Operator-wide settings that fill what a spec leaves out."""

    deletion_policy: str = DeletionPolicy.DELETE.value


@dataclass(frozen=True)
class RestoreSource:
    """spec.restoreFrom: what to restore (a ManagedPostgres of the namespace, or a service id) and when."""

    point_in_time: str
    managed_postgres: str | None = None
    service_id: str | None = None


@dataclass(frozen=True)
class Desired:
    """The desired remote service and Secret of one ManagedPostgres, defaults applied."""

    namespace: str
    name: str
    uid: str
    generation: int
    service_name: str
    provider: str | None
    """None: inherited (a read replica from its primary, a restore from its source)."""
    region: str | None
    size: str | None
    """None: inherited (a replica's is its primary's, a restore's its backup's)."""
    postgres_version: str | None
    ha_type: str | None
    """None: assigned by ClickHouse Cloud (a replica, or a restore without spec.haType)."""
    user_tags: dict[str, str] = field(default_factory=dict)
    connection_secret_name: str = ""
    deletion_policy: str = DeletionPolicy.DELETE.value
    credentials_secret_name: str | None = None
    secret_shape: SecretShape = field(default_factory=SecretShape)
    password_secret: tuple[str, str] | None = None
    """(Secret name, key) of a password the user brings."""
    adopt_service_id: str | None = None
    """spec.serviceId: an existing service to take over."""
    adoption_policy: str = AdoptionPolicy.REATTACH.value
    management_policy: str = ManagementPolicy.FULL.value
    deletion_protection: bool = False
    on_service_missing: str = OnServiceMissing.FAIL.value
    paused: bool = False
    """The annotation clickhouse.cloud/paused is "true": no remote call at all."""
    rotate_token: str | None = None
    """The clickhouse.cloud/rotate-password annotation's value."""
    pg_config: dict[str, str] = field(default_factory=dict)
    pg_bouncer_config: dict[str, str] = field(default_factory=dict)
    restart_policy: str = RestartPolicy.NEVER.value
    command_tokens: dict[str, str] = field(default_factory=dict)
    """State command (restart, switchover, promote) -> the token of its annotation."""
    read_replica_of: str | None = None
    """spec.readReplicaOf.name: the primary's ManagedPostgres (same namespace)."""
    restore_from: RestoreSource | None = None

    @property
    def config_digest(self) -> str:
        """A short digest of spec.pgConfig and spec.pgBouncerConfig, to recognise a change."""
        payload = {"pg": self.pg_config, "bouncer": self.pg_bouncer_config}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def observe_only(self) -> bool:
        return self.management_policy == ManagementPolicy.OBSERVE

    @property
    def owner_tags(self) -> dict[str, str]:
        return {TAG_UID: self.uid, TAG_NAMESPACE: self.namespace, TAG_NAME: self.name}

    @property
    def all_tags(self) -> dict[str, str]:
        """User tags plus the ownership tags: the complete set every PATCH must send."""
        return {**self.user_tags, **self.owner_tags}

    def tag_list(self) -> list[Tag]:
        return [Tag(key=k, value=v) for k, v in sorted(self.all_tags.items())]

    def create_request(self) -> PostgresServiceCreateRequest:
        if self.provider is None or self.region is None or self.size is None:
            raise ValueError("a new service needs provider, region and size (only replicas and restores inherit them)")
        return PostgresServiceCreateRequest(
            name=self.service_name,
            provider=self.provider,
            region=self.region,
            size=self.size,
            postgres_version=self.postgres_version,
            ha_type=self.ha_type,
            tags=self.tag_list(),
            # The API refuses empty maps here: a new service starts with the configuration, or none.
            pg_config=dict(self.pg_config) or None,
            pg_bouncer_config=dict(self.pg_bouncer_config) or None,
        )

    def read_replica_request(self) -> PostgresReadReplicaRequest:
        """The readReplica request: name, owner tags and configuration (the rest is the primary's)."""
        return PostgresReadReplicaRequest(
            name=self.service_name,
            tags=self.tag_list(),
            pg_config=dict(self.pg_config) or None,
            pg_bouncer_config=dict(self.pg_bouncer_config) or None,
        )

    def restore_request(self) -> PostgresRestoreRequest:
        """The restoredService request: name, target time, owner tags and configuration."""
        assert self.restore_from is not None
        return PostgresRestoreRequest(
            name=self.service_name,
            restore_target=self.restore_from.point_in_time,
            tags=self.tag_list(),
            pg_config=dict(self.pg_config) or None,
            pg_bouncer_config=dict(self.pg_bouncer_config) or None,
        )

    def patch_request(self) -> PostgresServicePatchRequest:
        """A PATCH carrying every mutable field (tags must always be complete: omitted means cleared)."""
        return PostgresServicePatchRequest(
            name=self.service_name, size=self.size, ha_type=self.ha_type, tags=self.tag_list()
        )

    def claim_request(self) -> PostgresServicePatchRequest:
        """The PATCH that claims a service to take over: only the tags, complete (this resource's owner
        tags and the spec's), nothing else changed before the claim is confirmed."""
        return PostgresServicePatchRequest(tags=self.tag_list())

    def mutable_digest(self) -> str:
        """A short digest of the mutable fields, to recognise an update already sent."""
        payload = {
            "name": self.service_name,
            "size": self.size,
            "haType": self.ha_type,
            "tags": self.all_tags,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def desired_from(
    *,
    namespace: str,
    name: str,
    uid: str,
    generation: int,
    spec: ManagedPostgresSpec,
    defaults: OperatorDefaults,
    annotations: Mapping[str, str] | None = None,
) -> Desired:
    """Resolve a spec into a :class:`Desired`, applying defaults in code (never in the CRD)."""
    restore = spec.restore_from
    inherits = spec.read_replica_of is not None or restore is not None
    return Desired(
        namespace=namespace,
        name=name,
        uid=canonical_id(uid),
        generation=generation,
        service_name=spec.service_name or name,
        provider=spec.provider,
        region=spec.region,
        size=spec.size,
        postgres_version=spec.postgres_version,
        ha_type=spec.ha_type or (None if inherits else DEFAULT_HA_TYPE),
        user_tags=dict(spec.tags or {}),
        connection_secret_name=(spec.connection_secret.name if spec.connection_secret else f"{name}-connection"),
        deletion_policy=spec.deletion_policy or defaults.deletion_policy,
        credentials_secret_name=spec.credentials_ref.name if spec.credentials_ref else None,
        secret_shape=SecretShape(
            key_prefix=(spec.connection_secret.key_prefix or "") if spec.connection_secret else "",
            labels=dict((spec.connection_secret.labels or {}) if spec.connection_secret else {}),
            annotations=dict((spec.connection_secret.annotations or {}) if spec.connection_secret else {}),
        ),
        password_secret=(spec.password_secret_ref.name, spec.password_secret_ref.key)
        if spec.password_secret_ref
        else None,
        adopt_service_id=canonical_id(spec.service_id) if spec.service_id else None,
        adoption_policy=spec.adoption_policy or AdoptionPolicy.REATTACH.value,
        management_policy=spec.management_policy or ManagementPolicy.FULL.value,
        deletion_protection=bool(spec.deletion_protection),
        on_service_missing=spec.on_service_missing or OnServiceMissing.FAIL.value,
        paused=(annotations or {}).get(ANNOTATION_PAUSED, "").strip().lower() == "true",
        rotate_token=(annotations or {}).get(ANNOTATION_ROTATE_PASSWORD) or None,
        pg_config=dict(spec.pg_config or {}),
        pg_bouncer_config=dict(spec.pg_bouncer_config or {}),
        restart_policy=spec.restart_policy or RestartPolicy.NEVER.value,
        command_tokens={
            command: token
            for command, annotation in (
                ("restart", ANNOTATION_RESTART),
                ("switchover", ANNOTATION_SWITCHOVER),
                ("promote", ANNOTATION_PROMOTE),
            )
            if (token := (annotations or {}).get(annotation, "").strip())
        },
        read_replica_of=spec.read_replica_of.name if spec.read_replica_of else None,
        restore_from=RestoreSource(
            point_in_time=restore.point_in_time,
            managed_postgres=restore.managed_postgres,
            service_id=canonical_id(restore.service_id) if restore.service_id else None,
        )
        if restore
        else None,
    )
