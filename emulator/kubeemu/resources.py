"""The resource types served by the emulator: built-ins, CRD-defined ones, and API discovery."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_BASE_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


@dataclass(frozen=True)
class ResourceType:
    """One served group/version/plural and how the server treats it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    has_generation: bool = False
    unconditional_update: bool = True  # built-ins accept PUT without resourceVersion; CRs do not
    custom: bool = False  # served from a CRD: items carry kind/apiVersion, schema validation applies
    field_selectors: frozenset[str] = field(default=_BASE_FIELDS)
    storage: tuple[str, str] | None = None  # shares another type's objects (converted on the way in and out)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def storage_key(self) -> tuple[str, str]:
        """Objects are shared by all versions of a group/plural (and events.k8s.io events with core ones)."""
        return self.storage or (self.group, self.plural)

    def discovery(self) -> list[dict[str, Any]]:
        """Entries for this resource in an ``APIResourceList``."""
        main = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(VERBS),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries = [main]
        if self.status_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        return entries


def _core(plural: str, kind: str, namespaced: bool = True, **kw: Any) -> ResourceType:
    return ResourceType("", "v1", plural, kind, namespaced, singular=kind.lower(), **kw)


BUILTINS: list[ResourceType] = [
    _core(
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        status_subresource=True,
        field_selectors=_BASE_FIELDS | {"status.phase"},
    ),
    _core("secrets", "Secret", field_selectors=_BASE_FIELDS | {"type"}),
    _core("configmaps", "ConfigMap", short_names=("cm",)),
    _core("pods", "Pod", short_names=("po",), status_subresource=True, categories=("all",)),
    _core("serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _core(
        "events",
        "Event",
        short_names=("ev",),
        field_selectors=_BASE_FIELDS
        | {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        },
    ),
    ResourceType(
        "events.k8s.io", "v1", "events", "Event", True, singular="event", short_names=("ev",), storage=("", "events")
    ),
    _core("services", "Service", short_names=("svc",), status_subresource=True, categories=("all",)),
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        True,
        singular="deployment",
        short_names=("deploy",),
        categories=("all",),
        status_subresource=True,
        has_generation=True,
    ),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True, singular="role"),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, singular="rolebinding"),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, singular="clusterrole"),
    ResourceType(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        False,
        singular="clusterrolebinding",
    ),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        False,
        singular="validatingadmissionpolicy",
        categories=("api-extensions",),
        status_subresource=True,
        has_generation=True,
    ),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        False,
        singular="validatingadmissionpolicybinding",
        categories=("api-extensions",),
        has_generation=True,
    ),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True, singular="lease"),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        singular="customresourcedefinition",
        short_names=("crd", "crds"),
        categories=("api-extensions",),
        status_subresource=True,
        has_generation=True,
    ),
]


def types_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """One ResourceType per served version of a CRD."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    status = []
    result = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        status = version.get("subresources") or {}
        result.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular") or names["kind"].lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status_subresource="status" in status,
                has_generation=True,
                unconditional_update=False,
                custom=True,
            )
        )
    return result
