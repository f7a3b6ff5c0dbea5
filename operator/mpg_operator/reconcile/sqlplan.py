"""Roles and databases inside a service's PostgreSQL: from (desired spec, observed catalog) to a plan of
typed statements. Pure: no connection, no SQL text (the controller renders each statement with the
driver's quoting, :mod:`mpg_operator.controller.sqlexec`).

Ownership. The operator manages only what it created: a role or a database carries a marker in its
comment (``COMMENT ON ROLE/DATABASE``) naming the resource's kind, namespace, name and uid. A role or
database of that name without this exact marker is never touched (a conflict). The administrative user
and ``pg_*`` roles are refused here again, whatever the CRD let through.

Convergence. A managed role's memberships, privileges on databases, schemas and tables, and default
privileges are made exactly what the spec says: what the catalog shows beyond it is revoked (privileges
the role holds as an object's owner are not grants and are left alone).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

RESERVED_PREFIX = "pg_"
ADMIN_ROLES = frozenset({"postgres"})
MARKER_PREFIX = "mpg-operator:"

ObjectKind = Literal["DATABASE", "SCHEMA", "TABLE"]
PRIVILEGES: Mapping[str, frozenset[str]] = {
    "DATABASE": frozenset({"CONNECT", "CREATE", "TEMPORARY"}),
    "SCHEMA": frozenset({"USAGE", "CREATE"}),
    "TABLE": frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}),
}
"""Every privilege the operator grants or revokes, by object kind (anything else is refused)."""


def marker(kind: str, namespace: str, name: str, uid: str) -> str:
    """The comment that marks a role or database as the operator's, for one resource."""
    return f"{MARKER_PREFIX} {kind} {namespace}/{name} uid={uid}"


def is_read_replica(spec: Mapping[str, object], status: Mapping[str, object]) -> bool:
    """A ManagedPostgres (spec and status as stored) that is a read replica now: ``readReplicaOf`` not yet
    released by a promotion, or a service that shows ``isPrimary: false``. Its PostgreSQL is read-only."""
    released = status.get("readReplicaOf")
    if spec.get("readReplicaOf") and not (isinstance(released, Mapping) and released.get("released")):
        return True
    return status.get("isPrimary") is False


def is_reserved_role(name: str, admin: str) -> bool:
    """Roles the operator never creates, alters, grants to or drops."""
    return name.startswith(RESERVED_PREFIX) or name in ADMIN_ROLES or name == admin or name == "public"


# --- statements ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateRole:
    role: str
    login: bool
    connection_limit: int
    valid_until: str | None


@dataclass(frozen=True)
class AlterRole:
    """Sets every attribute the operator manages (and NOCREATEDB NOCREATEROLE)."""

    role: str
    login: bool
    connection_limit: int
    valid_until: str | None


@dataclass(frozen=True)
class CommentOnRole:
    role: str
    comment: str | None


@dataclass(frozen=True)
class SetPassword:
    """``ALTER ROLE ... PASSWORD``: the password is given when the statement runs, never planned."""

    role: str


@dataclass(frozen=True)
class GrantMembership:
    group: str
    role: str


@dataclass(frozen=True)
class RevokeMembership:
    group: str
    role: str


@dataclass(frozen=True, order=True)
class Privilege:
    """One privilege a role holds on one object. ``database`` is where the object is (for a DATABASE,
    the database itself); ``schema`` for schemas and tables; ``table`` for tables."""

    kind: ObjectKind
    database: str
    schema: str | None
    table: str | None
    privilege: str


@dataclass(frozen=True, order=True)
class DefaultPrivilege:
    """A default privilege on tables that ``for_role`` creates in ``schema`` of ``database``."""

    database: str
    schema: str
    for_role: str
    privilege: str


@dataclass(frozen=True)
class _OnObject:
    """Privileges of ``role`` on one object (see :class:`Privilege` for the fields)."""

    role: str
    kind: ObjectKind
    database: str
    schema: str | None
    table: str | None
    privileges: tuple[str, ...]


@dataclass(frozen=True)
class Grant(_OnObject):
    pass


@dataclass(frozen=True)
class Revoke(_OnObject):
    pass


@dataclass(frozen=True)
class _OnFutureTables:
    """Default privileges of ``role`` on the tables ``for_role`` creates later in ``schema``."""

    role: str
    database: str
    schema: str
    for_role: str
    privileges: tuple[str, ...]


@dataclass(frozen=True)
class GrantDefault(_OnFutureTables):
    pass


