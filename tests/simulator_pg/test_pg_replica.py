"""A read replica is a hot standby of its primary's server: it streams the primary's writes and its
password changes, refuses writes, survives a restart of the primary, and becomes writable when promoted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg_helpers import connect

from clickhouse_cloud_simulator.postgres import Endpoint


async def _conn(api: Any, svc: dict[str, Any], password: str, tmp: Path) -> psycopg.AsyncConnection:
    ca = tmp / f"{svc['id']}.pem"
    ca.write_text(await api.ok("GET", f"/postgres/{svc['id']}/caCertificates"))
    return await connect(Endpoint(svc["hostname"], 5432), password, ca)


async def _eventually(api: Any, svc: dict[str, Any], password: str, tmp: Path, sql: str, expected: Any) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            async with await _conn(api, svc, password, tmp) as conn:
                if await (await conn.execute(sql)).fetchall() == expected:
                    return
        except psycopg.OperationalError:
            pass
        assert time.monotonic() < deadline, f"{sql!r} never gave {expected!r}"
        await asyncio.sleep(0.05)


async def test_replica_streams_and_promotes(pg_api: Any, simulator_pg: Any, tmp_path: Path) -> None:
    primary = await pg_api.create("primary")
    password = primary["password"]
    await pg_api.wait_state(primary["id"], "running")
    # a lower max_connections waits for a restart: the standby must still start (it needs the running 100)
    await pg_api.ok("PATCH", f"/postgres/{primary['id']}/config", {"pgConfig": {"max_connections": 50}})
    await asyncio.sleep(simulator_pg.config.first_backup_seconds)
    replica = await pg_api.ok("POST", f"/postgres/{primary['id']}/readReplica", {"name": "replica"})
    await pg_api.wait_state(replica["id"], "running")

    async with await _conn(pg_api, primary, password, tmp_path) as conn:
        await conn.execute("CREATE TABLE t (x int)")
        await conn.execute("INSERT INTO t VALUES (1)")
    await _eventually(pg_api, replica, password, tmp_path, "SELECT x FROM t", [(1,)])
    async with await _conn(pg_api, replica, password, tmp_path) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await conn.execute("INSERT INTO t VALUES (2)")

    # a new password on the primary reaches the replica by replication
    new_password = "Replicated" + "9x" * 6
    await pg_api.ok("PATCH", f"/postgres/{primary['id']}/password", {"password": new_password})
    await _eventually(pg_api, replica, new_password, tmp_path, "SELECT count(*) FROM t", [(1,)])

    # the primary restarts (its max_connections lands); the replica keeps following
    await pg_api.ok("PATCH", f"/postgres/{primary['id']}/state", {"command": "restart"})
    await pg_api.wait_state(primary["id"], "running")
    async with await _conn(pg_api, primary, new_password, tmp_path) as conn:
        assert (await (await conn.execute("SHOW max_connections")).fetchone()) == ("50",)
        await conn.execute("INSERT INTO t VALUES (3)")
    await _eventually(pg_api, replica, new_password, tmp_path, "SELECT x FROM t ORDER BY x", [(1,), (3,)])

    await pg_api.ok("PATCH", f"/postgres/{replica['id']}/state", {"command": "promote"})
    deadline = time.monotonic() + 15
    while not (await pg_api.ok("GET", f"/postgres/{replica['id']}"))["isPrimary"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await _eventually(pg_api, replica, new_password, tmp_path, "SELECT pg_is_in_recovery()", [(False,)])
    async with await _conn(pg_api, replica, new_password, tmp_path) as conn:
        await conn.execute("INSERT INTO t VALUES (4)")
    # promoted: its own password from now on, set through the API like any primary's
    await pg_api.ok("PATCH", f"/postgres/{replica['id']}/password", {"password": "Promoted" + "7y" * 6})
    async with await _conn(pg_api, replica, "Promoted" + "7y" * 6, tmp_path) as conn:
        assert (await (await conn.execute("SELECT count(*) FROM t")).fetchone()) == (3,)
    async with await _conn(pg_api, primary, new_password, tmp_path) as conn:
        assert (await (await conn.execute("SELECT count(*) FROM t")).fetchone()) == (2,)
