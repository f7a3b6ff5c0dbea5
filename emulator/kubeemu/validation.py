"""Custom resource validation against a CRD: structural pruning, OpenAPI schema, CEL rules.

Mirrors the API server's order: prune unknown fields, validate the schema (``jsonschema`` after
translating the Kubernetes extensions), then evaluate ``x-kubernetes-validations`` with
``cel-python`` (transition rules with ``oldSelf`` only on updates where the old value exists;
root-level rules see ``self.metadata.name`` and ``self.metadata.generateName``, as on the server).
Messages follow the real server (kube-apiserver 1.36, checked by
``tests/campaigns/test_bad_input.py::test_the_emulator_refuses_with_the_real_servers_words``): a rule
failing on a scalar shows the value (``spec.region: Invalid value: "eu-west-1": region is
immutable``), on an object or a list no value (``spec: Invalid value: postgresVersion is
immutable...``), at the root the path ``<nil>``; the entries of a map are ``spec.tags[team]``. A
schema error of type, enum, required, maxLength, maxItems or maxProperties blocks the rules (and
says so); other schema errors (pattern, minLength...) do not.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import jsonschema

_META_KEYS = ("apiVersion", "kind", "metadata")


def crd_version_schema(crd: dict[str, Any], version: str | None = None) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the given (or the storage) version of a CRD, ``{}`` if none."""
    versions = crd.get("spec", {}).get("versions", [])
    chosen = next((v for v in versions if v.get("name") == version), None) if version else None
    chosen = chosen or next((v for v in versions if v.get("storage")), None) or (versions[0] if versions else {})
    return (chosen.get("schema") or {}).get("openAPIV3Schema") or {}


# ---------------------------------------------------------------- pruning


def prune(value: Any, schema: dict[str, Any], *, root: bool = False) -> Any:
    """Drop fields unknown to a structural schema, unless preserved (like the API server)."""
    if (
        schema.get("x-kubernetes-preserve-unknown-fields")
        and "properties" not in schema
        and "additionalProperties" not in schema
    ):
        return value
    if isinstance(value, dict):
        if schema.get("x-kubernetes-embedded-resource"):
            root = True
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        result = {}
        for key, item in value.items():
            if root and key in _META_KEYS:
                result[key] = item
            elif key in props:
                result[key] = prune(item, props[key])
            elif isinstance(additional, dict):
                result[key] = prune(item, additional)
            elif additional is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                result[key] = item
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"]) for item in value]
    return value


# ---------------------------------------------------------------- schema translation


def to_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Translate a Kubernetes structural schema into a plain JSON Schema."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "example", "externalDocs", "format"):
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(sub) for sub in value]
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}] + out.get("anyOf", [])
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = list(out["enum"]) + [None]
    if schema.get("x-kubernetes-embedded-resource"):
        out.setdefault("properties", {})
        out["properties"].setdefault("apiVersion", {"type": "string"})
        out["properties"].setdefault("kind", {"type": "string"})
        out["properties"].setdefault("metadata", {"type": "object"})
    return out


class _Key(str):
    """A map entry's key in a path: ``spec.tags[team]`` (the server's ``field.Path.Key``)."""


