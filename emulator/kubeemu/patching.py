"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902), with the API server's error semantics."""

from __future__ import annotations

import copy
from typing import Any

from kubeemu.errors import ApiError, bad_request


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch: dicts merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch for built-in kinds, limited to ObjectMeta's list strategies.

    Like a merge patch, except ``metadata.finalizers`` merges as a set (``$deleteFromPrimitiveList``
    removes) and ``metadata.ownerReferences`` merges by ``uid``; ``$setElementOrder``/``$retainKeys``
    directives are dropped. Other list fields of built-ins are replaced, as in a merge patch.
    """
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return merge_patch(target, patch)
    meta_patch = dict(patch.get("metadata") or {}) if isinstance(patch.get("metadata"), dict) else None
    rest = {k: v for k, v in patch.items() if k != "metadata" and not k.startswith("$")}
    result = merge_patch(target, _strip_directives(rest))
    if meta_patch is None:
        if "metadata" in patch:
            result["metadata"] = patch["metadata"]
        return result
    meta = dict(result.get("metadata") or {})
    finalizers = list(meta.get("finalizers") or [])
    removed = meta_patch.pop("$deleteFromPrimitiveList/finalizers", None) or []
    if "finalizers" in meta_patch:
        added = meta_patch.pop("finalizers")
        finalizers = [] if added is None else finalizers + [f for f in added if f not in finalizers]
    finalizers = [f for f in finalizers if f not in removed]
    refs = list(meta.get("ownerReferences") or [])
    if "ownerReferences" in meta_patch:
        new_refs = meta_patch.pop("ownerReferences")
        if new_refs is None:
            refs = []
        for ref in new_refs or []:
            refs = [r for r in refs if r.get("uid") != ref.get("uid")]
            if ref.get("$patch") != "delete":
                refs.append(ref)
    meta = merge_patch(meta, _strip_directives(meta_patch))
    for key, value in (("finalizers", finalizers), ("ownerReferences", refs)):
        if value:
            meta[key] = value
        else:
            meta.pop(key, None)
    result["metadata"] = meta
    return result


def _strip_directives(patch: Any) -> Any:
    if isinstance(patch, dict):
        return {
            k: _strip_directives(v)
            for k, v in patch.items()
            if not (k.startswith("$setElementOrder/") or k.startswith("$retainKeys"))
        }
    return patch


def _unprocessable(detail: str) -> ApiError:
    # The real server wraps json-patch application errors into a generic 422 response.
    return ApiError(
        422,
        "the server rejected our request due to an error in our request",
        "Invalid",
        {"causes": [{"reason": "UnexpectedServerResponse", "message": detail}]},
    )


def _tokens(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _unprocessable(f"invalid JSON pointer: {path!r}")
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise _unprocessable(f'doc is missing path: "{path}": missing value')
    return node


def _get(doc: Any, path: str) -> Any:
    tokens = _tokens(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    key = tokens[-1]
    if isinstance(parent, dict) and key in parent:
        return parent[key]
    if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        return parent[int(key)]
    raise _unprocessable(f'doc is missing path: "{path}": missing value')


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _tokens(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    key = tokens[-1]
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list):
        if key == "-":
            parent.append(value)
        elif key.isdigit() and int(key) <= len(parent):
            parent.insert(int(key), value)
        else:
            raise _unprocessable(f'add operation does not apply: doc is missing path: "{path}": missing value')
    else:
        raise _unprocessable(f'add operation does not apply: doc is missing path: "{path}": missing value')
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    tokens = _tokens(path)
    if not tokens:
        raise _unprocessable("unable to remove the whole document")
    parent = _parent(doc, tokens, path)
    key = tokens[-1]
    if isinstance(parent, dict) and key in parent:
        return doc, parent.pop(key)
    if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        return doc, parent.pop(int(key))
    raise _unprocessable(f'remove operation does not apply: doc is missing path: "{path}": missing value')


def json_patch(doc: Any, ops: Any) -> Any:
    """Apply an RFC 6902 JSON patch; a failed ``test`` or a missing path is a 422, like the real server."""
    if not isinstance(ops, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid JSON patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "test":
            if _get(doc, path) != op.get("value"):
                raise _unprocessable(f"testing value {path} failed: test failed")
        elif kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc, _ = _remove(doc, path) if _tokens(path) else (doc, None)
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            doc, value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        else:
            raise bad_request(f"Unexpected kind: {kind}")
    return doc
