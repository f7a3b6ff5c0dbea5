"""The ``PostgresRole`` and ``PostgresDatabase`` custom resources: roles and databases inside the
PostgreSQL of a ``ManagedPostgres``, made over SQL (the ClickHouse Cloud API has no endpoint for them).

As in :mod:`mpg_operator.resource`, these pydantic models are the single source of truth for the CRDs
(:mod:`mpg_operator.crd`); CEL rules refuse hostile names before anything reaches the operator, and the
models check the same again when the operator reads a spec (a cluster whose CRD lacks the rules).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, JsonValue, model_validator

from mpg_operator.resource import (
    GROUP,
    MANAGED_POSTGRES_NAME_PATTERN,
    MAX_NAME_LENGTH,
    VERSION,
    Condition,
    ConnectionSecretSpec,
    PasswordSecretReference,
    _cel,
    _immutable,
    _Model,
    _rule,
)

__all__ = ["GROUP", "VERSION"]

ROLE_KIND = "PostgresRole"
ROLE_PLURAL = "postgresroles"
ROLE_SINGULAR = "postgresrole"
ROLE_SHORT_NAMES = ["pgrole"]
DATABASE_KIND = "PostgresDatabase"
DATABASE_PLURAL = "postgresdatabases"
DATABASE_SINGULAR = "postgresdatabase"
DATABASE_SHORT_NAMES = ["pgdb"]

MAX_IDENTIFIER_LENGTH = 63  # PostgreSQL's NAMEDATALEN - 1
IDENTIFIER_PATTERN = r"^[a-z_][a-z0-9_]*$"
RESERVED_ROLE_NAMES = (
    "postgres",
    "public",
    "none",
    "current_user",
    "current_role",
    "session_user",
    "user",
    "all",
    "default",
)
"""Role names PostgreSQL reserves or the service's administrator has (never managed by the operator)."""
RESERVED_DATABASE_NAMES = ("postgres", "template0", "template1")
RESERVED_PREFIX = "pg_"

DATABASE_PRIVILEGES = ("CONNECT", "CREATE", "TEMPORARY")
SCHEMA_PRIVILEGES = ("USAGE", "CREATE")
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")

