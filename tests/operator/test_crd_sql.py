"""The PostgresRole and PostgresDatabase CRDs (generated from resource_sql.py): in step with the models,
CEL rules that compile and say what is wrong, and hostile input refused by the CRD (the emulator's
verdicts, and the real kube-apiserver's) and by the operator's models alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from support.hostile_sql import HOSTILE_DATABASES, HOSTILE_ROLES

from mpg_operator import crd
from mpg_operator.resource_sql import PostgresDatabaseSpec, PostgresRoleSpec

ROOT = Path(__file__).resolve().parents[2]
ROLE_FILE = ROOT / "deploy" / "crds" / "postgresroles.clickhouse.cloud.yaml"
DATABASE_FILE = ROOT / "deploy" / "crds" / "postgresdatabases.clickhouse.cloud.yaml"
EXAMPLE = ROOT / "deploy" / "examples" / "orders-app-roles.yaml"
API = "clickhouse.cloud/v1alpha1"


def test_crd_files_match_models():
    assert ROLE_FILE.read_text() == crd.crd_yaml("PostgresRole"), "run `make crds`"
    assert DATABASE_FILE.read_text() == crd.crd_yaml("PostgresDatabase"), "run `make crds`"
    chart = ROOT / "deploy" / "helm" / "mpg-operator" / "crds"
    for path in (ROLE_FILE, DATABASE_FILE):
        assert (chart / path.name).read_bytes() == path.read_bytes(), "run `make crds` (syncs the chart)"


def _load(path):
    doc = yaml.safe_load(path.read_text())
    (version,) = doc["spec"]["versions"]
    return doc, version


def test_names_columns_and_status():
    for path, kind, short, columns in (
        (ROLE_FILE, "PostgresRole", ["pgrole"], ["Ready", "Synced", "Service", "Role", "Secret", "Age"]),
        (DATABASE_FILE, "PostgresDatabase", ["pgdb"], ["Ready", "Synced", "Service", "Database", "Owner", "Age"]),
    ):
        doc, version = _load(path)
        assert doc["spec"]["names"]["kind"] == kind and doc["spec"]["names"]["shortNames"] == short
        assert doc["spec"]["group"] == "clickhouse.cloud" and version["name"] == "v1alpha1"
        assert version["subresources"] == {"status": {}}
        assert [c["name"] for c in version["additionalPrinterColumns"]] == columns
        conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def _rules(schema, path="$"):
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for name, sub in (schema.get("properties") or {}).items():
        yield from _rules(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _rules(schema["items"], f"{path}[]")


def test_every_cel_rule_compiles_and_says_what_is_wrong():
    import celpy

    env = celpy.Environment()
    count = 0
    for path in (ROLE_FILE, DATABASE_FILE):
        _, version = _load(path)
        for where, rule in _rules(version["schema"]["openAPIV3Schema"]):
            env.compile(rule["rule"])
            assert len(rule["message"]) > 20, f"{where}: {rule['rule']!r} needs a message"
            count += 1
    assert count >= 40


def role(name="app", **spec):
    return {"apiVersion": API, "kind": "PostgresRole", "metadata": {"name": name, "namespace": "shop"},
            "spec": {"serviceRef": {"name": "orders-db"}, **spec}}  # fmt: skip


def database(name="db", **spec):
    return {"apiVersion": API, "kind": "PostgresDatabase", "metadata": {"name": name, "namespace": "shop"},
            "spec": {"serviceRef": {"name": "orders-db"}, **spec}}  # fmt: skip


def _validate(obj, old=None):
    from kubeemu import validate_custom_resource

    path = ROLE_FILE if obj["kind"] == "PostgresRole" else DATABASE_FILE
    return validate_custom_resource(yaml.safe_load(path.read_text()), obj, old)


def _model(obj):
    return (PostgresRoleSpec if obj["kind"] == "PostgresRole" else PostgresDatabaseSpec).model_validate(obj["spec"])


CASES = [(what, role(**spec)) for what, spec in HOSTILE_ROLES] + [
    (what, database(**spec)) for what, spec in HOSTILE_DATABASES
]


def test_the_worked_example_is_valid():
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    assert {d["kind"] for d in docs} == {"PostgresRole", "PostgresDatabase"}
    for doc in docs:
        assert _validate(doc) == [], doc["metadata"]["name"]
        _model(doc)


@pytest.mark.parametrize(("what", "obj"), CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_refused_by_the_crd_and_by_the_model(what, obj):
    assert _validate(obj) != [], f"the CRD accepted {what}"
    with pytest.raises(ValidationError):
        _model(obj)  # a cluster whose CRD lacks the rules: the operator refuses it (TerminalInvalidSpec)


def test_names_are_immutable_and_the_longest_valid_names_pass():
    longest = "a" * 63
    assert _validate(role(roleName=longest)) == []
    assert _validate(database(databaseName=longest)) == []
    (changed,) = _validate(role(roleName="b"), old=role(roleName="a"))
    assert "roleName is immutable" in changed
    (changed,) = _validate(database(databaseName="b"), old=database(databaseName="a"))
    assert "databaseName is immutable" in changed
    (changed,) = _validate(role(roleName="a", serviceRef={"name": "other"}), old=role(roleName="a"))
    assert "serviceRef.name is immutable" in changed


def test_messages_say_what_is_wrong():
    (message,) = _validate(role(roleName='x"; DROP TABLE t; --'))
    assert "must be a plain PostgreSQL identifier" in message
    (message,) = _validate(role(roleName="pg_x"))
    assert "must not start with 'pg_'" in message
    (message,) = _validate(role(roleName="a", ownedObjectsPolicy="Reassign"))
    assert "Reassign needs reassignOwnedTo" in message


def test_the_real_kube_apiserver_gives_the_same_verdicts(real_kubeconfig):
    """Every hostile case applied to a real kube-apiserver with these CRDs: refused (422), none stored;
    the worked example accepted."""
    import kubernetes
    from support import realkube

    api = realkube.client(real_kubeconfig)
    realkube.ensure_crd(api, crd.role_crd())
    realkube.ensure_crd(api, crd.database_crd())
    custom = kubernetes.client.CustomObjectsApi(api)
    accepted = []
    with realkube.fresh_namespace(api, "sql-crd") as namespace:
        for i, (what, obj) in enumerate(CASES):
            body = {**obj, "metadata": {"name": f"hostile-{i}", "namespace": namespace}}
            plural = "postgresroles" if obj["kind"] == "PostgresRole" else "postgresdatabases"
            try:
                custom.create_namespaced_custom_object("clickhouse.cloud", "v1alpha1", namespace, plural, body)
                accepted.append(what)
            except kubernetes.client.ApiException as e:
                assert e.status == 422, f"{what}: {e.status}"
        for doc in yaml.safe_load_all(EXAMPLE.read_text()):
            plural = "postgresroles" if doc["kind"] == "PostgresRole" else "postgresdatabases"
            body = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
            custom.create_namespaced_custom_object("clickhouse.cloud", "v1alpha1", namespace, plural, body)
    assert accepted == [], f"the real kube-apiserver accepted: {accepted}"