@dataclass(frozen=True)
class RevokeDefault(_OnFutureTables):
    pass


@dataclass(frozen=True)
class ReassignOwned:
    role: str
    to: str
    database: str


@dataclass(frozen=True)
class DropOwned:
    """Revokes what was granted to the role in ``database`` (after a reassignment it owns nothing there)."""

    role: str
    database: str


@dataclass(frozen=True)
class DropRole:
    role: str


@dataclass(frozen=True)
class CreateDatabase:
    database: str
    owner: str
    encoding: str | None
    locale: str | None


@dataclass(frozen=True)
class CommentOnDatabase:
    database: str
    comment: str | None


@dataclass(frozen=True)
class AlterDatabaseOwner:
    database: str
    owner: str


@dataclass(frozen=True)
class DropDatabase:
    database: str


Statement = (
    CreateRole
    | AlterRole
    | CommentOnRole
    | SetPassword
    | GrantMembership
    | RevokeMembership
    | Grant
    | Revoke
    | GrantDefault
    | RevokeDefault
    | ReassignOwned
    | DropOwned
    | DropRole
    | CreateDatabase
    | CommentOnDatabase
    | AlterDatabaseOwner
    | DropDatabase
)


def runs_in(statement: Statement) -> str | None:
    """The database a statement must run in (``None``: any, e.g. roles and database-level grants)."""
    if isinstance(statement, Grant | Revoke) and statement.kind != "DATABASE":
        return statement.database
    if isinstance(statement, GrantDefault | RevokeDefault | ReassignOwned | DropOwned):
        return statement.database
    return None


# --- desired and observed ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TableGrantSpec:
    database: str
    schema: str
    tables: tuple[str, ...] | None
    """``None``: every table and view of the schema."""
    privileges: tuple[str, ...]


@dataclass(frozen=True)
class DesiredRole:
    name: str
    marker: str
    login: bool = True
    connection_limit: int = -1
    valid_until: str | None = None
    """RFC 3339, as written in the spec."""
    valid_until_epoch: float | None = None
    """The same moment in seconds since the epoch (compared with the catalog)."""
    member_of: frozenset[str] = frozenset()
    databases: frozenset[Privilege] = frozenset()
    schemas: frozenset[Privilege] = frozenset()
    tables: tuple[TableGrantSpec, ...] = ()
    default_privileges: frozenset[DefaultPrivilege] = frozenset()

    def databases_named(self) -> frozenset[str]:
        """Databases whose schemas or tables the spec names (each observed over its own connection)."""
        return frozenset(
            {p.database for p in self.schemas}
            | {t.database for t in self.tables}
            | {d.database for d in self.default_privileges}
        )


