"""Helpers for tests that drive the simulator over raw HTTP (aiohttp client)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import tempfile
import time
from typing import Any

import aiohttp

from clickhouse_cloud_simulator.server import Simulator

FAST: dict[str, Any] = {
    "port": 0,
    "create_seconds": 0.3,
    "replica_seconds": 0.3,
    "restore_phase_seconds": 0.15,
    "restart_seconds": 0.3,
    "resize_seconds": 0.4,
    "delete_seconds": 0.3,
    "promote_seconds": 0.2,
    "first_backup_seconds": 0.6,
    "rate_limit": None,
}
"""Durations used by the ``simulator`` fixtures (seconds)."""


def basic_auth(key_id: str, key_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key_id}:{key_secret}".encode()).decode()


class SimApi:
    """Raw HTTP against a simulator: ``await api.call("GET", "/postgres")`` -> (status, body, headers).

    Paths starting with ``/postgres`` are relative to the simulator's organization; other paths
    to the base URL (``/v1``). ``body`` is parsed JSON when the response is JSON, else text.
    """

    def __init__(self, sim: Simulator, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session

    def url(self, path: str) -> str:
        if path.startswith("/postgres"):
            return f"{self.sim.url}/organizations/{self.sim.org_id}{path}"
        return f"{self.sim.url}{path}"

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: tuple[str, str] | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, Any]:
        key = auth or (self.sim.key_id, self.sim.key_secret)
        hdrs = {"Authorization": basic_auth(*key)} if key != ("", "") else {}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        async with self.session.request(method, self.url(path), data=data, headers=hdrs) as resp:
            text = await resp.text()
            parsed: Any = text
            if resp.content_type == "application/json":
                parsed = json.loads(text)
            return resp.status, parsed, resp.headers

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        """Call and return ``result`` of a 200 envelope (asserting the status)."""
        status, data, _ = await self.call(method, path, body)
        assert status == 200, (status, data)
        return data["result"] if isinstance(data, dict) and "result" in data else data

    async def create(self, name: str = "svc", **extra: Any) -> dict[str, Any]:
        body = {"name": name, "provider": "aws", "region": "us-east-1", "size": "r8gd.large", **extra}
        return await self.ok("POST", "/postgres", body)

    async def wait_state(self, service_id: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            svc = await self.ok("GET", f"/postgres/{service_id}")
            if svc["state"] == state:
                return svc
            assert time.monotonic() < deadline, f"state stayed {svc['state']}, wanted {state}"
            await asyncio.sleep(0.05)

    async def wait_gone(self, service_id: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (await self.call("GET", f"/postgres/{service_id}"))[0] != 404:
            assert time.monotonic() < deadline, "service not deleted in time"
            await asyncio.sleep(0.05)


def connect_service(
    sim: Any, service_id: str, *, password: str | None = None, port: int = 5432, dbname: str = "postgres"
) -> Any:
    """A psycopg connection (autocommit) to the real PostgreSQL behind a simulated service, made like a client
    of the real service: its hostname, ``sslmode=verify-full`` against its CA, SCRAM with channel binding.

    ``sim``: a ``Simulator`` or ``SimulatorThread`` with real PostgreSQL; ``password``: the service's current
    one (from the simulator) unless given; ``port`` 6432 for the PgBouncer endpoint. Blocking: from async
    code call it with ``asyncio.to_thread``."""
    import psycopg

    fleet = sim.store.fleet
    svc = sim.services[service_id]
    if fleet is None or not svc.has_server:
        raise RuntimeError(f"service {service_id} has no PostgreSQL server (real_postgres off?)")
    fd, ca_file = tempfile.mkstemp(prefix="mpg-ca-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(fleet.ca_pem(service_id))
        return psycopg.connect(
            host=svc.hostname,
            port=port,
            user="postgres",
            password=svc.password if password is None else password,
            dbname=dbname,
            sslmode="verify-full",
            sslrootcert=ca_file,
            channel_binding="require",
            connect_timeout=10,
            autocommit=True,
        )
    finally:
        os.unlink(ca_file)
