"""Day-2 operations through the API, observed on the real PostgreSQL behind each service: configuration
(reloadable vs restart-requiring), restart, switchover, replicas (config, promote, restore) and their guards."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg_helpers import connect
from support.simulator_testing import connect_service

from clickhouse_cloud_simulator.postgres import Endpoint, PostgresFleet

RESTART_MESSAGE = (
    "The changes in the following parameters require a database restart to take effect: {}. "
    "You can restart the database by using the restart endpoint."
)


async def _conn(api: Any, svc: dict[str, Any], password: str, tmp: Path) -> psycopg.AsyncConnection:
    ca = tmp / f"{svc['id']}.pem"
    ca.write_text(await api.ok("GET", f"/postgres/{svc['id']}/caCertificates"))
    return await connect(Endpoint(svc["hostname"], 5432), password, ca)


async def _one(api: Any, svc: dict[str, Any], password: str, tmp: Path, sql: str) -> Any:
    async with await _conn(api, svc, password, tmp) as conn:
        row = await (await conn.execute(sql)).fetchone()
        assert row is not None
        return row[0]


async def _until(api: Any, svc: dict[str, Any], password: str, tmp: Path, sql: str, expected: Any) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            if await _one(api, svc, password, tmp, sql) == expected:
                return
        except psycopg.Error:
            pass
        assert time.monotonic() < deadline, f"{sql!r} never gave {expected!r}"
        await asyncio.sleep(0.05)


async def test_configuration_reload_restart_and_create(pg_api: Any, tmp_path: Path) -> None:
    svc = await pg_api.create("config", pgConfig={"max_connections": 60, "statement_timeout": "30s"})
    password = svc["password"]
    await pg_api.wait_state(svc["id"], "running")
    path = f"/postgres/{svc['id']}/config"
    # created with its configuration in force, restart-requiring parameters included
    assert await _one(pg_api, svc, password, tmp_path, "SHOW max_connections") == "60"
    assert await _one(pg_api, svc, password, tmp_path, "SHOW statement_timeout") == "30s"
    assert (await pg_api.ok("GET", path))["pgConfig"] == {"max_connections": "60", "statement_timeout": "30s"}

    result = await pg_api.ok("PATCH", path, {"pgConfig": {"max_connections": 42, "work_mem": "8MB"}})
    assert result["message"] == RESTART_MESSAGE.format("max_connections")
    assert result["pgConfig"] == {"max_connections": "42", "statement_timeout": "30s", "work_mem": "8MB"}
    assert await _one(pg_api, svc, password, tmp_path, "SHOW work_mem") == "8MB"  # reloadable: at once
    assert await _one(pg_api, svc, password, tmp_path, "SHOW max_connections") == "60"  # until the restart
    assert (await pg_api.ok("GET", f"/postgres/{svc['id']}"))["state"] == "running"  # config moves no state

    started = await _one(pg_api, svc, password, tmp_path, "SELECT pg_postmaster_start_time()")
    await pg_api.ok("PATCH", f"/postgres/{svc['id']}/state", {"command": "restart"})
    assert (await pg_api.ok("GET", f"/postgres/{svc['id']}"))["state"] == "restarting"
    await pg_api.wait_state(svc["id"], "running")
    assert await _one(pg_api, svc, password, tmp_path, "SHOW max_connections") == "42"
    assert await _one(pg_api, svc, password, tmp_path, "SELECT pg_postmaster_start_time()") > started
    # nothing pending after the restart; a reloadable change says nothing about restarts
    result = await pg_api.ok("PATCH", path, {"pgConfig": {"lock_timeout": "5s"}, "pgBouncerConfig": {}})
    assert "message" not in result
    # POST replaces: what is absent is reset (max_connections back to the default, after a restart)
    result = await pg_api.ok(
        "POST", path, {"pgConfig": {"work_mem": "16MB"}, "pgBouncerConfig": {"pool_mode": "session"}}
    )
    assert result["pgConfig"] == {"work_mem": "16MB"} and result["pgBouncerConfig"] == {"pool_mode": "session"}
    assert result["message"] == RESTART_MESSAGE.format("max_connections")
    assert await _one(pg_api, svc, password, tmp_path, "SHOW statement_timeout") == "0"
    assert (await pg_api.ok("GET", path))["pgBouncerConfig"] == {"pool_mode": "session"}


async def test_switchover_and_promote_guards(pg_api: Any, tmp_path: Path) -> None:
    plain = await pg_api.create("plain")
    ha = await pg_api.create("ha", haType="async")
    for svc in (plain, ha):
        await pg_api.wait_state(svc["id"], "running")
    start_sql = "SELECT pg_postmaster_start_time()"
    plain_started = await _one(pg_api, plain, plain["password"], tmp_path, start_sql)
    ha_started = await _one(pg_api, ha, ha["password"], tmp_path, start_sql)

    for svc in (plain, ha):
        result = await pg_api.ok("PATCH", f"/postgres/{svc['id']}/state", {"command": "switchover"})
        assert result["state"] == "running"
    await pg_api.wait_state(ha["id"], "running")
    # haType none: nothing happens; HA: the standby takes over (a new server start), state stays running
    assert await _one(pg_api, plain, plain["password"], tmp_path, start_sql) == plain_started
    await _until(pg_api, ha, ha["password"], tmp_path, f"{start_sql} > '{ha_started.isoformat()}'", True)

    status, data, _ = await pg_api.call("PATCH", f"/postgres/{plain['id']}/state", {"command": "promote"})
    assert (status, data["error"]) == (400, "BAD_REQUEST: Non read replica servers cannot be promoted.")


async def test_replica_config_promote_and_restore(make_simulator: Any, tmp_path: Path) -> None:
    if not PostgresFleet.available():
        pytest.skip("PostgreSQL fleet not available here")
    # the first backup well after the (synchronous) server start, so the refusal before it is seen
    simulator_pg, pg_api = await make_simulator(real_postgres=True, first_backup_seconds=5.0)
    primary = await pg_api.create("primary", pgConfig={"work_mem": "8MB"})
    password = primary["password"]
    status, data, _ = await pg_api.call("POST", f"/postgres/{primary['id']}/readReplica", {"name": "early"})
    assert (status, data["error"]) == (
        400,
        "BAD_REQUEST: Parent server is not ready for read replicas. There are no backups, yet.",
    )
    await pg_api.wait_state(primary["id"], "running")
    async with await _conn(pg_api, primary, password, tmp_path) as conn:
        await conn.execute("CREATE TABLE t (x int)")
        await conn.execute("INSERT INTO t VALUES (1)")
    await asyncio.sleep(simulator_pg.config.first_backup_seconds)
    replica = await pg_api.ok(
        "POST", f"/postgres/{primary['id']}/readReplica", {"name": "replica", "pgConfig": {"work_mem": "32MB"}}
    )
    await pg_api.wait_state(replica["id"], "running")
    assert await _one(pg_api, replica, password, tmp_path, "SHOW work_mem") == "32MB"  # its own config
    await pg_api.ok("PATCH", f"/postgres/{replica['id']}/config", {"pgConfig": {"statement_timeout": "7s"}})
    assert await _one(pg_api, replica, password, tmp_path, "SHOW statement_timeout") == "7s"
    assert await _one(pg_api, primary, password, tmp_path, "SHOW statement_timeout") == "0"

    for method, path, body in (
        ("PATCH", f"/postgres/{replica['id']}", {"name": "renamed"}),
        ("PATCH", f"/postgres/{replica['id']}/password", {}),
    ):
        status, data, _ = await pg_api.call(method, path, body)
        assert status == 400 and "read replicas" in data["error"].lower(), data
    status, data, _ = await pg_api.call("DELETE", f"/postgres/{primary['id']}")
    assert (status, data["error"]) == (
        409,
        "CONFLICT: Cannot delete this service: 1 read replica(s) depend on it. Delete the read replicas first.",
    )

    # a restore of a replica replays its primary's archive (the same data)
    async with await _conn(pg_api, primary, password, tmp_path) as conn:
        await conn.execute("INSERT INTO t VALUES (2)")
    await _until(pg_api, replica, password, tmp_path, "SELECT count(*) FROM t", 2)
    from_replica = await pg_api.ok(
        "POST",
        f"/postgres/{replica['id']}/restoredService",
        {"name": "from replica", "restoreTarget": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"},
    )
    await pg_api.wait_state(from_replica["id"], "running", timeout=30)
    assert await _one(pg_api, from_replica, password, tmp_path, "SELECT count(*) FROM t") == 2

    await pg_api.ok("PATCH", f"/postgres/{replica['id']}/state", {"command": "promote"})
    deadline = time.monotonic() + 15
    while not (promoted := await pg_api.ok("GET", f"/postgres/{replica['id']}"))["isPrimary"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await _until(pg_api, replica, password, tmp_path, "SELECT pg_is_in_recovery()", False)
    async with await _conn(pg_api, replica, password, tmp_path) as conn:
        await conn.execute("INSERT INTO t VALUES (3)")
    assert (await pg_api.ok("GET", f"/postgres/{primary['id']}"))["isPrimary"] is True  # the source stays primary
    assert await _one(pg_api, primary, password, tmp_path, "SELECT count(*) FROM t") == 2
    # promoted: its own backups; a restore of it holds what was written after the promotion
    while "earliestRestoreTime" not in promoted:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
        promoted = await pg_api.ok("GET", f"/postgres/{replica['id']}")
    target = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    restored = await pg_api.ok(
        "POST", f"/postgres/{replica['id']}/restoredService", {"name": "r", "restoreTarget": target}
    )
    await pg_api.wait_state(restored["id"], "running", timeout=30)
    assert await _one(pg_api, restored, password, tmp_path, "SELECT array_agg(x ORDER BY x) FROM t") == [1, 2, 3]
    # no live replica left: the primary can go
    await pg_api.ok("DELETE", f"/postgres/{primary['id']}")


async def test_pooler_endpoint_honours_pool_size_and_client_limit(pg_api: Any, tmp_path: Path) -> None:
    svc = await pg_api.create("pooled", pgBouncerConfig={"default_pool_size": "1", "query_wait_timeout": "1"})
    password = svc["password"]
    await pg_api.wait_state(svc["id"], "running")
    ca = tmp_path / "ca.pem"
    ca.write_text(await pg_api.ok("GET", f"/postgres/{svc['id']}/caCertificates"))
    pooler = Endpoint(svc["hostname"], 6432)
    async with await connect(pooler, password, ca) as first:
        await first.execute("SELECT 1")
        # the only server session is taken: the next client waits, then gives up (query_wait_timeout)
        with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
            await connect(pooler, password, ca)
        async with await connect(Endpoint(svc["hostname"], 5432), password, ca) as direct:  # 5432 is not pooled
            await direct.execute("SELECT 1")
        waiting = asyncio.create_task(connect(pooler, password, ca))
        await asyncio.sleep(0.3)
        assert not waiting.done()
    async with await waiting as second:  # served once the first client left
        assert (await (await second.execute("SELECT 2")).fetchone()) == (2,)

    path = f"/postgres/{svc['id']}/config"
    await pg_api.ok("PATCH", path, {"pgBouncerConfig": {"default_pool_size": "5", "max_client_conn": "1"}})
    async with await connect(pooler, password, ca):
        with pytest.raises(psycopg.OperationalError, match=r"no more connections allowed \(max_client_conn\)"):
            await connect(pooler, password, ca)
    await pg_api.ok("POST", path, {"pgConfig": {}, "pgBouncerConfig": {}})  # limits gone
    async with await connect(pooler, password, ca), await connect(pooler, password, ca):
        pass


async def test_connect_service_helper_reads_the_real_server(pg_api: Any, simulator_pg: Any) -> None:
    svc = await pg_api.create("helper")
    await pg_api.wait_state(svc["id"], "running")

    def read() -> tuple[Any, Any]:
        with (
            connect_service(simulator_pg, svc["id"]) as conn,
            connect_service(simulator_pg, svc["id"], port=6432) as pooled,
        ):
            return conn.execute("SELECT current_user").fetchone(), pooled.execute("SELECT 1").fetchone()

    assert await asyncio.to_thread(read) == (("postgres",), (1,))
    with pytest.raises(psycopg.OperationalError):
        await asyncio.to_thread(connect_service, simulator_pg, svc["id"], password="Wrong" + "1a" * 6)