@dataclass(frozen=True)
class ObservedRole:
    name: str
    comment: str | None
    login: bool
    connection_limit: int
    valid_until_epoch: float | None
    createdb: bool = False
    createrole: bool = False
    superuser: bool = False
    member_of: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Catalog:
    """What the operator read of the service's catalogs for one role."""

    role: ObservedRole | None
    roles: frozenset[str]
    """Every role name of the service (memberships, default-privilege owners)."""
    databases: frozenset[str]
    visited: frozenset[str] = frozenset()
    """Databases connected to in this pass: their schemas, tables and grants below are known."""
    schemas: frozenset[tuple[str, str]] = frozenset()
    tables: Mapping[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    held: frozenset[Privilege] = frozenset()
    """Privileges granted to the role (database-level everywhere, the rest in visited databases)."""
    default_held: frozenset[DefaultPrivilege] = frozenset()


class SqlReason(StrEnum):
    """Condition reasons of PostgresRole and PostgresDatabase (``Terminal*``: a change by the user is needed;
    the Warning events of a pass that stops carry the same reasons)."""

    READY = "Ready"
    APPLIED = "Applied"
    WAITING = "Waiting"
    CREATION_ONLY = "CreationOnly"
    SERVICE_NOT_FOUND = "ServiceNotFound"
    WAITING_FOR_SERVICE = "WaitingForService"
    SERVICE_UNREACHABLE = "ServiceUnreachable"
    SQL_FAILED = "SqlFailed"
    PASSWORD_SECRET_MISSING = "PasswordSecretMissing"
    OWNS_OBJECTS = "OwnsObjects"
    DEPENDENCIES_UNREACHABLE = "DependenciesUnreachable"
    DATABASE_IN_USE = "DatabaseInUse"
    READ_REPLICA = "TerminalReadReplica"
    INVALID_SPEC = "TerminalInvalidSpec"
    PASSWORD_REJECTED = "TerminalPasswordRejected"
    SECRET_CONFLICT = "TerminalSecretConflict"
    SECRET_REJECTED = "TerminalSecretRejected"
    ROLE_CONFLICT = "TerminalRoleConflict"
    DATABASE_CONFLICT = "TerminalDatabaseConflict"
    RESERVED_NAME = "TerminalReservedName"
    UNKNOWN_PRIVILEGE = "TerminalUnknownPrivilege"


class SqlEvent(StrEnum):
    """The Normal events of PostgresRole and PostgresDatabase (the fixed vocabulary)."""

    ROLE_CREATED = "RoleCreated"
    PRIVILEGES_APPLIED = "PrivilegesApplied"
    PASSWORD_ROTATED = "PasswordRotated"
    ROLE_DROPPED = "RoleDropped"
    DATABASE_CREATED = "DatabaseCreated"
    DATABASE_UPDATED = "DatabaseUpdated"
    DATABASE_DROPPED = "DatabaseDropped"
    DATABASE_RETAINED = "DatabaseRetained"


@dataclass(frozen=True)
class Refusal:
    reason: SqlReason
    message: str


@dataclass(frozen=True)
class RolePlan:
    statements: tuple[Statement, ...] = ()
    refusal: Refusal | None = None
    waiting: tuple[str, ...] = ()
    """What could not be applied yet and why (a database, schema, table or role that does not exist)."""
    creates: bool = False

    @property
    def changes(self) -> bool:
        return bool(self.statements)


def _grouped(privileges: Iterable[Privilege], role: str, *, grant: bool) -> list[Statement]:
    """One GRANT/REVOKE per object, its privileges sorted (stable plans, stable tests)."""
    by_object: dict[tuple[ObjectKind, str, str | None, str | None], list[str]] = {}
    for p in sorted(privileges):
        by_object.setdefault((p.kind, p.database, p.schema, p.table), []).append(p.privilege)
    out: list[Statement] = []
    for (kind, database, schema, table), names in by_object.items():
        make = Grant if grant else Revoke
        out.append(make(role, kind, database, schema, table, tuple(names)))
    return out


def _grouped_defaults(privileges: Iterable[DefaultPrivilege], role: str, *, grant: bool) -> list[Statement]:
    by_target: dict[tuple[str, str, str], list[str]] = {}
    for p in sorted(privileges):
        by_target.setdefault((p.database, p.schema, p.for_role), []).append(p.privilege)
    make = GrantDefault if grant else RevokeDefault
    return [make(role, db, schema, for_role, tuple(names)) for (db, schema, for_role), names in by_target.items()]


def _unknown_privileges(desired: DesiredRole) -> list[str]:
    bad = [
        f"{p.privilege} on {p.kind}"
        for p in (*desired.databases, *desired.schemas)
        if p.privilege not in PRIVILEGES[p.kind]
    ]
    bad += [f"{p} on TABLE" for t in desired.tables for p in t.privileges if p not in PRIVILEGES["TABLE"]]
    bad += [
        f"{p.privilege} on future TABLE" for p in desired.default_privileges if p.privilege not in PRIVILEGES["TABLE"]
    ]
    return bad


def plan_role(desired: DesiredRole, catalog: Catalog, *, admin: str, set_password: bool) -> RolePlan:
    """What to run so that the role is what ``desired`` says. ``set_password``: the Secret's password is
    not known to be the role's (new, rotated, or not confirmed yet): set it (after creating the role)."""
    # The role itself and the roles it joins: never the administrator or a pg_* role. Default privileges
    # may be those of the administrator's future tables (the default forRole), never a pg_* role's.
    reserved = sorted(n for n in {desired.name, *desired.member_of} if is_reserved_role(n, admin))
    reserved += sorted(
        {d.for_role for d in desired.default_privileges if d.for_role != admin and is_reserved_role(d.for_role, admin)}
    )
    if reserved:
        return RolePlan(
            refusal=Refusal(SqlReason.RESERVED_NAME, f"the operator never manages or grants {', '.join(reserved)}")
        )
    unknown = _unknown_privileges(desired)
    if unknown:
        return RolePlan(refusal=Refusal(SqlReason.UNKNOWN_PRIVILEGE, f"unknown privileges: {', '.join(unknown)}"))
    observed = catalog.role
    if observed is not None and observed.comment != desired.marker:
        return RolePlan(
            refusal=Refusal(
                SqlReason.ROLE_CONFLICT,
                f"role {desired.name} exists and was not created for this resource; the operator leaves it alone",
            )
        )
    if observed is not None and observed.superuser:
        return RolePlan(refusal=Refusal(SqlReason.ROLE_CONFLICT, f"role {desired.name} is a superuser; left alone"))

    statements: list[Statement] = []
    waiting: list[str] = []
    if observed is None:
        statements.append(CreateRole(desired.name, desired.login, desired.connection_limit, desired.valid_until))
        statements.append(CommentOnRole(desired.name, desired.marker))
    elif (
        observed.login != desired.login
        or observed.connection_limit != desired.connection_limit
        or observed.valid_until_epoch != desired.valid_until_epoch
        or observed.createdb
        or observed.createrole
    ):
        statements.append(AlterRole(desired.name, desired.login, desired.connection_limit, desired.valid_until))
    if set_password or observed is None:
        statements.append(SetPassword(desired.name))

    # Memberships.
    held_groups = observed.member_of if observed is not None else frozenset()
    for group in sorted(desired.member_of - held_groups):
        if group in catalog.roles:
            statements.append(GrantMembership(group, desired.name))
        else:
            waiting.append(f"role {group} does not exist (memberOf)")
    for group in sorted(held_groups - desired.member_of):
        if not group.startswith(RESERVED_PREFIX):
            statements.append(RevokeMembership(group, desired.name))

    # Privileges on databases: visible from any database.
    wanted_db = {p for p in desired.databases if p.database in catalog.databases}
    waiting += [
        f"database {d} does not exist" for d in sorted({p.database for p in desired.databases} - catalog.databases)
    ]
    held_db = {p for p in catalog.held if p.kind == "DATABASE"}
    grants: list[Privilege] = sorted(wanted_db - held_db)
    revokes: list[Privilege] = sorted(p for p in held_db - wanted_db if p.privilege in PRIVILEGES["DATABASE"])

    # Schemas and tables: known only in the databases visited.
    wanted_in: set[Privilege] = set()
    for p in desired.schemas:
        if p.database not in catalog.visited:
            continue
        if (p.database, p.schema or "") in catalog.schemas:
            wanted_in.add(p)
        else:
            waiting.append(f"schema {p.schema} does not exist in database {p.database}")
    for t in desired.tables:
        if t.database not in catalog.visited:
            continue
        present = catalog.tables.get((t.database, t.schema), frozenset())
        if (t.database, t.schema) not in catalog.schemas:
            waiting.append(f"schema {t.schema} does not exist in database {t.database}")
            continue
        tables = present if t.tables is None else frozenset(t.tables) & present
        missing = sorted(set(t.tables or ()) - present)
        waiting += [f"table {t.schema}.{name} does not exist in database {t.database}" for name in missing]
        wanted_in |= {Privilege("TABLE", t.database, t.schema, name, p) for name in tables for p in t.privileges}
    held_in = {p for p in catalog.held if p.kind != "DATABASE" and p.database in catalog.visited}
    grants += sorted(wanted_in - held_in)
    revokes += sorted(p for p in held_in - wanted_in if p.privilege in PRIVILEGES[p.kind])

    # Default privileges.
    wanted_defaults: set[DefaultPrivilege] = set()
    for d in desired.default_privileges:
        if d.database not in catalog.visited:
            continue
        if (d.database, d.schema) not in catalog.schemas:
            waiting.append(f"schema {d.schema} does not exist in database {d.database}")
        elif d.for_role not in catalog.roles:
            waiting.append(f"role {d.for_role} does not exist (defaultPrivileges.forRole)")
        else:
            wanted_defaults.add(d)
    held_defaults = {d for d in catalog.default_held if d.database in catalog.visited}
    statements += _grouped(grants, desired.name, grant=True)
    statements += _grouped(revokes, desired.name, grant=False)
    statements += _grouped_defaults(sorted(wanted_defaults - held_defaults), desired.name, grant=True)
    statements += _grouped_defaults(
        sorted(d for d in held_defaults - wanted_defaults if d.privilege in PRIVILEGES["TABLE"]),
        desired.name,
        grant=False,
    )
    for db in sorted(desired.databases_named()):
        if db not in catalog.databases:
            waiting.append(f"database {db} does not exist")
        elif db not in catalog.visited:
            waiting.append(f"database {db} could not be read")
    return RolePlan(tuple(statements), None, tuple(dict.fromkeys(waiting)), creates=observed is None)


# --- deleting a role ---------------------------------------------------------------------------------


class OwnedPolicy(StrEnum):
    REFUSE = "Refuse"
    REASSIGN = "Reassign"


@dataclass(frozen=True)
class RoleDependencies:
    """What ties a role to objects (``pg_shdepend``): owned objects and privileges, by database name
    (``""``: shared objects such as databases)."""

    owned: Mapping[str, int] = field(default_factory=dict)
    privileges: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DropPlan:
    statements: tuple[Statement, ...] = ()
    refusal: Refusal | None = None
    forget: bool = False
    """Nothing to drop (the role is gone, or is not the operator's): only the finalizer goes."""


def plan_role_drop(
    role: ObservedRole | None,
    expected_marker: str,
    deps: RoleDependencies,
    *,
    policy: OwnedPolicy,
    reassign_to: str | None,
    roles: frozenset[str],
    connectable: frozenset[str],
    admin: str,
) -> DropPlan:
    """How to drop a managed role: refuse while it owns objects (``Refuse``), or reassign them first;
    privileges granted to it are revoked (``DROP OWNED``) in every database where it holds some."""
    if role is None or role.comment != expected_marker:
        return DropPlan(forget=True)
    owned = {db: n for db, n in deps.owned.items() if n}
    if owned and policy == OwnedPolicy.REFUSE:
        where = ", ".join(f"{n} in {db or 'the cluster (databases)'}" for db, n in sorted(owned.items()))
        return DropPlan(
            refusal=Refusal(
                SqlReason.OWNS_OBJECTS,
                f"role {role.name} owns objects ({where}); drop them or set ownedObjectsPolicy: Reassign",
            )
        )
    if owned and (reassign_to is None or reassign_to not in roles):
        return DropPlan(refusal=Refusal(SqlReason.OWNS_OBJECTS, f"reassignOwnedTo role {reassign_to} does not exist"))
    if owned and reassign_to is not None and reassign_to != admin and is_reserved_role(reassign_to, admin):
        return DropPlan(refusal=Refusal(SqlReason.RESERVED_NAME, f"the operator never reassigns to {reassign_to}"))
    databases = sorted(({db for db in owned if db} | set(deps.privileges)) - {""})
    if ("" in owned or "" in deps.privileges) and not databases:
        # Shared objects (databases, their privileges): REASSIGN/DROP OWNED in any one database.
        databases = ["postgres"] if "postgres" in connectable else sorted(connectable)[:1]
    unreachable = [db for db in databases if db not in connectable]
    if unreachable:
        return DropPlan(
            refusal=Refusal(
                SqlReason.DEPENDENCIES_UNREACHABLE, f"cannot connect to database(s) {', '.join(unreachable)}"
            )
        )
    statements: list[Statement] = []
    for db in databases:
        if owned and reassign_to is not None:
            statements.append(ReassignOwned(role.name, reassign_to, db))
        statements.append(DropOwned(role.name, db))
    statements.append(DropRole(role.name))
    return DropPlan(tuple(statements))


# --- databases ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DesiredDatabase:
    name: str
    marker: str
    owner: str
    encoding: str | None = None
    locale: str | None = None


@dataclass(frozen=True)
class ObservedDatabase:
    name: str
    comment: str | None
    owner: str
    encoding: str
    collate: str
    ctype: str


@dataclass(frozen=True)
class DatabasePlan:
    statements: tuple[Statement, ...] = ()
    refusal: Refusal | None = None
    waiting: tuple[str, ...] = ()
    creates: bool = False
    notes: tuple[str, ...] = ()


def plan_database(
    desired: DesiredDatabase,
    observed: ObservedDatabase | None,
    *,
    roles: frozenset[str],
    claimed: bool,
    admin: str,
) -> DatabasePlan:
    """Create the database (after the resource recorded its claim), mark it, keep its owner.

    ``claimed``: the resource recorded that it is about to create this database; a database of that
    name without a marker is then the one it created before a crash and is marked now (CREATE DATABASE
    cannot run in the transaction of its COMMENT)."""
    if desired.owner != admin and is_reserved_role(desired.owner, admin):
        return DatabasePlan(refusal=Refusal(SqlReason.RESERVED_NAME, f"the owner {desired.owner} is reserved"))
    if desired.owner not in roles:
        return DatabasePlan(waiting=(f"owner role {desired.owner} does not exist",))
    if observed is None:
        return DatabasePlan(
            (
                CreateDatabase(desired.name, desired.owner, desired.encoding, desired.locale),
                CommentOnDatabase(desired.name, desired.marker),
            ),
            creates=True,
        )
    statements: list[Statement] = []
    if observed.comment != desired.marker:
        if not (claimed and observed.comment is None):
            return DatabasePlan(
                refusal=Refusal(
                    SqlReason.DATABASE_CONFLICT,
                    f"database {desired.name} exists and was not created for this resource; the operator "
                    "leaves it alone",
                )
            )
        statements.append(CommentOnDatabase(desired.name, desired.marker))
    if observed.owner != desired.owner:
        statements.append(AlterDatabaseOwner(desired.name, desired.owner))
    notes = []
    if desired.encoding and desired.encoding.upper().replace("-", "") != observed.encoding.upper().replace("-", ""):
        notes.append(f"encoding is {observed.encoding}, not {desired.encoding} (set at creation only)")
    if desired.locale and desired.locale not in (observed.collate, observed.ctype):
        notes.append(f"locale is {observed.collate}, not {desired.locale} (set at creation only)")
    return DatabasePlan(tuple(statements), notes=tuple(notes))


class DatabaseDeletion(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


def plan_database_drop(
    observed: ObservedDatabase | None, expected_marker: str, *, policy: DatabaseDeletion, other_sessions: int
) -> DropPlan:
    """Retain: forget the database (its marker removed, its data kept). Delete: drop it, but not while
    other sessions are connected to it (refused; tried again later)."""
    if observed is None or observed.comment != expected_marker:
        return DropPlan(forget=True)
    if policy == DatabaseDeletion.RETAIN:
        return DropPlan((CommentOnDatabase(observed.name, None),))
    if other_sessions:
        return DropPlan(
            refusal=Refusal(
                SqlReason.DATABASE_IN_USE,
                f"database {observed.name} has {other_sessions} other session(s) connected; it is dropped once "
                "they are gone",
            )
        )
    return DropPlan((DropDatabase(observed.name),))


# --- the role's password ------------------------------------------------------------------------------


class PasswordStep(StrEnum):
    KEEP = "keep"
    """The Secret's password is the role's (confirmed)."""
    SET_PENDING = "set-pending"
    """The Secret holds a password not confirmed yet (written before a crash, or edited): set it."""
    NEW = "new"
    """Generate one, write it to the Secret (pending), then set it."""
    BRING_YOUR_OWN = "byo"
    """Write the user's password to the Secret (pending), then set it."""


def password_step(
    *,
    secret_password: str | None,
    confirmed: bool,
    acceptable: bool,
    own_password: str | None,
    rotate: bool,
    role_created: bool,
    pending_for_rotation: bool = False,
) -> PasswordStep:
    """What to do about the role's password this pass. The Secret is always written before the password
    is set in PostgreSQL, so whatever crash comes between, the next pass sets the Secret's password.
    ``pending_for_rotation``: the Secret's password, not confirmed by status, was generated for the
    rotation asked for now (a pass cut short before status recorded it): it is that rotation's password,
    set (again) as it is, not replaced by another one an application has not read."""
    if own_password is not None:
        if secret_password == own_password:
            return PasswordStep.KEEP if confirmed and not role_created else PasswordStep.SET_PENDING
        return PasswordStep.BRING_YOUR_OWN
    if not secret_password or not acceptable:
        return PasswordStep.NEW
    if rotate:
        return PasswordStep.SET_PENDING if pending_for_rotation and not confirmed else PasswordStep.NEW
    if confirmed and not role_created:
        return PasswordStep.KEEP
    return PasswordStep.SET_PENDING


# --- conditions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """One condition as decided by a pass."""

    status: Literal["True", "False", "Unknown"]
    reason: SqlReason
    message: str


def merge_conditions(
    stored: Iterable[Mapping[str, object]], decided: Mapping[str, Verdict], *, generation: int, stamp: str
) -> list[dict[str, object]]:
    """The Ready and Synced conditions to store; the transition time moves only when the status does."""
    merged: dict[str, dict[str, object]] = {str(c.get("type")): dict(c) for c in stored if c.get("type")}
    for type_, verdict in decided.items():
        old = merged.get(type_)
        same = old is not None and old.get("status") == verdict.status
        merged[type_] = {
            "type": type_,
            "status": verdict.status,
            "reason": verdict.reason.value,
            "message": verdict.message,
            "observedGeneration": generation,
            "lastTransitionTime": old.get("lastTransitionTime", stamp) if same and old is not None else stamp,
        }
    return [merged[t] for t in ("Ready", "Synced") if t in merged]
