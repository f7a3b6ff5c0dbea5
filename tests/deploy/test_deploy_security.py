"""Security properties of every rendered value set (restricted Pod Security, least-privilege RBAC)."""

from __future__ import annotations

from typing import Any

import pytest
from deploy_chart import of_kind, render
from deploy_values import VALUE_SETS

pytestmark = pytest.mark.usefixtures("helm_tools")

DANGEROUS_VERBS = {"*", "escalate", "bind", "impersonate", "approve", "sign"}


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def objs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(VALUE_SETS[request.param], include_crds=False)


def test_pods_meet_restricted_pod_security(objs: list[dict[str, Any]]) -> None:
    for deployment in of_kind(objs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True
        assert isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(key), key
        assert all("hostPath" not in v for v in pod.get("volumes", []))
        tmp = {v["name"]: v for v in pod["volumes"]}["tmp"]
        assert "emptyDir" in tmp
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert not sc.get("privileged")
            assert sc.get("runAsNonRoot", psc["runAsNonRoot"]) is True
            assert sc.get("runAsUser", psc["runAsUser"]) > 0
            assert sc.get("seccompProfile", psc["seccompProfile"]) == {"type": "RuntimeDefault"}
            assert {m["mountPath"]: m["name"] for m in c["volumeMounts"]}["/tmp"] == "tmp"
            assert c["resources"]["limits"]["memory"], "a memory limit bounds a leaking operator"


def test_rbac_has_no_wildcards_or_escalation(objs: list[dict[str, Any]]) -> None:
    for role in of_kind(objs, "Role") + of_kind(objs, "ClusterRole"):
        name = f"{role['kind']} {role['metadata']['name']}"
        assert role.get("rules"), f"{name} has no rules"
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not any("*" in item for item in rule.get(key, [])), f"{name}: wildcard in {key}: {rule}"
            assert not DANGEROUS_VERBS & set(rule["verbs"]), f"{name}: {rule}"
            assert "nonResourceURLs" not in rule
            assert not {"pods/exec", "pods", "nodes", "roles", "clusterroles"} & set(rule["resources"]), rule


def test_bindings_only_name_the_operator_service_account(objs: list[dict[str, Any]]) -> None:
    sa = {d["spec"]["template"]["spec"]["serviceAccountName"] for d in of_kind(objs, "Deployment")}
    for binding in of_kind(objs, "RoleBinding") + of_kind(objs, "ClusterRoleBinding"):
        assert [(s["kind"], s["name"]) for s in binding["subjects"]] == [("ServiceAccount", n) for n in sa]


@pytest.mark.parametrize("name", [n for n, v in sorted(VALUE_SETS.items()) if v.get("watchNamespaces")])
def test_namespace_scoped_grants_no_secrets_cluster_wide(name: str) -> None:
    values = VALUE_SETS[name]
    objs = render(values, include_crds=False)
    for role in of_kind(objs, "ClusterRole"):
        for rule in role["rules"]:
            assert "secrets" not in rule["resources"], f"ClusterRole {role['metadata']['name']} grants secrets"
    # Roles exist only in the watched namespaces, plus the release namespace's default-Secret reader.
    allowed = set(values["watchNamespaces"])
    for role in of_kind(objs, "Role"):
        ns = role["metadata"]["namespace"]
        if ns not in allowed:
            assert all(rule.get("resourceNames") and rule["verbs"] == ["get"]
                       for rule in role["rules"]), f"Role in unwatched namespace {ns} is too broad"
    for binding in of_kind(objs, "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role", "a RoleBinding to a ClusterRole would hide cluster-level rules"
