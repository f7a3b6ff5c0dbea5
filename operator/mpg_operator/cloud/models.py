"""Wire models of the ClickHouse Cloud Managed Postgres API.

Shared by the API client and the simulator: these classes *are* the wire contract
(see ``spec/clickhouse-cloud-openapi-postgres.json``).

Rules that hold for every model here:

* Unknown fields are kept (``extra="allow"``): the API adds fields over time.
* Enumerations are open strings; the known values live in ``StrEnum`` classes for
  comparison only, so a new state or size never breaks parsing.
* ``password`` and ``connectionString`` are :class:`pydantic.SecretStr`: they never
  appear in ``repr``, ``str``, logs or validation errors. Only :meth:`WireModel.to_wire`
  (used when a body is put on the wire) reveals them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
)
from pydantic.alias_generators import to_camel

from mpg_operator.cloud.ids import CanonicalId


def _serialize_secret(value: SecretStr | None, info: SerializationInfo) -> str | None:
    if value is None:
        return None
    if info.context and info.context.get("reveal_secrets"):
        return value.get_secret_value()
    return str(value)  # '**********'


Secret = Annotated[SecretStr, PlainSerializer(_serialize_secret, when_used="always")]
"""A credential: masked everywhere except in :meth:`WireModel.to_wire`."""

ConfigValue = str | int | float
"""pgConfig values may be sent as numbers or strings; the API returns strings."""


_SENSITIVE_NAME_PARTS = ("password", "connection", "secret")


def _mask_sensitive(name: str, value: Any) -> Any:
    """Mask an unknown field's value when its name looks like a credential."""
    if isinstance(value, dict):
        return {k: _mask_sensitive(str(k), v) for k, v in value.items()}
    sensitive = any(part in name.lower() for part in _SENSITIVE_NAME_PARTS)
    if sensitive and value is not None and not isinstance(value, SecretStr):
        return "**********"
    return value


