"""The ``Table`` form of GET/LIST/WATCH answers (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``).

kubectl asks for it on every ``kubectl get`` and prints the server's columns: a CRD's
``additionalPrinterColumns`` (evaluated with the simple JSONPath the API server supports, first match
only, ``date`` columns as ages), and for built-in kinds the columns the real server's printers give
(``NAME``/``STATUS``/``AGE`` for Namespaces, ``TYPE``/``DATA`` for Secrets, ``LAST SEEN``/``TYPE``/
``REASON``/``OBJECT``/``MESSAGE`` for Events, ``READY``/``UP-TO-DATE``/``AVAILABLE`` for Deployments ...).
Each row carries the object's metadata (``PartialObjectMetadata``) or, with ``includeObject=Object``,
the whole object, as kubectl needs for ``-A`` and ``--show-labels``.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from typing import Any

from kubeemu.resources import ResourceType

Row = Callable[[dict[str, Any]], list[Any]]
_NAME_DOC = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name automatically."
)


def wants_table(accept: str) -> bool:
    """Whether an Accept header asks for the meta.k8s.io Table form first-class."""
    first = accept.split(",")[0].replace(" ", "")
    return "as=Table" in first and "g=meta.k8s.io" in first


# ---------------------------------------------------------------- helpers


def _parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """Kubernetes' ``duration.HumanDuration`` (``5s``, ``3m20s``, ``4h``, ``2d3h``)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(value: Any) -> str:
    """A timestamp as an age (``<unknown>`` when absent), as the server's printers show it."""
    when = _parse_time(value)
    if when is None:
        return "<unknown>"
    return human_duration((datetime.datetime.now(datetime.UTC) - when).total_seconds())


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _age(obj: dict[str, Any]) -> str:
    return age(_meta(obj).get("creationTimestamp"))


# ---------------------------------------------------------------- JSONPath (the subset CRDs allow)

_TOKEN = re.compile(
    r"\.([A-Za-z0-9_\-$]+)|\[\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*[\"']([^\"']*)[\"']\)\]|\[(\d+|\*)\]"
    r"|\.?\[['\"]([^'\"]+)['\"]\]"
)


