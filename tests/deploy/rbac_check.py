"""Check Kubernetes API calls against the chart's rendered RBAC, both ways.

- :func:`violations`: calls that the rendered Roles/ClusterRoles bound to the operator's
  ServiceAccount do not allow (the operator would get 403 Forbidden);
- :func:`unused_grants`: grants that no call used (RBAC broader than needed);
- :func:`assert_rbac_covers`: both checks for cluster-wide and namespace-scoped renders of the chart,
  for the end-to-end suite's recorded calls.

A call is anything with the attributes of ``ApiCall(verb, api_group, version, resource, subresource,
namespace, name)`` (``kubeemu.ApiCall`` or the local stand-in below): ``namespace`` is
None for cluster-scoped resources and for cluster-wide list/watch; ``name`` is None for
list/watch/create. Matching follows the Kubernetes RBAC authorizer: api group, resource (with
``/subresource``), verb, resourceNames (a rule with resourceNames matches only calls naming one of
them), and scope (a RoleBinding only grants inside its namespace, a ClusterRoleBinding everywhere).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple


class Call(NamedTuple):
    """One Kubernetes API request (the fields of ``kubeemu.ApiCall``)."""

    verb: str
    api_group: str
    version: str
    resource: str
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None


try:  # the emulator's own call record, once it exists
    from kubeemu import ApiCall  # type: ignore[attr-defined]
except ImportError:  # written concurrently; the local one has the same fields
    ApiCall = Call  # type: ignore[misc,assignment]


# Cluster-scoped resources the operator (or kopf) may touch; everything else is namespaced.
CLUSTER_SCOPED = frozenset({
    ("", "namespaces"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("kopf.dev", "clusterkopfpeerings"),
    ("zalando.org", "clusterkopfpeerings"),
    ("", "nodes"),
    ("", "persistentvolumes"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
})
NAMELESS_VERBS = frozenset({"create", "list", "watch", "deletecollection"})


@dataclass(frozen=True)
class Grant:
    """One verb on one resource, granted through one binding."""

    role_kind: str  # Role or ClusterRole
    role_name: str
    scope: str | None  # the RoleBinding's namespace; None for a ClusterRoleBinding (everywhere)
    api_group: str
    resource: str  # "managedpostgreses" or "managedpostgreses/status"
    verb: str
    resource_names: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"in {self.scope}" if self.scope else "cluster-wide"
        names = f" {list(self.resource_names)}" if self.resource_names else ""
        group = self.api_group or "core"
        return f"{self.verb} {group}/{self.resource}{names} {where} (via {self.role_kind} {self.role_name})"


def describe_call(call: Any) -> str:
    """A one-line text for a call (no request body: nothing secret can be in it)."""
    resource = call.resource + (f"/{call.subresource}" if call.subresource else "")
    where = f"in {call.namespace}" if call.namespace else "cluster-wide"
    name = f" {call.name}" if call.name else ""
    return f"{call.verb} {call.api_group or 'core'}/{resource}{name} {where}"


def is_cluster_scoped(api_group: str, resource: str) -> bool:
    return (api_group, resource) in CLUSTER_SCOPED


def _service_account(rendered: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """(namespace, name) of the ServiceAccount the operator's Deployments run as."""
    accounts = set()
    for obj in rendered:
        if obj.get("kind") == "Deployment":
            pod = obj["spec"]["template"]["spec"]
            accounts.add((obj["metadata"].get("namespace", "default"), pod.get("serviceAccountName", "default")))
    if len(accounts) != 1:
        raise ValueError(f"expected the Deployments to share one ServiceAccount, found {sorted(accounts)}")
    return accounts.pop()