class WireModel(BaseModel):
    """Base of all wire models: camelCase aliases, unknown fields kept, inputs hidden in errors.

    Unknown fields whose names contain ``password``, ``connection`` or ``secret`` (e.g. a
    future ``superuserPassword``) are masked in ``repr``/``str`` too
    (not in ``model_dump``: do not log dumps of response models).
    """

    model_config = ConfigDict(
        extra="allow",
        populate_by_name=True,
        alias_generator=to_camel,
        hide_input_in_errors=True,
    )

    def __repr_args__(self):  # type: ignore[no-untyped-def]
        extra = self.__pydantic_extra__ or {}
        for name, value in super().__repr_args__():
            if name is not None and name in extra:
                value = _mask_sensitive(name, value)
            yield name, value

    def to_wire(self) -> dict[str, Any]:
        """The JSON body for the wire: camelCase, ``None`` omitted, secrets revealed."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True, context={"reveal_secrets": True})


# --- open enumerations -------------------------------------------------------------


class ServiceState(StrEnum):
    """Known values of ``state`` (``pgStateProperty``). The API may return others."""

    CREATING = "creating"
    RESTARTING = "restarting"
    RUNNING = "running"
    REPLAYING_WAL = "replaying_wal"
    RESTORING_BACKUP = "restoring_backup"
    FINALIZING_RESTORE = "finalizing_restore"
    UNAVAILABLE = "unavailable"
    STOPPED = "stopped"
    DELETING = "deleting"


class HaType(StrEnum):
    NONE = "none"
    ASYNC = "async"
    SYNC = "sync"


class Provider(StrEnum):
    AWS = "aws"
    GCP = "gcp"


class StateCommand(StrEnum):
    RESTART = "restart"
    PROMOTE = "promote"
    SWITCHOVER = "switchover"


# --- resources -----------------------------------------------------------------------


class Tag(WireModel):
    """``ResourceTagsV1``: key ``^[a-zA-Z0-9._-]+$`` (1-128), value same pattern (<=256)."""

    key: str
    value: str | None = None


class Organization(WireModel):
    id: CanonicalId | None = None
    name: str | None = None
    created_at: str | None = None


class PostgresServiceListItem(WireModel):
    """An item of ``GET /postgres``: no credentials, no hostname."""

    id: CanonicalId | None = None
    name: str | None = None
    provider: str | None = None
    region: str | None = None
    postgres_version: str | None = None
    size: str | None = None
    ha_type: str | None = None
    tags: list[Tag] | None = None
    state: str | None = None
    created_at: str | None = None
    is_primary: bool | None = None

    def tag_map(self) -> dict[str, str | None]:
        """Tags as a dict (later duplicates win)."""
        return {t.key: t.value for t in self.tags or []}


class PostgresService(PostgresServiceListItem):
    """``PostgresService``: returned by get, create, patch, state, readReplica, restoredService."""

    storage_size: int | None = None
    hostname: str | None = None
    username: str | None = None
    password: Secret | None = None
    connection_string: Secret | None = None


class PostgresServiceCreateRequest(WireModel):
    """``PostgresServicePostRequest``. There is no password field: the server generates one."""

    name: str
    provider: str
    region: str
    size: str
    postgres_version: str | None = None
    ha_type: str | None = None
    tags: list[Tag] | None = None
    pg_config: dict[str, ConfigValue] | None = None
    pg_bouncer_config: dict[str, str] | None = None


class PostgresServicePatchRequest(WireModel):
    """``PostgresServicePatchRequest``. Omitting ``tags`` clears every tag on the server."""

    name: str | None = None
    size: str | None = None
    ha_type: str | None = None
    tags: list[Tag] | None = None


class PostgresReadReplicaRequest(WireModel):
    name: str
    pg_config: dict[str, ConfigValue] | None = None
    pg_bouncer_config: dict[str, str] | None = None
    tags: list[Tag] | None = None


class PostgresRestoreRequest(WireModel):
    name: str
    restore_target: str
    pg_config: dict[str, ConfigValue] | None = None
    pg_bouncer_config: dict[str, str] | None = None
    tags: list[Tag] | None = None


class PostgresSetPasswordRequest(WireModel):
    """Omit ``password`` to have the server generate (and return, once) a new one."""

    password: Secret | None = None


class PostgresPasswordResult(WireModel):
    """``PostgresServicePasswordResource``: ``password`` only when the server generated it."""

    password: Secret | None = None


class PostgresSetStateRequest(WireModel):
    command: str


class PostgresConfig(WireModel):
    """``postgresInstanceConfig``: both sections are required on the wire."""

    pg_config: dict[str, ConfigValue] = Field(default_factory=dict)
    pg_bouncer_config: dict[str, str] = Field(default_factory=dict)


class PostgresConfigUpdateResult(PostgresConfig):
    """``postgresInstanceUpdateConfigResponse``: ``message`` tells about restart requirements."""

    message: str | None = None


class MetricDataPoint(WireModel):
    timestamp: int
    value: float


class MetricSeries(WireModel):
    label: str
    data_points: list[MetricDataPoint] = Field(default_factory=list)


class Metric(WireModel):
    key: str
    name: str
    unit: str
    description: str
    series: list[MetricSeries] = Field(default_factory=list)


class PostgresMetrics(WireModel):
    metrics: list[Metric] = Field(default_factory=list)


class SlowQueryPattern(WireModel):
    """``PostgresSlowQueryPattern`` (durations in microseconds). ``query_id`` is opaque: pass it back verbatim."""

    query_id: str | None = None
    query_text: str | None = None
    db_name: str | None = None
    db_user: str | None = None
    db_operation: str | None = None
    app: str | None = None
    call_count: int | None = None
    error_count: int | None = None
    total_duration_us: int | None = None
    avg_duration_us: int | None = None
    max_duration_us: int | None = None
    p50_duration_us: int | None = None
    p95_duration_us: int | None = None
    p99_duration_us: int | None = None
    total_rows: int | None = None
    total_shared_blks_read: int | None = None
    total_shared_blks_hit: int | None = None
    total_cpu_time_us: int | None = None
    total_wal_bytes: int | None = None


class QueryExecution(WireModel):
    """``PostgresQueryExecution``: one recent execution (many counters, kept as extra fields)."""

    timestamp: str | None = None
    query_id: str | None = None
    query_text: str | None = None
    db_name: str | None = None
    db_user: str | None = None
    db_operation: str | None = None
    duration_us: int | None = None
    rows: int | None = None
    err_message: str | None = None
    err_sqlstate: str | None = None


class SlowQueryPatternDetail(WireModel):
    """``PostgresSlowQueryPatternDetail``."""

    aggregate: SlowQueryPattern | None = None
    recent_executions: list[QueryExecution] = Field(default_factory=list)


# --- envelopes -----------------------------------------------------------------------


class ErrorEnvelope(WireModel):
    """``{"status": 400, "error": "BAD_REQUEST: ...", "requestId": "..."}``."""

    status: int | None = None
    error: str | None = None
    request_id: str | None = None


__all__ = [
    "ConfigValue",
    "ErrorEnvelope",
    "HaType",
    "Metric",
    "MetricDataPoint",
    "MetricSeries",
    "Organization",
    "PostgresConfig",
    "PostgresConfigUpdateResult",
    "PostgresMetrics",
    "PostgresPasswordResult",
    "PostgresReadReplicaRequest",
    "PostgresRestoreRequest",
    "PostgresService",
    "PostgresServiceCreateRequest",
    "PostgresServiceListItem",
    "PostgresServicePatchRequest",
    "PostgresSetPasswordRequest",
    "PostgresSetStateRequest",
    "Provider",
    "QueryExecution",
    "Secret",
    "ServiceState",
    "SlowQueryPattern",
    "SlowQueryPatternDetail",
    "StateCommand",
    "Tag",
    "WireModel",
]
