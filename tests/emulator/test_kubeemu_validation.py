"""CRD schema and CEL validation: the pure function and the server's 422 answers."""

from __future__ import annotations

import json

import kubernetes
import pytest
from kubeemu_testlib import GROUP, PLURAL, VERSION, WIDGET_CRD, widget
from kubernetes.client.exceptions import ApiException

from kubeemu import validate_custom_resource

# What the real server adds when a schema error (type, enum, required, too long, too many) keeps the
# CEL rules from running (checked against kube-apiserver 1.36 by tests/campaigns/test_bad_input.py).
NOT_CHECKED = (
    "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)


def test_valid_object_has_no_errors() -> None:
    obj = widget("w", tier="small", replicas=2, port=5432, note=None, extra={"any": {"thing": [1]}})
    assert validate_custom_resource(WIDGET_CRD, obj) == []
    assert validate_custom_resource(WIDGET_CRD, widget("w", port="postgres")) == []  # int-or-string


def test_enum_and_required() -> None:
    assert validate_custom_resource(WIDGET_CRD, widget("w", tier="medium")) == [
        'spec.tier: Unsupported value: "medium": supported values: "small", "large"',
        NOT_CHECKED,  # an enum error blocks the CEL rules, and the server says so
    ]
    obj = widget("w")
    del obj["spec"]["region"]
    assert validate_custom_resource(WIDGET_CRD, obj) == ["spec.region: Required value", NOT_CHECKED]


def test_types_and_bounds() -> None:
    assert validate_custom_resource(WIDGET_CRD, widget("w", replicas="2")) == [
        'spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"',
        NOT_CHECKED,
    ]
    assert validate_custom_resource(WIDGET_CRD, widget("w", replicas=0)) == [
        "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1"
    ]
    assert validate_custom_resource(WIDGET_CRD, widget("w", tier="large", replicas=9)) == [
        "spec.replicas: Invalid value: 9: spec.replicas in body should be less than or equal to 5"
    ]
    assert validate_custom_resource(WIDGET_CRD, widget("w", port=1.5))  # neither integer nor string


def test_transition_rule_only_on_update() -> None:
    old = widget("w", tier="small")
    new = widget("w", tier="small")
    new["spec"]["region"] = "us-east-1"
    assert validate_custom_resource(WIDGET_CRD, new) == []  # creation: no oldSelf, rule skipped
    assert validate_custom_resource(WIDGET_CRD, new, old=old) == [
        'spec.region: Invalid value: "us-east-1": region is immutable'  # a scalar: its value, Go-quoted
    ]
    assert validate_custom_resource(WIDGET_CRD, old, old=old) == []


def test_object_level_cel_rule() -> None:
    assert validate_custom_resource(WIDGET_CRD, widget("w", tier="small", replicas=4)) == [
        "spec: Invalid value: more than 3 replicas need the large tier"  # an object: no value shown
    ]
    assert validate_custom_resource(WIDGET_CRD, widget("w", tier="large", replicas=4)) == []


def test_root_level_rules_read_metadata_name_and_transition_rules_on_spec() -> None:
    import copy

    crd = copy.deepcopy(WIDGET_CRD)
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    root["x-kubernetes-validations"] = [{"rule": "self.metadata.name.size() <= 5", "message": "name too long"}]
    root["properties"]["spec"]["x-kubernetes-validations"] = [
        {"rule": "has(self.note) == has(oldSelf.note)", "message": "note cannot be added or removed"}
    ]
    obj = widget("short")
    obj["metadata"]["namespace"] = "default"
    assert validate_custom_resource(crd, obj) == []
    assert validate_custom_resource(crd, widget("toolong")) == ["<nil>: Invalid value: name too long"]
    with_note = widget("short", note="x")
    assert validate_custom_resource(crd, with_note) == []  # creation: transition rule skipped
    assert validate_custom_resource(crd, with_note, old=widget("short")) == [
        "spec: Invalid value: note cannot be added or removed"
    ]
    assert validate_custom_resource(crd, widget("short"), old=with_note) == [
        "spec: Invalid value: note cannot be added or removed"
    ]


def test_unknown_fields_are_pruned_not_rejected() -> None:
    assert validate_custom_resource(WIDGET_CRD, widget("w", unknown="x", tier="small")) == []
    # A pruned field cannot fail validation either (it never reaches the schema).
    assert validate_custom_resource(WIDGET_CRD, {**widget("w"), "junk": {"tier": 1}}) == []


def test_server_rejects_invalid_objects_with_422(custom: kubernetes.client.CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1", tier="medium"))
    body = json.loads(exc.value.body)
    assert exc.value.status == 422 and body["reason"] == "Invalid"
    assert body["message"] == (
        'Widget.example.com "w1" is invalid: [spec.tier: Unsupported value: "medium": supported values: "small", '
        f'"large", {NOT_CHECKED}]'
    )
    assert body["details"]["causes"][0]["field"] == "spec.tier"

    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1", tier="small"))
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, "w1", {"spec": {"region": "us-east-1", "replicas": 0}}
        )
    body = json.loads(exc.value.body)
    assert body["message"] == (  # a minimum error does not block the rules: both are reported
        'Widget.example.com "w1" is invalid: [spec.replicas: Invalid value: 0: '
        "spec.replicas in body should be greater than or equal to 1, "
        'spec.region: Invalid value: "us-east-1": region is immutable]'
    )
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, "w1", {"spec": {"region": "us-east-1"}}
        )
    assert json.loads(exc.value.body)["message"] == (
        'Widget.example.com "w1" is invalid: spec.region: Invalid value: "us-east-1": region is immutable'
    )


