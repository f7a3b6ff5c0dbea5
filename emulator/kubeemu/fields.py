"""Field ownership (``metadata.managedFields``) and server-side apply, as the API server documents them.

A field set is a set of paths; a path is a tuple of ``FieldsV1`` keys: ``f:<field>`` for a map field,
``k:{"name":"api"}`` for an item of an associative list (keyed by its merge keys), ``v:<json>`` for an
item of a set list. ``FieldsV1`` (the JSON form in ``managedFields``) is the same as a tree, with
``.`` marking a list item owned as a whole.

- Every write (create, update, patch) is recorded for its field manager (``?fieldManager=``, else the
  client's User-Agent product: ``kubectl``, ``kopf``, ``helm``...) as an ``Update`` entry holding the
  fields it changed; those fields leave other managers' sets (updates never conflict).
- An apply (``PATCH`` with ``application/apply-patch+yaml``) is a ``Apply`` entry holding exactly the
  fields of the applied configuration. A field the configuration sets to a value different from the
  live one, owned by another manager, is a conflict (409 listing each field) unless ``force=true``,
  which takes it over. Fields the manager applied before and no longer applies are removed from the
  object unless another manager owns them. Lists: associative where the schema (CRDs:
  ``x-kubernetes-list-type``/``-map-keys``) or the built-in kind (containers, env, ports, volumes,
  conditions ...) says so, sets for ``finalizers``, atomic otherwise.

Not emulated: managers per API version conversion (the stored version is used), the
``x-kubernetes-map-type: atomic`` and ``granular`` distinctions, and ``managedFields`` reset by
sending ``[{}]`` (any ``managedFields`` sent are taken as given, which is what kubectl's
client-side-to-server-side apply migration relies on).
"""

from __future__ import annotations

import copy
import datetime
import json
from dataclasses import dataclass
from typing import Any

from kubeemu.errors import ApiError

Path = tuple[str, ...]
APPLY = "application/apply-patch+yaml"

# Identity and server-owned fields: never part of a field set.
_IGNORED_META = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
    "generateName",
}

# Associative lists of built-in kinds, by field name: merge keys (first present set wins).
_BUILTIN_LIST_KEYS: dict[str, list[tuple[str, ...]]] = {
    "containers": [("name",)],
    "initContainers": [("name",)],
    "ephemeralContainers": [("name",)],
    "env": [("name",)],
    "volumes": [("name",)],
    "volumeMounts": [("mountPath",)],
    "volumeDevices": [("devicePath",)],
    "imagePullSecrets": [("name",)],
    "conditions": [("type",)],
    "ownerReferences": [("uid",)],
    "ports": [("containerPort", "protocol"), ("port", "protocol")],
    "hostAliases": [("ip",)],
    "tolerations": [],
    "topologySpreadConstraints": [("topologyKey", "whenUnsatisfiable")],
}
_BUILTIN_SETS = {"finalizers"}


@dataclass
class WriteOptions:
    """Per-request options of a write that the store needs besides the body."""

    manager: str | None = None
    field_validation: str | None = None  # Strict | Warn | Ignore (CRs: unknown fields)
    force: bool = False
    subresource: str | None = None


def manager_from_user_agent(user_agent: str) -> str:
    """The default field manager: the User-Agent's product name (``kubectl/v1.35.2 (...)`` -> ``kubectl``)."""
    return (user_agent or "unknown").split("/")[0].split(" ")[0] or "unknown"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- list types


