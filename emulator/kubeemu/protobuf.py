"""Decoding of Kubernetes protobuf request bodies for the few built-in kinds clients send that way.

kubectl's typed commands (``kubectl create namespace|secret|configmap|serviceaccount|service|role|...``) and
Helm's release storage (client-go's typed clientset) always send built-in objects as
``application/vnd.kubernetes.protobuf``, whatever the server advertises; there is no fallback to
JSON on a 415. So the emulator decodes those bodies into the JSON form (answers stay JSON: those
clients accept JSON replies). Wire format: the ``k8s\\0`` magic, then a ``runtime.Unknown``
(typeMeta, raw) whose ``raw`` is the object's own message, with field numbers from the
``generated.proto`` files of k8s.io/api and apimachinery.

Only the kinds below are understood; any other protobuf body is answered 415 listing the media types
accepted.
"""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

MAGIC = b"k8s\x00"
PROTOBUF = "application/vnd.kubernetes.protobuf"

# A message schema: field number -> (json name, kind[, sub-schema]) where kind is one of
# "str", "bytes", "int", "bool", "msg", "time", "map_str" (map<string,string>), "map_bytes",
# "fieldsv1", "intorstr", "bool0" (a non-pointer Go bool: false is omitted), and a "[]" suffix marks a
# repeated field.
Schema = dict[int, tuple[Any, ...]]

TIME: Schema = {}  # decoded specially
TYPE_META: Schema = {1: ("apiVersion", "str"), 2: ("kind", "str")}
OWNER_REFERENCE: Schema = {
    1: ("kind", "str"),
    3: ("name", "str"),
    4: ("uid", "str"),
    5: ("apiVersion", "str"),
    6: ("controller", "bool"),
    7: ("blockOwnerDeletion", "bool"),
}
MANAGED_FIELDS: Schema = {
    1: ("manager", "str"),
    2: ("operation", "str"),
    3: ("apiVersion", "str"),
    4: ("time", "time"),
    6: ("fieldsType", "str"),
    7: ("fieldsV1", "fieldsv1"),
    8: ("subresource", "str"),
}
OBJECT_META: Schema = {
    1: ("name", "str"),
    2: ("generateName", "str"),
    3: ("namespace", "str"),
    4: ("selfLink", "str"),
    5: ("uid", "str"),
    6: ("resourceVersion", "str"),
    7: ("generation", "int"),
    8: ("creationTimestamp", "time"),
    9: ("deletionTimestamp", "time"),
    10: ("deletionGracePeriodSeconds", "int"),
    11: ("labels", "map_str"),
    12: ("annotations", "map_str"),
    13: ("ownerReferences", "msg[]", OWNER_REFERENCE),
    14: ("finalizers", "str[]"),
    17: ("managedFields", "msg[]", MANAGED_FIELDS),
}
LIST_META: Schema = {2: ("resourceVersion", "str"), 3: ("continue", "str"), 4: ("remainingItemCount", "int")}
LABEL_SELECTOR: Schema = {
    1: ("matchLabels", "map_str"),
    2: ("matchExpressions", "msg[]", {1: ("key", "str"), 2: ("operator", "str"), 3: ("values", "str[]")}),
}
OBJECT_REFERENCE: Schema = {
    1: ("kind", "str"),
    2: ("namespace", "str"),
    3: ("name", "str"),
    4: ("uid", "str"),
    5: ("apiVersion", "str"),
    6: ("resourceVersion", "str"),
    7: ("fieldPath", "str"),
}
POLICY_RULE: Schema = {
    1: ("verbs", "str[]"),
    2: ("apiGroups", "str[]"),
    3: ("resources", "str[]"),
    4: ("resourceNames", "str[]"),
    5: ("nonResourceURLs", "str[]"),
}
SUBJECT: Schema = {1: ("kind", "str"), 2: ("apiGroup", "str"), 3: ("name", "str"), 4: ("namespace", "str")}
ROLE_REF: Schema = {1: ("apiGroup", "str"), 2: ("kind", "str"), 3: ("name", "str")}
PRECONDITIONS: Schema = {1: ("uid", "str"), 2: ("resourceVersion", "str")}
SERVICE_PORT: Schema = {
    1: ("name", "str"),
    2: ("protocol", "str"),
    3: ("port", "int"),
    4: ("targetPort", "intorstr"),
    5: ("nodePort", "int"),
    6: ("appProtocol", "str"),
}
SERVICE_SPEC: Schema = {
    1: ("ports", "msg[]", SERVICE_PORT),
    2: ("selector", "map_str"),
    3: ("clusterIP", "str"),
    4: ("type", "str"),
    5: ("externalIPs", "str[]"),
    7: ("sessionAffinity", "str"),
    8: ("loadBalancerIP", "str"),
    9: ("loadBalancerSourceRanges", "str[]"),
    10: ("externalName", "str"),
    11: ("externalTrafficPolicy", "str"),
    12: ("healthCheckNodePort", "int"),
    13: ("publishNotReadyAddresses", "bool0"),
    17: ("ipFamilyPolicy", "str"),
    18: ("clusterIPs", "str[]"),
    19: ("ipFamilies", "str[]"),
    20: ("allocateLoadBalancerNodePorts", "bool"),
    21: ("loadBalancerClass", "str"),
    22: ("internalTrafficPolicy", "str"),
    23: ("trafficDistribution", "str"),
}

