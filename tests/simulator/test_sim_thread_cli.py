"""The threaded simulator (sync callers) and the ``clickhouse-cloud-simulator`` command line."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from clickhouse_cloud_simulator import SimulatorConfig, SimulatorThread

VENV_BIN = Path(sys.executable).parent


def _get(url: str, key: tuple[str, str]) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, headers={"Authorization": "Basic " + base64.b64encode(":".join(key).encode()).decode()}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_simulator_thread_serves_sync_code() -> None:
    cfg = SimulatorConfig(port=0, real_postgres=False, rate_limit=None, create_seconds=0.1)
    with SimulatorThread(cfg) as sim:
        assert sim.url.startswith("http://127.0.0.1:") and sim.url.endswith("/v1")
        status, body = _get(f"{sim.url}/organizations/{sim.org_id}/postgres", (sim.key_id, sim.key_secret))
        assert status == 200 and body["result"] == []
        body = json.dumps({"name": "t", "provider": "aws", "region": "us-east-1", "size": "r8gd.large"}).encode()
        req = urllib.request.Request(
            f"{sim.url}/organizations/{sim.org_id}/postgres",
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": "Basic " + base64.b64encode(f"{sim.key_id}:{sim.key_secret}".encode()).decode(),
            },
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            sid = json.loads(resp.read())["result"]["id"]
        assert list(sim.services) == [sid]
        sim.store.patch_out_of_band(sid, tags=[{"key": "drift", "value": "1"}])
        sim.faults.force(500)
        assert _get(f"{sim.url}/organizations/{sim.org_id}/postgres/{sid}", (sim.key_id, sim.key_secret))[0] == 500
        status, body = _get(f"{sim.url}/organizations/{sim.org_id}/postgres/{sid}", (sim.key_id, sim.key_secret))
        assert status == 200 and body["result"]["tags"] == [{"key": "drift", "value": "1"}]
        assert [r.status for r in sim.requests][-2:] == [500, 200]
    with pytest.raises(OSError):
        _get(f"{sim.url}/organizations", (sim.key_id, sim.key_secret))


def _start_cli(*args: str) -> tuple[subprocess.Popen, dict[str, str], float]:
    exe = shutil.which("clickhouse-cloud-simulator", path=str(VENV_BIN)) or "clickhouse-cloud-simulator"
    started = time.monotonic()
    proc = subprocess.Popen(
        [exe, "--port", "0", "--no-postgres", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    info: dict[str, str] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.match(r"\s+(URL|org id|key id|key secret):\s+(\S+)", line)
        if m:
            info[m.group(1)] = m.group(2)
        if line.startswith("  curl "):
            info["curl"] = line.strip()
            break
    return proc, info, started


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_generates_credentials_and_starts_fast() -> None:
    proc, info, started = _start_cli("--create-seconds", "0.1", "--rate-limit", "3", "--rate-window", "30")
    try:
        assert set(info) == {"URL", "org id", "key id", "key secret", "curl"}, info
        status, body = _get(
            f"{info['URL']}/organizations/{info['org id']}/postgres", (info["key id"], info["key secret"])
        )
        elapsed = time.monotonic() - started
        assert status == 200 and body["result"] == []
        assert elapsed < 3.0, f"first answer after {elapsed:.2f} s"
        # the printed curl line works as printed
        if shutil.which("curl"):
            out = subprocess.run(
                info["curl"] + " --silent", shell=True, capture_output=True, text=True, timeout=10, check=True
            )
            assert json.loads(out.stdout)["status"] == 200
        # rate limit flags are honoured (3 per 30 s window)
        statuses = [_get(f"{info['URL']}/organizations", (info["key id"], info["key secret"]))[0] for _ in range(3)]
        assert statuses[-1] == 429
    finally:
        _stop(proc)
    assert proc.returncode == 0


def test_cli_uses_given_credentials() -> None:
    org = "0c330583-6396-86d0-82cd-ed0f23b0d38c"
    proc, info, _ = _start_cli("--org-id", org, "--key-id", "KEY", "--key-secret", "SECRET", "--no-rate-limit")
    try:
        assert info["org id"] == org and info["key id"] == "KEY" and info["key secret"] == "SECRET"
        assert _get(f"{info['URL']}/organizations/{org}/postgres", ("KEY", "SECRET"))[0] == 200
        assert _get(f"{info['URL']}/organizations/{org}/postgres", ("KEY", "nope"))[0] == 401
    finally:
        _stop(proc)


def test_cli_module_imports_only_stdlib() -> None:
    code = (
        "import sys, clickhouse_cloud_simulator.cli as c, argparse; p = argparse.ArgumentParser(); c.add_arguments(p);"
        " bad = [m for m in ('aiohttp', 'pydantic', 'clickhouse_cloud_simulator.server') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_help_is_fast() -> None:
    exe = shutil.which("clickhouse-cloud-simulator", path=str(VENV_BIN)) or "clickhouse-cloud-simulator"
    started = time.monotonic()
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0 and "--no-rate-limit" in out.stdout and "--create-seconds" in out.stdout
    assert time.monotonic() - started < 3.0
