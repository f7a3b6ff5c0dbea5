"""Hostile PostgresRole and PostgresDatabase specs: each must be refused by the CRD (emulator and real
kube-apiserver: tests/operator/test_crd_sql.py) and by the operator's own models, and never reach SQL
(tests/e2e/test_sql_roles_e2e.py proves the catalog unchanged). ``(what, spec)``: each spec is whole
but for ``serviceRef``, and wrong in exactly one way (the ``what``)."""

from __future__ import annotations

HOSTILE_ROLES = [
    ("injection in roleName", {"roleName": 'x"; DROP TABLE items; --'}),
    ("quote in roleName", {"roleName": "o'brien"}),
    ("pg_ roleName", {"roleName": "pg_evil"}),
    ("the administrator", {"roleName": "postgres"}),
    ("public", {"roleName": "public"}),
    ("over-long roleName", {"roleName": "a" * 64}),
    ("upper case roleName", {"roleName": "Robert"}),
    ("unknown privilege ALL", {"roleName": "h1", "tables": [{"database": "orders", "schema": "public", "privileges": ["ALL"]}]}),
    ("privilege with SQL", {"roleName": "h2", "tables": [{"database": "orders", "schema": "public", "privileges": ["SELECT; DROP TABLE items"]}]}),
    ("SUPERUSER as a privilege", {"roleName": "h3", "databases": [{"name": "orders", "privileges": ["SUPERUSER"]}]}),
    ("table privilege on a database", {"roleName": "h4", "databases": [{"name": "orders", "privileges": ["SELECT"]}]}),
    ("membership in a pg_ role", {"roleName": "h5", "memberOf": ["pg_read_server_files"]}),
    ("membership in the administrator", {"roleName": "h6", "memberOf": ["postgres"]}),
    ("injection in a schema", {"roleName": "h7", "schemas": [{"database": "orders", "schema": "public; DROP SCHEMA public", "privileges": ["USAGE"]}]}),
    ("quote in a table", {"roleName": "h8", "tables": [{"database": "orders", "schema": "public", "tables": ['items"--'], "privileges": ["SELECT"]}]}),
    ("injection in a database", {"roleName": "h9", "databases": [{"name": "orders' OR '1", "privileges": ["CONNECT"]}]}),
    ("template database", {"roleName": "h10", "databases": [{"name": "template1", "privileges": ["CONNECT"]}]}),
    ("validUntil with SQL", {"roleName": "h11", "validUntil": "2030-01-01'; DROP TABLE items; --"}),
    ("reassign to the administrator", {"roleName": "h12", "ownedObjectsPolicy": "Reassign", "reassignOwnedTo": "postgres"}),
    ("Reassign without a role", {"roleName": "h13", "ownedObjectsPolicy": "Reassign"}),
    ("negative connection limit", {"roleName": "h14", "connectionLimit": -5}),
    ("default privileges of a pg_ role", {"roleName": "h15", "defaultPrivileges": [{"database": "orders", "schema": "public", "forRole": "pg_monitor", "privileges": ["SELECT"]}]}),
]  # fmt: skip
HOSTILE_DATABASES = [
    ("injection in databaseName", {"databaseName": "x; DROP DATABASE orders"}),
    ("the administrator's database", {"databaseName": "postgres"}),
    ("template1", {"databaseName": "template1"}),
    ("pg_ database", {"databaseName": "pg_x"}),
    ("over-long databaseName", {"databaseName": "d" * 64}),
    ("pg_ owner", {"databaseName": "h", "owner": "pg_monitor"}),
    ("encoding with SQL", {"databaseName": "h", "encoding": "UTF8' TEMPLATE template1 --"}),
    ("locale with a quote", {"databaseName": "h", "locale": "C'"}),
    ("unknown deletion policy", {"databaseName": "h", "deletionPolicy": "Cascade"}),
]  # fmt: skip
