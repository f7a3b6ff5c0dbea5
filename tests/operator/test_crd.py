"""The CRD in deploy/crds/ is generated from the pydantic models and must not drift from them."""

from pathlib import Path

import pytest
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
    # Required unless the resource is a read replica or a restore (CEL: they inherit them).
    assert "required" not in spec
    for field in ("provider", "region"):
        rules = spec["properties"][field]["x-kubernetes-validations"]
        assert {
            "rule": "self == oldSelf",
            "message": f"{field} is immutable: it cannot be changed after creation",
        } in rules
    # postgresVersion is optional: a rule on the field would be skipped when the old value is absent,
    # so the rule is on spec and covers adding and removing it.
    version_rules = [r["rule"] for r in spec["x-kubernetes-validations"] if "oldSelf.postgresVersion" in r["rule"]]
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
    message = "spec: Invalid value: postgresVersion is immutable: it cannot be added, removed or changed after creation"
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


# --- read replicas and restores -----------------------------------------------------------------


def _replica(name="replica", **spec):
    return {
        "apiVersion": f"{resource.GROUP}/{resource.VERSION}",
        "kind": resource.KIND,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"readReplicaOf": {"name": "primary"}, **spec},
    }


def _restore(name="clone", **spec):
    source = {"managedPostgres": "primary", "pointInTime": "2026-06-01T12:00:00Z"}
    return {
        "apiVersion": f"{resource.GROUP}/{resource.VERSION}",
        "kind": resource.KIND,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"restoreFrom": source, **spec},
    }


@pytest.mark.parametrize(
    ("obj", "old", "expected"),
    [
        (_replica(), None, None),
        (_replica(serviceName="ro", tags={"team": "a"}, size="r8gd.large", haType="none"), None, None),
        (_replica(provider="aws"), None, "provider must not be set on a read replica"),
        (_replica(region="us-west-2"), None, "region must not be set on a read replica"),
        (_replica(postgresVersion="17"), None, "postgresVersion must not be set on a read replica"),
        (_replica(readReplicaOf={"name": "Primary"}), None, "readReplicaOf.name must be the name of a ManagedPostgres"),
        (_replica(readReplicaOf={"name": "other"}), _replica(), "readReplicaOf is immutable"),
        (_mp("replica"), _replica(), "readReplicaOf is immutable"),
        (_replica(), _mp("replica"), "readReplicaOf is immutable"),
        (_restore(), None, None),
        (_restore(size="r8gd.xlarge", haType="async", provider="aws"), None, None),
        (
            _restore(
                restoreFrom={"serviceId": "00000000-0000-4000-8000-000000000000", "pointInTime": "2026-06-01T12:00:00Z"}
            ),
            None,
            None,
        ),
        (
            _restore(
                restoreFrom={
                    "managedPostgres": "a",
                    "serviceId": "00000000-0000-4000-8000-000000000000",
                    "pointInTime": "2026-06-01T12:00:00Z",
                }
            ),
            None,
            "restoreFrom needs exactly one of managedPostgres",
        ),
        (_restore(restoreFrom={"pointInTime": "2026-06-01T12:00:00Z"}), None, "restoreFrom needs exactly one of"),
        (_restore(restoreFrom={"managedPostgres": "a"}), None, "spec.restoreFrom.pointInTime: Required value"),
        (
            _restore(restoreFrom={"serviceId": "nope", "pointInTime": "2026-06-01T12:00:00Z"}),
            None,
            "restoreFrom.serviceId must be a service id",
        ),
        (
            _restore(restoreFrom={"managedPostgres": "primary", "pointInTime": "2026-06-02T00:00:00Z"}),
            _restore(),
            "restoreFrom is immutable",
        ),
        (_mp("clone"), _restore(), "restoreFrom is immutable"),
        (
            _replica(restoreFrom={"managedPostgres": "a", "pointInTime": "2026-06-01T12:00:00Z"}),
            None,
            "mutually exclusive",
        ),
        (
            _replica(serviceId="00000000-0000-4000-8000-000000000000"),
            None,
            "serviceId adopts an existing service: it cannot be combined",
        ),
        (_mp(provider=None), None, "spec.provider: Required value"),
    ],
)
def test_replica_and_restore_rules(obj, old, expected):
    obj["spec"] = {k: v for k, v in obj["spec"].items() if v is not None}
    errors = _validate(obj, old)
    if expected is None:
        assert errors == []
    else:
        assert any(expected in e for e in errors), errors


def test_the_spec_model_agrees_with_the_crd_on_replicas_and_restores():
    from pydantic import ValidationError

    ManagedPostgresSpec = resource.ManagedPostgresSpec
    assert ManagedPostgresSpec.model_validate(_replica()["spec"]).read_replica_of.name == "primary"
    assert ManagedPostgresSpec.model_validate(_restore()["spec"]).restore_from.managed_postgres == "primary"
    for bad in (
        _replica(provider="aws")["spec"],
        _replica(restoreFrom=_restore()["spec"]["restoreFrom"])["spec"],
        _restore(restoreFrom={"managedPostgres": "a", "pointInTime": "yesterday"})["spec"],
        _restore(restoreFrom={"managedPostgres": "a", "pointInTime": "2026-06-01T12:00:00"})["spec"],
        {"region": "us-west-2", "size": "r8gd.large"},
    ):
        with pytest.raises(ValidationError):
            ManagedPostgresSpec.model_validate(bad)