def test_server_prunes_unknown_fields(custom: kubernetes.client.CustomObjectsApi) -> None:
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, {**widget("w1", junk=1, extra={"kept": {"deep": True}}), "top": 1}
    )
    assert created["spec"] == {"region": "eu-west-1", "extra": {"kept": {"deep": True}}}
    assert "top" not in created
    status = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "w1", {"status": {"free": {"form": 1}}}
    )
    assert status["status"] == {"free": {"form": 1}}  # preserved by x-kubernetes-preserve-unknown-fields


def test_project_crd_rules_evaluate() -> None:
    """The project's own CRD (map-keyed CEL rules, patterns, list-type map) works with the validator."""
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "managedpostgreses.clickhouse.cloud.yaml"
    if not path.exists():
        pytest.skip("the project CRD is not rendered yet")
    crd = yaml.safe_load(path.read_text())
    version = crd["spec"]["versions"][0]["name"]
    spec = {"provider": "aws", "region": "us-west-2", "size": "r8gd.large"}

    def mp(**more: object) -> dict:
        return {
            "apiVersion": f"{crd['spec']['group']}/{version}",
            "kind": crd["spec"]["names"]["kind"],
            "metadata": {"name": "x"},
            "spec": {**spec, **more},
        }

    assert validate_custom_resource(crd, mp(tags={"team": "db"})) == []
    assert validate_custom_resource(crd, mp(tags={"chc_x": "v"})) == [
        "spec.tags: Invalid value: tag keys starting with chc_ (reserved by ClickHouse Cloud) or "
        "mpg-operator. (reserved by the operator) are not allowed, in any case (CHC_x, Chc_x too)"
    ]
    changed = mp()
    changed["spec"]["region"] = "eu-west-1"
    assert validate_custom_resource(crd, changed, old=mp()) == [
        'spec.region: Invalid value: "eu-west-1": region is immutable: it cannot be changed after creation'
    ]
    dup = mp()
    dup["status"] = {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "A"},
            {"type": "Ready", "status": "False", "reason": "B"},
        ]
    }
    assert validate_custom_resource(crd, dup) == [
        'status.conditions[1]: Duplicate value: map[string]interface {}{"type":"Ready"}'
    ]
