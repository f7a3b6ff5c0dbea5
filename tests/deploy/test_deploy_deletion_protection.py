"""Deletion protection's admission policy: its CEL (evaluated with cel-python, the emulator's CEL
evaluator), what it matches, the plain manifests in deploy/admission/ and the chart's rendering of
the same objects in both install modes."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from typing import Any

import celpy
import kubernetes_validate
import pytest
import yaml
from deploy_chart import (
    KUBE_VERSION,
    REPO_ROOT,
    helm,
    lint,
    of_kind,
    one,
    render,
    template_error,
)

pytestmark = pytest.mark.usefixtures("helm_tools")

MANIFEST = REPO_ROOT / "deploy" / "admission" / "deletion-protection.yaml"
CRD = yaml.safe_load((REPO_ROOT / "deploy" / "crds" / "managedpostgreses.clickhouse.cloud.yaml").read_text())
POLICY_KIND = "ValidatingAdmissionPolicy"
BINDING_KIND = "ValidatingAdmissionPolicyBinding"
UNPROTECT_PATCH = {"spec": {"deletionProtection": False}}


def manifest_objects() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def policy_and_binding(objs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    return one(of_kind(objs, POLICY_KIND)), one(of_kind(objs, BINDING_KIND))


POLICY, BINDING = policy_and_binding(manifest_objects())


# ------------------------------------------------------------------ CEL, as the apiserver evaluates it


def cel(expression: str, activation: dict[str, Any]) -> Any:
    """Compile and evaluate like kubeemu.validation._cel_program/_cel_eval (celpy.Environment)."""
    env = celpy.Environment()
    program = env.program(env.compile(expression))
    result = program.evaluate({k: celpy.json_to_cel(v) for k, v in activation.items()})
    if isinstance(result, Exception):
        raise result
    return result


def mpg(name: str = "orders-db", namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "clickhouse.cloud/v1alpha1",
        "kind": "ManagedPostgres",
        "metadata": {"name": name, "namespace": namespace, "uid": "0b6c9a1e-5d1f-4c3e-9a57-2f0d2d9e8a11",
                     "finalizers": ["clickhouse.cloud/mpg-operator"]},
        "spec": {"provider": "aws", "region": "us-west-2", "size": "r8gd.large", **spec},
    }
    return obj


def delete_request(old: dict[str, Any], username: str = "alice") -> dict[str, Any]:
    """The variables a DELETE gives a ValidatingAdmissionPolicy: object is null, oldObject stored."""
    return {
        "object": None,
        "oldObject": old,
        "request": {
            "kind": {"group": "clickhouse.cloud", "version": "v1alpha1", "kind": "ManagedPostgres"},
            "resource": {"group": "clickhouse.cloud", "version": "v1alpha1", "resource": "managedpostgreses"},
            "name": old["metadata"]["name"],
            "namespace": old["metadata"]["namespace"],
            "operation": "DELETE",
            "userInfo": {"username": username},
            "dryRun": False,
        },
    }


def admit(policy: dict[str, Any], variables: dict[str, Any]) -> tuple[bool, str | None]:
    """(allowed, message of the first failing validation) as the apiserver would answer."""
    for validation in policy["spec"]["validations"]:
        result = cel(validation["expression"], variables)
        assert isinstance(result, celpy.celtypes.BoolType), f"expression must be a bool, got {result!r}"
        if bool(result):
            continue
        message = validation.get("message")
        if "messageExpression" in validation:
            message = str(cel(validation["messageExpression"], variables))
        return False, message
    return True, None


def expected_message(name: str, namespace: str) -> str:
    return (
        f"ManagedPostgres {namespace}/{name} has spec.deletionProtection: true and was not deleted. To delete it "
        f"deliberately, turn protection off first: kubectl patch managedpostgres {name} -n {namespace} --type merge "
        f"-p '{{\"spec\":{{\"deletionProtection\":false}}}}' then delete it again (its spec.deletionPolicy decides "
        "whether the ClickHouse Cloud service is deleted or kept)."
    )


def test_protected_resource_is_denied_with_a_message_naming_it_and_the_way_out() -> None:
    allowed, message = admit(POLICY, delete_request(mpg(deletionProtection=True)))
    assert not allowed
    assert message == expected_message("orders-db", "shop")
    other = admit(POLICY, delete_request(mpg("billing", "finance", deletionProtection=True)))
    assert other == (False, expected_message("billing", "finance"))


def test_message_command_is_a_real_kubectl_patch_that_turns_protection_off() -> None:
    _, message = admit(POLICY, delete_request(mpg(deletionProtection=True)))
    assert message is not None and "\n" not in message and len(message) <= 5000
    command = message.split("first: ", 1)[1].split(" then delete", 1)[0]
    argv = shlex.split(command)
    assert argv[:5] == ["kubectl", "patch", "managedpostgres", "orders-db", "-n"]
    assert argv[5] == "shop" and argv[6:8] == ["--type", "merge"] and argv[8] == "-p"
    assert json.loads(argv[9]) == UNPROTECT_PATCH
    # The static fallback (used if messageExpression ever fails) says the same, without names.
    static = one(POLICY["spec"]["validations"])["message"]
    assert "\n" not in static and "kubectl patch managedpostgres NAME -n NAMESPACE" in static
    assert json.dumps(UNPROTECT_PATCH, separators=(",", ":")) in static


@pytest.mark.parametrize(
    "old",
    [
        pytest.param(mpg(deletionProtection=False), id="protection-false"),
        pytest.param(mpg(), id="field-absent"),
        pytest.param({k: v for k, v in mpg().items() if k != "spec"}, id="no-spec"),
        pytest.param(mpg(deletionPolicy="Orphan"), id="orphan-unprotected"),
    ],
)
def test_unprotected_resource_is_allowed(old: dict[str, Any]) -> None:
    assert admit(POLICY, delete_request(old)) == (True, None)


def test_every_deleter_is_refused_alike_namespace_controller_included() -> None:
    # Deleting a namespace deletes its ManagedPostgres objects with DELETE requests from the
    # namespace controller: the policy refuses those too (the namespace stays Terminating).
    old = mpg(deletionProtection=True)
    for user in ("alice", "system:serviceaccount:kube-system:namespace-controller", "system:admin"):
        assert admit(POLICY, delete_request(old, username=user))[0] is False


def test_a_resource_already_being_deleted_stays_refused() -> None:
    old = mpg(deletionProtection=True)
    old["metadata"]["deletionTimestamp"] = "2026-11-28T06:00:00Z"
    assert admit(POLICY, delete_request(old))[0] is False


def test_expressions_use_only_variables_a_validating_admission_policy_has() -> None:
    for validation in POLICY["spec"]["validations"]:
        for key in ("expression", "messageExpression"):
            text = validation[key]
            assert "\n" not in text
            assert "object." not in text.replace("oldObject.", ""), "object is null on DELETE"
            assert "params" not in text and "variables." not in text


# ------------------------------------------------------------------ what the policy matches


def test_policy_matches_only_delete_of_managedpostgreses() -> None:
    spec = POLICY["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert set(spec["matchConstraints"]) == {"resourceRules"}
    rule = one(spec["matchConstraints"]["resourceRules"])
    assert rule == {"apiGroups": [CRD["spec"]["group"]], "apiVersions": ["*"], "operations": ["DELETE"],
                    "resources": [CRD["spec"]["names"]["plural"]]}
    assert "paramKind" not in spec and "matchConditions" not in spec
    assert BINDING["spec"] == {"policyName": POLICY["metadata"]["name"], "validationActions": ["Deny"]}


def test_crd_field_is_the_boolean_the_policy_reads() -> None:
    for version in CRD["spec"]["versions"]:
        props = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        if "deletionProtection" in props:  # the policy also works while a version lacks it (has())
            assert props["deletionProtection"]["type"] == "boolean"


@pytest.mark.parametrize("obj", manifest_objects(), ids=lambda o: o["kind"])
def test_plain_manifests_validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    assert "namespace" not in obj["metadata"], "both objects are cluster-scoped"


# ------------------------------------------------------------------ the chart


def without_labels(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"].pop("labels", None)
    return obj


def rendered(values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    return render(values, include_crds=False, **kwargs)


def test_chart_renders_the_plain_manifests_cluster_wide() -> None:
    policy, binding = policy_and_binding(rendered())
    assert without_labels(policy) == without_labels(POLICY), \
        "deploy/admission/deletion-protection.yaml and templates/deletion-protection-policy.yaml differ"
    assert without_labels(binding) == without_labels(BINDING)
    for obj in (policy, binding):
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_chart_namespace_scoped_binds_only_the_watched_namespaces() -> None:
    policy, binding = policy_and_binding(rendered({"watchNamespaces": ["team-a", "team-b"]}))
    assert without_labels(policy) == without_labels(POLICY), "the policy itself does not change"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"] == {
        "namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}]}}
    kubernetes_validate.validate(binding, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["team-a"]}], ids=["cluster-wide", "namespace-scoped"])
def test_chart_can_leave_the_policy_out(values: dict[str, Any]) -> None:
    values = {**values, "deletionProtectionPolicy": {"enabled": False}}
    lint(values)
    objs = rendered(values)
    assert not of_kind(objs, POLICY_KIND) and not of_kind(objs, BINDING_KIND)
    assert of_kind(objs, "Deployment")


def test_chart_names_follow_the_release() -> None:
    policy, binding = policy_and_binding(rendered(release="db"))
    assert policy["metadata"]["name"] == "db-mpg-operator-deletion-protection"
    assert binding["metadata"]["name"] == binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert policy["metadata"]["labels"]["app.kubernetes.io/instance"] == "db"


def test_chart_schema_rejects_a_non_boolean() -> None:
    error = template_error({"deletionProtectionPolicy": {"enabled": "yes"}})
    assert "/deletionProtectionPolicy/enabled" in error
    error = template_error({"deletionProtectionPolicy": {"enable": True}})
    assert "'enable'" in error


def test_notes_mention_protection_only_when_installed() -> None:
    chart = str(Path(REPO_ROOT / "deploy" / "helm" / "mpg-operator"))
    notes = helm("install", "mpg-operator", chart, "--namespace", "mpg-system", "--dry-run=client").stdout
    assert 'ValidatingAdmissionPolicy "mpg-operator-deletion-protection"' in notes.split("NOTES:", 1)[1]
    notes = helm("install", "mpg-operator", chart, "--namespace", "mpg-system", "--dry-run=client",
                 "--set", "deletionProtectionPolicy.enabled=false").stdout
    assert "ValidatingAdmissionPolicy" not in notes.split("NOTES:", 1)[1]


def test_values_yaml_documents_the_default() -> None:
    values = yaml.safe_load((REPO_ROOT / "deploy" / "helm" / "mpg-operator" / "values.yaml").read_text())
    assert values["deletionProtectionPolicy"] == {"enabled": True}


def test_install_md_shows_the_real_refusal_and_the_manifest_path() -> None:
    text = (REPO_ROOT / "docs" / "install.md").read_text()
    assert "## 6. Deletion protection" in text
    assert expected_message("orders-db", "shop") in text, "docs/install.md's refusal differs from the policy's"
    assert f"kubectl apply -f {MANIFEST.relative_to(REPO_ROOT)}" in text
    assert "deletionProtectionPolicy.enabled=false" in text
