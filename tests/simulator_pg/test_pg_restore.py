"""A restored service starts from its source's base backup and archived WAL: the source's data and roles
at the target, the restore's own configuration (or the source's when the restore names none), its own
server. (What a restore at a past target holds: test_pg_pitr.py.)"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from pg_helpers import connect

from clickhouse_cloud_simulator.postgres import Endpoint


async def _conn(api: Any, svc: dict[str, Any], password: str, tmp: Path) -> psycopg.AsyncConnection:
    ca = tmp / f"{svc['id']}.pem"
    ca.write_text(await api.ok("GET", f"/postgres/{svc['id']}/caCertificates"))
    return await connect(Endpoint(svc["hostname"], 5432), password, ca)


async def _show(conn: psycopg.AsyncConnection, name: str) -> str:
    return (await (await conn.execute(f"SHOW {name}")).fetchone())[0]


async def test_restore_copies_data_and_replaces_configuration(pg_api: Any, simulator_pg: Any, tmp_path: Path) -> None:
    source = await pg_api.create("source", pgConfig={"max_connections": 70, "work_mem": "8MB"})
    password = source["password"]
    await pg_api.wait_state(source["id"], "running")
    async with await _conn(pg_api, source, password, tmp_path) as conn:
        await conn.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
        await conn.execute("INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 50) g")
        await conn.execute("CREATE ROLE reader LOGIN")
    await asyncio.sleep(simulator_pg.config.first_backup_seconds)
    target = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"  # to the second could precede the writes

    inherited = await pg_api.ok(
        "POST", f"/postgres/{source['id']}/restoredService", {"name": "same config", "restoreTarget": target}
    )
    own = await pg_api.ok(
        "POST",
        f"/postgres/{source['id']}/restoredService",
        {"name": "own config", "restoreTarget": target, "pgConfig": {"statement_timeout": "5s"}},
    )
    for svc in (inherited, own):
        await pg_api.wait_state(svc["id"], "running")
        assert svc["hostname"] != source["hostname"]
    async with await _conn(pg_api, inherited, password, tmp_path) as conn:
        assert (await (await conn.execute("SELECT count(*) FROM items")).fetchone()) == (50,)
        assert (await (await conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'reader'")).fetchone()) == (1,)
        assert (await _show(conn, "max_connections"), await _show(conn, "work_mem")) == ("70", "8MB")
        await conn.execute("DELETE FROM items")
    async with await _conn(pg_api, own, password, tmp_path) as conn:
        assert (await (await conn.execute("SELECT count(*) FROM items")).fetchone()) == (50,)
        # the source's settings are replaced by the restore's own pgConfig (defaults otherwise)
        assert await _show(conn, "statement_timeout") == "5s"
        assert (await _show(conn, "max_connections"), await _show(conn, "work_mem")) == ("100", "4MB")
    assert (await pg_api.ok("GET", f"/postgres/{own['id']}/config"))["pgConfig"] == {"statement_timeout": "5s"}
    async with await _conn(pg_api, source, password, tmp_path) as conn:  # the source is untouched
        assert (await (await conn.execute("SELECT count(*) FROM items")).fetchone()) == (50,)
    # a restore of a source without settings replaces with nothing: every ALTER SYSTEM value reset
    assert await simulator_pg.fleet.apply_config(own["id"], {}, replace=True) == []
    async with await _conn(pg_api, own, password, tmp_path) as conn:
        assert await _show(conn, "statement_timeout") == "0"
