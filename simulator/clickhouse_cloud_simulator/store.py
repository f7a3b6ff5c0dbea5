"""Organisations, API keys and Postgres services of the simulator, with their state machine.

States are a function of time: every transition is recorded as a list of ``(state, until)``
phases (plus an optional fleet operation that keeps the last phase until it finishes), so a
GET computes the current state without background timers. Delayed field changes (resize,
HA change, promote) are ``(due, attribute, value)`` entries applied when due.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import string
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from clickhouse_cloud_simulator.config import SimulatorConfig
from clickhouse_cloud_simulator.faults import Faults
from clickhouse_cloud_simulator.validation import ApiError, bad

if TYPE_CHECKING:  # pragma: no cover
    from clickhouse_cloud_simulator.postgres import PostgresFleet

log = logging.getLogger(__name__)

PASSWORD_ALPHABET = string.ascii_letters + string.digits + "_-"
CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
# Postmaster-context parameters of the pgConfig set (need a restart when the fleet is absent).
RESTART_PARAMS = frozenset({"max_connections", "max_worker_processes", "autovacuum_max_workers"})


def generate_password(length: int = 20) -> str:
    """A password like the real API's (``[A-Za-z0-9_-]``, 20 chars) that meets ``pgPassword``."""
    while True:
        pw = "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))
        if re.search("[a-z]", pw) and re.search("[A-Z]", pw) and re.search("[0-9]", pw):
            return pw


def ubid(service_id: str) -> str:
    """A 26-character base32 label derived from the id (the backend id in real hostnames)."""
    n = uuid.UUID(service_id).int
    return "".join(CROCKFORD[(n >> (5 * i)) & 31] for i in reversed(range(26)))


def slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-")
    return s or "pg"


def fake_hostname(name: str, service_id: str, region: str) -> str:
    return f"{slug(name)}-{secrets.token_hex(4)}.{ubid(service_id)}.c0.{region}.aws.pg.clickhouse.cloud"


# Without ``ipAccessList`` on create a service accepts every address on Postgres and PgBouncer
# (clickhousectl 0.5.0: "Omitting --ip-allow allows all addresses on 5432 (Postgres) and 6432 (PgBouncer)").
DEFAULT_ACCESS_RULES: tuple[dict[str, str], ...] = (
    {"source": "0.0.0.0/0", "portRange": "5432", "description": "Allow all addresses (Postgres)"},
    {"source": "0.0.0.0/0", "portRange": "6432", "description": "Allow all addresses (PgBouncer)"},
)


def new_access_rules(rules: list[dict[str, str]] | tuple[dict[str, str], ...]) -> list[dict[str, str]]:
    """Copies of access rules (without ids) with fresh rule ids."""
    return [{"id": str(uuid.uuid4()), **{k: v for k, v in rule.items() if k != "id"}} for rule in rules]


def iso_second(at: datetime) -> str:
    """``at`` to the second, ``Z`` for UTC (a target this much early is still accepted: it is moved to ``at``)."""
    return at.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_SIZE_VCPUS = {"medium": 1, "large": 2, "xlarge": 4}
_FAMILY_GIB_PER_VCPU = {"c": 2, "m": 4, "r": 8, "i": 8}


def size_vcpus(size: str) -> int:
    """vCPUs of an instance size (``r8gd.2xlarge`` -> 8; GCP ``c4-standard-8`` -> 8)."""
    if "." in size:
        part = size.split(".", 1)[1]
        if part in _SIZE_VCPUS:
            return _SIZE_VCPUS[part]
        m = re.match(r"(\d+)xlarge", part)
        return 4 * int(m.group(1)) if m else 2
    m = re.search(r"(\d+)$", size)
    return int(m.group(1)) if m else 2


def size_memory_bytes(size: str) -> int:
    per = _FAMILY_GIB_PER_VCPU.get(size[:1], 4)
    if "highmem" in size:
        per = 8
    return size_vcpus(size) * per * 1024**3


