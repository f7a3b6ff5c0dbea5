"""The pure core of PostgresRole / PostgresDatabase (reconcile/sqlplan.py): table-driven, from (desired,
observed catalog) to the statements planned; and their rendering with the driver's quoting
(controller/sqlexec.py), which never builds SQL text from a name or a password."""

from __future__ import annotations

import pytest
from psycopg import sql

from mpg_operator.controller import sqlexec
from mpg_operator.reconcile import sqlplan as sp

ADMIN = "postgres"
MARK = sp.marker("PostgresRole", "shop", "app", "uid-1")


def P(kind, database, schema, table, privilege):  # noqa: N802 -- reads like the dataclass
    return sp.Privilege(kind, database, schema, table, privilege)


def role(**kw) -> sp.DesiredRole:
    return sp.DesiredRole(name="app", marker=MARK, **kw)


def observed(**kw) -> sp.ObservedRole:
    base = dict(name="app", comment=MARK, login=True, connection_limit=-1, valid_until_epoch=None)
    return sp.ObservedRole(**{**base, **kw})


def catalog(role_=None, **kw) -> sp.Catalog:
    base = dict(
        role=role_,
        roles=frozenset({"postgres", "app", "readers", "owner"}),
        databases=frozenset({"postgres", "orders"}),
        visited=frozenset({"orders"}),
        schemas=frozenset({("orders", "public"), ("orders", "audit")}),
        tables={("orders", "public"): frozenset({"items", "payments"}), ("orders", "audit"): frozenset({"log"})},
    )
    return sp.Catalog(**{**base, **kw})


def names(plan) -> list[str]:
    return [type(s).__name__ for s in plan.statements]


READ_ITEMS = sp.TableGrantSpec("orders", "public", ("items",), ("SELECT",))
READ_ALL = sp.TableGrantSpec("orders", "public", None, ("SELECT",))

CASES = [
    # (id, desired, catalog, set_password, expected statements)
    (
        "new role: create, mark, password, grants",
        role(databases=frozenset({P("DATABASE", "orders", None, None, "CONNECT")}), tables=(READ_ITEMS,)),
        catalog(),
        True,
        [
            sp.CreateRole("app", True, -1, None),
            sp.CommentOnRole("app", MARK),
            sp.SetPassword("app"),
            sp.Grant("app", "DATABASE", "orders", None, None, ("CONNECT",)),
            sp.Grant("app", "TABLE", "orders", "public", "items", ("SELECT",)),
        ],
    ),
    (
        "steady: nothing to do",
        role(databases=frozenset({P("DATABASE", "orders", None, None, "CONNECT")}), tables=(READ_ITEMS,)),
        catalog(
            observed(),
            held=frozenset(
                {P("DATABASE", "orders", None, None, "CONNECT"), P("TABLE", "orders", "public", "items", "SELECT")}
            ),
        ),
        False,
        [],
    ),
    (
        "drift: a grant made by hand is revoked, a revoked one granted again",
        role(tables=(READ_ITEMS,)),
        catalog(observed(), held=frozenset({P("TABLE", "orders", "public", "payments", "SELECT")})),
        False,
        [
            sp.Grant("app", "TABLE", "orders", "public", "items", ("SELECT",)),
            sp.Revoke("app", "TABLE", "orders", "public", "payments", ("SELECT",)),
        ],
    ),
    (
        "a grant removed from the spec is revoked, in a database no longer named too",
        role(),
        catalog(
            observed(),
            held=frozenset(
                {
                    P("DATABASE", "orders", None, None, "CONNECT"),
                    P("DATABASE", "orders", None, None, "CREATE"),
                    P("SCHEMA", "orders", "audit", None, "USAGE"),
                }
            ),
        ),
        False,
        [
            sp.Revoke("app", "DATABASE", "orders", None, None, ("CONNECT", "CREATE")),
            sp.Revoke("app", "SCHEMA", "orders", "audit", None, ("USAGE",)),
        ],
    ),
    (
        "every table of a schema: one grant per table there is",
        role(tables=(READ_ALL,)),
        catalog(observed()),
        False,
        [
            sp.Grant("app", "TABLE", "orders", "public", "items", ("SELECT",)),
            sp.Grant("app", "TABLE", "orders", "public", "payments", ("SELECT",)),
        ],
    ),
    (
        "attributes drift (login, limit, CREATEDB by hand): one ALTER ROLE",
        role(login=True, connection_limit=5),
        catalog(observed(login=False, connection_limit=-1, createdb=True)),
        False,
        [sp.AlterRole("app", True, 5, None)],
    ),
    (
        "memberships: granted and revoked",
        role(member_of=frozenset({"readers"})),
        catalog(observed(member_of=frozenset({"owner"}))),
        False,
        [sp.GrantMembership("readers", "app"), sp.RevokeMembership("owner", "app")],
    ),
    (
        "default privileges: granted, and others revoked",
        role(default_privileges=frozenset({sp.DefaultPrivilege("orders", "public", "owner", "SELECT")})),
        catalog(observed(), default_held=frozenset({sp.DefaultPrivilege("orders", "public", "owner", "INSERT")})),
        False,
        [
            sp.GrantDefault("app", "orders", "public", "owner", ("SELECT",)),
            sp.RevokeDefault("app", "orders", "public", "owner", ("INSERT",)),
        ],
    ),
    (
        "a password not confirmed yet is set (and nothing else changes)",
        role(),
        catalog(observed()),
        True,
        [sp.SetPassword("app")],
    ),
]


