"""OpenAPI v3 documents for the served kinds, as ``/openapi/v3`` and ``/openapi/v3/<api|apis/g>/<v>``.

What kubectl 1.35 and Helm 4 read (checked with ``kubectl -v=8`` against the emulator):

- ``GET /openapi/v3``: the index, ``{"paths": {"apis/<group>/<version>": {"serverRelativeURL": ...}}}``;
- ``GET /openapi/v3/apis/<group>/<version>?hash=...``: one OpenAPI 3.0 document per group/version.

``kubectl apply``/``create``/``replace`` (and Helm) look in it for the PATCH operation of the
object's group/version/kind (``x-kubernetes-group-version-kind``) and, since it lists the
``fieldValidation`` parameter, let the server validate (``?fieldValidation=Strict``) instead of
validating client-side against ``/openapi/v2``. ``kubectl explain`` renders the schema under
``components.schemas`` that carries the kind's ``x-kubernetes-group-version-kind``.

Custom resources get their CRD's ``openAPIV3Schema`` (``metadata`` as a reference to ObjectMeta,
as the real server publishes it). Built-in kinds without ``spec`` (Secret, ConfigMap,
ServiceAccount, RBAC) get a shallow schema of their top-level fields, enough for explain's first
level; those with a ``spec`` (Deployment, Service ...) get none, because kubectl computes
strategic merge patches from whatever schema it finds and a shallow one makes it warn ("unable to
find api field"); without one it uses its compiled-in types, as it should. ``/openapi/v2`` is not served: client-go asks for it only in protobuf and only
when v3 is missing.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from kubeemu.resources import ResourceType
from kubeemu.validation import crd_version_schema

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
_REF = "#/components/schemas/"

_API_VERSION_DOC = (
    "APIVersion defines the versioned schema of this representation of an object. Servers "
    "should convert recognized schemas to the latest internal value, and may reject "
    "unrecognized values. More info: https://git.k8s.io/community/contributors/devel/"
    "sig-architecture/api-conventions.md#resources"
)
_KIND_DOC = (
    "Kind is a string value representing the REST resource this object represents. Servers may "
    "infer this from the endpoint the client submits requests to. Cannot be updated. In "
    "CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/"
    "api-conventions.md#types-kinds"
)
_METADATA_DOC = (
    "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/"
    "sig-architecture/api-conventions.md#metadata"
)

_STR = {"type": "string"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string", "default": ""}}
_STR_LIST = {"type": "array", "items": {"type": "string", "default": ""}}
_OPEN = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}

COMMON_SCHEMAS: dict[str, dict[str, Any]] = {
    f"{META}.Time": {
        "type": "string",
        "format": "date-time",
        "description": "Time is a wrapper around time.Time which supports correct marshaling to YAML and JSON.",
    },
    f"{META}.OwnerReference": {
        "type": "object",
        "required": ["apiVersion", "kind", "name", "uid"],
        "description": "OwnerReference contains enough information to let you identify an owning object.",
        "properties": {
            "apiVersion": _STR,
            "kind": _STR,
            "name": _STR,
            "uid": _STR,
            "controller": {"type": "boolean"},
            "blockOwnerDeletion": {"type": "boolean"},
        },
        "x-kubernetes-map-type": "atomic",
    },
    f"{META}.FieldsV1": {
        "description": "FieldsV1 stores a set of fields in a data structure like a Trie, in JSON format.",
        "type": "object",
    },
    f"{META}.ManagedFieldsEntry": {
        "type": "object",
        "description": "ManagedFieldsEntry is a workflow-id, a FieldSet and the group version of the resource "
        "that the fieldset applies to.",
        "properties": {
            "apiVersion": _STR,
            "fieldsType": _STR,
            "fieldsV1": {  # a named type, as on the real server (kubectl explain shows <FieldsV1>)
                "description": 'FieldsV1 holds the first JSON version format as described in the "FieldsV1" type.',
                "allOf": [{"$ref": f"{_REF}{META}.FieldsV1"}],
            },
            "manager": _STR,
            "operation": _STR,
            "subresource": _STR,
            "time": {"allOf": [{"$ref": f"{_REF}{META}.Time"}]},
        },
    },
    f"{META}.ObjectMeta": {
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all "
        "objects users must create.",
        "properties": {
            "annotations": {
                **_STR_MAP,
                "description": "Annotations is an unstructured key value map stored "
                "with a resource that may be set by external tools to store and retrieve arbitrary "
                "metadata.",
            },
            "creationTimestamp": {
                "allOf": [{"$ref": f"{_REF}{META}.Time"}],
                "description": "CreationTimestamp is a timestamp representing the server time when this "
                "object was created. Populated by the system. Read-only.",
            },
            "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
            "deletionTimestamp": {
                "allOf": [{"$ref": f"{_REF}{META}.Time"}],
                "description": "DeletionTimestamp is RFC 3339 date and time at which this resource will be "
                "deleted. Populated by the system when a graceful deletion is requested.",
            },
            "finalizers": {
                **_STR_LIST,
                "x-kubernetes-list-type": "set",
                "x-kubernetes-patch-strategy": "merge",
                "description": "Must be empty before the object is deleted from the registry.",
            },
            "generateName": {
                **_STR,
                "description": "GenerateName is an optional prefix, used by the server, "
                "to generate a unique name ONLY IF the Name field has not been provided.",
            },
            "generation": {
                "type": "integer",
                "format": "int64",
                "description": "A sequence number "
                "representing a specific generation of the desired state. Populated by the system.",
            },
            "labels": {
                **_STR_MAP,
                "description": "Map of string keys and values that can be used to organize "
                "and categorize (scope and select) objects.",
            },
            "managedFields": {
                "type": "array",
                "items": {"allOf": [{"$ref": f"{_REF}{META}.ManagedFieldsEntry"}], "default": {}},
                "description": "ManagedFields maps workflow-id and version to the set of fields "
                "that are managed by that workflow.",
            },
            "name": {**_STR, "description": "Name must be unique within a namespace."},
            "namespace": {**_STR, "description": "Namespace defines the space within which each name must be unique."},
            "ownerReferences": {
                "type": "array",
                "items": {"allOf": [{"$ref": f"{_REF}{META}.OwnerReference"}], "default": {}},
                "x-kubernetes-list-map-keys": ["uid"],
                "x-kubernetes-list-type": "map",
                "x-kubernetes-patch-merge-key": "uid",
                "x-kubernetes-patch-strategy": "merge",
                "description": "List of objects depended by this object.",
            },
            "resourceVersion": {
                **_STR,
                "description": "An opaque value that represents the internal version of "
                "this object. Populated by the system. Read-only.",
            },
            "selfLink": {
                **_STR,
                "description": "Deprecated: selfLink is a legacy read-only field that is no "
                "longer populated by the system.",
            },
            "uid": {
                **_STR,
                "description": "UID is the unique in time and space value for this object. "
                "Populated by the system. Read-only.",
            },
        },
    },
    f"{META}.ListMeta": {
        "type": "object",
        "description": "ListMeta describes metadata that synthetic resources must have.",
        "properties": {
            "continue": _STR,
            "remainingItemCount": {"type": "integer", "format": "int64"},
            "resourceVersion": _STR,
            "selfLink": _STR,
        },
    },
    f"{META}.Status": {
        "type": "object",
        "description": "Status is a return value for calls that don't return other objects.",
        "properties": {
            "apiVersion": _STR,
            "code": {"type": "integer", "format": "int32"},
            "details": _OPEN,
            "kind": _STR,
            "message": _STR,
            "metadata": {"allOf": [{"$ref": f"{_REF}{META}.ListMeta"}]},
            "reason": _STR,
            "status": _STR,
        },
        "x-kubernetes-group-version-kind": [{"group": "", "kind": "Status", "version": "v1"}],
    },
    f"{META}.DeleteOptions": {
        "type": "object",
        "description": "DeleteOptions may be provided when deleting an API object.",
        "properties": {
            "apiVersion": _STR,
            "dryRun": _STR_LIST,
            "gracePeriodSeconds": {"type": "integer"},
            "kind": _STR,
            "orphanDependents": {"type": "boolean"},
            "preconditions": _OPEN,
            "propagationPolicy": _STR,
        },
    },
    f"{META}.Patch": {
        "type": "object",
        "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
    },
}

_BUILTIN_PACKAGES = {
    "": "io.k8s.api.core",
    "apps": "io.k8s.api.apps",
    "events.k8s.io": "io.k8s.api.events",
    "rbac.authorization.k8s.io": "io.k8s.api.rbac",
    "admissionregistration.k8s.io": "io.k8s.api.admissionregistration",
    "coordination.k8s.io": "io.k8s.api.coordination",
    "apiextensions.k8s.io": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions",
}

# Top-level fields of the built-in kinds besides apiVersion/kind/metadata (shallow, for explain).
_BUILTIN_FIELDS: dict[str, dict[str, Any]] = {
    "Secret": {
        "data": {"type": "object", "additionalProperties": {"type": "string", "format": "byte"}},
        "stringData": _STR_MAP,
        "type": _STR,
        "immutable": {"type": "boolean"},
    },
    "ConfigMap": {
        "data": _STR_MAP,
        "binaryData": {"type": "object", "additionalProperties": {"type": "string", "format": "byte"}},
        "immutable": {"type": "boolean"},
    },
    "ServiceAccount": {
        "automountServiceAccountToken": {"type": "boolean"},
        "imagePullSecrets": {"type": "array", "items": _OPEN},
        "secrets": {"type": "array", "items": _OPEN},
    },
    "Role": {"rules": {"type": "array", "items": _OPEN}},
    "ClusterRole": {"rules": {"type": "array", "items": _OPEN}, "aggregationRule": _OPEN},
    "RoleBinding": {"roleRef": _OPEN, "subjects": {"type": "array", "items": _OPEN}},
    "ClusterRoleBinding": {"roleRef": _OPEN, "subjects": {"type": "array", "items": _OPEN}},
}


def gv_path(rt: ResourceType) -> str:
    """The index key of a type's group/version, e.g. ``api/v1`` or ``apis/apps/v1``."""
    return f"apis/{rt.group}/{rt.version}" if rt.group else f"api/{rt.version}"