def jsonpath_first(obj: Any, path: str) -> Any:
    """The first value a simple JSONPath (``.a.b``, ``[0]``, ``[*]``, ``[?(@.k=="v")]``) selects, or None."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    values = [obj]
    pos = 0
    while pos < len(path) and values:
        match = _TOKEN.match(path, pos)
        if match is None:
            return None
        pos = match.end()
        field, filter_key, filter_value, index, quoted = match.groups()
        nxt: list[Any] = []
        for value in values:
            if field is not None or quoted is not None:
                key = field if field is not None else quoted
                if isinstance(value, dict) and key in value:
                    nxt.append(value[key])
            elif filter_key is not None:
                for item in value if isinstance(value, list) else []:
                    got: Any = item
                    for part in filter_key.split("."):
                        got = got.get(part) if isinstance(got, dict) else None
                    if got is not None and str(got) == filter_value:
                        nxt.append(item)
            elif index == "*":
                nxt.extend(value if isinstance(value, list) else (value.values() if isinstance(value, dict) else []))
            elif isinstance(value, list) and int(index) < len(value):
                nxt.append(value[int(index)])
        values = nxt
    return values[0] if values else None


def _cell(column_type: str, value: Any) -> Any:
    if value is None:
        return None
    if column_type == "date":
        return age(value) if _parse_time(value) else None
    if column_type == "integer":
        return value if isinstance(value, int) else None
    if column_type == "number":
        return value if isinstance(value, (int, float)) else None
    if column_type == "boolean":
        return value if isinstance(value, bool) else None
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---------------------------------------------------------------- built-in printers


def _col(name: str, type_: str = "string", priority: int = 0, description: str = "", fmt: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": fmt, "description": description or name, "priority": priority}


_NAME = _col("Name", fmt="name", description=_NAME_DOC)
_AGE = _col(
    "Age", description="CreationTimestamp is a timestamp representing the server time when this object was created."
)
_CREATED_AT = _col(
    "Created At",
    "date",
    description="CreationTimestamp is a timestamp representing the server time when this object was created.",
)


def _created_at(obj: dict[str, Any]) -> str:
    return _meta(obj).get("creationTimestamp") or ""


def _event_object(obj: dict[str, Any]) -> str:
    ref = obj.get("involvedObject") or obj.get("regarding") or {}
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


def _event_last_seen(obj: dict[str, Any]) -> str:
    for key in ("lastTimestamp", "deprecatedLastTimestamp", "eventTime", "firstTimestamp", "deprecatedFirstTimestamp"):
        value = obj.get(key)
        if isinstance(value, dict):
            value = None
        if value and _parse_time(value):
            return age(value)
    series = obj.get("series") or {}
    if series.get("lastObservedTime"):
        return age(series["lastObservedTime"])
    return _age(obj)


def _event_source(obj: dict[str, Any]) -> str:
    source = obj.get("source") or obj.get("deprecatedSource") or {}
    component = source.get("component") or obj.get("reportingComponent") or obj.get("reportingController") or ""
    host = source.get("host")
    return f"{component}, {host}" if component and host else component


def _ports(obj: dict[str, Any]) -> str:
    ports = []
    for port in (obj.get("spec") or {}).get("ports") or []:
        text = f"{port.get('port')}"
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        ports.append(f"{text}/{port.get('protocol', 'TCP')}")
    return ",".join(ports) or "<none>"


def _subjects(obj: dict[str, Any], kind: str) -> str:
    names = []
    for subject in obj.get("subjects") or []:
        if subject.get("kind") == kind:
            names.append(
                f"{subject['namespace']}/{subject['name']}"
                if kind == "ServiceAccount" and subject.get("namespace")
                else subject.get("name", "")
            )
    return ", ".join(names)


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return ((((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")) or []


def _selector(selector: dict[str, Any] | None) -> str:
    labels = (selector or {}).get("matchLabels", selector or {})
    if not isinstance(labels, dict) or not labels:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if isinstance(v, str)) or "<none>"


_EVENT_COLUMNS = (
    [
        _col("Last Seen"),
        _col("Type"),
        _col("Reason"),
        _col("Object"),
        _col("Subobject", priority=1),
        _col("Source", priority=1),
        _col("Message"),
        _col("First Seen", priority=1),
        _col("Count", "integer", 1),
        _col("Name", priority=1),
    ],
    lambda o: [
        _event_last_seen(o),
        o.get("type", ""),
        o.get("reason", ""),
        _event_object(o),
        (o.get("involvedObject") or o.get("regarding") or {}).get("fieldPath", ""),
        _event_source(o),
        (o.get("message") or o.get("note") or "").strip(),
        age(o.get("firstTimestamp") or o.get("deprecatedFirstTimestamp") or o.get("eventTime")),
        int(o.get("count") or o.get("deprecatedCount") or (o.get("series") or {}).get("count") or 1),
        _meta(o).get("name", ""),
    ],
)

PRINTERS: dict[tuple[str, str], tuple[list[dict[str, Any]], Row]] = {
    ("", "namespaces"): ([_NAME, _col("Status"), _AGE], lambda o: [(o.get("status") or {}).get("phase", ""), _age(o)]),
    ("", "secrets"): (
        [_NAME, _col("Type"), _col("Data", "integer"), _AGE],
        lambda o: [o.get("type", ""), len(o.get("data") or {}), _age(o)],
    ),
    ("", "configmaps"): (
        [_NAME, _col("Data", "integer"), _AGE],
        lambda o: [len(o.get("data") or {}) + len(o.get("binaryData") or {}), _age(o)],
    ),
    ("", "serviceaccounts"): (
        [_NAME, _col("Secrets", "integer"), _AGE],
        lambda o: [len(o.get("secrets") or []), _age(o)],
    ),
    ("", "services"): (
        [
            _NAME,
            _col("Type"),
            _col("Cluster-IP"),
            _col("External-IP"),
            _col("Port(s)"),
            _AGE,
            _col("Selector", priority=1),
        ],
        lambda o: [
            (o.get("spec") or {}).get("type", "ClusterIP"),
            (o.get("spec") or {}).get("clusterIP") or "<none>",
            ",".join((o.get("spec") or {}).get("externalIPs") or []) or "<none>",
            _ports(o),
            _age(o),
            _selector((o.get("spec") or {}).get("selector")),
        ],
    ),
    ("", "pods"): (
        [_NAME, _col("Ready"), _col("Status"), _col("Restarts", "string"), _AGE],
        lambda o: [
            f"0/{len((o.get('spec') or {}).get('containers') or [])}",
            (o.get("status") or {}).get("phase") or "Pending",
            "0",
            _age(o),
        ],
    ),
    ("apps", "deployments"): (
        [
            _NAME,
            _col("Ready"),
            _col("Up-to-date", "integer"),
            _col("Available", "integer"),
            _AGE,
            _col("Containers", priority=1),
            _col("Images", priority=1),
            _col("Selector", priority=1),
        ],
        lambda o: [
            f"{(o.get('status') or {}).get('readyReplicas', 0)}/{(o.get('spec') or {}).get('replicas', 1)}",
            (o.get("status") or {}).get("updatedReplicas", 0),
            (o.get("status") or {}).get("availableReplicas", 0),
            _age(o),
            ",".join(c.get("name", "") for c in _containers(o)),
            ",".join(c.get("image", "") for c in _containers(o)),
            _selector((o.get("spec") or {}).get("selector")),
        ],
    ),
    ("", "events"): _EVENT_COLUMNS,
    ("events.k8s.io", "events"): _EVENT_COLUMNS,
    ("rbac.authorization.k8s.io", "roles"): ([_NAME, _CREATED_AT], lambda o: [_created_at(o)]),
    ("rbac.authorization.k8s.io", "clusterroles"): ([_NAME, _CREATED_AT], lambda o: [_created_at(o)]),
    ("rbac.authorization.k8s.io", "rolebindings"): (
        [
            _NAME,
            _col("Role"),
            _AGE,
            _col("Users", priority=1),
            _col("Groups", priority=1),
            _col("ServiceAccounts", priority=1),
        ],
        lambda o: [
            f"{(o.get('roleRef') or {}).get('kind', '')}/{(o.get('roleRef') or {}).get('name', '')}",
            _age(o),
            _subjects(o, "User"),
            _subjects(o, "Group"),
            _subjects(o, "ServiceAccount"),
        ],
    ),
    ("rbac.authorization.k8s.io", "clusterrolebindings"): (
        [
            _NAME,
            _col("Role"),
            _AGE,
            _col("Users", priority=1),
            _col("Groups", priority=1),
            _col("ServiceAccounts", priority=1),
        ],
        lambda o: [
            f"{(o.get('roleRef') or {}).get('kind', '')}/{(o.get('roleRef') or {}).get('name', '')}",
            _age(o),
            _subjects(o, "User"),
            _subjects(o, "Group"),
            _subjects(o, "ServiceAccount"),
        ],
    ),
    ("coordination.k8s.io", "leases"): (
        [_NAME, _col("Holder"), _AGE],
        lambda o: [(o.get("spec") or {}).get("holderIdentity", ""), _age(o)],
    ),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies"): (
        [_NAME, _col("Validations", "integer"), _col("ParamKind"), _AGE],
        lambda o: [
            len((o.get("spec") or {}).get("validations") or []),
            ((o.get("spec") or {}).get("paramKind") or {}).get("kind") or "<unset>",
            _age(o),
        ],
    ),
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"): (
        [_NAME, _col("PolicyName"), _col("ParamRef"), _AGE],
        lambda o: [
            (o.get("spec") or {}).get("policyName", ""),
            ((o.get("spec") or {}).get("paramRef") or {}).get("name") or "<unset>",
            _age(o),
        ],
    ),
}


def _crd_columns(crd: dict[str, Any] | None, version: str) -> tuple[list[dict[str, Any]], Row]:
    spec_version = next((v for v in (crd or {}).get("spec", {}).get("versions", []) if v.get("name") == version), {})
    columns = spec_version.get("additionalPrinterColumns")
    if not columns:
        return [_NAME, _CREATED_AT], lambda o: [_created_at(o)]
    definitions = [_NAME] + [
        _col(c["name"], c.get("type", "string"), c.get("priority", 0), c.get("description", ""), c.get("format", ""))
        for c in columns
    ]
    return definitions, lambda o: [
        _cell(c.get("type", "string"), jsonpath_first(o, c.get("jsonPath", ""))) for c in columns
    ]


def table(
    rt: ResourceType,
    objects: list[dict[str, Any]],
    crd: dict[str, Any] | None,
    include_object: str,
    resource_version: str,
    continue_: str | None = None,
    columns: bool = True,
) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table of ``objects`` (each already in ``rt``'s served form)."""
    if rt.custom:
        definitions, row = _crd_columns(crd, rt.version)
    else:
        definitions, row = PRINTERS.get(rt.group_resource, ([_NAME, _CREATED_AT], lambda o: [_created_at(o)]))
    rows = []
    for obj in objects:
        cells = row(obj)
        if definitions[0] is _NAME:
            cells = [_meta(obj).get("name", ""), *cells]
        entry: dict[str, Any] = {"cells": cells}
        if include_object == "Object":
            entry["object"] = obj
        elif include_object != "None":
            entry["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": _meta(obj)}
        rows.append(entry)
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_:
        meta["continue"] = continue_
    result: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
    if columns:
        result["columnDefinitions"] = definitions
    result["rows"] = rows
    return result
