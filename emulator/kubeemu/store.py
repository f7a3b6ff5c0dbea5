"""The emulator's object store: the API server's write semantics over an in-memory "etcd".

Thread-safe (one re-entrant lock) so that the HTTP server's event loop and the synchronous test
helpers can both use it. Every write bumps a cluster-wide ``resourceVersion`` and appends a watch
event to a bounded history; watchers are woken through registered listener callbacks.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import json
import random
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubeemu import errors, fields, selectors
from kubeemu.conversions import CONVERTERS
from kubeemu.errors import ApiError
from kubeemu.fields import WriteOptions
from kubeemu.patching import json_patch, merge_patch, strategic_merge_patch
from kubeemu.resources import BUILTINS, ResourceType, types_from_crd
from kubeemu.validation import crd_version_schema, prune, validate_schema

ObjKey = tuple[str | None, str]  # (namespace, name)

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SYSTEM_META = (
    "uid",
    "creationTimestamp",
    "resourceVersion",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "name",
    "namespace",
    "selfLink",
    "managedFields",
)
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
FOREGROUND = "foregroundDeletion"


@dataclass(frozen=True)
class WatchEvent:
    """One change, as kept in the watch history."""

    rv: int
    storage_key: tuple[str, str]
    namespace: str | None
    type: str
    object: dict[str, Any]
    previous: dict[str, Any] | None = None  # the object before a MODIFIED change


def now() -> str:
    """The current time as the API server formats it (RFC 3339, seconds, UTC)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    return meta


def _strip_for_compare(obj: dict[str, Any]) -> dict[str, Any]:
    clone = copy.deepcopy(obj)
    clone.get("metadata", {}).pop("resourceVersion", None)
    clone.get("metadata", {}).pop("managedFields", None)
    return clone


def _untimed(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "time"} for e in obj.get("metadata", {}).get("managedFields") or []]