def size_storage_gib(size: str) -> int:
    """NVMe storage that comes with a size (the docs: r6gd.medium 59, r8gd.large 118)."""
    return max(59, int(59 * size_vcpus(size)))


@dataclass
class Organization:
    id: str
    name: str
    created_at: str


@dataclass
class Service:
    """One Postgres service. ``password`` is the live superuser password (never logged)."""

    id: str
    org_id: str
    name: str
    provider: str
    region: str
    postgres_version: str
    size: str
    ha_type: str
    tags: list[dict[str, str]]
    created_at: str
    created_mono: float
    is_primary: bool
    hostname: str
    port: int = 5432
    password: str = field(default="", repr=False)
    # (epoch seconds, password) from the first one on: a point-in-time restore keeps the password of its target
    password_history: list[tuple[float, str]] = field(default_factory=list, repr=False)
    parent_id: str | None = None
    source_id: str | None = None
    pg_config: dict[str, str] = field(default_factory=dict)
    pg_bouncer_config: dict[str, str] = field(default_factory=dict)
    ip_access_list: list[dict[str, str]] = field(default_factory=list)
    pending_restart: set[str] = field(default_factory=set)
    phases: list[tuple[str, float]] = field(default_factory=list)
    blocker: asyncio.Future | None = field(default=None, repr=False)
    promoting: asyncio.Future | None = field(default=None, repr=False)  # pg_promote() of a replica's server
    pending: list[tuple[float, str, Any]] = field(default_factory=list)
    deleting_until: float | None = None
    forced_state: str | None = None
    cert_generation: int = 0
    started_mono: float = 0.0
    has_server: bool = False

    @property
    def storage_size(self) -> int:
        return size_storage_gib(self.size)

    def connection_string(self) -> str:
        return f"postgres://postgres:{self.password}@{self.hostname}:{self.port}/postgres?channel_binding=require"