KINDS: dict[tuple[str, str], Schema] = {
    ("v1", "Namespace"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("spec", "msg", {1: ("finalizers", "str[]")}),
        3: ("status", "msg", {1: ("phase", "str")}),
    },
    ("v1", "Secret"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("data", "map_bytes"),
        3: ("type", "str"),
        4: ("stringData", "map_str"),
        5: ("immutable", "bool"),
    },
    ("v1", "ConfigMap"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("data", "map_str"),
        3: ("binaryData", "map_bytes"),
        4: ("immutable", "bool"),
    },
    ("v1", "Service"): {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", SERVICE_SPEC)},
    ("v1", "ServiceAccount"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("secrets", "msg[]", OBJECT_REFERENCE),
        3: ("imagePullSecrets", "msg[]", {1: ("name", "str")}),
        4: ("automountServiceAccountToken", "bool"),
    },
    ("rbac.authorization.k8s.io/v1", "Role"): {1: ("metadata", "msg", OBJECT_META), 2: ("rules", "msg[]", POLICY_RULE)},
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("rules", "msg[]", POLICY_RULE),
        3: ("aggregationRule", "msg", {1: ("clusterRoleSelectors", "msg[]", LABEL_SELECTOR)}),
    },
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("subjects", "msg[]", SUBJECT),
        3: ("roleRef", "msg", ROLE_REF),
    },
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): {
        1: ("metadata", "msg", OBJECT_META),
        2: ("subjects", "msg[]", SUBJECT),
        3: ("roleRef", "msg", ROLE_REF),
    },
    ("v1", "DeleteOptions"): {
        1: ("gracePeriodSeconds", "int"),
        2: ("preconditions", "msg", PRECONDITIONS),
        3: ("orphanDependents", "bool"),
        4: ("propagationPolicy", "str"),
        5: ("dryRun", "str[]"),
    },
    ("meta.k8s.io/v1", "DeleteOptions"): {
        1: ("gracePeriodSeconds", "int"),
        2: ("preconditions", "msg", PRECONDITIONS),
        3: ("orphanDependents", "bool"),
        4: ("propagationPolicy", "str"),
        5: ("dryRun", "str[]"),
    },
}


class ProtobufError(ValueError):
    """A body that is not a Kubernetes protobuf object of a kind understood here."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) for each field of a message."""
    out = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtobufError("truncated field")
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _time(data: bytes) -> str | None:
    seconds = 0
    for number, _, value in _fields(data):
        if number == 1:
            seconds = _signed(value)
    if seconds == 0:
        return None  # Go's zero time, omitted in JSON
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _map_entry(data: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, _, raw in _fields(data):
        if number == 1:
            key = raw.decode()
        elif number == 2:
            value = raw
    return key, value


def decode_message(data: bytes, schema: Schema) -> dict[str, Any]:
    """One message as a JSON-like dict (unknown fields are dropped, as the server would)."""
    out: dict[str, Any] = {}
    for number, _, value in _fields(data):
        spec = schema.get(number)
        if spec is None:
            continue
        name, kind = spec[0], spec[1]
        repeated = kind.endswith("[]")
        base = kind.removesuffix("[]")
        if base == "str":
            item: Any = value.decode()
        elif base == "bytes":
            item = base64.b64encode(value).decode()
        elif base == "int":
            item = _signed(value)
        elif base in ("bool", "bool0"):  # bool0: a plain Go bool, omitted from JSON when false
            item = bool(value)
        elif base == "time":
            item = _time(value)
        elif base == "msg":
            item = decode_message(value, spec[2])
        elif base == "intorstr":
            parts = {n: v for n, _, v in _fields(value)}
            item = parts.get(3, b"").decode() if parts.get(1) == 1 else _signed(parts.get(2, 0))
        elif base == "fieldsv1":
            raw = next((v for n, _, v in _fields(value) if n == 1), b"{}")
            item = json.loads(raw or b"{}")
        elif base in ("map_str", "map_bytes"):
            key, raw = _map_entry(value)
            out.setdefault(name, {})[key] = raw.decode() if base == "map_str" else base64.b64encode(raw).decode()
            continue
        else:  # pragma: no cover -- schema error
            raise ProtobufError(f"unknown field kind {kind}")
        if repeated:
            out.setdefault(name, []).append(item)
        elif item not in ("", 0, None, {}) or base in ("bool", "intorstr"):
            out[name] = item  # Go's JSON encoding omits empty values (omitempty)
    return out


def decode(body: bytes) -> dict[str, Any]:
    """A ``k8s\\0``-prefixed protobuf object as its JSON form (``ProtobufError`` if not understood)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic prefix")
    api_version = kind = ""
    raw = b""
    for number, _, value in _fields(body[len(MAGIC) :]):
        if number == 1:
            meta = decode_message(value, TYPE_META)
            api_version, kind = meta.get("apiVersion", ""), meta.get("kind", "")
        elif number == 2:
            raw = value
    schema = KINDS.get((api_version, kind))
    if schema is None:
        raise ProtobufError(f"kubeemu cannot decode protobuf for {kind or 'unknown kind'} ({api_version})")
    return {"apiVersion": api_version, "kind": kind, **decode_message(raw, schema)}


def supported_kinds() -> list[str]:
    """``apiVersion/Kind`` of each kind whose protobuf form is understood."""
    return [f"{v}/{k}" for v, k in KINDS]