class Store:
    """In-memory objects with the Kubernetes API server's semantics (see the module docstring)."""

    def __init__(self, history_limit: int = 20_000) -> None:
        self.lock = threading.RLock()
        self._rv = 0
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._crds: dict[tuple[str, str], dict[str, Any]] = {}
        self._objects: dict[tuple[str, str], dict[ObjKey, dict[str, Any]]] = {}
        self._uids: dict[str, tuple[tuple[str, str], ObjKey]] = {}
        self._history: list[WatchEvent] = []
        self._history_limit = history_limit
        self._oldest_rv = 0  # watches starting before this are answered with 410 Gone
        self._listeners: list[Callable[[], None]] = []
        for rt in BUILTINS:
            self._register(rt)

    # ------------------------------------------------------------ registry

    def _register(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt
        self._objects.setdefault(rt.storage_key, {})

    def types(self) -> list[ResourceType]:
        """All currently served resource types."""
        with self.lock:
            return list(self._types.values())

    def resolve(self, group: str, version: str, plural: str) -> ResourceType:
        """The served type for a URL, or 404 like the real server."""
        with self.lock:
            rt = self._types.get((group, version, plural))
        if rt is None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        return rt

    def find_type(self, api_version: str, kind: str) -> ResourceType:
        """The type for an object's ``apiVersion``/``kind`` (used by the sync helpers)."""
        group, _, version = api_version.rpartition("/")
        with self.lock:
            for rt in self._types.values():
                if rt.group == group and rt.version == version and rt.kind == kind:
                    return rt
        raise ApiError(404, f'no matches for kind "{kind}" in version "{api_version}"', "NotFound")

    def crds(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The installed CRDs by (group, plural)."""
        with self.lock:
            return dict(self._crds)

    @property
    def resource_version(self) -> int:
        return self._rv

    # ------------------------------------------------------------ watch plumbing

    def add_listener(self, callback: Callable[[], None]) -> None:
        with self.lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with self.lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def events_since(self, rv: int) -> list[WatchEvent] | None:
        """Events newer than ``rv``; ``None`` if ``rv`` is older than the kept history (410 Gone)."""
        with self.lock:
            if rv < self._oldest_rv:
                return None
            # Binary search: history is ordered by rv.
            lo, hi = 0, len(self._history)
            while lo < hi:
                mid = (lo + hi) // 2
                if self._history[mid].rv <= rv:
                    lo = mid + 1
                else:
                    hi = mid
            return self._history[lo:]

    def _emit(
        self, rt: ResourceType, event_type: str, obj: dict[str, Any], previous: dict[str, Any] | None = None
    ) -> None:
        self._history.append(
            WatchEvent(
                self._rv, rt.storage_key, obj["metadata"].get("namespace"), event_type, copy.deepcopy(obj), previous
            )
        )
        if len(self._history) > self._history_limit:
            dropped = self._history[: len(self._history) // 2]
            self._history = self._history[len(dropped) :]
            self._oldest_rv = dropped[-1].rv
        for listener in list(self._listeners):
            listener()

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    # ------------------------------------------------------------ reads

    def present(self, obj: dict[str, Any], rt: ResourceType) -> dict[str, Any]:
        """A copy of a stored object as served under ``rt``'s version."""
        if rt.storage is not None and rt.group_resource in CONVERTERS:
            return CONVERTERS[rt.group_resource][0](obj)
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.api_version
        out["kind"] = rt.kind
        return out

    def _bucket(self, rt: ResourceType) -> dict[ObjKey, dict[str, Any]]:
        return self._objects.setdefault(rt.storage_key, {})

    def _check_scope(self, rt: ResourceType, namespace: str | None, named: bool = True) -> None:
        if not rt.namespaced and namespace is not None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if rt.namespaced and namespace is None and named:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")

    def _existing(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        self._check_scope(rt, namespace)
        obj = self._bucket(rt).get((namespace, name))
        if obj is None:
            raise errors.not_found(rt.group_resource, name)
        return obj

    def exists(self, rt: ResourceType, namespace: str | None, name: str) -> bool:
        """Whether the object exists (no scope checks)."""
        with self.lock:
            return (namespace if rt.namespaced else None, name) in self._bucket(rt)

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        """GET one object (404 if absent)."""
        with self.lock:
            return self.present(self._existing(rt, namespace, name), rt)

    def matcher(
        self, rt: ResourceType, label_selector: str | None, field_selector: str | None
    ) -> Callable[[dict[str, Any]], bool]:
        """A predicate for ``labelSelector``/``fieldSelector`` query parameters (400 if malformed)."""
        labels = selectors.parse_label_selector(label_selector)
        fields = selectors.parse_field_selector(field_selector, rt.field_selectors)
        return lambda obj: labels(obj) and fields(obj)

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
    ) -> dict[str, Any]:
        """LIST as a ``<Kind>List`` with ``metadata.resourceVersion`` (and ``continue`` for paging)."""
        if not rt.namespaced and namespace is not None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        match = self.matcher(rt, label_selector, field_selector)
        start_after: list[Any] | None = None
        if continue_:
            try:
                start_after = json.loads(base64.urlsafe_b64decode(continue_.encode()))["start"]
            except (ValueError, KeyError, binascii.Error):
                raise ApiError(
                    400, "continue key is not valid: incorrect encoded start resourceVersion", "BadRequest"
                ) from None
        with self.lock:
            keys = sorted(self._bucket(rt), key=lambda k: (k[0] or "", k[1]))
            items = []
            next_start = None
            for key in keys:
                if namespace is not None and key[0] != namespace:
                    continue
                if start_after is not None and [key[0] or "", key[1]] <= start_after:
                    continue
                obj = self._bucket(rt)[key]
                if not match(obj):
                    continue
                if limit and len(items) >= limit:
                    next_start = [items[-1]["metadata"].get("namespace") or "", items[-1]["metadata"]["name"]]
                    break
                item = self.present(obj, rt)
                if not rt.custom:
                    item.pop("apiVersion", None)
                    item.pop("kind", None)
                items.append(item)
            meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
            if next_start is not None:
                meta["continue"] = base64.urlsafe_b64encode(json.dumps({"start": next_start}).encode()).decode()
                meta["remainingItemCount"] = sum(
                    1
                    for k in keys
                    if [k[0] or "", k[1]] > next_start
                    and (namespace is None or k[0] == namespace)
                    and match(self._bucket(rt)[k])
                )
            return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": items}

    # ------------------------------------------------------------ create

    def create(
        self,
        rt: ResourceType,
        namespace: str | None,
        body: Any,
        dry_run: bool = False,
        options: WriteOptions | None = None,
        applied: bool = False,
    ) -> dict[str, Any]:
        """POST: 201-style creation with uid, resourceVersion, generation, creationTimestamp."""
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request was in an unknown format")
        if rt.storage is not None:
            created = self.create(self.stored_type(rt), namespace, self._to_stored(rt, body), dry_run, options)
            return self.present(created, rt)
        with self.lock:
            self._check_scope(rt, namespace)
            obj = copy.deepcopy(body)
            meta = _meta(obj)
            if rt.namespaced:
                if meta.get("namespace") not in (None, "", namespace):
                    raise errors.bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request"
                    )
                meta["namespace"] = namespace
                self._check_namespace_open(rt, namespace, meta.get("name") or meta.get("generateName", ""))
            else:
                meta.pop("namespace", None)
            if not meta.get("name") and meta.get("generateName"):
                for _ in range(20):
                    candidate = meta["generateName"] + "".join(random.choices(_NAME_CHARS, k=5))
                    if (namespace, candidate) not in self._bucket(rt):
                        break
                meta["name"] = candidate
            name = meta.get("name") or ""
            self._validate_name(rt, name)
            if (namespace, name) in self._bucket(rt):
                raise errors.already_exists(rt.group_resource, name)
            obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
            for key in _SYSTEM_META:
                if key not in ("name", "namespace") and not (applied and key == "managedFields"):
                    meta.pop(key, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            if rt.has_generation:
                meta["generation"] = 1
            if rt.status_subresource and rt.custom:
                obj.pop("status", None)
            self._normalize(rt, obj, None)
            obj = self._validate(rt, obj, None, options)
            if not applied:
                fields.record_update(
                    None, obj, (options or WriteOptions()).manager, rt.api_version, self._schema(rt), rt.custom, None
                )
            if dry_run:
                return self.present(obj, rt)
            meta = obj["metadata"]
            meta["resourceVersion"] = self._next_rv()
            self._bucket(rt)[(namespace, name)] = obj
            self._uids[meta["uid"]] = (rt.storage_key, (namespace, name))
            self._emit(rt, "ADDED", obj)
            self._after_create(rt, obj)
            return self.present(obj, rt)

    def _check_namespace_open(self, rt: ResourceType, namespace: str | None, name: str) -> None:
        ns = self._objects.get(("", "namespaces"), {}).get((None, namespace or ""))
        if ns is None:
            raise errors.not_found(("", "namespaces"), namespace or "")
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                f'{rt.plural}{"." + rt.group if rt.group else ""} "{name}" is forbidden: unable to create new '
                f"content in namespace {namespace} because it is being terminated",
                "Forbidden",
            )

    def _validate_name(self, rt: ResourceType, name: str) -> None:
        gk = (rt.group, rt.kind)
        if not name:
            raise errors.invalid(
                gk, "", [("metadata.name", "metadata.name: Required value: name or generateName is required")]
            )
        if rt.plural == "namespaces" and not rt.group:
            if len(name) > 63 or not _LABEL.match(name):
                raise errors.invalid(
                    gk,
                    name,
                    [
                        (
                            "metadata.name",
                            f'metadata.name: Invalid value: "{name}": '
                            "a lowercase RFC 1123 label must consist of lower case "
                            "alphanumeric characters or '-', and must start and end "
                            "with an alphanumeric character",
                        )
                    ],
                )
        elif len(name) > 253 or not _SUBDOMAIN.match(name):
            raise errors.invalid(
                gk,
                name,
                [
                    (
                        "metadata.name",
                        f'metadata.name: Invalid value: "{name}": '
                        "a lowercase RFC 1123 subdomain must consist of lower case "
                        "alphanumeric characters, '-' or '.', and must start and end "
                        "with an alphanumeric character",
                    )
                ],
            )

    # ------------------------------------------------------------ kind-specific rules

    def _normalize(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self._check_metadata(rt, obj)
        if rt.group == "" and rt.plural == "secrets":
            data = obj.get("data") or {}
            for key, value in data.items():
                try:
                    base64.b64decode(value or "", validate=True)
                except (binascii.Error, ValueError, TypeError):
                    raise errors.bad_request(
                        f'Secret in version "v1" cannot be handled as a Secret: '
                        f"illegal base64 data at input byte 0 (key {key!r})"
                    ) from None
            string_data = obj.pop("stringData", None) or {}
            if string_data:
                data = dict(data)
                for key, value in string_data.items():
                    data[key] = base64.b64encode(str(value).encode()).decode()
            if data or "data" in obj:
                obj["data"] = data
            obj.setdefault("type", "Opaque")
            if old is not None and obj["type"] != old.get("type", "Opaque"):
                raise errors.invalid(
                    ("", "Secret"),
                    obj["metadata"]["name"],
                    [("type", f'type: Invalid value: "{obj["type"]}": field is immutable')],
                )
        elif rt.group == "" and rt.plural == "namespaces":
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            # The API server labels every namespace with its name (immutable, so selectors can use it).
            labels = obj["metadata"].get("labels") or {}
            obj["metadata"]["labels"] = {**labels, "kubernetes.io/metadata.name": obj["metadata"]["name"]}
            if old is None:
                obj["status"] = {"phase": "Active"}
        elif rt.group == "apiextensions.k8s.io" and rt.plural == "customresourcedefinitions":
            self._check_crd(obj)
        elif rt.group == "" and rt.plural == "services":
            self._default_service(obj, old)
        elif rt.group == "apps" and rt.plural == "deployments":
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault(
                "strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
            )

    def _default_service(self, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Defaults and a cluster IP, as the API server's Service registry sets them (no proxying)."""
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        node_ports = spec["type"] in ("NodePort", "LoadBalancer")
        used_ports = {
            p.get("nodePort")
            for o in self._objects.get(("", "services"), {}).values()
            for p in (o.get("spec") or {}).get("ports") or []
        }
        old_ports = {
            (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
            for p in ((old or {}).get("spec") or {}).get("ports") or []
        }
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
            if node_ports and not port.get("nodePort"):
                kept = old_ports.get((port.get("port"), port["protocol"]))
                port["nodePort"] = kept or next(n for n in range(30000, 32768) if n not in used_ports)
                used_ports.add(port["nodePort"])
        if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
            old_ip = ((old or {}).get("spec") or {}).get("clusterIP")
            if old_ip:
                spec["clusterIP"] = old_ip
            else:
                used = {
                    (o.get("spec") or {}).get("clusterIP") for o in self._objects.get(("", "services"), {}).values()
                }
                for index in range(1, 65000):
                    candidate = f"10.96.{index // 250}.{index % 250 + 1}"
                    if candidate not in used:
                        spec["clusterIP"] = candidate
                        break
            spec["clusterIPs"] = [spec["clusterIP"]]
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")

    def _check_metadata(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        """Label syntax and ownerReference completeness, as the API server's ObjectMeta validation."""
        meta = obj["metadata"]
        causes: list[tuple[str, str]] = []
        for key, value in (meta.get("labels") or {}).items():
            prefix, _, name = key.rpartition("/")
            if (
                not name
                or len(name) > 63
                or not _LABEL_VALUE.match(name)
                or (prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)))
            ):
                causes.append(
                    (
                        "metadata.labels",
                        f'metadata.labels: Invalid value: "{key}": name part must consist '
                        "of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                        "alphanumeric character",
                    )
                )
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
                causes.append(
                    (
                        "metadata.labels",
                        f'metadata.labels: Invalid value: "{value}": a valid label must '
                        "be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
                        "must start and end with an alphanumeric character",
                    )
                )
        for index, ref in enumerate(meta.get("ownerReferences") or []):
            for field in ("apiVersion", "kind", "name", "uid"):
                if not ref.get(field):
                    causes.append(
                        (
                            f"metadata.ownerReferences[{index}].{field}",
                            f"metadata.ownerReferences[{index}].{field}: Required value",
                        )
                    )
        if causes:
            raise errors.invalid((rt.group, rt.kind), meta.get("name", ""), causes)

    def _check_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        name = crd["metadata"].get("name", "")
        causes = []
        if not spec.get("group"):
            causes.append(("spec.group", "spec.group: Required value"))
        if not names.get("plural") or not names.get("kind"):
            causes.append(("spec.names", "spec.names.plural: Required value"))
        elif name != f"{names['plural']}.{spec.get('group')}":
            causes.append(
                ("metadata.name", f'metadata.name: Invalid value: "{name}": must be spec.names.plural+"."+spec.group')
            )
        if not spec.get("versions"):
            causes.append(
                (
                    "spec.versions",
                    'spec.versions: Invalid value: "null": must have exactly one version marked as storage version',
                )
            )
        if causes:
            raise errors.invalid(("apiextensions.k8s.io", "CustomResourceDefinition"), name, causes)
        conditions = (crd.get("status") or {}).get("conditions")
        crd["status"] = {
            "conditions": conditions
            or [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    "lastTransitionTime": now(),
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    "lastTransitionTime": now(),
                },
            ],
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
        }

    def _schema(self, rt: ResourceType) -> dict[str, Any] | None:
        crd = self._crds.get(rt.storage_key) if rt.custom else None
        return crd_version_schema(crd, rt.version) if crd is not None else None

    def _validate(
        self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, options: WriteOptions | None = None
    ) -> dict[str, Any]:
        if not rt.custom:
            return obj
        crd = self._crds.get(rt.storage_key)
        if crd is None:
            return obj
        schema = crd_version_schema(crd, rt.version)
        if not schema:
            return obj
        pruned = prune(obj, schema, root=True)
        if options is not None and options.field_validation == "Strict":
            unknown = fields.unknown_fields(obj, pruned)
            if unknown:
                raise errors.bad_request(
                    f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: strict decoding error: '
                    + ", ".join(f'unknown field "{u}"' for u in unknown)
                )
        obj = pruned
        causes = validate_schema(obj, schema, old)
        if causes:
            raise errors.invalid((rt.group, rt.kind), obj["metadata"].get("name", ""), causes)
        return obj

    def _after_create(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        if rt.group == "apiextensions.k8s.io" and rt.plural == "customresourcedefinitions":
            self._install_crd(obj)

    def _install_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        key = (spec["group"], spec["names"]["plural"])
        for existing in [k for k, t in self._types.items() if (t.group, t.plural) == key]:
            del self._types[existing]
        self._crds[key] = copy.deepcopy(crd)
        for rt in types_from_crd(crd):
            self._register(rt)

    # ------------------------------------------------------------ update / patch

    def replace(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        subresource: str | None = None,
        dry_run: bool = False,
        options: WriteOptions | None = None,
    ) -> dict[str, Any]:
        """PUT (main resource or ``/status``) with optimistic concurrency."""
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request was in an unknown format")
        if rt.storage is not None:
            replaced = self.replace(
                self.stored_type(rt), namespace, name, self._to_stored(rt, body), subresource, dry_run, options
            )
            return self.present(replaced, rt)
        with self.lock:
            old = self._existing(rt, namespace, name)
            meta = body.get("metadata") or {}
            if meta.get("name") not in (None, name):
                raise errors.bad_request(
                    f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
                )
            if not meta.get("resourceVersion") and not rt.unconditional_update:
                raise errors.invalid(
                    (rt.group, rt.kind),
                    name,
                    [
                        (
                            "metadata.resourceVersion",
                            "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                        )
                    ],
                )
            return self._update(rt, old, copy.deepcopy(body), subresource, dry_run, options)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str,
        patch: Any,
        subresource: str | None = None,
        dry_run: bool = False,
        options: WriteOptions | None = None,
    ) -> dict[str, Any]:
        """PATCH as JSON merge patch, JSON patch, server-side apply, or (built-ins) strategic merge patch."""
        content_type = (content_type or "").split(";")[0].strip().lower()
        allowed = [JSON_PATCH, MERGE] + ([] if rt.custom else [STRATEGIC]) + [fields.APPLY]
        if content_type not in allowed:
            raise ApiError(
                415,
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(allowed)}",
                "UnsupportedMediaType",
            )
        if content_type == fields.APPLY:
            return self.server_side_apply(rt, namespace, name, patch, subresource, dry_run, options)
        with self.lock:
            old = self._existing(rt, namespace, name)
            current = self.present(old, rt)
            if content_type == JSON_PATCH:
                new = json_patch(current, patch)
            else:
                if not isinstance(patch, dict):
                    raise errors.bad_request("the body of the request was in an unknown format")
                new = (strategic_merge_patch if content_type == STRATEGIC else merge_patch)(current, patch)
                if isinstance(patch.get("metadata"), dict) and "resourceVersion" not in patch["metadata"]:
                    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if not isinstance(new, dict):
                raise errors.bad_request("the patched object is not a JSON object")
            if rt.storage is not None:
                return self.present(
                    self._update(self.stored_type(rt), old, self._to_stored(rt, new), subresource, dry_run, options), rt
                )
            return self._update(rt, old, new, subresource, dry_run, options)

    def server_side_apply(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        config: Any,
        subresource: str | None = None,
        dry_run: bool = False,
        options: WriteOptions | None = None,
    ) -> dict[str, Any]:
        """PATCH with ``application/apply-patch+yaml``: create or merge ``config`` as its field manager."""
        options = options or WriteOptions()
        if not options.manager:
            raise errors.invalid(
                ("meta.k8s.io", "PatchOptions"),
                "",
                [("fieldManager", "fieldManager: Required value: is required for apply patch")],
            )
        if not isinstance(config, dict):
            raise errors.bad_request("error decoding YAML: the applied configuration is not an object")
        meta = config.get("metadata") if isinstance(config.get("metadata"), dict) else {}
        if not config.get("apiVersion") or not config.get("kind"):
            raise errors.bad_request("apiVersion and kind must be set in an applied configuration")
        if meta.get("name") not in (None, name):
            raise errors.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        if rt.storage is not None:
            stored = self.server_side_apply(
                self.stored_type(rt), namespace, name, self._to_stored(rt, config), subresource, dry_run, options
            )
            return self.present(stored, rt)
        config = copy.deepcopy(config)
        for key in _SYSTEM_META:
            if key not in ("name", "namespace"):
                config.get("metadata", {}).pop(key, None)
        schema = self._schema(rt)
        if schema:
            self._check_declared(rt, namespace, name, config, schema)
        with self.lock:
            self._check_scope(rt, namespace)
            existing = self._bucket(rt).get((namespace, name))
            if rt.status_subresource and subresource is None:
                config.pop("status", None)  # written through /status only, so not owned by this apply
            if existing is None:
                if subresource:
                    raise errors.not_found(rt.group_resource, name)
                body = fields.apply(
                    None, config, options.manager, options.force, rt.api_version, schema, rt.custom, None
                )
                body["metadata"]["name"] = name
                return self.create(rt, namespace, body, dry_run, options, applied=True)
            current = self.present(existing, rt)
            if subresource == "status":
                config = {k: v for k, v in config.items() if k in ("apiVersion", "kind", "metadata", "status")}
            new = fields.apply(
                current, config, options.manager, options.force, rt.api_version, schema, rt.custom, subresource
            )
            new["metadata"]["resourceVersion"] = config.get("metadata", {}).get(
                "resourceVersion", existing["metadata"]["resourceVersion"]
            )
            return self._update(rt, existing, new, subresource, dry_run, options, applied=True)

    @staticmethod
    def _check_declared(
        rt: ResourceType, namespace: str | None, name: str, config: dict[str, Any], schema: dict[str, Any]
    ) -> None:
        """An applied configuration may only hold fields the schema declares: the real server answers a
        500 without a reason, whatever ``fieldValidation`` says (structured-merge-diff's typed patch)."""
        unknown = fields.unknown_fields(config, prune(copy.deepcopy(config), schema, root=True))
        if not unknown:
            return
        problems = [f".{path}: field not declared in schema" for path in unknown]
        detail = problems[0] if len(problems) == 1 else "\n".join(["errors:", *("  " + p for p in problems)])
        gvk = f"{rt.group}/{rt.version}, Kind={rt.kind}"
        raise ApiError(500, f"failed to create typed patch object ({namespace or ''}/{name}; {gvk}): {detail}", "")

    def _update(
        self,
        rt: ResourceType,
        old: dict[str, Any],
        new: dict[str, Any],
        subresource: str | None,
        dry_run: bool,
        options: WriteOptions | None = None,
        applied: bool = False,
    ) -> dict[str, Any]:
        old_meta = old["metadata"]
        name, namespace = old_meta["name"], old_meta.get("namespace")
        sent_rv = (new.get("metadata") or {}).get("resourceVersion")
        if sent_rv and sent_rv != old_meta["resourceVersion"]:
            raise errors.conflict(rt.group_resource, name)
        sent_fields = (new.get("metadata") or {}).get("managedFields")
        explicit = applied or (sent_fields is not None and sent_fields != old_meta.get("managedFields"))
        if subresource == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
            if explicit:
                _meta(result)["managedFields"] = sent_fields
        elif subresource:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        else:
            result = new
            result["apiVersion"], result["kind"] = rt.api_version, rt.kind
            meta = _meta(result)
            for key in _SYSTEM_META:
                if key == "managedFields" and explicit:
                    continue
                if key in old_meta:
                    meta[key] = copy.deepcopy(old_meta[key])
                else:
                    meta.pop(key, None)
            if rt.status_subresource:
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
                else:
                    result.pop("status", None)
            if old_meta.get("deletionTimestamp"):
                added = [f for f in meta.get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])]
                if added:
                    raise errors.invalid(
                        (rt.group, rt.kind),
                        name,
                        [
                            (
                                "metadata.finalizers",
                                "metadata.finalizers: Forbidden: no new finalizers can be added if the object "
                                f"is being deleted, found new finalizers {json.dumps(added)}",
                            )
                        ],
                    )
        self._normalize(rt, result, old)
        result = self._validate(rt, result, old, options)
        if not explicit:
            fields.record_update(
                old,
                result,
                (options or WriteOptions()).manager,
                rt.api_version,
                self._schema(rt),
                rt.custom,
                subresource,
            )
        if _strip_for_compare(result) == _strip_for_compare(old) and (
            not explicit or _untimed(result) == _untimed(old)
        ):
            return self.present(old, rt)  # a no-op write: no new resourceVersion, no event
        if rt.has_generation and self._spec_changed(rt, old, result):
            result["metadata"]["generation"] = old_meta.get("generation", 1) + 1
        if dry_run:
            return self.present(result, rt)
        result["metadata"]["resourceVersion"] = self._next_rv()
        self._bucket(rt)[(namespace, name)] = result
        self._emit(rt, "MODIFIED", result, old)
        if rt.group == "apiextensions.k8s.io" and rt.plural == "customresourcedefinitions":
            self._install_crd(result)
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            self._finish_namespace_or_remove(rt, result)
        return self.present(result, rt)

    @staticmethod
    def _spec_changed(rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> bool:
        skip = {"metadata", "apiVersion", "kind"} | ({"status"} if rt.status_subresource else set())
        return {k: v for k, v in old.items() if k not in skip} != {k: v for k, v in new.items() if k not in skip}

    # ------------------------------------------------------------ delete

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        options: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """DELETE: set ``deletionTimestamp`` while finalizers remain, otherwise remove (and cascade)."""
        options = options or {}
        with self.lock:
            obj = self._existing(rt, namespace, name)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
                raise ApiError(
                    409,
                    f"Precondition failed: UID in precondition: {pre['uid']}, "
                    f"UID in object meta: {obj['metadata']['uid']}",
                    "Conflict",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise errors.conflict(rt.group_resource, name)
            if dry_run:
                return self.present(obj, rt)
            return self.present(self._delete_obj(rt, obj, options.get("propagationPolicy")), rt)

    def delete_collection(
        self, rt: ResourceType, namespace: str | None, label_selector: str | None, field_selector: str | None
    ) -> dict[str, Any]:
        """DELETE on a collection: delete every matching object."""
        with self.lock:
            listing = self.list(rt, namespace, label_selector, field_selector)
            for item in listing["items"]:
                meta = item["metadata"]
                obj = self._bucket(rt).get((meta.get("namespace"), meta["name"]))
                if obj is not None:
                    self._delete_obj(rt, obj, None)
            return listing

    def _delete_obj(self, rt: ResourceType, obj: dict[str, Any], propagation: str | None) -> dict[str, Any]:
        meta = obj["metadata"]
        if propagation == "Orphan":
            self._orphan_dependents(meta["uid"])
        if meta.get("deletionTimestamp"):
            return obj
        is_namespace = rt.group == "" and rt.plural == "namespaces"
        foreground = propagation == "Foreground" and bool(self._dependents(meta["uid"]))
        if meta.get("finalizers") or is_namespace or foreground:
            original, obj = obj, copy.deepcopy(obj)
            if foreground:
                obj["metadata"]["finalizers"] = [*(meta.get("finalizers") or []), FOREGROUND]
            obj["metadata"]["deletionTimestamp"] = now()
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
            if rt.has_generation:
                obj["metadata"]["generation"] = meta.get("generation", 1) + 1
            if is_namespace:
                obj.setdefault("status", {})["phase"] = "Terminating"
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._bucket(rt)[(meta.get("namespace"), meta["name"])] = obj
            self._emit(rt, "MODIFIED", obj, original)
            if is_namespace:
                self._finish_namespace_or_remove(rt, obj)
                return self._bucket(rt).get((None, meta["name"]), obj)
            if foreground:
                for dep_rt, dep in self._dependents(meta["uid"]):
                    self._delete_obj(dep_rt, dep, None)
                self._maybe_finish_foreground(meta["uid"])
            return obj
        return self._remove(rt, obj)

    def _maybe_finish_foreground(self, owner_uid: str) -> None:
        """Foreground deletion: drop the owner's ``foregroundDeletion`` finalizer once its dependents are gone."""
        location = self._uids.get(owner_uid)
        if location is None:
            return
        owner = self._objects.get(location[0], {}).get(location[1])
        rt = self._type_for_storage(location[0])
        if owner is None or rt is None or FOREGROUND not in (owner["metadata"].get("finalizers") or []):
            return
        if any(
            dep["metadata"].get("ownerReferences")
            and any(
                r.get("uid") == owner_uid and r.get("blockOwnerDeletion") for r in dep["metadata"]["ownerReferences"]
            )
            for _, dep in self._dependents(owner_uid)
        ):
            return
        new = copy.deepcopy(owner)
        new["metadata"]["finalizers"] = [f for f in new["metadata"]["finalizers"] if f != FOREGROUND]
        self._update(rt, owner, new, None, False)

    def _remove(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (meta.get("namespace"), meta["name"])
        self._bucket(rt).pop(key, None)
        self._uids.pop(meta["uid"], None)
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._emit(rt, "DELETED", obj)
        if rt.group == "apiextensions.k8s.io" and rt.plural == "customresourcedefinitions":
            self._uninstall_crd(obj)
        self._collect_garbage(meta["uid"])
        for ref in meta.get("ownerReferences") or []:
            self._maybe_finish_foreground(ref.get("uid", ""))
        if meta.get("namespace"):
            self._maybe_finish_namespace(meta["namespace"])
        return obj

    def _finish_namespace_or_remove(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        if rt.group == "" and rt.plural == "namespaces":
            ns = obj["metadata"]["name"]
            for storage_key, bucket in list(self._objects.items()):
                item_rt = self._type_for_storage(storage_key)
                for (item_ns, _), item in list(bucket.items()):
                    if item_ns == ns and item_rt is not None:
                        self._delete_obj(item_rt, item, None)
            self._maybe_finish_namespace(ns)
        else:
            self._remove(rt, obj)

    def _maybe_finish_namespace(self, namespace: str) -> None:
        ns = self._objects.get(("", "namespaces"), {}).get((None, namespace))
        if ns is None or not ns["metadata"].get("deletionTimestamp") or ns["metadata"].get("finalizers"):
            return
        if any(key[0] == namespace for sk, bucket in self._objects.items() for key in bucket):
            return
        self._remove(self._types[("", "v1", "namespaces")], ns)

    def _type_for_storage(self, storage_key: tuple[str, str]) -> ResourceType | None:
        found = None
        for rt in self._types.values():
            if rt.storage_key == storage_key:
                if rt.storage is None:
                    return rt
                found = found or rt
        return found

    def stored_type(self, rt: ResourceType) -> ResourceType:
        """The type whose form objects of ``rt`` are stored in (``rt`` itself unless converted)."""
        if rt.storage is None:
            return rt
        return self._type_for_storage(rt.storage) or rt

    @staticmethod
    def _to_stored(rt: ResourceType, body: dict[str, Any]) -> dict[str, Any]:
        converter = CONVERTERS.get(rt.group_resource)
        return converter[1](body) if converter else body

    def _uninstall_crd(self, crd: dict[str, Any]) -> None:
        key = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        rt = self._type_for_storage(key)
        if rt is not None:
            for obj in list(self._objects.get(key, {}).values()):
                self._remove(rt, obj)
        for type_key in [k for k, t in self._types.items() if t.storage_key == key]:
            del self._types[type_key]
        self._crds.pop(key, None)
        self._objects.pop(key, None)

    def _dependents(self, uid: str) -> list[tuple[ResourceType, dict[str, Any]]]:
        found = []
        for storage_key, bucket in self._objects.items():
            rt = self._type_for_storage(storage_key)
            if rt is None:
                continue
            for obj in bucket.values():
                refs = obj["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs):
                    found.append((rt, obj))
        return found

    def _collect_garbage(self, owner_uid: str) -> None:
        """Background cascading deletion: dependents whose owners are all gone are deleted."""
        for rt, obj in self._dependents(owner_uid):
            refs = obj["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") in self._uids for ref in refs):
                continue
            current = self._bucket(rt).get((obj["metadata"].get("namespace"), obj["metadata"]["name"]))
            if current is not None:
                self._delete_obj(rt, current, None)

    def _orphan_dependents(self, owner_uid: str) -> None:
        for rt, obj in self._dependents(owner_uid):
            new = copy.deepcopy(obj)
            new["metadata"]["ownerReferences"] = [
                ref for ref in new["metadata"]["ownerReferences"] if ref.get("uid") != owner_uid
            ]
            if not new["metadata"]["ownerReferences"]:
                del new["metadata"]["ownerReferences"]
            self._update(rt, obj, new, None, False)

    # ------------------------------------------------------------ CRD helpers

    def add_crd(self, crd: dict[str, Any]) -> None:
        """Create (or replace) a CRD object, which registers its resource types."""
        rt = self.resolve("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        name = crd["metadata"]["name"]
        with self.lock:
            existing = self._bucket(rt).get((None, name))
            if existing is None:
                self.create(rt, None, crd)
            else:
                body = copy.deepcopy(crd)
                body.setdefault("metadata", {})["resourceVersion"] = existing["metadata"]["resourceVersion"]
                self.replace(rt, None, name, body)
