"""Real PostgreSQL behind simulated services (the ``simulator_pg`` fixture; skipped without the fleet)."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time

import psycopg
import pytest


async def _connect(conninfo: str, ca_pem: str) -> psycopg.AsyncConnection:
    fd, path = tempfile.mkstemp(suffix=".pem")
    with os.fdopen(fd, "w") as fh:
        fh.write(ca_pem)
    try:
        return await psycopg.AsyncConnection.connect(
            f"{conninfo}&sslmode=verify-full&sslrootcert={path}", autocommit=True, connect_timeout=10
        )
    finally:
        os.unlink(path)


async def _show(conn: psycopg.AsyncConnection, name: str) -> str:
    row = await (await conn.execute(f"SHOW {name}")).fetchone()
    assert row is not None
    return row[0]


def _sample(text: str, family: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(family + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {family} {labels}")


async def test_service_is_a_real_server(pg_api, simulator_pg) -> None:
    created = await pg_api.create("real one", pgConfig={"max_connections": 50})
    sid, password = created["id"], created["password"]
    assert re.fullmatch(r"127\.\d+\.\d+\.\d+", created["hostname"])
    same = (
        created["connectionString"]
        == f"postgres://postgres:{password}@{created['hostname']}:5432/postgres?channel_binding=require"
    )
    assert same, "connectionString does not point at the server"
    await pg_api.wait_state(sid, "running")
    ca = (await pg_api.call("GET", f"/postgres/{sid}/caCertificates"))[1]
    assert ca.startswith("-----BEGIN CERTIFICATE-----")

    conn = await _connect(created["connectionString"], ca)
    try:
        assert await _show(conn, "max_connections") == "50"  # the create-time config is in force
        await conn.execute("CREATE TABLE t (i int)")
        await conn.execute("INSERT INTO t SELECT generate_series(1, 250)")
        await conn.execute("CREATE DATABASE appdb")

        # Prometheus numbers come from the server (an open session is counted)
        text = (await pg_api.call("GET", f"/postgres/{sid}/prometheus"))[1]
        assert _sample(text, "PostgresServer_DatabaseSizeBytes", database="appdb") > 1_000_000
        assert _sample(text, "PostgresServer_ActiveConnections", state="idle") >= 1
        assert _sample(text, "PostgresServer_TransactionsCommitted_Total") > 0
        # a backend reports its row counts when it exits (or after PostgreSQL's flush interval)
        await conn.close()
        deadline = time.monotonic() + 15
        while _sample(text, "PostgresServer_TuplesInserted_Total") < 250:
            assert time.monotonic() < deadline, "inserted rows never reported"
            await asyncio.sleep(0.2)
            text = (await pg_api.call("GET", f"/postgres/{sid}/prometheus"))[1]
        conn = await _connect(created["connectionString"], ca)

        # config: a reloadable parameter applies at once, a postmaster one after restart
        result = await pg_api.ok(
            "PATCH", f"/postgres/{sid}/config", {"pgConfig": {"work_mem": "8MB", "max_connections": "60"}}
        )
        assert "max_connections" in result["message"] and "work_mem" not in result["message"]
        await conn.close()
        conn = await _connect(created["connectionString"], ca)
        assert await _show(conn, "work_mem") == "8MB"
        assert await _show(conn, "max_connections") == "50"
        status, data, _ = await pg_api.call("PATCH", f"/postgres/{sid}/config", {"pgConfig": {"work_mem": "2 parsecs"}})
        assert status == 400 and "PostgreSQL rejected the configuration" in data["error"]
    finally:
        await conn.close()

    await pg_api.ok("PATCH", f"/postgres/{sid}/state", {"command": "restart"})
    await pg_api.wait_state(sid, "running", timeout=30)
    conn = await _connect(created["connectionString"], ca)
    try:
        assert await _show(conn, "max_connections") == "60"
    finally:
        await conn.close()

    # password reset: the old password stops working, the generated one works
    new_password = (await pg_api.ok("PATCH", f"/postgres/{sid}/password", {}))["password"]
    with pytest.raises(psycopg.OperationalError):
        await _connect(created["connectionString"], ca)
    conn = await _connect(created["connectionString"].replace(password, new_password), ca)
    await conn.close()

    # delete: the server goes away
    await pg_api.ok("DELETE", f"/postgres/{sid}")
    await pg_api.wait_gone(sid)
    deadline = time.monotonic() + 15
    while True:
        try:
            conn = await _connect(created["connectionString"].replace(password, new_password), ca)
        except psycopg.OperationalError:
            break
        await conn.close()
        assert time.monotonic() < deadline, "server still reachable after delete"
        await asyncio.sleep(0.2)


async def test_replica_has_its_own_server_with_the_primary_password(pg_api) -> None:
    created = await pg_api.create("primary")
    sid = created["id"]
    await pg_api.wait_state(sid, "running")
    deadline = time.monotonic() + 10
    while True:
        status, data, _ = await pg_api.call("POST", f"/postgres/{sid}/readReplica", {"name": "replica"})
        if status == 200:
            break
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.1)
    replica = data["result"]
    assert replica["hostname"] != created["hostname"]
    await pg_api.wait_state(replica["id"], "running")
    ca = (await pg_api.call("GET", f"/postgres/{replica['id']}/caCertificates"))[1]
    conninfo = created["connectionString"].replace(created["hostname"], replica["hostname"])
    conn = await _connect(conninfo, ca)
    await conn.close()


async def test_password_change_during_restart_waits_for_the_server(pg_api) -> None:
    created = await pg_api.create("busy")
    sid = created["id"]
    await pg_api.wait_state(sid, "running")
    await pg_api.ok("PATCH", f"/postgres/{sid}/state", {"command": "restart"})
    assert await pg_api.ok("PATCH", f"/postgres/{sid}/password", {"password": "Changed1DuringRestart"}) == {}
    result = await pg_api.ok("PATCH", f"/postgres/{sid}/config", {"pgConfig": {"work_mem": "12MB"}})
    assert result["pgConfig"] == {"work_mem": "12MB"}
    await pg_api.wait_state(sid, "running", timeout=30)
    ca = (await pg_api.call("GET", f"/postgres/{sid}/caCertificates"))[1]
    conn = await _connect(
        f"postgres://postgres:Changed1DuringRestart@{created['hostname']}:5432/postgres?channel_binding=require", ca
    )
    try:
        assert await _show(conn, "work_mem") == "12MB"
    finally:
        await conn.close()