def _schema_child(schema: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    if not isinstance(schema, dict):
        return None
    props = schema.get("properties") or {}
    if key in props:
        return props[key]
    additional = schema.get("additionalProperties")
    return additional if isinstance(additional, dict) else None


def _list_kind(name: str, items: list[Any], schema: dict[str, Any] | None, custom: bool) -> tuple[str, tuple[str, ...]]:
    """("map", keys) | ("set", ()) | ("atomic", ()) for a list field."""
    if isinstance(schema, dict) and (schema.get("x-kubernetes-list-type") or custom):
        list_type = schema.get("x-kubernetes-list-type", "atomic")
        if list_type == "map":
            return "map", tuple(schema.get("x-kubernetes-list-map-keys") or ())
        return ("set", ()) if list_type == "set" else ("atomic", ())
    if custom:
        return "atomic", ()
    if name in _BUILTIN_SETS and all(not isinstance(i, (dict, list)) for i in items):
        return "set", ()
    for keys in _BUILTIN_LIST_KEYS.get(name, []):
        if items and all(isinstance(i, dict) and keys[0] in i for i in items):
            return "map", keys
    return "atomic", ()


def _item_key(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    return "k:" + json.dumps({k: item[k] for k in keys if k in item}, separators=(",", ":"), sort_keys=True)


# ---------------------------------------------------------------- field sets


def field_set(obj: dict[str, Any], schema: dict[str, Any] | None, custom: bool) -> set[Path]:
    """The leaf paths (and owned list items) set in an object, identity and server fields excluded."""
    out: set[Path] = set()
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        if key == "metadata" and isinstance(value, dict):
            meta = {k: v for k, v in value.items() if k not in _IGNORED_META}
            if meta:
                _walk(meta, ("f:metadata",), _schema_child(schema, "metadata"), custom, out)
            continue
        _walk(value, (f"f:{key}",), _schema_child(schema, key), custom, out, key)
    return out


def _walk(value: Any, path: Path, schema: dict[str, Any] | None, custom: bool, out: set[Path], name: str = "") -> None:
    if (
        isinstance(value, dict)
        and value
        and not (isinstance(schema, dict) and schema.get("x-kubernetes-map-type") == "atomic")
    ):
        for key, item in value.items():
            _walk(item, (*path, f"f:{key}"), _schema_child(schema, key), custom, out, key)
        return
    if isinstance(value, list) and value:
        kind, keys = _list_kind(name or path[-1][2:], value, schema, custom)
        item_schema = schema.get("items") if isinstance(schema, dict) else None
        if kind == "map":
            for item in value:
                item_path = (*path, _item_key(item, keys))
                out.add((*item_path, "."))
                for key, sub in item.items():
                    _walk(sub, (*item_path, f"f:{key}"), _schema_child(item_schema, key), custom, out, key)
            return
        if kind == "set":
            for item in value:
                out.add((*path, "v:" + json.dumps(item, separators=(",", ":"))))
            return
    out.add(path)


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    """A field set as the ``fieldsV1`` tree."""
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(part, {})
    return tree


def from_fields_v1(tree: Any, prefix: Path = ()) -> set[Path]:
    """A ``fieldsV1`` tree as a field set."""
    out: set[Path] = set()
    if not isinstance(tree, dict):
        return out
    for key, sub in tree.items():
        if key == ".":
            out.add((*prefix, "."))
        elif isinstance(sub, dict) and sub:
            out |= from_fields_v1(sub, (*prefix, key))
        else:
            out.add((*prefix, key))
    return out


def path_text(path: Path) -> str:
    """A path as the API server prints it in conflicts: ``.spec.containers[name="api"].image``."""
    text = ""
    for part in path:
        if part == ".":
            continue
        kind, _, rest = part.partition(":")
        if kind == "f":
            text += f".{rest}"
        elif kind == "k":
            keys = json.loads(rest)
            text += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]"
        elif kind == "v":
            text += f"[{rest}]"
        else:
            text += f"[{rest}]"
    return text


_MISSING = object()


def value_at(obj: Any, path: Path) -> Any:
    """The value a path selects (``_MISSING`` when absent)."""
    node = obj
    for part in path:
        if part == ".":
            continue
        kind, _, rest = part.partition(":")
        if kind == "f":
            if not isinstance(node, dict) or rest not in node:
                return _MISSING
            node = node[rest]
        elif kind == "k":
            keys = json.loads(rest)
            if not isinstance(node, list):
                return _MISSING
            node = next(
                (i for i in node if isinstance(i, dict) and all(i.get(k) == v for k, v in keys.items())), _MISSING
            )
            if node is _MISSING:
                return _MISSING
        elif kind == "v":
            item = json.loads(rest)
            if not isinstance(node, list) or item not in node:
                return _MISSING
            node = item
        else:
            return _MISSING
    return node


def remove_at(obj: Any, path: Path) -> None:
    """Remove what a path selects (a field, a list item), leaving empty parents in place."""
    parts = [p for p in path if p != "."]
    if not parts:
        return
    parent = value_at(obj, tuple(parts[:-1]))
    last = parts[-1]
    kind, _, rest = last.partition(":")
    if kind == "f" and isinstance(parent, dict):
        parent.pop(rest, None)
    elif kind == "k" and isinstance(parent, list):
        keys = json.loads(rest)
        parent[:] = [i for i in parent if not (isinstance(i, dict) and all(i.get(k) == v for k, v in keys.items()))]
    elif kind == "v" and isinstance(parent, list):
        item = json.loads(rest)
        parent[:] = [i for i in parent if i != item]


def _overlaps(a: Path, b: Path) -> bool:
    a = tuple(p for p in a if p != ".")
    b = tuple(p for p in b if p != ".")
    n = min(len(a), len(b))
    return a[:n] == b[:n]


# ---------------------------------------------------------------- merging an applied configuration


def merge_applied(live: Any, config: Any, schema: dict[str, Any] | None, custom: bool, name: str = "") -> Any:
    """``config`` merged into ``live``: maps merge, associative lists merge by key, sets union, rest replaces."""
    if (
        isinstance(config, dict)
        and isinstance(live, dict)
        and not (isinstance(schema, dict) and schema.get("x-kubernetes-map-type") == "atomic")
    ):
        result = dict(live)
        for key, value in config.items():
            result[key] = merge_applied(live.get(key), value, _schema_child(schema, key), custom, key)
        return result
    if isinstance(config, list) and isinstance(live, list):
        kind, keys = _list_kind(name, config or live, schema, custom)
        item_schema = schema.get("items") if isinstance(schema, dict) else None
        if kind == "map":
            result = list(live)
            for item in config:
                key = _item_key(item, keys)
                index = next(
                    (i for i, x in enumerate(result) if isinstance(x, dict) and _item_key(x, keys) == key), None
                )
                if index is None:
                    result.append(copy.deepcopy(item))
                else:
                    result[index] = merge_applied(result[index], item, item_schema, custom)
            return result
        if kind == "set":
            return list(live) + [copy.deepcopy(i) for i in config if i not in live]
    return copy.deepcopy(config)


# ---------------------------------------------------------------- managedFields bookkeeping


def _entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in (obj.get("metadata") or {}).get("managedFields") or [] if isinstance(e, dict) and e]


