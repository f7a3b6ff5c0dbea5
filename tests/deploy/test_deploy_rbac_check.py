"""The RBAC checker, with hand-made calls, against real chart renders and hand-made RBAC."""

from __future__ import annotations

from typing import Any

import pytest
from deploy_chart import RELEASE_NAMESPACE, render
from rbac_check import (
    ApiCall,
    Call,
    Grant,
    allows,
    as_call,
    assert_rbac_covers,
    describe_call,
    expand_for_namespaces,
    grants,
    unused_grants,
    violations,
)

pytestmark = pytest.mark.usefixtures("helm_tools")

MPG = ("clickhouse.cloud", "v1alpha1", "managedpostgreses")
ROLES = ("clickhouse.cloud", "v1alpha1", "postgresroles")
DATABASES = ("clickhouse.cloud", "v1alpha1", "postgresdatabases")
SECRETS = ("", "v1", "secrets")
EVENTS = ("", "v1", "events")
NEW_EVENTS = ("events.k8s.io", "v1", "events")
CRDS = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
NAMESPACES = ("", "v1", "namespaces")


def call(verb: str, resource: tuple[str, str, str], namespace: str | None = None, name: str | None = None,
         subresource: str | None = None) -> Any:
    group, version, plural = resource
    return ApiCall(verb, group, version, plural, subresource, namespace, name)


def contract_calls(ns: str = "shop") -> list[Any]:
    """What the operator calls, as the end-to-end suite records it in a cluster-wide run."""
    return [
        call("list", MPG), call("watch", MPG),
        call("get", MPG, ns, "orders-db"), call("patch", MPG, ns, "orders-db"),
        call("patch", MPG, ns, "orders-db", "status"),
        call("list", SECRETS), call("watch", SECRETS),
        call("get", SECRETS, ns, "orders-db-connection"), call("create", SECRETS, ns),
        call("patch", SECRETS, ns, "orders-db-connection"),
        call("create", EVENTS, ns),
        call("list", CRDS), call("watch", CRDS),
        # PostgresRole / PostgresDatabase: read, finalizer, status; their role Secrets as above.
        call("list", ROLES), call("watch", ROLES), call("get", ROLES, ns, "orders-reader"),
        call("patch", ROLES, ns, "orders-reader"), call("patch", ROLES, ns, "orders-reader", "status"),
        call("list", DATABASES), call("watch", DATABASES), call("get", DATABASES, ns, "orders"),
        call("patch", DATABASES, ns, "orders"), call("patch", DATABASES, ns, "orders", "status"),
    ]


@pytest.fixture(scope="module")
def cluster_wide() -> list[dict[str, Any]]:
    return render({}, include_crds=False)


@pytest.fixture(scope="module")
def namespaced() -> list[dict[str, Any]]:
    return render({"watchNamespaces": ["shop", "billing"], "credentials": {"existingSecret": "ch-api"}},
                  include_crds=False)


def test_local_call_record_has_the_emulator_fields() -> None:
    assert Call._fields == ("verb", "api_group", "version", "resource", "subresource", "namespace", "name")
    assert all(hasattr(ApiCall, f) or f in getattr(ApiCall, "__dataclass_fields__", {}) for f in Call._fields)


def test_contract_calls_are_allowed_cluster_wide_and_use_every_grant(cluster_wide: list[dict[str, Any]]) -> None:
    calls = contract_calls()
    assert violations(calls, cluster_wide) == []
    assert unused_grants(calls, cluster_wide) == []


def test_calls_outside_the_rules_are_violations(cluster_wide: list[dict[str, Any]]) -> None:
    bad = [
        call("delete", MPG, "shop", "orders-db"),  # the operator never deletes user objects
        call("list", ("", "v1", "pods"), "shop"),
        call("get", ("", "v1", "configmaps"), "shop", "settings"),
        call("create", CRDS),
        call("deletecollection", SECRETS, "shop"),
        call("patch", ("kopf.dev", "v1", "clusterkopfpeerings"), None, "mpg-operator"),  # peering is off
        # The operator never creates, updates or deletes PostgresRole / PostgresDatabase objects.
        call("delete", ROLES, "shop", "orders-reader"), call("create", ROLES, "shop"),
        call("update", DATABASES, "shop", "orders"), call("delete", DATABASES, "shop", "orders"),
        call("update", ROLES, "shop", "orders-reader", "status"),
    ]
    assert violations(contract_calls() + bad, cluster_wide) == [as_call(c) for c in bad]


