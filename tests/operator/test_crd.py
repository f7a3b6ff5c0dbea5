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
    for field in ("provider", "region"):  # required: always present on both sides of an update
        rules = spec["properties"][field]["x-kubernetes-validations"]
        assert {
            "rule": "self == oldSelf",
            "message": f"{field} is immutable: it cannot be changed after creation",
        } in rules
    # postgresVersion is optional: a rule on the field would be skipped when the old value is absent,
    # so the rule is on spec and covers adding and removing it.
    version_rules = [r["rule"] for r in spec["x-kubernetes-validations"] if "postgresVersion" in r["rule"]]
    assert version_rules == [
        "has(self.postgresVersion) == has(oldSelf.postgresVersion)"
        " && (!has(self.postgresVersion) || self.postgresVersion == oldSelf.postgresVersion)"
    ]
    for field in ("size", "haType", "serviceName", "tags"):
        rules = spec["properties"][field].get("x-kubernetes-validations", [])
        assert all("oldSelf" not in r["rule"] for r in rules), f"{field} must stay mutable"


def _validate(obj, old=None):
    from kubeemu import validate_custom_resource

    return validate_custom_resource(yaml.safe_load(CRD_FILE.read_text()), obj, old)


def _mp(name="db", **spec):
    return {
        "apiVersion": f"{resource.GROUP}/{resource.VERSION}",
        "kind": resource.KIND,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"provider": "aws", "region": "us-west-2", "size": "r8gd.large", **spec},
    }


def test_postgres_version_cannot_be_added_removed_or_changed():
    message = 'spec: Invalid value: "object": postgresVersion is immutable: it cannot be added, removed or changed after creation'
    assert _validate(_mp(postgresVersion="18")) == []  # creation
    assert _validate(_mp(postgresVersion="18"), old=_mp()) == [message]  # added
    assert _validate(_mp(), old=_mp(postgresVersion="18")) == [message]  # removed
    assert _validate(_mp(postgresVersion="17"), old=_mp(postgresVersion="18")) == [message]  # changed
    assert _validate(_mp(postgresVersion="18", size="r8gd.xlarge"), old=_mp(postgresVersion="18")) == []
    assert _validate(_mp(size="r8gd.xlarge"), old=_mp()) == []


def test_root_rules_see_metadata_name():
    assert _validate(_mp("a" * 50)) == []
    assert _validate(_mp("a" * 51, serviceName="short")) == []
    assert _validate(_mp("a" * 63, serviceName="short")) == []
    (too_long,) = _validate(_mp("a" * 64, serviceName="short"))
    assert "metadata.name must be at most 63 characters" in too_long
    (default_name,) = _validate(_mp("a" * 51))
    assert "metadata.name is longer than 50 characters" in default_name and "set spec.serviceName" in default_name
    (same,) = _validate(_mp("db", credentialsRef={"name": "db-connection"}))
    assert "the default connection Secret <metadata.name>-connection is the spec.credentialsRef Secret" in same


def test_rules_fit_the_api_limits():
    """The CRD's limits are the API's (reference §2): names, tags, enums."""
    _, _, schema = _schema()
    props = schema["properties"]["spec"]["properties"]
    assert (props["serviceName"]["minLength"], props["serviceName"]["maxLength"]) == (1, 50)
    assert props["tags"]["maxProperties"] == 50 - 3  # the operator adds three ownership tags
    assert (props["tags"]["additionalProperties"]["minLength"], props["tags"]["additionalProperties"]["maxLength"]) == (
        1,
        256,
    )
    assert props["postgresVersion"]["enum"] == ["17", "18"]
    assert props["haType"]["enum"] == ["none", "async", "sync"]
    assert props["provider"]["enum"] == ["aws", "gcp"]
    for ref in ("credentialsRef", "connectionSecret"):
        assert props[ref]["properties"]["name"]["maxLength"] == 253


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


def test_every_cel_rule_compiles_and_says_what_is_wrong():
    import celpy

    _, _, schema = _schema()
    rules = [(path, r) for path, node in _walk(schema) for r in node.get("x-kubernetes-validations", [])]
    rules += [("$", r) for r in schema.get("x-kubernetes-validations", []) if ("$", r) not in rules]
    assert len(rules) >= 10
    env = celpy.Environment()
    for path, rule in rules:
        env.compile(rule["rule"])
        assert len(rule.get("message", "")) > 20, (
            f"{path}: rule {rule['rule']!r} needs a message that says what is wrong"
        )