def _entry_set(entry: dict[str, Any]) -> set[Path]:
    return from_fields_v1(entry.get("fieldsV1") or {})


def _store_entries(obj: dict[str, Any], entries: list[tuple[dict[str, Any], set[Path]]]) -> None:
    result = []
    for entry, paths in entries:
        if not paths:
            continue
        entry = dict(entry)
        entry["fieldsType"] = "FieldsV1"
        entry["fieldsV1"] = to_fields_v1(paths)
        result.append(entry)
    if result:
        obj.setdefault("metadata", {})["managedFields"] = result
    else:
        obj.get("metadata", {}).pop("managedFields", None)


def record_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    manager: str | None,
    api_version: str,
    schema: dict[str, Any] | None,
    custom: bool,
    subresource: str | None,
    operation: str = "Update",
) -> None:
    """Record a non-apply write in ``new``'s managedFields: the writer owns what it changed."""
    new_set = field_set(new, schema, custom)
    changed = {p for p in new_set if old is None or value_at(new, p) != value_at(old, p)}
    present = new_set | {p[:i] for p in new_set for i in range(1, len(p))}
    entries = []
    mine_found = False
    for entry in _entries(old) if old is not None else []:
        paths = {p for p in _entry_set(entry) if p in present or p in new_set}
        is_mine = (
            manager is not None
            and entry.get("manager") == manager
            and entry.get("operation") == operation
            and entry.get("apiVersion") == api_version
            and entry.get("subresource") == subresource
        )
        if is_mine:
            mine_found = True
            paths |= changed
            entry = {**entry, "time": now()} if changed else entry
        else:
            paths = {
                p for p in paths if not any(_overlaps(p, c) and len(p) >= len(c) for c in changed) and p not in changed
            }
        entries.append((entry, paths))
    if manager is not None and not mine_found and changed:
        entry = {"manager": manager, "operation": operation, "apiVersion": api_version, "time": now()}
        if subresource:
            entry["subresource"] = subresource
        entries.append((entry, changed))
    _store_entries(new, entries)