def test_unused_grants_are_reported(cluster_wide: list[dict[str, Any]]) -> None:
    calls = [c for c in contract_calls() if not (c.resource == "secrets" and c.verb == "patch")]
    unused = unused_grants(calls, cluster_wide)
    assert [(g.api_group, g.resource, g.verb, g.scope) for g in unused] == [("", "secrets", "patch", None)]
    assert str(unused[0]) == "patch core/secrets cluster-wide (via ClusterRole mpg-operator)"


def test_namespace_scoped_render_with_a_recorded_cluster_wide_run(namespaced: list[dict[str, Any]]) -> None:
    calls = contract_calls("shop") + contract_calls("billing") + [call("get", SECRETS, RELEASE_NAMESPACE, "ch-api")]
    assert violations(calls, namespaced, ["shop", "billing"]) == []
    assert unused_grants(calls, namespaced, ["shop", "billing"]) == []
    # Not expanded, the cluster-wide list/watch calls are exactly what a namespaced install forbids.
    assert {(c.verb, c.resource) for c in violations(calls, namespaced)} == {
        ("list", "managedpostgreses"), ("watch", "managedpostgreses"), ("list", "secrets"), ("watch", "secrets"),
        ("list", "postgresroles"), ("watch", "postgresroles"), ("list", "postgresdatabases"),
        ("watch", "postgresdatabases")}


def test_namespace_scoped_render_confines_secrets(namespaced: list[dict[str, Any]]) -> None:
    ns = ["shop", "billing"]
    outside = [
        call("get", SECRETS, "kube-system", "bootstrap-token"),
        call("get", SECRETS, RELEASE_NAMESPACE, "some-other-secret"),  # only the default Secret by name
        call("list", SECRETS, RELEASE_NAMESPACE),
        call("patch", SECRETS, RELEASE_NAMESPACE, "ch-api"),
        call("get", MPG, "team-x", "db"),
    ]
    assert violations(outside, namespaced, ns) == [as_call(c) for c in outside]
    assert violations([call("get", SECRETS, RELEASE_NAMESPACE, "ch-api")], namespaced, ns) == []
    assert violations([call("watch", SECRETS, RELEASE_NAMESPACE, "ch-api")], namespaced, ns) != []


def test_expansion_follows_kopf_namespaced_mode() -> None:
    recorded = [call("watch", MPG), call("list", CRDS), call("get", SECRETS, "shop", "s"),
                call("patch", ("kopf.dev", "v1", "clusterkopfpeerings"), None, "mpg-operator")]
    expanded = expand_for_namespaces(recorded, ["a", "b"])
    assert [(c.verb, c.resource, c.namespace) for c in expanded] == [
        ("list", "namespaces", None), ("watch", "namespaces", None),
        ("watch", "managedpostgreses", "a"), ("watch", "managedpostgreses", "b"),
        ("list", "customresourcedefinitions", None), ("get", "secrets", "shop"),
        ("patch", "kopfpeerings", "a"), ("patch", "kopfpeerings", "b")]
    assert expand_for_namespaces(recorded, None) == [as_call(c) for c in recorded]


def test_peering_calls_are_covered_when_peering_is_on() -> None:
    peering = [call(v, ("kopf.dev", "v1", "clusterkopfpeerings"), None,
                    None if v in ("list", "watch") else "mpg-operator") for v in ("get", "list", "watch", "patch")]
    calls = contract_calls() + peering
    assert violations(calls, render({"peering": {"enabled": True}}, include_crds=False)) == []
    objs = render({"peering": {"enabled": True}, "watchNamespaces": ["shop"]}, include_crds=False)
    assert violations(calls, objs, ["shop"]) == []
    assert unused_grants(calls, objs, ["shop"]) == []


def rbac(kind: str, name: str, rules: list[dict[str, Any]], namespace: str | None = None) -> dict[str, Any]:
    meta = {"name": name} | ({"namespace": namespace} if namespace else {})
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta, "rules": rules}