class Store:
    """All organisations, keys and services of one simulator."""

    def __init__(
        self, config: SimulatorConfig, faults: Faults, fleet: PostgresFleet | None = None, clock=time.monotonic
    ) -> None:
        self.config = config
        self.faults = faults
        self.fleet = fleet
        self.clock = clock
        self.orgs: dict[str, Organization] = {}
        self.keys: dict[str, tuple[str, str]] = {}  # key id -> (secret, org id)
        self._services: dict[str, Service] = {}
        self._tasks: set[asyncio.Task] = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- organisations and keys ---------------------------------------------------------------
    def add_org(self, org_id: str | None = None, name: str | None = None) -> Organization:
        org_id = (org_id or str(uuid.uuid4())).lower()
        if org_id not in self.orgs:
            self.orgs[org_id] = Organization(org_id, name or self.config.org_name, iso_now())
        return self.orgs[org_id]

    def add_key(
        self, key_id: str | None = None, key_secret: str | None = None, org_id: str | None = None
    ) -> tuple[str, str, str]:
        """Register an API key (for ``org_id``, created when new); returns (key id, secret, org id)."""
        org = self.add_org(org_id)
        key_id = key_id or secrets.token_hex(10)
        key_secret = key_secret or secrets.token_urlsafe(30)
        self.keys[key_id] = (key_secret, org.id)
        return key_id, key_secret, org.id

    def authenticate(self, key_id: str, key_secret: str) -> str | None:
        """The org id of a valid key, else None (constant-time secret comparison)."""
        entry = self.keys.get(key_id)
        if entry is None or not secrets.compare_digest(entry[0].encode(), key_secret.encode()):
            return None
        return entry[1]

    # -- background work ---------------------------------------------------------------------
    def _spawn(self, coro) -> asyncio.Future:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is None or (self.loop is not None and running is not self.loop):
            assert self.loop is not None, "the simulator is not started"
            return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop), loop=self.loop)
        task = running.create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("postgres fleet operation failed: %s", type(t.exception()).__name__)

        task.add_done_callback(done)
        return task

    async def close(self) -> None:
        """Wait for in-flight fleet operations (bounded), then cancel the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=10)
            for t in pending:
                t.cancel()

    async def _settle(self, svc: Service) -> None:
        """Wait (bounded) for a running fleet operation of ``svc`` (a restart, a promotion) before the next one."""
        for pending in (svc.blocker, svc.promoting):
            if pending is not None and not pending.done():
                await asyncio.wait([pending], timeout=60)

    async def _fleet(self, op: str, coro) -> Any:
        try:
            return await coro
        except ApiError:
            raise
        except Exception as exc:  # noqa: BLE001 - any fleet failure is a server-side error
            log.warning("postgres fleet %s failed: %s", op, type(exc).__name__)
            raise ApiError(500, f"Postgres server operation '{op}' failed") from None

    # -- time-based state ------------------------------------------------------------------------
    def state_of(self, svc: Service) -> str:
        now = self.clock()
        if svc.forced_state:
            return svc.forced_state
        if svc.deleting_until is not None:
            return "deleting"
        for state, until in svc.phases:
            if now < until:
                return state
        if svc.blocker is not None:
            if not svc.blocker.done():
                return svc.phases[-1][0] if svc.phases else "creating"
            if svc.blocker.cancelled() or svc.blocker.exception() is not None:
                return "unavailable"
        return "running"

    def refresh(self) -> None:
        """Apply due delayed changes and remove services whose deletion finished."""
        now = self.clock()
        for svc in list(self._services.values()):
            if svc.deleting_until is not None and now >= svc.deleting_until:
                del self._services[svc.id]
                if svc.has_server and self.fleet is not None:
                    self._spawn(self.fleet.destroy(svc.id))
                continue
            if svc.pending:
                keep = []
                for due, attr, value in svc.pending:
                    if now >= due:
                        setattr(svc, attr, value)
                    else:
                        keep.append((due, attr, value))
                svc.pending = keep

    @property
    def services(self) -> dict[str, Service]:
        """Current services by id (refreshed)."""
        self.refresh()
        return dict(self._services)

    def list(self, org_id: str) -> list[Service]:
        self.refresh()
        return sorted((s for s in self._services.values() if s.org_id == org_id), key=lambda s: s.created_mono)

    def get(self, org_id: str, service_id: str) -> Service:
        self.refresh()
        svc = self._services.get(service_id.lower())
        if svc is None or svc.org_id != org_id:
            raise ApiError(404, f"Postgres service {service_id} not found")
        return svc

    def _alive(self, svc: Service) -> None:
        if svc.deleting_until is not None:
            raise bad("The Postgres service is being deleted")

    def _check_quota(self, org_id: str) -> None:
        count = sum(1 for s in self._services.values() if s.org_id == org_id)
        if count >= self.config.service_quota:
            raise ApiError(
                409,
                f"Managed Postgres service limit reached for this organization ({self.config.service_quota} services)",
            )

    PROVISIONING = ("creating", "restoring_backup", "replaying_wal", "finalizing_restore")

    def has_backup(self, svc: Service) -> bool:
        """A first backup exists once provisioning finished and ``first_backup_seconds`` passed."""
        if self.state_of(svc) in self.PROVISIONING:
            return False
        return self.clock() >= svc.created_mono + self.config.first_backup_seconds

    def backup_owner(self, svc: Service) -> Service:
        """Whose backups restore ``svc``: a read replica's are its primary's (it holds the same data)."""
        parent = self._services.get(svc.parent_id) if svc.parent_id is not None else None
        return parent if parent is not None and not svc.is_primary else svc

    def earliest_restore(self, svc: Service) -> datetime | None:
        """The earliest point-in-time restore target (None before the first backup).

        With a server, also not before its real base backup (the one a restore replays WAL from). A read
        replica's are its primary's."""
        owner = self.backup_owner(svc)
        if not self.has_backup(owner):
            return None
        now_wall = datetime.now(UTC)
        age = self.clock() - owner.created_mono
        first_backup = now_wall - timedelta(seconds=age - self.config.first_backup_seconds)
        earliest = max(first_backup, now_wall - timedelta(days=self.config.retention_days))
        if owner.has_server and self.fleet is not None:
            base = self.fleet.restore_window_start(owner.id)
            if base is None:
                return None
            earliest = max(earliest, datetime.fromtimestamp(base, UTC))
        return earliest

    @staticmethod
    def password_at(svc: Service, at: datetime) -> str:
        """The service's password at ``at`` (its first one before that)."""
        stamp = at.timestamp()
        current = svc.password_history[0][1] if svc.password_history else svc.password
        for since, password in svc.password_history:
            if since <= stamp:
                current = password
        return current

    def backups(self, svc: Service) -> list[dict[str, str]]:
        """The service's base backups, newest first: the first one ``first_backup_seconds`` after
        creation, then one every ``backup_interval_seconds`` (a day), within the retention period
        (``key``, ``status``, ``lastModified``)."""
        if not self.has_backup(svc):
            return []
        now_wall = datetime.now(UTC)
        age = self.clock() - svc.created_mono
        first = now_wall - timedelta(seconds=age - self.config.first_backup_seconds)
        oldest = now_wall - timedelta(days=self.config.retention_days)
        out: list[dict[str, str]] = []
        at, n = first, 0
        while at <= now_wall:
            if at >= oldest:
                out.append(
                    {
                        "key": f"base_{1:08X}{0:08X}{2 + 2 * n:08X}",  # WAL-G style: timeline, log, segment
                        "status": "completed",
                        "lastModified": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    }
                )
            at, n = at + timedelta(seconds=max(self.config.backup_interval_seconds, 0.001)), n + 1
        return out[::-1]

    def _create_phases(self, seconds: float) -> list[tuple[str, float]]:
        if self.faults.stuck_creating:
            return [("creating", math.inf)]
        return [("creating", self.clock() + seconds)]

    async def _start_server(
        self,
        svc: Service,
        copy_of: Service | None = None,
        *,
        standby: bool = False,
        restore_target: datetime | None = None,
    ) -> None:
        """Start the service's server; with `copy_of` a streaming hot standby of that server (`standby`, a
        read replica) or its point-in-time restore at `restore_target` (base backup + archived WAL)."""
        if self.fleet is None:
            return
        source = copy_of.id if copy_of is not None and copy_of.has_server else None
        if copy_of is not None:
            await self._settle(copy_of)
        kwargs: dict[str, Any] = {"standby_of": source} if standby else {"copy_of": source}
        if restore_target is not None and source is not None:
            kwargs = {"restore_of": source, "restore_target": restore_target}
        endpoint = await self._fleet(
            "create", self.fleet.create(svc.id, svc.password, version=svc.postgres_version, **kwargs)
        )
        svc.hostname, svc.port, svc.has_server = endpoint.host, endpoint.port, True
        self.fleet.set_access_rules(svc.id, svc.ip_access_list)
        self.fleet.set_pooler_config(svc.id, svc.pg_bouncer_config)
        if svc.pg_config or source is not None:  # a copy brings the source's settings: replace them
            try:
                need = await self.fleet.apply_config(svc.id, dict(svc.pg_config), replace=source is not None)
            except ValueError as exc:
                await self.fleet.destroy(svc.id)
                raise bad(f"PostgreSQL rejected the configuration: {str(exc)[:300]}") from None
            if need:  # a new service starts with its configuration in force
                await self._fleet("restart", self.fleet.restart(svc.id))

    def _new_service(self, org_id: str, **fields: Any) -> Service:
        sid = str(uuid.uuid4())
        now = self.clock()
        svc = Service(
            id=sid,
            org_id=org_id,
            created_at=iso_now(),
            created_mono=now,
            started_mono=now,
            hostname=fake_hostname(fields["name"], sid, fields["region"]),
            **fields,
        )
        svc.password_history.append((time.time(), svc.password))
        return svc

    # -- operations ----------------------------------------------------------------------------
    async def create(self, org_id: str, fields: dict[str, Any]) -> Service:
        """Create a primary service from validated fields; returns it (password set)."""
        self.refresh()
        self._check_quota(org_id)
        svc = self._new_service(
            org_id,
            name=fields["name"],
            provider=fields["provider"],
            region=fields["region"],
            postgres_version=fields["postgres_version"],
            size=fields["size"],
            ha_type=fields["ha_type"],
            tags=fields["tags"],
            is_primary=True,
            password=generate_password(),
            pg_config=fields["pg_config"],
            pg_bouncer_config=fields["pg_bouncer_config"],
            ip_access_list=new_access_rules(
                DEFAULT_ACCESS_RULES if fields.get("ip_access_list") is None else fields["ip_access_list"]
            ),
        )
        svc.phases = self._create_phases(self.config.create_seconds)
        await self._start_server(svc)
        self._services[svc.id] = svc
        return svc

    def _derived_service(self, org_id: str, origin: Service, fields: dict[str, Any], **extra: Any) -> Service:
        """A replica or restore: provider, region, version, size, password, config and access rules
        come from ``origin`` (the rules as copies with their own ids)."""
        return self._new_service(
            org_id,
            name=fields["name"],
            provider=origin.provider,
            region=origin.region,
            postgres_version=origin.postgres_version,
            size=origin.size,
            ha_type="none",
            tags=fields["tags"],
            password=extra.pop("password", origin.password),
            pg_config=fields["pg_config"] if fields["pg_config"] is not None else dict(origin.pg_config),
            pg_bouncer_config=(
                fields["pg_bouncer_config"]
                if fields["pg_bouncer_config"] is not None
                else dict(origin.pg_bouncer_config)
            ),
            ip_access_list=new_access_rules(origin.ip_access_list),
            **extra,
        )

    async def create_replica(self, org_id: str, parent_id: str, fields: dict[str, Any]) -> Service:
        parent = self.get(org_id, parent_id)
        self._alive(parent)
        if not parent.is_primary:
            raise bad("Cannot create a read replica of a read replica")
        if not self.has_backup(parent):
            raise bad("Parent server is not ready for read replicas. There are no backups, yet.")
        self._check_quota(org_id)
        svc = self._derived_service(org_id, parent, fields, is_primary=False, parent_id=parent.id)
        svc.phases = self._create_phases(self.config.replica_seconds)
        await self._start_server(svc, copy_of=parent, standby=True)
        self._services[svc.id] = svc
        return svc

    async def restore(self, org_id: str, source_id: str, fields: dict[str, Any]) -> Service:
        source = self.get(org_id, source_id)
        self._alive(source)
        earliest = self.earliest_restore(source)
        if earliest is None:
            raise bad("Source server has no backups, yet. Try again later.")
        now_wall = datetime.now(UTC)
        target: datetime = fields["restore_target"]
        if not earliest - timedelta(seconds=1) <= target <= now_wall + timedelta(seconds=1):
            raise bad(
                "restoreTarget must be within the backup retention period: between "
                f"{iso_second(earliest)} and {iso_second(now_wall)}"
            )
        target = min(max(target, earliest), now_wall)  # the closest recovery point (the window's edges are rounded)
        self._check_quota(org_id)
        svc = self._derived_service(
            org_id, source, fields, is_primary=True, source_id=source.id, password=self.password_at(source, target)
        )
        step = self.config.restore_phase_seconds
        t = self.clock()
        if self.faults.stuck_creating:
            svc.phases = [("creating", math.inf)]
        else:
            svc.phases = [
                (state, t + step * (i + 1))
                for i, state in enumerate(("creating", "restoring_backup", "replaying_wal", "finalizing_restore"))
            ]
        await self._start_server(svc, copy_of=self.backup_owner(source), restore_target=target)
        self._services[svc.id] = svc
        return svc

    async def patch(self, org_id: str, service_id: str, changes: dict[str, Any]) -> Service:
        svc = self.get(org_id, service_id)
        self._alive(svc)
        if not svc.is_primary:
            raise bad("Read replicas cannot be modified directly! Please modify the parent database instead.")
        now = self.clock()
        access = changes.get("ip_access_list")
        if access is not None:  # checked in full before anything changes
            known = {rule["id"] for rule in svc.ip_access_list}
            missing = [rule_id for rule_id in access["remove"] if rule_id not in known]
            if missing:
                raise bad(f"Access rule {missing[0]} not found on this Postgres service")
            kept = [rule for rule in svc.ip_access_list if rule["id"] not in set(access["remove"])]
            present = {(rule["source"], rule["portRange"]) for rule in kept}
            for rule in access["add"]:
                if (rule["source"], rule["portRange"]) in present:
                    raise bad(f"An access rule for {rule['source']} on {rule['portRange']} already exists")
        if "name" in changes and changes["name"] != svc.name:
            svc.name = changes["name"]
            if not svc.has_server:
                svc.hostname = fake_hostname(svc.name, svc.id, svc.region)
            svc.cert_generation += 1
        for attr in ("size", "ha_type"):
            if attr in changes:
                svc.pending = [p for p in svc.pending if p[1] != attr]
                if changes[attr] != getattr(svc, attr):
                    due = now + self.config.resize_seconds
                    if self.faults.flip_back:  # the API has been seen to show the target, revert, then land
                        svc.pending.append((now + 0.2 * self.config.resize_seconds, attr, changes[attr]))
                        svc.pending.append((now + 0.4 * self.config.resize_seconds, attr, getattr(svc, attr)))
                    svc.pending.append((due, attr, changes[attr]))
        if access is not None:
            svc.ip_access_list = kept + new_access_rules(access["add"])
            if svc.has_server and self.fleet is not None:
                self.fleet.set_access_rules(svc.id, svc.ip_access_list)
        if changes.get("tags") is not None:
            svc.tags = changes["tags"]
        elif not self.config.tags_merge_patch:
            svc.tags = []
        return svc

    async def delete(self, org_id: str, service_id: str) -> None:
        svc = self.get(org_id, service_id)
        if svc.deleting_until is not None:
            return
        replicas = [s for s in self._services.values() if s.parent_id == svc.id]
        if replicas:
            raise ApiError(
                409,
                f"Cannot delete this service: {len(replicas)} read replica(s) depend on it. Delete the read replicas first.",
            )
        svc.deleting_until = self.clock() + self.config.delete_seconds
        svc.parent_id = None  # a replica being deleted no longer holds its primary

    async def set_password(self, org_id: str, service_id: str, password: str | None) -> tuple[Service, str | None]:
        """Set (or generate) the superuser password; returns the generated one, if any."""
        svc = self.get(org_id, service_id)
        self._alive(svc)
        if not svc.is_primary:
            raise bad("Superuser password cannot be updated for read replicas!")
        generated = None
        if password is None:
            password = generated = generate_password()
        targets = [svc] + [s for s in self._services.values() if s.parent_id == svc.id]
        for target in targets:
            if target.has_server and self.fleet is not None:
                await self._settle(target)
                await self._fleet("set_password", self.fleet.set_password(target.id, password))
            target.password = password
            target.password_history.append((time.time(), password))
        return svc, generated

    async def command(self, org_id: str, service_id: str, command: str) -> Service:
        svc = self.get(org_id, service_id)
        self._alive(svc)
        state = self.state_of(svc)
        if command == "restart":
            if state not in ("running", "restarting", "unavailable"):
                raise bad(f"The Postgres service cannot be restarted while it is {state}")
            svc.phases = [("restarting", self.clock() + self.config.restart_seconds)]
            svc.pending_restart.clear()
            svc.forced_state = None if svc.forced_state == "unavailable" else svc.forced_state
            svc.started_mono = self.clock() + self.config.restart_seconds
            self._restart_server(svc)
        elif command == "promote":
            if svc.is_primary:
                raise bad("Non read replica servers cannot be promoted.")
            due = self.clock() + self.config.promote_seconds
            svc.pending = [p for p in svc.pending if p[1] not in ("is_primary", "parent_id")]
            svc.pending += [(due, "is_primary", True), (due, "parent_id", None)]
            if svc.has_server and self.fleet is not None and svc.promoting is None:
                fleet, previous = self.fleet, svc.blocker

                async def promote() -> None:
                    if previous is not None and not previous.done():
                        await asyncio.wait([previous], timeout=60)
                    await fleet.promote(svc.id)

                svc.promoting = self._spawn(promote())
        elif command == "switchover" and svc.ha_type != "none" and state == "running":
            # The HA standby takes over: sessions drop and a server starts anew (a restart here); the API
            # shows nothing. Without HA it is accepted and nothing happens, as on the real API.
            svc.started_mono = self.clock()
            svc.phases = [("running", svc.started_mono)]  # while the server restarts (``blocker``)
            self._restart_server(svc)
        return svc

    def _restart_server(self, svc: Service) -> None:
        """Restart the service's server in the background, after the fleet operation in flight (the state
        stays what the phases say until it is done: ``blocker``)."""
        if not svc.has_server or self.fleet is None:
            return
        fleet, previous = self.fleet, svc.blocker

        async def restart() -> None:
            if previous is not None and not previous.done():
                await asyncio.wait([previous], timeout=60)
            await fleet.restart(svc.id)

        svc.blocker = self._spawn(restart())

    async def set_config(
        self, org_id: str, service_id: str, pg: dict[str, str] | None, bouncer: dict[str, str] | None, *, replace: bool
    ) -> tuple[Service, list[str]]:
        """Replace (POST) or merge (PATCH) the configuration; returns names needing a restart."""
        svc = self.get(org_id, service_id)
        self._alive(svc)
        old = dict(svc.pg_config)
        if replace:
            new_pg, new_bouncer = dict(pg or {}), dict(bouncer or {})
        else:
            new_pg = {**svc.pg_config, **(pg or {})}
            new_bouncer = {**svc.pg_bouncer_config, **(bouncer or {})}
        changed = {k for k in set(old) | set(new_pg) if old.get(k) != new_pg.get(k)}
        if svc.has_server and self.fleet is not None:
            # POST replaces (the fleet resets what is absent); PATCH sends only the given keys
            sent = new_pg if replace else dict(pg or {})
            await self._settle(svc)
            try:
                need = set(await self.fleet.apply_config(svc.id, sent, replace=replace))
            except ValueError as exc:
                raise bad(f"PostgreSQL rejected the configuration: {str(exc)[:300]}") from None
            except Exception as exc:  # noqa: BLE001
                log.warning("postgres fleet apply_config failed: %s", type(exc).__name__)
                raise ApiError(500, "Postgres server operation 'apply_config' failed") from None
            svc.pending_restart |= need & changed
            self.fleet.set_pooler_config(svc.id, new_bouncer)
        else:
            svc.pending_restart |= changed & RESTART_PARAMS
        svc.pg_config, svc.pg_bouncer_config = new_pg, new_bouncer
        return svc, sorted(svc.pending_restart)

    # -- out-of-band changes (tests: drift made behind the operator's back) ------------------------
    def patch_out_of_band(self, service_id: str, **fields: Any) -> Service:
        """Change a service directly, e.g. ``size=``, ``ha_type=``, ``tags=``, ``name=``, ``state=``.

        ``state="unavailable"`` (or any value) pins the reported state; ``state=None`` unpins it.
        """
        svc = self._services[service_id]
        for key, value in fields.items():
            if key == "state":
                svc.forced_state = value
            elif key in ("password", "id", "org_id"):
                raise ValueError(f"{key} cannot be changed out of band")
            elif hasattr(svc, key):
                setattr(svc, key, value)
            else:
                raise AttributeError(key)
        return svc
