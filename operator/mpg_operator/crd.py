"""Render the CustomResourceDefinitions (ManagedPostgres, PostgresRole, PostgresDatabase) from the
pydantic models.

``deploy/crds/<plural>.clickhouse.cloud.yaml`` is the output of ``mpg-operator crd --kind <Kind>``;
a test fails when the files and the models drift.
"""

from __future__ import annotations

import argparse
from typing import Any

from mpg_operator import resource, resource_sql

_DROP_KEYS = {"title", "default"}


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn a pydantic JSON schema into a Kubernetes structural schema (refs inlined, no nulls)."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express {schema!r} as a structural schema")
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return _structural({**options[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP_KEYS or key == "$defs":
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _model_schema(model: type[resource._Model]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


def _with_conditions_map(status_schema: dict[str, Any]) -> dict[str, Any]:
    status_schema["properties"]["conditions"].update(
        {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
    )
    return status_schema


def _definition(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    description: str,
    spec_schema: dict[str, Any],
    status_schema: dict[str, Any],
    columns: list[dict[str, Any]],
    root_validations: list[Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{resource.GROUP}"},
        "spec": {
            "group": resource.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": ["clickhouse"],
            },
            "versions": [
                {
                    "name": resource.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "x-kubernetes-validations": list(root_validations),
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def _condition_column(type_: str) -> dict[str, Any]:
    return {"name": type_, "type": "string", "jsonPath": f'.status.conditions[?(@.type=="{type_}")].status'}


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
_NAME_RULE = resource._rule(
    f"self.metadata.name.size() <= {resource.MAX_NAME_LENGTH}",
    f"metadata.name must be at most {resource.MAX_NAME_LENGTH} characters: the operator uses it as a label value",
)


def crd() -> dict[str, Any]:
    """The ManagedPostgres CustomResourceDefinition as a dict."""
    return _definition(
        kind=resource.KIND,
        plural=resource.PLURAL,
        singular=resource.SINGULAR,
        short_names=resource.SHORT_NAMES,
        description="A ClickHouse Cloud Managed Postgres service, its connection Secret and its state.",
        spec_schema=_model_schema(resource.ManagedPostgresSpec),
        status_schema=_with_conditions_map(_model_schema(resource.ManagedPostgresStatus)),
        columns=[
            _condition_column("Ready"),
            {"name": "State", "type": "string", "jsonPath": ".status.state"},
            {"name": "Size", "type": "string", "jsonPath": ".status.size"},
            {"name": "Region", "type": "string", "jsonPath": ".spec.region"},
            {"name": "Host", "type": "string", "jsonPath": ".status.hostname"},
            _AGE,
        ],
        root_validations=list(resource.ROOT_VALIDATIONS),
    )


def role_crd() -> dict[str, Any]:
    """The PostgresRole CustomResourceDefinition as a dict."""
    return _definition(
        kind=resource_sql.ROLE_KIND,
        plural=resource_sql.ROLE_PLURAL,
        singular=resource_sql.ROLE_SINGULAR,
        short_names=resource_sql.ROLE_SHORT_NAMES,
        description="A PostgreSQL role of a ManagedPostgres, its privileges, and a Secret to connect with it.",
        spec_schema=_model_schema(resource_sql.PostgresRoleSpec),
        status_schema=_with_conditions_map(_model_schema(resource_sql.SqlStatus)),
        columns=[
            _condition_column("Ready"),
            _condition_column("Synced"),
            {"name": "Service", "type": "string", "jsonPath": ".spec.serviceRef.name"},
            {"name": "Role", "type": "string", "jsonPath": ".spec.roleName"},
            {"name": "Secret", "type": "string", "jsonPath": ".status.secretName"},
            _AGE,
        ],
        root_validations=[_NAME_RULE],
    )


def database_crd() -> dict[str, Any]:
    """The PostgresDatabase CustomResourceDefinition as a dict."""
    return _definition(
        kind=resource_sql.DATABASE_KIND,
        plural=resource_sql.DATABASE_PLURAL,
        singular=resource_sql.DATABASE_SINGULAR,
        short_names=resource_sql.DATABASE_SHORT_NAMES,
        description="A PostgreSQL database of a ManagedPostgres.",
        spec_schema=_model_schema(resource_sql.PostgresDatabaseSpec),
        status_schema=_with_conditions_map(_model_schema(resource_sql.SqlStatus)),
        columns=[
            _condition_column("Ready"),
            _condition_column("Synced"),
            {"name": "Service", "type": "string", "jsonPath": ".spec.serviceRef.name"},
            {"name": "Database", "type": "string", "jsonPath": ".spec.databaseName"},
            {"name": "Owner", "type": "string", "jsonPath": ".spec.owner"},
            _AGE,
        ],
        root_validations=[_NAME_RULE],
    )


CRDS = {
    resource.KIND: crd,
    resource_sql.ROLE_KIND: role_crd,
    resource_sql.DATABASE_KIND: database_crd,
}
"""Every kind the operator serves -> its CustomResourceDefinition."""


def all_crds() -> list[dict[str, Any]]:
    """Every CustomResourceDefinition of the operator."""
    return [make() for make in CRDS.values()]


def crd_yaml(kind: str = resource.KIND) -> str:
    """A CustomResourceDefinition as YAML text (the content of deploy/crds/)."""
    import yaml

    class _NoAliasDumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    source = "resource.py" if kind == resource.KIND else "resource_sql.py"
    header = f"# Generated by `mpg-operator crd` from operator/mpg_operator/{source}. Do not edit.\n"
    text: str = yaml.dump(CRDS[kind](), Dumper=_NoAliasDumper, sort_keys=False, width=120)
    return header + text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", help="write to this file instead of standard output")
    parser.add_argument(
        "--kind", choices=sorted(CRDS), default=resource.KIND, help="the kind (default ManagedPostgres)"
    )


def main(args: argparse.Namespace) -> int:
    text = crd_yaml(args.kind)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text, end="")
    return 0