def binding(kind: str, name: str, role_kind: str, role: str, sa: str = "op", namespace: str | None = None) -> dict[str, Any]:
    meta = {"name": name} | ({"namespace": namespace} if namespace else {})
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": "ops"}]}


SA = ("ops", "op")
READ_MPG = {"apiGroups": ["clickhouse.cloud"], "resources": ["managedpostgreses"], "verbs": ["get"]}


def test_rolebinding_to_clusterrole_grants_only_in_its_namespace() -> None:
    objs = [rbac("ClusterRole", "reader", [READ_MPG]), binding("RoleBinding", "rb", "ClusterRole", "reader", namespace="a")]
    [g] = grants(objs, SA)
    assert g == Grant("ClusterRole", "reader", "a", "clickhouse.cloud", "managedpostgreses", "get")
    assert allows(g, Call("get", "clickhouse.cloud", "v1alpha1", "managedpostgreses", None, "a", "x"))
    assert not allows(g, Call("get", "clickhouse.cloud", "v1alpha1", "managedpostgreses", None, "b", "x"))
    assert not allows(g, Call("get", "clickhouse.cloud", "v1alpha1", "managedpostgreses", "status", "a", "x"))


def test_rolebinding_never_grants_cluster_scoped_resources() -> None:
    rule = {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list"]}
    objs = [rbac("Role", "r", [rule], "a"), binding("RoleBinding", "rb", "Role", "r", namespace="a")]
    assert violations([call("list", CRDS)], objs, service_account=SA) == [as_call(call("list", CRDS))]


def test_other_service_accounts_bindings_are_ignored() -> None:
    objs = [rbac("ClusterRole", "reader", [READ_MPG]), binding("ClusterRoleBinding", "crb", "ClusterRole", "reader", sa="someone-else")]
    assert grants(objs, SA) == []


def test_wildcards_and_subresources_follow_kubernetes_semantics() -> None:
    rules = [{"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]}]
    objs = [rbac("ClusterRole", "wide", rules), binding("ClusterRoleBinding", "crb", "ClusterRole", "wide")]
    [g] = grants(objs, SA)
    assert allows(g, Call("patch", "clickhouse.cloud", "v1alpha1", "managedpostgreses", "status", "a", "x"))
    assert not allows(g, Call("patch", "clickhouse.cloud", "v1alpha1", "managedpostgreses", None, "a", "x"))


def test_dangling_binding_is_an_error() -> None:
    with pytest.raises(ValueError, match="missing Role nowhere"):
        grants([binding("RoleBinding", "rb", "Role", "nowhere", namespace="a")], SA)


def test_describe_call() -> None:
    assert describe_call(call("patch", MPG, "shop", "orders-db", "status")) == \
        "patch clickhouse.cloud/managedpostgreses/status orders-db in shop"
    assert describe_call(call("list", NAMESPACES)) == "list core/namespaces cluster-wide"


def test_assert_rbac_covers_both_install_modes() -> None:
    assert_rbac_covers(contract_calls("shop"))


def test_assert_rbac_covers_with_a_default_credentials_secret() -> None:
    calls = contract_calls("shop") + [call("get", SECRETS, RELEASE_NAMESPACE, "ch-api")]
    with pytest.raises(AssertionError, match=f"not allowed: get core/secrets ch-api in {RELEASE_NAMESPACE}"):
        assert_rbac_covers(calls)  # the namespaced render has no access to an unconfigured Secret
    assert_rbac_covers(calls, base_values={"credentials": {"existingSecret": "ch-api"}})


def test_assert_rbac_covers_reports_both_directions() -> None:
    calls = [c for c in contract_calls("shop") if not (c.resource == "secrets" and c.verb == "patch")]
    calls += [call("get", ("", "v1", "pods"), "shop", "p")]
    with pytest.raises(AssertionError) as excinfo:
        assert_rbac_covers(calls)
    text = str(excinfo.value)
    assert "values {}: not allowed: get core/pods p in shop" in text
    assert "values {}: never used: patch core/secrets cluster-wide" in text
    assert "values {'watchNamespaces': ['shop']}: never used: patch core/secrets in shop" in text
    # A justified exception: a run that never patches a connection Secret.
    with pytest.raises(AssertionError, match="pods"):
        assert_rbac_covers(calls, allow_unused=lambda g: g.resource == "secrets" and g.verb == "patch")