def _path_text(path: list[Any]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int | _Key):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _go_quote(text: str) -> str:
    """Go's ``%q`` (``strconv.Quote``): printable characters as they are, the rest escaped."""
    named = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    out = []
    for char in text:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char in named:
            out.append(named[char])
        elif char.isprintable() or char == " ":
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _go_value(value: Any) -> str:
    if isinstance(value, str):
        return _go_quote(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return '"object"' if isinstance(value, dict) else '"array"'
    return str(value)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _schema_error(error: jsonschema.ValidationError) -> tuple[str, str]:
    path = list(error.absolute_path)
    field = _path_text(path)
    where = field or "<root>"
    v = error.validator
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        field = _path_text(path + [missing])
        return field, f"{field}: Required value"
    if v == "enum":
        supported = ", ".join(_go_value(x) for x in error.validator_value if x is not None)
        return field, f"{where}: Unsupported value: {_go_value(error.instance)}: supported values: {supported}"
    if v == "type":
        expected = error.validator_value
        expected = expected[0] if isinstance(expected, list) else expected
        return field, (
            f'{where}: Invalid value: "{_type_name(error.instance)}": '
            f'{where} in body must be of type {expected}: "{_type_name(error.instance)}"'
        )
    messages = {
        "pattern": f"{where} in body should match '{error.validator_value}'",
        "minimum": f"{where} in body should be greater than or equal to {error.validator_value}",
        "maximum": f"{where} in body should be less than or equal to {error.validator_value}",
        "exclusiveMinimum": f"{where} in body should be greater than {error.validator_value}",
        "exclusiveMaximum": f"{where} in body should be less than {error.validator_value}",
        "minLength": f"{where} in body should be at least {error.validator_value} chars long",
        "minItems": f"{where} in body should have at least {error.validator_value} items",
        "minProperties": f"{where} in body should have at least {error.validator_value} properties",
    }
    if v == "maxLength":
        return field, f"{where}: Too long: may not be more than {error.validator_value} bytes"
    if v == "maxProperties":
        return field, f"{where}: Too many: {len(error.instance)}: must have at most {error.validator_value} items"
    if v == "maxItems":
        return field, f"{where}: Too many: {len(error.instance)}: must have at most {error.validator_value} items"
    detail = messages.get(str(v), error.message)
    return field, f"{where}: Invalid value: {_go_value(error.instance)}: {detail}"


# ---------------------------------------------------------------- CEL


@lru_cache(maxsize=512)
def _cel_program(rule: str) -> Any:
    import celpy  # cel-python; imported lazily (optional "emulator" extra)

    env = celpy.Environment()
    return env.program(env.compile(rule))


def _cel_eval(rule: str, self_value: Any, old_value: Any, has_old: bool) -> Any:
    import celpy

    activation = {"self": celpy.json_to_cel(self_value)}
    if has_old:
        activation["oldSelf"] = celpy.json_to_cel(old_value)
    result = _cel_program(rule).evaluate(activation)
    if isinstance(result, Exception):
        raise result
    return result


def _is_transition(rule: str) -> bool:
    return "oldSelf" in rule


def _cel_errors(
    value: Any, schema: dict[str, Any], old: Any, has_old: bool, path: list[Any]
) -> Iterator[tuple[str, str]]:
    for item in schema.get("x-kubernetes-validations") or []:
        rule = item["rule"]
        if _is_transition(rule) and not has_old and not item.get("optionalOldSelf"):
            continue
        field = _path_text(path + [p for p in (item.get("fieldPath") or "").lstrip(".").split(".") if p])
        where = field = field or "<nil>"
        try:
            ok = bool(_cel_eval(rule, value, old, has_old))
        except Exception as exc:  # noqa: BLE001 -- the server reports evaluation errors as Invalid
            yield field, f'{where}: Invalid value: "{_type_name(value)}": {exc}'
            continue
        if not ok:
            message = item.get("message") or f"failed rule: {rule}"
            if item.get("reason") == "FieldValueForbidden":
                yield field, f"{where}: Forbidden: {message}"
            elif item.get("reason") == "FieldValueRequired":
                yield field, f"{where}: Required value: {message}"
            elif schema.get("type") in ("object", "array") or isinstance(value, dict | list):
                yield field, f"{where}: Invalid value: {message}"  # the server omits the value
            else:
                yield field, f"{where}: Invalid value: {_go_value(value)}: {message}"
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        old_dict = old if has_old and isinstance(old, dict) else {}
        for key, sub in value.items():
            sub_schema = props.get(key) if key in props else (additional if isinstance(additional, dict) else None)
            if sub_schema is None:
                continue
            part = key if key in props else _Key(key)
            yield from _cel_errors(sub, sub_schema, old_dict.get(key), key in old_dict, path + [part])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        items_schema = schema["items"]
        old_by_key = _correlate_list(old if has_old else None, schema)
        for index, sub in enumerate(value):
            key = _list_key(sub, schema)
            has = key is not None and key in old_by_key
            yield from _cel_errors(sub, items_schema, old_by_key.get(key) if has else None, has, path + [index])


def _list_key(item: Any, schema: dict[str, Any]) -> Any:
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map" and isinstance(item, dict):
        return tuple(item.get(k) for k in schema.get("x-kubernetes-list-map-keys") or [])
    if list_type == "set":
        return json.dumps(item, sort_keys=True)
    return None


def _correlate_list(old: Any, schema: dict[str, Any]) -> dict[Any, Any]:
    if not isinstance(old, list):
        return {}
    result = {}
    for item in old:
        key = _list_key(item, schema)
        if key is not None:
            result[key] = item
    return result


def _duplicates(value: Any, schema: dict[str, Any], path: list[Any]) -> Iterator[tuple[str, str]]:
    """``x-kubernetes-list-type: map|set`` lists must not repeat keys (values)."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, sub in value.items():
            sub_schema = props.get(key) if key in props else (additional if isinstance(additional, dict) else None)
            if sub_schema is not None:
                yield from _duplicates(sub, sub_schema, path + [key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        seen = set()
        for index, item in enumerate(value):
            key = _list_key(item, schema)
            if key is not None:
                if key in seen:
                    field = _path_text(path + [index])
                    if isinstance(item, dict):
                        keys = schema.get("x-kubernetes-list-map-keys") or []
                        shown = json.dumps({k: item.get(k) for k in keys}, separators=(",", ":"))
                        yield field, f"{field}: Duplicate value: map[string]interface {{}}{shown}"
                    else:
                        yield field, f"{field}: Duplicate value: {_go_value(item)}"
                seen.add(key)
            yield from _duplicates(item, schema["items"], path + [index])


# ---------------------------------------------------------------- public API

# Schema errors the server counts as blocking: the CEL rules are then not evaluated at all
# (apiextensions-apiserver, registry/customresource/strategy.go, hasBlockingErr).
_BLOCKING = frozenset({"type", "enum", "required", "maxLength", "maxItems", "maxProperties"})
_NOT_CHECKED = "<nil>"
_RULES_NOT_CHECKED = "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"


def _has_rules(schema: Any) -> bool:
    """Whether a schema has ``x-kubernetes-validations`` anywhere (the server's cel.NewValidator)."""
    if not isinstance(schema, dict):
        return False
    if schema.get("x-kubernetes-validations"):
        return True
    children = [*(schema.get("properties") or {}).values(), schema.get("additionalProperties"), schema.get("items")]
    return any(_has_rules(child) for child in children)


def validate_schema(
    obj: dict[str, Any], schema: dict[str, Any], old: dict[str, Any] | None = None
) -> list[tuple[str, str]]:
    """Schema and CEL errors as ``(field, message)`` pairs for an already-pruned object."""
    if not schema:
        return []
    body = {k: v for k, v in obj.items() if k not in _META_KEYS}
    translated = to_json_schema(schema)
    translated.get("properties", {}).pop("metadata", None)
    translated.get("properties", {}).pop("apiVersion", None)
    translated.get("properties", {}).pop("kind", None)
    if "required" in translated:
        translated["required"] = [r for r in translated["required"] if r not in _META_KEYS]
    validator = jsonschema.Draft4Validator(translated)
    errors = sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path])
    result = [_schema_error(error) for error in errors] + list(_duplicates(body, schema, []))
    if not _has_rules(schema):  # no CEL validator at all: nothing is said about rules
        return result
    if any(error.validator in _BLOCKING for error in errors):
        return [*result, (_NOT_CHECKED, f"{_NOT_CHECKED}: Invalid value: null: {_RULES_NOT_CHECKED}")]
    old_body = {k: v for k, v in (old or {}).items() if k not in _META_KEYS}
    # Root-level rules may read self.metadata.name and self.metadata.generateName (nothing else).
    cel_body = {**body, **_cel_metadata(obj)}
    cel_old = {**old_body, **_cel_metadata(old or {})}
    return result + list(_cel_errors(cel_body, schema, cel_old, old is not None, []))  # pattern, minLength...: both


def _cel_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """The part of ``metadata`` the API server exposes to root-level CEL rules."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return {}
    return {"metadata": {k: meta[k] for k in ("name", "generateName") if k in meta}}


def validate_custom_resource(crd: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Validate a custom resource against its CRD, as the API server would on create/update.

    Returns the error messages (empty when valid), e.g.
    ``['spec.region: Invalid value: "eu-west-1": region is immutable']``. Unknown fields are pruned
    first (never reported); ``old`` enables transition rules (``oldSelf``).
    """
    api_version = obj.get("apiVersion", "")
    version = api_version.split("/")[-1] if api_version else None
    schema = crd_version_schema(crd, version)
    pruned = prune(copy.deepcopy(obj), schema, root=True)
    old_pruned = prune(copy.deepcopy(old), schema, root=True) if old is not None else None
    return [text for _, text in validate_schema(pruned, schema, old_pruned)]
