"""SQL I/O of the operator: connect to a service's PostgreSQL with the administrative credentials the
operator keeps, read the catalogs, and run a plan of :mod:`mpg_operator.reconcile.sqlplan`.

* Every identifier and literal is quoted by the driver (``psycopg.sql.Identifier`` / ``Literal``);
  privilege keywords come from a fixed list and are checked again here.
* Connections: ``sslmode=verify-full`` against the service's CA (``ca.crt`` of its connection Secret),
  a connect timeout, ``statement_timeout`` and ``lock_timeout``; short-lived (one pass), one per database
  the pass must read or change (schema and table privileges are per database).
* Passwords: ``ALTER ROLE ... PASSWORD`` carries a SCRAM-SHA-256 verifier computed by libpq on this
  side, never the password itself; errors are reported as :class:`SqlError`, whose text is the SQLSTATE and the server's
  primary message with every known secret removed, never the statement.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpg_operator.reconcile import sqlplan as sp

CONNECT_TIMEOUT = 10
STATEMENT_TIMEOUT_MS = 15_000
LOCK_TIMEOUT_MS = 5_000
APPLICATION_NAME = "mpg-operator"
ADMIN_DATABASE = "postgres"
TABLE_KINDS = ("r", "p", "v", "m", "f")


class SqlError(Exception):
    """A statement or a connection failed; the message never holds a password or a statement."""

    def __init__(self, message: str, *, sqlstate: str | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.unreachable = unreachable


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret (and its URL-encoded form) replaced."""
    from urllib.parse import quote

    for secret in secrets:
        if secret:
            for form in {secret, quote(secret, safe="")}:
                text = text.replace(form, "[redacted]")
    return text


def safe_error(exc: BaseException, secrets: Iterable[str | None], *, what: str) -> SqlError:
    """A :class:`SqlError` for a driver exception: class, SQLSTATE and the primary message only."""
    import psycopg

    secrets = list(secrets)
    sqlstate = getattr(exc, "sqlstate", None)
    primary = None
    diag = getattr(exc, "diag", None)
    if diag is not None:
        with contextlib.suppress(Exception):
            primary = diag.message_primary
    if isinstance(exc, psycopg.OperationalError) and sqlstate is None:
        # Connection failures: libpq's text names host and port, never the password (still redacted).
        first = (str(exc).strip().splitlines() or [""])[0]
        return SqlError(f"{what}: {type(exc).__name__}: {redact(first, secrets)[:300]}", unreachable=True)
    detail = f" (SQLSTATE {sqlstate})" if sqlstate else ""
    message = f"{what}: {type(exc).__name__}{detail}"
    if primary:
        message += f": {redact(primary, secrets)[:300]}"
    return SqlError(message, sqlstate=sqlstate)


