"""Settings of the ClickHouse Cloud API simulator (stdlib only: imported by the fast CLI too)."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_REGIONS: tuple[str, ...] = (
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "eu-central-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "ap-south-1",
    "ca-central-1",
)


@dataclass
class SimulatorConfig:
    """Everything that shapes a simulator instance. ``None`` ids/secrets are generated at start.

    Durations are in seconds. ``real_postgres``: ``None`` = use the PostgreSQL fleet when its
    binaries are available, ``True`` = require it, ``False`` = never (fake hostnames and PEMs).
    """

    host: str = "127.0.0.1"
    port: int = 8123
    org_id: str | None = None
    org_name: str = "Simulated organization"
    key_id: str | None = None
    key_secret: str | None = None

    # state machine
    create_seconds: float = 5.0
    replica_seconds: float = 5.0
    restore_phase_seconds: float = 2.0  # each of creating/restoring_backup/replaying_wal/finalizing_restore
    restart_seconds: float = 3.0
    resize_seconds: float = 5.0
    delete_seconds: float = 2.0
    promote_seconds: float = 1.0
    first_backup_seconds: float = 10.0
    backup_interval_seconds: float = 86400.0  # base backups after the first one (daily, as documented)
    retention_days: float = 7.0

    # rate limit (per API key, fixed window); rate_limit=None or 0 switches it off
    rate_limit: int | None = 10
    rate_window: float = 10.0

    # behaviour switches
    real_postgres: bool | None = None
    postgres_base_dir: str | None = None
    redact: bool = True  # credentials only in create / generated password reset
    tags_merge_patch: bool = False  # True: a PATCH without "tags" keeps them (RFC 7396 reading)
    strict_pg_config: bool = False  # True: unknown pgConfig keys, nulls, values outside an enum -> 400 (live: dropped)
    # pgConfig keys this API does not know although its OpenAPI document lists them (a server older than
    # the client): dropped with 200 like any unknown key.
    unsupported_pg_config: tuple[str, ...] = ()
    service_quota: int = 500  # services per organization; create beyond it -> 409
    regions: tuple[str, ...] = DEFAULT_REGIONS
    sizes: tuple[str, ...] | None = None  # None: the pgSize enum of the vendored OpenAPI document
    providers: tuple[str, ...] = ("aws",)
    seed: int | None = None  # random numbers of fault injection
    access_log: bool = False

    extra: dict[str, object] = field(default_factory=dict)

    @property
    def rate_limited(self) -> bool:
        return bool(self.rate_limit) and self.rate_limit > 0  # type: ignore[operator]