DatabasePrivilege = Literal["CONNECT", "CREATE", "TEMPORARY"]
SchemaPrivilege = Literal["USAGE", "CREATE"]
TablePrivilege = Literal["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _identifier_rules(what: str, reserved: tuple[str, ...]) -> list[dict[str, JsonValue]]:
    rules = [
        _rule(
            f"self.matches('{IDENTIFIER_PATTERN}')",
            f"{what} must be a plain PostgreSQL identifier: lower-case letters, digits and '_', "
            "not starting with a digit (no quotes, spaces or punctuation)",
        ),
        _rule(
            f"!self.startsWith('{RESERVED_PREFIX}')",
            f"{what} must not start with '{RESERVED_PREFIX}': PostgreSQL reserves that prefix for its own objects",
        ),
    ]
    if reserved:
        rules.append(_rule(f"!(self in {_cel_list(reserved)})", f"{what} must not be one of {', '.join(reserved)}"))
    return rules


def _check_identifier(what: str, reserved: tuple[str, ...]) -> AfterValidator:
    pattern = re.compile(IDENTIFIER_PATTERN)

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{what} must be a plain PostgreSQL identifier (lower-case letters, digits, '_')")
        if value.startswith(RESERVED_PREFIX):
            raise ValueError(f"{what} must not start with {RESERVED_PREFIX!r}")
        if value in reserved:
            raise ValueError(f"{what} must not be {value!r}")
        return value

    return AfterValidator(check)


def _identifier(what: str, reserved: tuple[str, ...], description: str) -> object:
    return Field(
        min_length=1,
        max_length=MAX_IDENTIFIER_LENGTH,
        description=description,
        json_schema_extra=_cel(*_identifier_rules(what, reserved), drop=("pattern",)),
    )


RoleName = Annotated[
    str,
    _identifier(
        "a role name",
        RESERVED_ROLE_NAMES,
        "A PostgreSQL role name: 1-63 lower-case letters, digits and '_', not pg_*, not postgres or public.",
    ),
    _check_identifier("a role name", RESERVED_ROLE_NAMES),
]
DatabaseName = Annotated[
    str,
    _identifier(
        "a database name",
        RESERVED_DATABASE_NAMES,
        "A PostgreSQL database name: 1-63 lower-case letters, digits and '_', not pg_*, postgres or template*.",
    ),
    _check_identifier("a database name", RESERVED_DATABASE_NAMES),
]
GrantDatabaseName = Annotated[
    str,
    _identifier(
        "a database name",
        ("template0", "template1"),
        "A database of the service (postgres allowed): lower-case letters, digits and '_'.",
    ),
    _check_identifier("a database name", ("template0", "template1")),
]
SchemaName = Annotated[
    str,
    _identifier(
        "a schema name",
        ("information_schema",),
        "A schema name: 1-63 lower-case letters, digits and '_' (public allowed; not pg_*).",
    ),
    _check_identifier("a schema name", ("information_schema",)),
]
TableName = Annotated[
    str,
    _identifier("a table name", (), "A table name: 1-63 lower-case letters, digits and '_', not pg_*."),
    _check_identifier("a table name", ()),
]


class ServiceRef(_Model):
    """The ManagedPostgres whose PostgreSQL holds the role or database (same namespace)."""

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        description="Name of the ManagedPostgres, in the same namespace. Immutable.",
        json_schema_extra=_cel(
            _rule(
                f"self.matches('{MANAGED_POSTGRES_NAME_PATTERN}')",
                "serviceRef.name must be the name of a ManagedPostgres (lower-case letters, digits, '-' and '.')",
            ),
            _immutable("serviceRef.name"),
        ),
    )