def schema_name(rt: ResourceType, kind: str | None = None) -> str:
    """The ``components.schemas`` key of a kind, named as the real server names it."""
    kind = kind or rt.kind
    if rt.custom:
        return ".".join(reversed(rt.group.split("."))) + f".{rt.version}.{kind}"
    package = _BUILTIN_PACKAGES.get(rt.group, "io.k8s.api." + rt.group.split(".")[0])
    return f"{package}.{rt.version}.{kind}"


def _gvk(rt: ResourceType, kind: str | None = None) -> dict[str, str]:
    return {"group": rt.group, "kind": kind or rt.kind, "version": rt.version}


def _kind_schema(rt: ResourceType, crd: dict[str, Any] | None) -> dict[str, Any]:
    if crd is not None:
        schema = copy.deepcopy(crd_version_schema(crd, rt.version)) or dict(_OPEN)
        schema.setdefault("type", "object")
        props = schema.setdefault("properties", {})
        description = next(
            (
                v.get("schema", {}).get("openAPIV3Schema", {}).get("description")
                for v in crd["spec"].get("versions", [])
                if v.get("name") == rt.version
            ),
            None,
        )
        if description:
            schema["description"] = description
    else:
        props = {}
        for key, value in _BUILTIN_FIELDS.get(rt.kind, {"spec": _OPEN, "status": _OPEN}).items():
            props[key] = copy.deepcopy(value)
        schema = {
            "type": "object",
            "description": f"{rt.kind} (served by kubeemu; field documentation is not reproduced for built-in kinds).",
            "properties": props,
        }
    props["apiVersion"] = {**_STR, "description": _API_VERSION_DOC}
    props["kind"] = {**_STR, "description": _KIND_DOC}
    props["metadata"] = {"allOf": [{"$ref": f"{_REF}{META}.ObjectMeta"}], "default": {}, "description": _METADATA_DOC}
    schema["x-kubernetes-group-version-kind"] = [_gvk(rt)]
    return schema


