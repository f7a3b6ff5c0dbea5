"""apply_config (reload vs postmaster parameters) and stats() read from the real server."""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg_helpers import connect, tls_version, write_ca

from clickhouse_cloud_simulator.postgres import PostgresFleet


async def _show(conn: psycopg.AsyncConnection, name: str) -> str:
    cur = await conn.execute(f"SHOW {name}")
    return (await cur.fetchone())[0]


async def _until(check: Callable[[], Awaitable[Any]], timeout: float = 15) -> Any:
    """Poll `check` until it returns something truthy (the statistics are flushed asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


async def test_apply_config_reload_and_postmaster_parameters(fleet: PostgresFleet, tmp_path: Path) -> None:
    password = secrets.token_urlsafe(16)
    endpoint = await fleet.create("config", password)
    ca_file = write_ca(fleet, "config", tmp_path)

    pending = await fleet.apply_config(
        "config", {"statement_timeout": "45s", "work_mem": "8MB", "max_connections": "42"}
    )
    assert pending == ["max_connections"]
    async with await connect(endpoint, password, ca_file) as conn:
        assert await _show(conn, "statement_timeout") == "45s"
        assert await _show(conn, "work_mem") == "8MB"
        assert await _show(conn, "max_connections") == "100"  # needs the restart
        cur = await conn.execute("SELECT pending_restart FROM pg_settings WHERE name = 'max_connections'")
        assert (await cur.fetchone())[0] is True

    await fleet.restart("config")
    async with await connect(endpoint, password, ca_file) as conn:
        assert await _show(conn, "max_connections") == "42"
        assert await _show(conn, "statement_timeout") == "45s"

    # Merge by default; replace=True resets what is no longer listed.
    assert await fleet.apply_config("config", {"lock_timeout": "10s"}) == []
    assert await fleet.apply_config("config", {"lock_timeout": "10s"}, replace=True) == ["max_connections"]
    async with await connect(endpoint, password, ca_file) as conn:
        assert await _show(conn, "lock_timeout") == "10s"
        assert await _show(conn, "statement_timeout") == "0"
        assert await _show(conn, "work_mem") == "4MB"
    await fleet.destroy("config")


async def test_apply_config_rejects_unknown_names_and_bad_values(fleet: PostgresFleet, tmp_path: Path) -> None:
    password = secrets.token_urlsafe(16)
    endpoint = await fleet.create("badconfig", password)
    with pytest.raises(ValueError, match="unrecognized configuration parameter.*max_conections"):
        await fleet.apply_config("badconfig", {"max_conections": "10", "work_mem": "8MB"})
    with pytest.raises(ValueError, match="'work_mem'"):
        await fleet.apply_config("badconfig", {"statement_timeout": "7s", "work_mem": "lots"})
    async with await connect(endpoint, password, write_ca(fleet, "badconfig", tmp_path)) as conn:
        # Nothing of a rejected call was applied.
        assert await _show(conn, "work_mem") == "4MB"
        assert await _show(conn, "statement_timeout") == "0"
    with pytest.raises(KeyError):
        await fleet.apply_config("no-such-service", {"work_mem": "8MB"})
    await fleet.destroy("badconfig")


async def test_ssl_min_protocol_version_is_enforced(fleet: PostgresFleet, tmp_path: Path) -> None:
    password = secrets.token_urlsafe(16)
    endpoint = await fleet.create("tls13", password)
    ca_file = write_ca(fleet, "tls13", tmp_path)
    assert await asyncio.to_thread(tls_version, endpoint, ca_file, "TLSv1.2") == "TLSv1.2"
    assert await fleet.apply_config("tls13", {"ssl_min_protocol_version": "TLSv1.3"}) == []
    with pytest.raises(ssl.SSLError):
        await asyncio.to_thread(tls_version, endpoint, ca_file, "TLSv1.2")
    assert await asyncio.to_thread(tls_version, endpoint, ca_file) == "TLSv1.3"
    await fleet.restart("tls13")  # the setting survives a restart
    with pytest.raises(ssl.SSLError):
        await asyncio.to_thread(tls_version, endpoint, ca_file, "TLSv1.2")
    await fleet.destroy("tls13")


async def test_stats_reflect_rows_and_connections(fleet: PostgresFleet, tmp_path: Path) -> None:
    password = secrets.token_urlsafe(16)
    endpoint = await fleet.create("stats", password)
    ca_file = write_ca(fleet, "stats", tmp_path)
    before = await fleet.stats("stats")
    assert before["connections"] == {"active": 0, "idle": 0}
    assert before["tuples_inserted"] < 50
    assert "postgres" in before["database_size_bytes"]
    assert before["server_version"].startswith("18.")
    assert before["memory_bytes"] > 1_000_000

    async with await connect(endpoint, password, ca_file) as conn:
        await conn.execute("CREATE DATABASE app")
    async with await connect(endpoint, password, ca_file, dbname="app") as conn:
        await conn.execute("CREATE TABLE t (id int, pad text)")
        await conn.execute("INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series(1, 20000) g")
        await conn.execute("UPDATE t SET pad = 'y' WHERE id <= 10")
        await conn.execute("DELETE FROM t WHERE id <= 5")
        with pytest.raises(psycopg.errors.DivisionByZero):
            await conn.execute("SELECT 1 / 0")

    async def counted() -> dict[str, Any] | None:
        stats = await fleet.stats("stats")
        return stats if stats["tuples_inserted"] >= before["tuples_inserted"] + 20000 else None

    after = await _until(counted)
    assert after is not None, "inserted rows never showed in pg_stat_database"
    assert after["tuples_updated"] >= before["tuples_updated"] + 10
    assert after["tuples_deleted"] >= before["tuples_deleted"] + 5
    assert after["transactions_committed"] > before["transactions_committed"]
    assert after["transactions_rolled_back"] > before["transactions_rolled_back"]
    assert after["database_size_bytes"]["app"] > 10_000_000
    assert 0 <= after["cache_hit_ratio"] <= 100
    assert after["blocks_hit"] > before["blocks_hit"]

    idle = await connect(endpoint, password, ca_file)
    busy = await connect(endpoint, password, ca_file)
    query = asyncio.ensure_future(busy.execute("SELECT pg_sleep(5)"))
    try:

        async def two_sessions() -> dict[str, int] | None:
            conns = (await fleet.stats("stats"))["connections"]
            return conns if conns["idle"] == 1 and conns["active"] == 1 else None

        assert await _until(two_sessions) == {"active": 1, "idle": 1}
    finally:
        await busy.cancel_safe()
        with pytest.raises(psycopg.errors.QueryCanceled):
            await query
        await idle.close()
        await busy.close()
    await fleet.destroy("stats")