def _privileges(kind: str, values: tuple[str, ...]) -> object:
    return Field(
        min_length=1,
        max_length=len(values),
        description=f"Privileges on the {kind}: any of {', '.join(values)}.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class DatabaseGrant(_Model):
    """Privileges on a database."""

    name: GrantDatabaseName = Field(description="The database.")
    privileges: list[DatabasePrivilege] = _privileges("database", DATABASE_PRIVILEGES)  # type: ignore[assignment]


class SchemaGrant(_Model):
    """Privileges on a schema of a database."""

    database: GrantDatabaseName = Field(description="The database the schema is in.")
    schema_: SchemaName = Field(alias="schema", description="The schema.")
    privileges: list[SchemaPrivilege] = _privileges("schema", SCHEMA_PRIVILEGES)  # type: ignore[assignment]


class TableGrant(_Model):
    """Privileges on tables (and views) of a schema: the listed ones, or every one there is."""

    database: GrantDatabaseName = Field(description="The database the schema is in.")
    schema_: SchemaName = Field(alias="schema", description="The schema of the tables.")
    tables: list[TableName] | None = Field(
        default=None,
        max_length=64,
        description="The tables; omitted: every table and view of the schema (tables made later: see defaultPrivileges).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    privileges: list[TablePrivilege] = _privileges("tables", TABLE_PRIVILEGES)  # type: ignore[assignment]


class DefaultPrivilegeGrant(_Model):
    """Privileges on tables that a role creates later in a schema (ALTER DEFAULT PRIVILEGES)."""

    database: GrantDatabaseName = Field(description="The database the schema is in.")
    schema_: SchemaName = Field(alias="schema", description="The schema.")
    for_role: RoleName | None = Field(
        default=None,
        alias="forRole",
        description="The role whose future tables these are (default: the service's administrative user).",
    )
    privileges: list[TablePrivilege] = _privileges("future tables", TABLE_PRIVILEGES)  # type: ignore[assignment]


class OwnedObjectsPolicy(StrEnum):
    REFUSE = "Refuse"
    REASSIGN = "Reassign"


class DatabaseDeletionPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


MAX_GRANTS = 32

ROLE_SPEC_VALIDATIONS: list[JsonValue] = [
    _rule(
        "!has(self.ownedObjectsPolicy) || self.ownedObjectsPolicy != 'Reassign' || has(self.reassignOwnedTo)",
        "ownedObjectsPolicy Reassign needs reassignOwnedTo: the role that gets what this role owns",
    ),
    _rule(
        "!has(self.reassignOwnedTo) || self.reassignOwnedTo != self.roleName",
        "reassignOwnedTo must name another role than roleName",
    ),
    _rule(
        "!has(self.memberOf) || !(self.roleName in self.memberOf)",
        "a role cannot be a member of itself (memberOf names roleName)",
    ),
    _rule(
        "!has(self.secret) || !has(self.passwordSecretRef) || self.secret.name != self.passwordSecretRef.name",
        "secret.name must differ from passwordSecretRef.name: the operator writes the role's Secret, "
        "never the Secret it reads the password from",
    ),
]


class PostgresRoleSpec(_Model):
    """A PostgreSQL role of a ManagedPostgres, its privileges, and a Secret to connect with."""

    model_config = ConfigDict(
        populate_by_name=True, extra="ignore", json_schema_extra={"x-kubernetes-validations": ROLE_SPEC_VALIDATIONS}
    )

    service_ref: ServiceRef = Field(alias="serviceRef", description="The ManagedPostgres (same namespace).")
    role_name: RoleName = Field(
        alias="roleName",
        description="Name of the role in PostgreSQL. Immutable.",
        json_schema_extra=_cel(*_identifier_rules("roleName", RESERVED_ROLE_NAMES), _immutable("roleName")),
    )
    login: bool | None = Field(default=None, description="The role can log in (default true).")
    connection_limit: int | None = Field(
        default=None,
        alias="connectionLimit",
        ge=-1,
        le=100000,
        description="Concurrent connections the role may open; -1 (default): no limit.",
    )
    valid_until: str | None = Field(
        default=None,
        alias="validUntil",
        max_length=64,
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$",
        description="The password stops working at this moment (RFC 3339, e.g. 2027-01-01T00:00:00Z).",
        json_schema_extra=_cel(
            _rule(
                "self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\\\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$')",
                "validUntil must be an RFC 3339 time, e.g. 2027-01-01T00:00:00Z",
            ),
            drop=("pattern",),
        ),
    )
    member_of: list[RoleName] | None = Field(
        default=None,
        alias="memberOf",
        max_length=MAX_GRANTS,
        description="Roles this role is a member of (inherits their privileges). Not pg_* roles or postgres.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    databases: list[DatabaseGrant] | None = Field(
        default=None, max_length=MAX_GRANTS, description="Privileges on databases (CONNECT, CREATE, TEMPORARY)."
    )
    schemas: list[SchemaGrant] | None = Field(
        default=None, max_length=MAX_GRANTS, description="Privileges on schemas (USAGE, CREATE)."
    )
    tables: list[TableGrant] | None = Field(
        default=None, max_length=MAX_GRANTS, description="Privileges on tables and views of schemas."
    )
    default_privileges: list[DefaultPrivilegeGrant] | None = Field(
        default=None,
        alias="defaultPrivileges",
        max_length=MAX_GRANTS,
        description="Privileges on tables created later in a schema (ALTER DEFAULT PRIVILEGES).",
    )
    database: GrantDatabaseName | None = Field(
        default=None,
        description="The database written to the Secret (database, uri, jdbcUrl); default: the first of "
        "databases, else postgres.",
    )
    secret: ConnectionSecretSpec | None = Field(
        default=None,
        description="The Secret the operator writes for the role (default <metadata.name>-connection), "
        "in the shape of a ManagedPostgres connection Secret.",
    )
    password_secret_ref: PasswordSecretReference | None = Field(
        default=None,
        alias="passwordSecretRef",
        description="Bring your own password (12+ characters, lower and upper case, a digit); without it the "
        "operator generates one.",
    )
    owned_objects_policy: OwnedObjectsPolicy | None = Field(
        default=None,
        alias="ownedObjectsPolicy",
        description="On deletion, what happens to objects the role owns: Refuse (default: the role is kept, "
        "with a condition, until they are gone) or Reassign (to reassignOwnedTo), then the role is dropped.",
    )
    reassign_owned_to: RoleName | None = Field(
        default=None, alias="reassignOwnedTo", description="The role that gets what this role owns (Reassign)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> PostgresRoleSpec:
        if self.owned_objects_policy == OwnedObjectsPolicy.REASSIGN and self.reassign_owned_to is None:
            raise ValueError("ownedObjectsPolicy Reassign needs reassignOwnedTo")
        if self.reassign_owned_to == self.role_name:
            raise ValueError("reassignOwnedTo must name another role")
        if self.role_name in (self.member_of or []):
            raise ValueError("a role cannot be a member of itself")
        return self


class PostgresDatabaseSpec(_Model):
    """A database of a ManagedPostgres."""

    service_ref: ServiceRef = Field(alias="serviceRef", description="The ManagedPostgres (same namespace).")
    database_name: DatabaseName = Field(
        alias="databaseName",
        description="Name of the database in PostgreSQL. Immutable.",
        json_schema_extra=_cel(*_identifier_rules("databaseName", RESERVED_DATABASE_NAMES), _immutable("databaseName")),
    )
    owner: RoleName | None = Field(
        default=None,
        description="The role that owns the database (a PostgresRole's roleName); default: the administrative user.",
    )
    encoding: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        pattern=r"^[A-Za-z0-9_]+$",
        description="Character set (e.g. UTF8). Immutable.",
        json_schema_extra=_cel(
            _rule("self.matches('^[A-Za-z0-9_]+$')", "encoding must be an encoding name such as UTF8"),
            _immutable("encoding"),
            drop=("pattern",),
        ),
    )
    locale: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.@-]+$",
        description="LC_COLLATE and LC_CTYPE (e.g. C, C.UTF-8, en_US.UTF-8). Immutable.",
        json_schema_extra=_cel(
            _rule("self.matches('^[A-Za-z0-9_.@-]+$')", "locale must be a locale name such as C.UTF-8"),
            _immutable("locale"),
            drop=("pattern",),
        ),
    )
    deletion_policy: DatabaseDeletionPolicy | None = Field(
        default=None,
        alias="deletionPolicy",
        description="Retain (default): deleting the resource leaves the database and its data (the operator "
        "forgets it); Delete: the database is dropped (not while other sessions are connected to it).",
    )


class SqlStatus(_Model):
    """Observed state, written by the operator only."""

    service_name: str | None = Field(
        default=None, alias="serviceName", description="The ManagedPostgres this object lives in."
    )
    service_id: str | None = Field(default=None, alias="serviceId", description="ID of its remote service.")
    secret_name: str | None = Field(default=None, alias="secretName", description="The role's Secret.")
    password_version: str | None = Field(
        default=None,
        alias="passwordVersion",
        description="Opaque token of the password set last in PostgreSQL; the Secret carries the same token "
        "when its password is that one.",
    )
    password_rotation_token: str | None = Field(
        default=None,
        alias="passwordRotationToken",
        description="The last clickhouse.cloud/rotate-password token acted on.",
    )
    create_requested: str | None = Field(
        default=None,
        alias="createRequested",
        description="Set before CREATE DATABASE is sent (a database cannot be created and marked in one "
        "transaction): a database of that name found without a marker is then this resource's.",
    )
    observed_generation: int | None = Field(
        default=None, alias="observedGeneration", description="The generation applied last."
    )
    conditions: list[Condition] | None = Field(default=None, description="Ready and Synced conditions.")