def _list_schema(rt: ResourceType) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items"],
        "description": f"{rt.kind}List is a list of {rt.kind}",
        "properties": {
            "apiVersion": {**_STR, "description": _API_VERSION_DOC},
            "items": {"type": "array", "items": {"$ref": f"{_REF}{schema_name(rt)}"}},
            "kind": {**_STR, "description": _KIND_DOC},
            "metadata": {"allOf": [{"$ref": f"{_REF}{META}.ListMeta"}], "default": {}},
        },
        "x-kubernetes-group-version-kind": [_gvk(rt, f"{rt.kind}List")],
    }


def _param(name: str, description: str, location: str = "query") -> dict[str, Any]:
    return {"name": name, "in": location, "description": description, "schema": {"type": "string"}, "uniqueItems": True}


_DRY_RUN = _param("dryRun", "When present, indicates that modifications should not be persisted.")
_FIELD_MANAGER = _param(
    "fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."
)
_FIELD_VALIDATION = _param(
    "fieldValidation",
    "fieldValidation instructs the server on how to handle objects in "
    "the request containing unknown or duplicate fields. Valid values "
    "are: Ignore, Warn, Strict.",
)
_FORCE = {
    "name": "force",
    "in": "query",
    "uniqueItems": True,
    "schema": {"type": "boolean"},
    "description": 'Force is going to "force" Apply requests. It means user will re-acquire conflicting '
    "fields owned by other people.",
}
_PATCH_TYPES = [
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
]