@pytest.mark.parametrize(
    ("desired", "cat", "set_password", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_plan_role(desired, cat, set_password, expected):
    plan = sp.plan_role(desired, cat, admin=ADMIN, set_password=set_password)
    assert plan.refusal is None
    assert list(plan.statements) == expected


REFUSALS = [
    (
        "a role of that name not made by the operator",
        role(),
        catalog(observed(comment=None)),
        sp.SqlReason.ROLE_CONFLICT,
    ),
    (
        "a role marked for another resource (other uid)",
        role(),
        catalog(observed(comment=sp.marker("PostgresRole", "shop", "app", "uid-2"))),
        sp.SqlReason.ROLE_CONFLICT,
    ),
    ("a superuser", role(), catalog(observed(superuser=True)), sp.SqlReason.ROLE_CONFLICT),
    ("pg_ role", sp.DesiredRole("pg_monitor", MARK), catalog(), sp.SqlReason.RESERVED_NAME),
    ("the administrator", sp.DesiredRole("postgres", MARK), catalog(), sp.SqlReason.RESERVED_NAME),
    (
        "membership in a pg_ role",
        role(member_of=frozenset({"pg_write_server_files"})),
        catalog(),
        sp.SqlReason.RESERVED_NAME,
    ),
    ("membership in the administrator", role(member_of=frozenset({"postgres"})), catalog(), sp.SqlReason.RESERVED_NAME),
    (
        "an unknown privilege",
        role(databases=frozenset({P("DATABASE", "orders", None, None, "SUPERUSER")})),
        catalog(),
        sp.SqlReason.UNKNOWN_PRIVILEGE,
    ),
    (
        "a table privilege on a database",
        role(tables=(sp.TableGrantSpec("orders", "public", None, ("CONNECT",)),)),
        catalog(),
        sp.SqlReason.UNKNOWN_PRIVILEGE,
    ),
]


@pytest.mark.parametrize(("desired", "cat", "reason"), [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
def test_plan_role_refuses(desired, cat, reason):
    plan = sp.plan_role(desired, cat, admin=ADMIN, set_password=True)
    assert plan.refusal is not None and plan.refusal.reason == reason
    assert plan.statements == ()


def test_missing_objects_wait_and_the_rest_is_applied():
    desired = role(
        member_of=frozenset({"ghost"}),
        databases=frozenset({P("DATABASE", "nope", None, None, "CONNECT")}),
        schemas=frozenset({P("SCHEMA", "orders", "missing", None, "USAGE")}),
        tables=(sp.TableGrantSpec("orders", "public", ("items", "gone"), ("SELECT",)),),
    )
    plan = sp.plan_role(desired, catalog(observed()), admin=ADMIN, set_password=False)
    assert list(plan.statements) == [sp.Grant("app", "TABLE", "orders", "public", "items", ("SELECT",))]
    assert set(plan.waiting) == {
        "role ghost does not exist (memberOf)",
        "database nope does not exist",
        "schema missing does not exist in database orders",
        "table public.gone does not exist in database orders",
    }


def test_privileges_in_databases_not_read_are_neither_granted_nor_revoked():
    desired = role(tables=(READ_ITEMS,))
    cat = catalog(observed(), visited=frozenset(), held=frozenset({P("TABLE", "orders", "public", "x", "SELECT")}))
    plan = sp.plan_role(desired, cat, admin=ADMIN, set_password=False)
    assert plan.statements == () and plan.waiting == ("database orders could not be read",)


# --- deletion --------------------------------------------------------------------------------------------

DEPS_NONE = sp.RoleDependencies()


@pytest.mark.parametrize(
    ("role_", "deps", "policy", "to", "expected", "reason"),
    [
        (None, DEPS_NONE, sp.OwnedPolicy.REFUSE, None, "forget", None),
        (observed(comment=None), DEPS_NONE, sp.OwnedPolicy.REFUSE, None, "forget", None),
        (observed(), DEPS_NONE, sp.OwnedPolicy.REFUSE, None, ["DropRole"], None),
        (
            observed(),
            sp.RoleDependencies(privileges=frozenset({"orders"})),
            sp.OwnedPolicy.REFUSE,
            None,
            ["DropOwned", "DropRole"],
            None,
        ),
        (observed(), sp.RoleDependencies(owned={"orders": 2}), sp.OwnedPolicy.REFUSE, None, None, "OwnsObjects"),
        (observed(), sp.RoleDependencies(owned={"": 1}), sp.OwnedPolicy.REFUSE, None, None, "OwnsObjects"),
        (
            observed(),
            sp.RoleDependencies(owned={"orders": 2}),
            sp.OwnedPolicy.REASSIGN,
            "owner",
            ["ReassignOwned", "DropOwned", "DropRole"],
            None,
        ),
        (observed(), sp.RoleDependencies(owned={"orders": 2}), sp.OwnedPolicy.REASSIGN, "ghost", None, "OwnsObjects"),
        (
            observed(),
            sp.RoleDependencies(owned={"": 1}),
            sp.OwnedPolicy.REASSIGN,
            "owner",
            ["ReassignOwned", "DropOwned", "DropRole"],
            None,
        ),
    ],
)
def test_plan_role_drop(role_, deps, policy, to, expected, reason):
    plan = sp.plan_role_drop(
        role_,
        MARK,
        deps,
        policy=policy,
        reassign_to=to,
        roles=frozenset({"owner", "app"}),
        connectable=frozenset({"postgres", "orders"}),
        admin=ADMIN,
    )
    if expected == "forget":
        assert plan.forget and plan.statements == ()
    elif reason:
        assert plan.refusal is not None and plan.refusal.reason == reason and plan.statements == ()
    else:
        assert names(plan) == expected and plan.refusal is None


DB_MARK = sp.marker("PostgresDatabase", "shop", "orders", "uid-9")
WANT_DB = sp.DesiredDatabase("orders", DB_MARK, "owner", "UTF8", None)


def observed_db(**kw):
    base = dict(name="orders", comment=DB_MARK, owner="owner", encoding="UTF8", collate="C", ctype="C")
    return sp.ObservedDatabase(**{**base, **kw})


@pytest.mark.parametrize(
    ("obs", "claimed", "roles", "expected", "reason"),
    [
        (None, False, {"owner"}, ["CreateDatabase", "CommentOnDatabase"], None),
        (None, False, set(), [], "waiting"),
        (observed_db(), False, {"owner"}, [], None),
        (observed_db(owner="postgres"), False, {"owner"}, ["AlterDatabaseOwner"], None),
        (observed_db(comment=None), False, {"owner"}, [], sp.SqlReason.DATABASE_CONFLICT),
        (observed_db(comment=None), True, {"owner"}, ["CommentOnDatabase"], None),  # created before a crash
        (observed_db(comment="someone else's"), True, {"owner"}, [], sp.SqlReason.DATABASE_CONFLICT),
    ],
)
def test_plan_database(obs, claimed, roles, expected, reason):
    plan = sp.plan_database(WANT_DB, obs, roles=frozenset(roles), claimed=claimed, admin=ADMIN)
    assert names(plan) == expected
    if reason == "waiting":
        assert plan.waiting
    elif reason:
        assert plan.refusal is not None and plan.refusal.reason == reason


@pytest.mark.parametrize(
    ("obs", "policy", "sessions", "expected"),
    [
        (observed_db(), sp.DatabaseDeletion.RETAIN, 3, [sp.CommentOnDatabase("orders", None)]),
        (observed_db(), sp.DatabaseDeletion.DELETE, 0, [sp.DropDatabase("orders")]),
        (observed_db(), sp.DatabaseDeletion.DELETE, 2, "refused"),
        (observed_db(comment=None), sp.DatabaseDeletion.DELETE, 0, "forget"),
        (None, sp.DatabaseDeletion.DELETE, 0, "forget"),
    ],
)
def test_plan_database_drop(obs, policy, sessions, expected):
    plan = sp.plan_database_drop(obs, DB_MARK, policy=policy, other_sessions=sessions)
    if expected == "refused":
        assert plan.refusal is not None and plan.refusal.reason == sp.SqlReason.DATABASE_IN_USE
    elif expected == "forget":
        assert plan.forget and not plan.statements
    else:
        assert list(plan.statements) == expected


# --- the password -----------------------------------------------------------------------------------------

S = sp.PasswordStep


@pytest.mark.parametrize(
    ("secret", "confirmed", "acceptable", "own", "rotate", "created", "expected"),
    [
        # a rotation cut short after its password was written: resumed with that password, not replaced
        pytest.param("Pw-1234567890", False, True, None, True, False, S.SET_PENDING, id="rotation resumed"),
        (None, False, False, None, False, True, S.NEW),  # first pass
        ("Pw-1234567890", True, True, None, False, False, S.KEEP),  # steady
        ("Pw-1234567890", False, True, None, False, False, S.SET_PENDING),  # crash after the Secret write
        ("Pw-1234567890", True, True, None, False, True, S.SET_PENDING),  # role dropped by hand: set again
        ("Pw-1234567890", True, True, None, True, False, S.NEW),  # rotation
        ("short", False, False, None, False, False, S.NEW),  # edited to something unusable
        ("Pw-1234567890", True, True, "Own-1234567890", False, False, S.BRING_YOUR_OWN),
        ("Own-1234567890", False, True, "Own-1234567890", False, False, S.SET_PENDING),
        ("Own-1234567890", True, True, "Own-1234567890", False, False, S.KEEP),
    ],
)
def test_password_step(secret, confirmed, acceptable, own, rotate, created, expected, request):
    resumed = request.node.callspec.id == "rotation resumed"
    got = sp.password_step(
        pending_for_rotation=resumed,
        secret_password=secret,
        confirmed=confirmed,
        acceptable=acceptable,
        own_password=own,
        rotate=rotate,
        role_created=created,
    )
    assert got == expected


def test_merge_conditions_keeps_transition_time_while_status_holds():
    v = sp.Verdict("True", sp.SqlReason.READY, "ok")
    first = sp.merge_conditions([], {"Ready": v}, generation=1, stamp="T1")
    again = sp.merge_conditions(
        first, {"Ready": sp.Verdict("True", sp.SqlReason.APPLIED, "x")}, generation=2, stamp="T2"
    )
    flipped = sp.merge_conditions(
        again, {"Ready": sp.Verdict("False", sp.SqlReason.WAITING, "y")}, generation=2, stamp="T3"
    )
    assert first[0]["lastTransitionTime"] == again[0]["lastTransitionTime"] == "T1"
    assert flipped[0]["lastTransitionTime"] == "T3" and flipped[0]["reason"] == "Waiting"


# --- rendering: the driver quotes every name and literal ---------------------------------------------------------


def text(statement, **kw) -> str:
    return render_text(sqlexec.render(statement, **kw))


def render_text(composed) -> str:
    # Composed.as_string(None) quotes identifiers; literals need a connection's encoding only for non-ASCII.
    return composed.as_string(None)


def test_identifiers_are_quoted_by_the_driver():
    hostile = 'x"; DROP TABLE items; --'
    got = text(sp.Grant(hostile, "TABLE", "orders", "public", 'it"ems', ("SELECT",)))
    assert got == 'GRANT SELECT ON TABLE "public"."it""ems" TO "x""; DROP TABLE items; --"'
    got = text(sp.CommentOnRole("app", "it's"))
    assert got == "COMMENT ON ROLE \"app\" IS 'it''s'"


def test_unknown_privileges_are_never_rendered():
    with pytest.raises(ValueError, match="refusing privileges"):
        sqlexec.render(sp.Grant("app", "TABLE", "orders", "public", "t", ("SELECT; DROP TABLE t",)))
    with pytest.raises(ValueError):
        sqlexec.render(sp.Grant("app", "DATABASE", "orders", None, None, ("SELECT",)))


def test_password_statement_carries_a_verifier_only():
    verifier = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"
    got = text(sp.SetPassword("app"), verifier=verifier)
    assert got == f"ALTER ROLE \"app\" WITH PASSWORD '{verifier}'"
    for bad in (None, "Clear-Text-Password-1"):  # a clear-text password is never rendered
        with pytest.raises(ValueError, match="SCRAM"):
            sqlexec.render(sp.SetPassword("app"), verifier=bad)


def test_scram_verifier_is_libpq_s_and_postgresql_accepts_it():
    """libpq (PQencryptPasswordConn) computes it; the simulator's independent SCRAM parser reads it."""
    import psycopg

    from clickhouse_cloud_simulator import scram

    class Conn:  # encrypt_password needs no server for an explicit algorithm
        pgconn = psycopg.pq.PGconn.connect(b"")

    verifier = sqlexec.scram_verifier(Conn, "app", "Pencil-Pass-123")
    assert verifier.startswith("SCRAM-SHA-256$4096:") and "Pencil-Pass-123" not in verifier
    iterations, salt, stored, server = scram.parse_verifier(verifier)
    expected = scram.make_verifier("Pencil-Pass-123", iterations=iterations, salt=salt)
    assert verifier == expected


def test_errors_never_carry_a_password():
    import psycopg

    password = "Leaky-Pass-1234"

    class FakeDiag:
        message_primary = f"syntax error near '{password}'"

    class FakeError(psycopg.errors.SyntaxError):
        pass

    exc = FakeError(f"ALTER ROLE app PASSWORD '{password}'")  # a driver error echoing the statement
    err = sqlexec.safe_error(exc, [password], what="setting the password")
    assert str(err) == "setting the password: FakeError (SQLSTATE 42601)" and err.sqlstate == "42601"
    # A connection failure: libpq's first line, any secret in it redacted.
    err = sqlexec.safe_error(psycopg.OperationalError(f"connection failed: password={password}\nmore"), [password],
                             what="connecting")  # fmt: skip
    assert password not in str(err) and err.unreachable and "more" not in str(err)
    # The primary message is redacted too when the server echoes a secret.
    err = sqlexec.SqlError(sqlexec.redact(FakeDiag.message_primary, [password]))
    assert password not in str(err) and "[redacted]" in str(err)


def test_statements_run_where_they_belong():
    assert sp.runs_in(sp.Grant("a", "DATABASE", "orders", None, None, ("CONNECT",))) is None
    assert sp.runs_in(sp.Grant("a", "TABLE", "orders", "public", "t", ("SELECT",))) == "orders"
    assert sp.runs_in(sp.DropOwned("a", "orders")) == "orders"
    assert sp.runs_in(sp.CreateRole("a", True, -1, None)) is None


def test_sql_module_is_used_for_every_statement_kind():
    for statement in (
        sp.CreateRole("a", True, 3, "2030-01-01T00:00:00Z"),
        sp.AlterRole("a", False, -1, None),
        sp.GrantMembership("g", "a"),
        sp.RevokeMembership("g", "a"),
        sp.GrantDefault("a", "orders", "public", "owner", ("SELECT",)),
        sp.RevokeDefault("a", "orders", "public", "owner", ("SELECT",)),
        sp.ReassignOwned("a", "b", "orders"),
        sp.DropOwned("a", "orders"),
        sp.DropRole("a"),
        sp.CreateDatabase("d", "o", "UTF8", "C"),
        sp.CommentOnDatabase("d", None),
        sp.AlterDatabaseOwner("d", "o"),
        sp.DropDatabase("d"),
    ):
        assert isinstance(sqlexec.render(statement), sql.Composable)
    assert text(sp.AlterRole("a", False, -1, None)).endswith("VALID UNTIL 'infinity'")
    assert text(sp.CreateDatabase("d", "o", "UTF8", "C")) == (
        "CREATE DATABASE \"d\" OWNER \"o\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
    )


@pytest.mark.parametrize(
    ("spec", "status", "replica"),
    [
        ({}, {}, False),
        ({"readReplicaOf": {"name": "p"}}, {}, True),
        ({"readReplicaOf": {"name": "p"}}, {"readReplicaOf": {"name": "p", "released": False}}, True),
        ({"readReplicaOf": {"name": "p"}}, {"readReplicaOf": {"name": "p", "released": True}}, False),  # promoted
        ({}, {"isPrimary": False}, True),  # a replica adopted by serviceId
        ({}, {"isPrimary": True}, False),
    ],
)
def test_read_replicas_are_told_apart_from_primaries(spec, status, replica):
    assert sp.is_read_replica(spec, status) is replica
