"""The CRD in deploy/crds/ is generated from the pydantic models and must not drift from them."""

from pathlib import Path

import yaml

from mpg_operator import crd, resource

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "deploy" / "crds" / "managedpostgreses.clickhouse.cloud.yaml"


def test_crd_file_matches_models():
    assert CRD_FILE.read_text() == crd.crd_yaml(), (
        "deploy/crds is out of date: run `make crds` (mpg-operator crd -o ...)"
    )


def _schema():
    doc = yaml.safe_load(CRD_FILE.read_text())
    (version,) = doc["spec"]["versions"]
    return doc, version, version["schema"]["openAPIV3Schema"]


def test_crd_names_and_columns():
    doc, version, _ = _schema()
    assert doc["metadata"]["name"] == "managedpostgreses.clickhouse.cloud"
    assert doc["spec"]["names"]["shortNames"] == ["mpg"]
    assert doc["spec"]["scope"] == "Namespaced"
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Ready", "State", "Size", "Region", "Host", "Age"]


def _walk(schema, path="$"):
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _walk(schema[key], f"{path}.{key}")


def test_schema_is_structural_without_defaults():
    _, _, schema = _schema()
    for path, node in _walk(schema):
        assert "default" not in node, f"{path} has a schema default (Argo CD would see drift)"
        assert "$ref" not in node and "anyOf" not in node, f"{path} is not structural"
        if path != "$":
            assert "type" in node, f"{path} has no type"


def test_required_and_immutable_fields():
    _, _, schema = _schema()
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["provider", "region", "size"]
    for field in ("provider", "region", "postgresVersion"):
        rules = spec["properties"][field]["x-kubernetes-validations"]
        assert {"rule": "self == oldSelf", "message": f"{field} is immutable"} in rules
    for field in ("size", "haType", "serviceName", "tags"):
        rules = spec["properties"][field].get("x-kubernetes-validations", [])
        assert all(r["rule"] != "self == oldSelf" for r in rules), f"{field} must stay mutable"


def test_every_spec_field_is_described():
    _, _, schema = _schema()
    for path, node in _walk(schema["properties"]["spec"]):
        if path.endswith(".additionalProperties"):
            continue
        assert node.get("description"), f"{path} has no description for kubectl explain"


def test_spec_model_accepts_the_issue_example():
    from mpg_operator.demo import EXAMPLE  # the issue's example, as in deploy/examples/orders-db.yaml

    spec = resource.ManagedPostgresSpec.model_validate(EXAMPLE["spec"])
    assert spec.service_name == "orders db"
    assert spec.credentials_ref.name == "clickhouse-cloud"
    assert spec.connection_secret.name == "orders-db-connection"