def _operation(
    rt: ResourceType,
    action: str,
    verb: str,
    kind_ref: str,
    *,
    body: bool = False,
    params: tuple[dict[str, Any], ...] = (),
    patch: bool = False,
    sub: str = "",
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{verb}{rt.kind}{sub}",
        "tags": [gv_path(rt).replace("/", "_")],
        "description": f"{verb} {'status of ' if sub else ''}the specified {rt.kind}",
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": f"{_REF}{kind_ref}"}}}},
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(rt),
    }
    if params:
        op["parameters"] = list(params)
    if body:
        types = _PATCH_TYPES if patch else ["application/json", "application/yaml"]
        ref = f"{META}.Patch" if patch else schema_name(rt)
        op["requestBody"] = {"required": True, "content": {t: {"schema": {"$ref": f"{_REF}{ref}"}} for t in types}}
    return op


def _paths(rt: ResourceType) -> dict[str, dict[str, Any]]:
    prefix = "/" + gv_path(rt)
    ns = "/namespaces/{namespace}" if rt.namespaced else ""
    collection = f"{prefix}{ns}/{rt.plural}"
    item = f"{collection}/{{name}}"
    name_param = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "uniqueItems": True},
        "description": f"name of the {rt.kind}",
    }
    ns_param = {
        "name": "namespace",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "uniqueItems": True},
        "description": "object name and auth scope",
    }
    common = [ns_param] if rt.namespaced else []
    kind, kind_list = schema_name(rt), schema_name(rt, f"{rt.kind}List")
    writes = (_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION)
    paths = {
        collection: {
            "get": _operation(rt, "list", "list", kind_list),
            "post": _operation(rt, "post", "create", kind, body=True, params=writes),
            "delete": _operation(rt, "deletecollection", "deletecollection", f"{META}.Status"),
            "parameters": list(common),
        },
        item: {
            "get": _operation(rt, "get", "read", kind),
            "put": _operation(rt, "put", "replace", kind, body=True, params=writes),
            "patch": _operation(rt, "patch", "patch", kind, body=True, params=(*writes, _FORCE), patch=True),
            "delete": _operation(rt, "delete", "delete", f"{META}.Status", params=(_DRY_RUN,)),
            "parameters": [name_param, *common],
        },
    }
    if rt.namespaced:
        paths[f"{prefix}/{rt.plural}"] = {"get": _operation(rt, "list", "listForAllNamespaces", kind_list)}
    if rt.status_subresource:
        paths[f"{item}/status"] = {
            "get": _operation(rt, "get", "read", kind, sub="Status"),
            "put": _operation(rt, "put", "replace", kind, body=True, params=writes, sub="Status"),
            "patch": _operation(
                rt, "patch", "patch", kind, body=True, params=(*writes, _FORCE), patch=True, sub="Status"
            ),
            "parameters": [name_param, *common],
        }
    return paths


def group_version_documents(
    types: list[ResourceType], crds: dict[tuple[str, str], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """One OpenAPI 3.0 document per served group/version, keyed by ``api/v1``/``apis/<g>/<v>``."""
    docs: dict[str, dict[str, Any]] = {}
    for rt in sorted(types, key=lambda t: (t.group, t.version, t.plural)):
        doc = docs.setdefault(
            gv_path(rt),
            {
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": "v1.34.0+kubeemu"},
                "paths": {},
                "components": {"schemas": copy.deepcopy(COMMON_SCHEMAS)},
            },
        )
        doc["paths"].update(_paths(rt))
        schemas = doc["components"]["schemas"]
        if rt.custom or rt.kind in _BUILTIN_FIELDS:
            schemas[schema_name(rt)] = _kind_schema(rt, crds.get(rt.storage_key) if rt.custom else None)
            schemas[schema_name(rt, f"{rt.kind}List")] = _list_schema(rt)
    return docs


def document_hash(doc: dict[str, Any]) -> str:
    """The ``hash`` query value of a document's URL (changes whenever the document does)."""
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest().upper()


def index(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``/openapi/v3`` index document."""
    return {
        "paths": {
            path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={document_hash(doc)}"}
            for path, doc in sorted(docs.items())
        }
    }