def grants(rendered: Sequence[Mapping[str, Any]], service_account: tuple[str, str] | None = None) -> list[Grant]:
    """Every grant the rendered bindings give the ServiceAccount (one per group x resource x verb)."""
    sa_namespace, sa_name = service_account or _service_account(rendered)
    roles: dict[tuple[str, str | None, str], list[Mapping[str, Any]]] = {}
    for obj in rendered:
        if obj.get("kind") == "ClusterRole":
            roles[("ClusterRole", None, obj["metadata"]["name"])] = obj.get("rules") or []
        elif obj.get("kind") == "Role":
            roles[("Role", obj["metadata"].get("namespace"), obj["metadata"]["name"])] = obj.get("rules") or []

    out: list[Grant] = []
    for binding in rendered:
        kind = binding.get("kind")
        if kind not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subjects = binding.get("subjects") or []
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa_name
                   and s.get("namespace") == sa_namespace for s in subjects):
            continue
        scope = binding["metadata"].get("namespace") if kind == "RoleBinding" else None
        ref = binding["roleRef"]
        if kind == "ClusterRoleBinding" and ref["kind"] != "ClusterRole":
            raise ValueError(f"{kind} {binding['metadata']['name']} refers to a {ref['kind']}")
        key = (ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"])
        if key not in roles:
            raise ValueError(f"{kind} {binding['metadata']['name']} refers to a missing {ref['kind']} {ref['name']}")
        for rule in roles[key]:
            if rule.get("nonResourceURLs"):
                continue
            names = tuple(rule.get("resourceNames") or ())
            for group in rule.get("apiGroups") or ():
                for resource in rule.get("resources") or ():
                    for verb in rule.get("verbs") or ():
                        out.append(Grant(ref["kind"], ref["name"], scope, group, resource, verb, names))
    return out


def _resource_matches(granted: str, resource: str, subresource: str | None) -> bool:
    full = f"{resource}/{subresource}" if subresource else resource
    if granted in ("*", full):
        return True
    if subresource and granted == f"*/{subresource}":
        return True
    return bool(granted.endswith("/*") and subresource and granted[:-2] == resource)


def allows(grant: Grant, call: Any) -> bool:
    """Whether this grant authorizes this call (the Kubernetes RBAC rule semantics)."""
    if grant.api_group not in ("*", call.api_group):
        return False
    if grant.verb not in ("*", call.verb):
        return False
    if not _resource_matches(grant.resource, call.resource, call.subresource):
        return False
    if grant.resource_names and call.name not in grant.resource_names:
        return False
    if grant.scope is None:
        return True
    # A RoleBinding grants namespaced resources inside its own namespace only.
    return call.namespace == grant.scope and not is_cluster_scoped(call.api_group, call.resource)


def expand_for_namespaces(calls: Iterable[Any], namespaces: Sequence[str] | None) -> list[Call]:
    """Calls as a namespace-scoped operator (``--namespace`` for each of ``namespaces``) makes them.

    A run recorded with ``--all-namespaces`` lists/watches namespaced resources cluster-wide and
    keeps a ClusterKopfPeering alive; with ``--namespace``, kopf does the same per namespace, uses
    namespaced KopfPeerings, and also lists and watches Namespaces cluster-wide to serve the
    watched ones as they appear (kopf's ``namespace_observer``; it skips that with
    ``--all-namespaces``). Calls already inside a namespace are kept as they are.
    """
    calls = [as_call(c) for c in calls]
    if not namespaces:
        return calls
    out = [Call("list", "", "v1", "namespaces"), Call("watch", "", "v1", "namespaces")]
    for call in calls:
        if call.resource == "clusterkopfpeerings":
            out.extend(call._replace(resource="kopfpeerings", namespace=ns) for ns in namespaces)
        elif call.namespace is None and not is_cluster_scoped(call.api_group, call.resource):
            out.extend(call._replace(namespace=ns) for ns in namespaces)
        else:
            out.append(call)
    return out


def as_call(call: Any) -> Call:
    """Accept any object with ApiCall's attributes (named tuple, dataclass, ...)."""
    return Call(call.verb, call.api_group or "", call.version, call.resource, call.subresource or None,
                call.namespace or None, call.name or None)


def _dedup(items: Iterable[Any]) -> list[Any]:
    seen: set[Any] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def violations(
    calls: Iterable[Any],
    rendered_objects: Sequence[Mapping[str, Any]],
    namespace_scoped_namespaces: Sequence[str] | None = None,
    *,
    service_account: tuple[str, str] | None = None,
) -> list[Call]:
    """Calls (after :func:`expand_for_namespaces`) that no grant of the rendered RBAC allows.

    ``service_account`` is (namespace, name); by default the one the rendered Deployments use.
    """
    granted = grants(rendered_objects, service_account)
    expanded = expand_for_namespaces([as_call(c) for c in calls], namespace_scoped_namespaces)
    return _dedup(c for c in expanded if not any(allows(g, c) for g in granted))


def unused_grants(
    calls: Iterable[Any],
    rendered: Sequence[Mapping[str, Any]],
    namespace_scoped_namespaces: Sequence[str] | None = None,
    *,
    service_account: tuple[str, str] | None = None,
) -> list[Grant]:
    """Grants of the rendered RBAC that none of the calls needed."""
    expanded = expand_for_namespaces([as_call(c) for c in calls], namespace_scoped_namespaces)
    return _dedup(g for g in grants(rendered, service_account) if not any(allows(g, c) for c in expanded))


def _load_chart_helpers():
    try:
        import deploy_chart
    except ImportError:  # imported from outside tests/deploy: load the sibling file by path
        path = Path(__file__).with_name("deploy_chart.py")
        spec = importlib.util.spec_from_file_location("deploy_chart", path)
        deploy_chart = importlib.util.module_from_spec(spec)
        sys.modules["deploy_chart"] = deploy_chart
        spec.loader.exec_module(deploy_chart)
    return deploy_chart


def _crd_namespaces(calls: Iterable[Any]) -> list[str]:
    return sorted({c.namespace for c in calls if c.resource == "managedpostgreses" and c.namespace})


def assert_rbac_covers(
    calls: Iterable[Any],
    values_sets: Iterable[Mapping[str, Any]] | None = None,
    *,
    allow_unused: Callable[[Grant], bool] | None = None,
    release_namespace: str | None = None,
    base_values: Mapping[str, Any] | None = None,
) -> None:
    """Render the chart with each values set; assert every call is allowed and every grant used.

    ``values_sets`` defaults to the cluster-wide install ({}) and a namespace-scoped install whose
    ``watchNamespaces`` are the namespaces the calls touched ManagedPostgres objects in. A set with
    ``watchNamespaces`` is checked with :func:`expand_for_namespaces`. ``allow_unused(grant)`` may
    excuse grants a given run legitimately does not exercise (say why at the call site).
    ``release_namespace`` must be where the recorded operator read its default credentials Secret,
    and ``base_values`` (merged into the default sets) should configure the chart like the recorded
    run, e.g. ``{"credentials": {"existingSecret": NAME}}`` when it used a default Secret.
    """
    chart = _load_chart_helpers()
    calls = [as_call(c) for c in calls]
    if values_sets is None:
        namespaces = _crd_namespaces(calls)
        base = dict(base_values or {})
        values_sets = [base] + ([{**base, "watchNamespaces": namespaces}] if namespaces else [])
    problems = []
    for values in values_sets:
        rendered = chart.render(values, namespace=release_namespace or chart.RELEASE_NAMESPACE, include_crds=False)
        namespaces = list(values.get("watchNamespaces") or []) or None
        label = f"values {dict(values)!r}"
        for call in violations(calls, rendered, namespaces):
            problems.append(f"{label}: not allowed: {describe_call(call)}")
        for grant in unused_grants(calls, rendered, namespaces):
            if allow_unused is None or not allow_unused(grant):
                problems.append(f"{label}: never used: {grant}")
    if problems:
        raise AssertionError("RBAC does not match the operator's API calls:\n  " + "\n  ".join(problems))