def scram_verifier(conn: Any, role: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password``, computed by libpq on the client
    (``PQencryptPasswordConn``, SASLprep included): what ``ALTER ROLE ... PASSWORD`` is given, so that
    the password itself never reaches the server, its logs or its statistics."""
    verifier: bytes = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    return verifier.decode()


# --- rendering ----------------------------------------------------------------------------------------


def _privileges(kind: str, privileges: Sequence[str]) -> Any:
    from psycopg import sql

    allowed = sp.PRIVILEGES[kind]
    if not privileges or any(p not in allowed for p in privileges):
        raise ValueError(f"refusing privileges {list(privileges)!r} on {kind}")
    return sql.SQL(", ").join(sql.SQL(p) for p in privileges)


def _object(kind: str, database: str, schema: str | None, table: str | None) -> Any:
    from psycopg import sql

    if kind == "DATABASE":
        return sql.SQL("DATABASE {}").format(sql.Identifier(database))
    if kind == "SCHEMA":
        return sql.SQL("SCHEMA {}").format(sql.Identifier(schema or ""))
    return sql.SQL("TABLE {}.{}").format(sql.Identifier(schema or ""), sql.Identifier(table or ""))


def _role_options(login: bool, connection_limit: int, valid_until: str | None, *, alter: bool) -> Any:
    from psycopg import sql

    parts = [
        sql.SQL("LOGIN" if login else "NOLOGIN"),
        sql.SQL("NOCREATEDB NOCREATEROLE"),
        sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(int(connection_limit))),
    ]
    if valid_until is not None:
        parts.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(valid_until)))
    elif alter:
        parts.append(sql.SQL("VALID UNTIL 'infinity'"))
    return sql.SQL(" ").join(parts)


def render(statement: sp.Statement, *, verifier: str | None = None) -> Any:
    """The statement as a ``psycopg.sql.Composed``: identifiers and literals quoted by the driver.
    ``verifier``: the SCRAM verifier ``SetPassword`` sets (never a clear-text password)."""
    from psycopg import sql

    ident, lit = sql.Identifier, sql.Literal
    s = statement
    if isinstance(s, sp.CreateRole):
        opts = _role_options(s.login, s.connection_limit, s.valid_until, alter=False)
        return sql.SQL("CREATE ROLE {} WITH {}").format(ident(s.role), opts)
    if isinstance(s, sp.AlterRole):
        opts = _role_options(s.login, s.connection_limit, s.valid_until, alter=True)
        return sql.SQL("ALTER ROLE {} WITH {}").format(ident(s.role), opts)
    if isinstance(s, sp.CommentOnRole):
        return sql.SQL("COMMENT ON ROLE {} IS {}").format(ident(s.role), lit(s.comment))
    if isinstance(s, sp.SetPassword):
        if not verifier or not verifier.startswith("SCRAM-SHA-256$"):
            raise ValueError("SetPassword needs a SCRAM-SHA-256 verifier")
        return sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(ident(s.role), lit(verifier))
    if isinstance(s, sp.GrantMembership):
        return sql.SQL("GRANT {} TO {}").format(ident(s.group), ident(s.role))
    if isinstance(s, sp.RevokeMembership):
        return sql.SQL("REVOKE {} FROM {}").format(ident(s.group), ident(s.role))
    if isinstance(s, sp.Grant):
        return sql.SQL("GRANT {} ON {} TO {}").format(
            _privileges(s.kind, s.privileges), _object(s.kind, s.database, s.schema, s.table), ident(s.role)
        )
    if isinstance(s, sp.Revoke):
        return sql.SQL("REVOKE {} ON {} FROM {}").format(
            _privileges(s.kind, s.privileges), _object(s.kind, s.database, s.schema, s.table), ident(s.role)
        )
    if isinstance(s, sp.GrantDefault):
        return sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT {} ON TABLES TO {}").format(
            ident(s.for_role), ident(s.schema), _privileges("TABLE", s.privileges), ident(s.role)
        )
    if isinstance(s, sp.RevokeDefault):
        return sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} REVOKE {} ON TABLES FROM {}").format(
            ident(s.for_role), ident(s.schema), _privileges("TABLE", s.privileges), ident(s.role)
        )
    if isinstance(s, sp.ReassignOwned):
        return sql.SQL("REASSIGN OWNED BY {} TO {}").format(ident(s.role), ident(s.to))
    if isinstance(s, sp.DropOwned):
        return sql.SQL("DROP OWNED BY {}").format(ident(s.role))
    if isinstance(s, sp.DropRole):
        return sql.SQL("DROP ROLE {}").format(ident(s.role))
    if isinstance(s, sp.CreateDatabase):
        query = sql.SQL("CREATE DATABASE {} OWNER {}").format(ident(s.database), ident(s.owner))
        if s.encoding or s.locale:
            query += sql.SQL(" TEMPLATE template0")
        if s.encoding:
            query += sql.SQL(" ENCODING {}").format(lit(s.encoding))
        if s.locale:
            query += sql.SQL(" LC_COLLATE {} LC_CTYPE {}").format(lit(s.locale), lit(s.locale))
        return query
    if isinstance(s, sp.CommentOnDatabase):
        return sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident(s.database), lit(s.comment))
    if isinstance(s, sp.AlterDatabaseOwner):
        return sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident(s.database), ident(s.owner))
    if isinstance(s, sp.DropDatabase):
        return sql.SQL("DROP DATABASE {}").format(ident(s.database))
    raise TypeError(f"unknown statement {type(s).__name__}")


def describe(statement: sp.Statement) -> str:
    """A statement for logs and events: its kind and the names it touches (no literal, no password)."""
    fields = {k: v for k, v in vars(statement).items() if k not in ("comment",)}
    return f"{type(statement).__name__}({', '.join(f'{k}={v}' for k, v in fields.items())})"


# --- connections ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admin:
    """How to reach a service's PostgreSQL as its administrative user (from its connection Secret)."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    ca_pem: str = field(repr=False)


class Session:
    """One pass's connections to a service, one per database, closed at the end of the pass."""

    def __init__(self, admin: Admin, workdir: Path) -> None:
        self.admin = admin
        self._ca = workdir / "ca.crt"
        self._ca.write_text(admin.ca_pem)
        self._connections: dict[str, Any] = {}
        self.secrets: list[str | None] = [admin.password]

    async def connection(self, database: str = ADMIN_DATABASE) -> Any:
        import psycopg

        if database in self._connections:
            return self._connections[database]
        try:
            conn = await psycopg.AsyncConnection.connect(
                host=self.admin.host,
                port=self.admin.port,
                user=self.admin.username,
                password=self.admin.password,
                dbname=database,
                sslmode="verify-full",
                sslrootcert=str(self._ca),
                connect_timeout=CONNECT_TIMEOUT,
                application_name=APPLICATION_NAME,
                autocommit=True,
            )
        except psycopg.Error as e:
            raise safe_error(e, self.secrets, what=f"connecting to database {database}") from None
        try:
            await conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            await conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
        except psycopg.Error as e:
            await conn.close()
            raise safe_error(e, self.secrets, what="setting timeouts") from None
        self._connections[database] = conn
        return conn

    async def query(self, sql_text: str, params: Sequence[Any] = (), *, database: str = ADMIN_DATABASE) -> list[Any]:
        import psycopg

        conn = await self.connection(database)
        try:
            cur = await conn.execute(sql_text, list(params))
            return list(await cur.fetchall())
        except psycopg.Error as e:
            raise safe_error(e, self.secrets, what=f"reading the catalog of {database}") from None

    async def run(self, statements: Sequence[sp.Statement], *, password: str | None = None) -> list[str]:
        """Run ``statements``: grouped by the database they must run in, each group in one transaction
        (CREATE/DROP DATABASE on their own: PostgreSQL runs them outside transactions). Returns their
        descriptions. ``password``: the one ``SetPassword`` sets."""
        import psycopg

        if password:
            self.secrets.append(password)
        done: list[str] = []
        groups: list[tuple[str, list[sp.Statement]]] = []
        for statement in statements:
            db = sp.runs_in(statement) or ADMIN_DATABASE
            alone = isinstance(statement, sp.CreateDatabase | sp.DropDatabase)
            if groups and groups[-1][0] == db and not alone and not _alone(groups[-1][1]):
                groups[-1][1].append(statement)
            else:
                groups.append((db, [statement]))
        for db, group in groups:
            conn = await self.connection(db)
            current: sp.Statement | None = None
            try:
                if _alone(group):
                    current = group[0]
                    await conn.execute(render(current))
                else:
                    async with conn.transaction():
                        for current in group:
                            verifier = None
                            if isinstance(current, sp.SetPassword):
                                if not password:
                                    raise SqlError("no password to set")
                                verifier = scram_verifier(conn, current.role, password)
                            await conn.execute(render(current, verifier=verifier))
            except psycopg.Error as e:
                what = "setting the password" if isinstance(current, sp.SetPassword) else _label(current)
                raise safe_error(e, self.secrets, what=what) from None
            done += [describe(s) for s in group]
        return done

    async def aclose(self) -> None:
        for conn in self._connections.values():
            with contextlib.suppress(Exception):
                await conn.close()
        self._connections.clear()


def _alone(group: Sequence[sp.Statement]) -> bool:
    return len(group) == 1 and isinstance(group[0], sp.CreateDatabase | sp.DropDatabase)


def _label(statement: sp.Statement | None) -> str:
    return describe(statement) if statement is not None else "a statement"


@contextlib.asynccontextmanager
async def session(admin: Admin) -> AsyncIterator[Session]:
    """A :class:`Session` whose CA file and connections live for the ``async with`` only."""
    with tempfile.TemporaryDirectory(prefix="mpg-sql-") as tmp:
        s = Session(admin, Path(tmp))
        try:
            yield s
        finally:
            await s.aclose()


# --- reading the catalogs -----------------------------------------------------------------------------------

_ROLE = """
SELECT r.rolname, shobj_description(r.oid, 'pg_authid'), r.rolcanlogin, r.rolconnlimit,
       CASE WHEN r.rolvaliduntil IS NULL OR r.rolvaliduntil = 'infinity' THEN NULL
            ELSE extract(epoch FROM r.rolvaliduntil)::float8 END,
       r.rolcreatedb, r.rolcreaterole, r.rolsuper,
       ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
             WHERE m.member = r.oid ORDER BY 1)
FROM pg_roles r WHERE r.rolname = %s
"""
_DATABASES = "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate"
_DATABASE_GRANTS = """
SELECT d.datname, a.privilege_type FROM pg_database d, aclexplode(d.datacl) a
WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s) AND a.grantee <> d.datdba
"""
_DEPENDENT_DATABASES = """
SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s)
  AND d.datallowconn
"""
_DEPENDENCIES = """
SELECT COALESCE(d.datname, ''), s.deptype, count(*) FROM pg_shdepend s LEFT JOIN pg_database d ON d.oid = s.dbid
WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s)
GROUP BY 1, 2
"""
_USER_SCHEMA = "n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'"
_SCHEMAS = f"SELECT n.nspname FROM pg_namespace n WHERE {_USER_SCHEMA}"
_TABLES = f"""
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN {TABLE_KINDS!r} AND {_USER_SCHEMA}
"""
_SCHEMA_GRANTS = f"""
SELECT n.nspname, a.privilege_type FROM pg_namespace n, aclexplode(n.nspacl) a
WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s) AND a.grantee <> n.nspowner AND {_USER_SCHEMA}
"""
_TABLE_GRANTS = f"""
SELECT n.nspname, c.relname, a.privilege_type FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
       aclexplode(c.relacl) a
WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s) AND a.grantee <> c.relowner
  AND c.relkind IN {TABLE_KINDS!r}
"""
_DEFAULT_GRANTS = """
SELECT n.nspname, r.rolname, a.privilege_type FROM pg_default_acl d
  JOIN pg_roles r ON r.oid = d.defaclrole JOIN pg_namespace n ON n.oid = d.defaclnamespace,
  aclexplode(d.defaclacl) a
WHERE d.defaclobjtype = 'r' AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)
"""
_DATABASE = """
SELECT d.datname, shobj_description(d.oid, 'pg_database'), pg_get_userbyid(d.datdba),
       pg_encoding_to_char(d.encoding), d.datcollate, d.datctype
FROM pg_database d WHERE d.datname = %s
"""
_OTHER_SESSIONS = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"


async def observe_role(s: Session, role: str, databases_named: Iterable[str]) -> sp.Catalog:
    """The catalog as it concerns ``role``: the role, every role name, the databases, the role's grants
    on databases, and (connected to each) schemas, tables and grants of the databases the spec names or
    where the role holds privileges (``pg_shdepend``): where a revocation may be due."""
    rows = await s.query(_ROLE, [role])
    observed = None
    if rows:
        name, comment, login, limit, until, createdb, createrole, superuser, groups = rows[0]
        observed = sp.ObservedRole(
            name, comment, bool(login), int(limit), until, bool(createdb), bool(createrole), bool(superuser),
            frozenset(groups or ()),
        )  # fmt: skip
    roles = frozenset(r[0] for r in await s.query("SELECT rolname FROM pg_roles"))
    databases = frozenset(r[0] for r in await s.query(_DATABASES))
    held = {sp.Privilege("DATABASE", db, None, None, priv) for db, priv in await s.query(_DATABASE_GRANTS, [role])}
    to_visit = set(databases_named) & databases
    if observed is not None:
        to_visit |= {r[0] for r in await s.query(_DEPENDENT_DATABASES, [role])} & databases
    schemas: set[tuple[str, str]] = set()
    tables: dict[tuple[str, str], set[str]] = {}
    defaults: set[sp.DefaultPrivilege] = set()
    visited: set[str] = set()
    for db in sorted(to_visit):
        try:
            schemas |= {(db, r[0]) for r in await s.query(_SCHEMAS, database=db)}
            for schema, table in await s.query(_TABLES, database=db):
                tables.setdefault((db, schema), set()).add(table)
            if observed is not None:
                for schema, priv in await s.query(_SCHEMA_GRANTS, [role], database=db):
                    held.add(sp.Privilege("SCHEMA", db, schema, None, priv))
                for schema, table, priv in await s.query(_TABLE_GRANTS, [role], database=db):
                    held.add(sp.Privilege("TABLE", db, schema, table, priv))
                for schema, owner, priv in await s.query(_DEFAULT_GRANTS, [role], database=db):
                    defaults.add(sp.DefaultPrivilege(db, schema, owner, priv))
        except SqlError as e:
            if not e.unreachable:
                raise
            continue  # reported by the plan as "could not be read"
        visited.add(db)
    return sp.Catalog(
        role=observed,
        roles=roles,
        databases=databases,
        visited=frozenset(visited),
        schemas=frozenset(schemas),
        tables={k: frozenset(v) for k, v in tables.items()},
        held=frozenset(held),
        default_held=frozenset(defaults),
    )


async def role_dependencies(s: Session, role: str) -> sp.RoleDependencies:
    owned: dict[str, int] = {}
    privileges: set[str] = set()
    for db, deptype, count in await s.query(_DEPENDENCIES, [role]):
        if deptype == "o":
            owned[db] = owned.get(db, 0) + int(count)
        else:
            privileges.add(db)
    return sp.RoleDependencies(owned, frozenset(privileges))


async def observe_database(s: Session, name: str) -> sp.ObservedDatabase | None:
    rows = await s.query(_DATABASE, [name])
    if not rows:
        return None
    datname, comment, owner, encoding, collate, ctype = rows[0]
    return sp.ObservedDatabase(datname, comment, owner, encoding, collate, ctype)


async def role_names(s: Session) -> frozenset[str]:
    return frozenset(r[0] for r in await s.query("SELECT rolname FROM pg_roles"))


async def databases(s: Session) -> frozenset[str]:
    return frozenset(r[0] for r in await s.query(_DATABASES))


async def other_sessions(s: Session, database: str) -> int:
    rows = await s.query(_OTHER_SESSIONS, [database])
    return int(rows[0][0]) if rows else 0