def apply(
    live: dict[str, Any] | None,
    config: dict[str, Any],
    manager: str,
    force: bool,
    api_version: str,
    schema: dict[str, Any] | None,
    custom: bool,
    subresource: str | None,
) -> dict[str, Any]:
    """The object after applying ``config`` as ``manager`` (409 on conflicts unless ``force``)."""
    base = copy.deepcopy(live) if live is not None else {}
    applied = field_set(config, schema, custom)
    entries = [(e, _entry_set(e)) for e in (_entries(live) if live is not None else [])]
    mine = next(
        (
            (e, s)
            for e, s in entries
            if e.get("manager") == manager and e.get("operation") == "Apply" and e.get("subresource") == subresource
        ),
        None,
    )
    previous = mine[1] if mine else set()

    conflicts: list[tuple[str, str, Path]] = []
    if live is not None:
        for entry, paths in entries:
            if mine is not None and entry is mine[0]:
                continue
            if entry.get("manager") == manager and entry.get("operation") == "Apply":
                continue
            for path in applied:
                for owned in paths:
                    if not _overlaps(path, owned):
                        continue
                    target = owned if len(owned) >= len(path) else path
                    if value_at(live, target) is _MISSING or value_at(live, target) == value_at(config, target):
                        continue
                    conflicts.append((entry.get("manager", ""), entry.get("apiVersion", api_version), target))
    if conflicts and not force:
        raise conflict_error(conflicts)

    # Fields this manager applied before and no longer applies: removed unless someone else owns them.
    others = set()
    for entry, paths in entries:
        if mine is not None and entry is mine[0]:
            continue
        others |= paths
    for path in sorted(previous - applied, key=len, reverse=True):
        if path in others or any(_overlaps(path, o) for o in others if len(o) > len(path)):
            continue
        if any(_overlaps(path, a) for a in applied):
            continue
        remove_at(base, path)

    result = merge_applied(base, {k: v for k, v in config.items() if k not in ("apiVersion", "kind")}, schema, custom)
    result.setdefault("metadata", {})

    taken = {c[2] for c in conflicts}
    new_entries = []
    for entry, paths in entries:
        if mine is not None and entry is mine[0]:
            continue
        if taken:
            paths = {p for p in paths if not any(_overlaps(p, t) for t in taken)}
        new_entries.append((entry, paths))
    apply_entry = {"manager": manager, "operation": "Apply", "apiVersion": api_version, "time": now()}
    if subresource:
        apply_entry["subresource"] = subresource
    new_entries.insert(0, (apply_entry, applied))
    _store_entries(result, new_entries)
    return result


def conflict_error(conflicts: list[tuple[str, str, Path]]) -> ApiError:
    """The 409 an apply gets when other managers own fields it would change."""
    unique = sorted({(m, v, path_text(p)) for m, v, p in conflicts})
    by_manager: dict[tuple[str, str], list[str]] = {}
    for manager, version, text in unique:
        by_manager.setdefault((manager, version), []).append(text)
    if len(unique) == 1:
        (manager, version), fields = next(iter(by_manager.items()))
        message = f'Apply failed with 1 conflict: conflict with "{manager}" using {version}: {fields[0]}'
    else:
        parts = []
        for (manager, version), fields in by_manager.items():
            if len(fields) == 1:
                parts.append(f'conflict with "{manager}" using {version}: {fields[0]}')
            else:
                parts.append(f'conflicts with "{manager}" using {version}:\n' + "\n".join(f"- {f}" for f in fields))
        message = f"Apply failed with {len(unique)} conflicts: " + "\n".join(parts)
    causes = [
        {"reason": "FieldManagerConflict", "message": f'conflict with "{m}" using {v}', "field": t}
        for m, v, t in unique
    ]
    return ApiError(409, message, "Conflict", {"causes": causes})


def unknown_fields(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Fields present in ``before`` but pruned from ``after`` (for ``fieldValidation=Strict``)."""
    out: list[str] = []
    if isinstance(before, dict) and isinstance(after, dict):
        for key, value in before.items():
            path = f"{prefix}.{key}" if prefix else key
            if key not in after:
                out.append(path)
            else:
                out += unknown_fields(value, after[key], path)
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for index, (b, a) in enumerate(zip(before, after)):
            out += unknown_fields(b, a, f"{prefix}[{index}]")
    return out
