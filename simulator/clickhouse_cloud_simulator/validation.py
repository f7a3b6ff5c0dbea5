"""Request validation of the simulator, following the OpenAPI subset (§2 of the API reference).

Every check raises :class:`ApiError`; the server turns it into the error envelope
``{"status": N, "error": "CODE: detail", "requestId": ...}``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
TAG_RE = re.compile(r"^[a-zA-Z0-9._-]+$")
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
CONFIG_VALUE_RE = re.compile(r"^-?\d+(\.\d+)?\s*[a-zA-Z]*$")
PORT_RANGE_RE = re.compile(r"^(\d{1,5})(?:\.\.(\d{1,5}))?$")

VERSIONS = ("18", "17")
HA_TYPES = ("none", "async", "sync")
STATE_COMMANDS = ("restart", "promote", "switchover")
DEFAULT_VERSION = "17"


class ApiError(Exception):
    """An API error: HTTP status, upper-case code and a human detail."""

    CODES: ClassVar[dict[int, str]] = {
        400: "BAD_REQUEST",
        401: "UNAUTHORIZED",
        403: "FORBIDDEN",
        404: "NOT_FOUND",
        405: "METHOD_NOT_ALLOWED",
        409: "CONFLICT",
        413: "PAYLOAD_TOO_LARGE",
        429: "TOO_MANY_REQUESTS",
        500: "INTERNAL_ERROR",
        502: "BAD_GATEWAY",
        503: "SERVICE_UNAVAILABLE",
        504: "GATEWAY_TIMEOUT",
    }

    def __init__(self, status: int, detail: str | None = None) -> None:
        self.status = status
        self.detail = detail
        super().__init__(self.text)

    @property
    def text(self) -> str:
        code = self.CODES.get(self.status, "ERROR")
        return f"{code}: {self.detail}" if self.detail else code


def bad(detail: str) -> ApiError:
    return ApiError(400, detail)


# --- the vendored OpenAPI document ----------------------------------------------------


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The vendored OpenAPI subset (parsed once)."""
    ref = resources.files("clickhouse_cloud_simulator").joinpath("openapi/clickhouse-cloud-openapi-postgres.json")
    return json.loads(ref.read_text(encoding="utf-8"))


def _schemas() -> dict[str, Any]:
    return openapi_document()["components"]["schemas"]


@lru_cache(maxsize=1)
def spec_sizes() -> tuple[str, ...]:
    """The ``pgSize`` enum of the vendored document."""
    return tuple(_schemas()["pgSize"]["enum"])


@lru_cache(maxsize=1)
def pg_config_schema() -> dict[str, dict[str, Any]]:
    """``pgConfig`` properties: key -> {types, enum, minimum}."""
    props = _schemas()["pgConfig"]["properties"]
    out: dict[str, dict[str, Any]] = {}
    for key, prop in props.items():
        types = prop.get("type", "string")
        out[key] = {
            "types": tuple(types) if isinstance(types, list) else (types,),
            "enum": tuple(prop["enum"]) if "enum" in prop else None,
            "minimum": prop.get("minimum"),
        }
    return out


# --- scalar checks ---------------------------------------------------------------------


def check_uuid(value: str, what: str) -> str:
    if not UUID_RE.match(value):
        raise bad(f"Invalid {what} id {value}")
    return value.lower()


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad("Request body must be a JSON object")
    return body


def check_string(body: dict[str, Any], key: str, *, required: bool) -> str | None:
    if key not in body or body[key] is None:
        if required:
            raise bad(f"Missing required property: {key}")
        return None
    value = body[key]
    if not isinstance(value, str):
        raise bad(f"Property {key} must be a string")
    return value


def check_name(body: dict[str, Any], *, required: bool) -> str | None:
    name = check_string(body, "name", required=required)
    if name is None:
        return None
    if not 1 <= len(name) <= 50:
        raise bad("Property name must be between 1 and 50 characters long")
    if any(ord(c) < 32 for c in name):
        raise bad("Property name must not contain control characters")
    return name


def check_enum(body: dict[str, Any], key: str, allowed: tuple[str, ...] | list[str], *, required: bool) -> str | None:
    value = check_string(body, key, required=required)
    if value is None:
        return None
    if value not in allowed:
        shown = ", ".join(allowed) if len(allowed) <= 12 else f"one of {len(allowed)} supported values"
        raise bad(f"Invalid {key} '{value}'; expected {shown}")
    return value


def check_region(body: dict[str, Any], regions: tuple[str, ...]) -> str:
    region = check_string(body, "region", required=True)
    assert region is not None
    if region not in regions:
        raise bad(f"Unsupported region '{region}'; supported regions: {', '.join(regions)}")
    return region


def check_tags(body: dict[str, Any], *, value_required: bool) -> list[dict[str, str]] | None:
    """``pgTags``: <=50 items, key/value regex, ``chc_`` reserved; values required on PATCH."""
    if "tags" not in body or body["tags"] is None:
        return None
    tags = body["tags"]
    if not isinstance(tags, list):
        raise bad("Property tags must be an array")
    if len(tags) > 50:
        raise bad(f"Too many tags: {len(tags)} (at most 50)")
    out: list[dict[str, str]] = []
    for i, tag in enumerate(tags):
        if not isinstance(tag, dict):
            raise bad(f"tags[{i}] must be an object with 'key' and 'value'")
        key = tag.get("key")
        if not isinstance(key, str) or not 1 <= len(key) <= 128 or not TAG_RE.match(key):
            raise bad(f"tags[{i}].key must be 1-128 characters of letters, digits, '.', '_' or '-'")
        if key.lower().startswith("chc_"):
            raise bad(f"tags[{i}].key '{key}': keys starting with 'chc_' are reserved for internal use")
        item = {"key": key}
        value = tag.get("value")
        if value is None:
            if value_required:
                raise bad(f"tags[{i}].value is required")
        else:
            if not isinstance(value, str) or len(value) > 256 or not TAG_RE.match(value):
                raise bad(f"tags[{i}].value must be 1-256 characters of letters, digits, '.', '_' or '-'")
            item["value"] = value
        out.append(item)
    return out


def check_password(value: Any) -> str:
    """``pgPassword``: 12-1024 chars with a lower-case letter, an upper-case letter and a digit."""
    if not isinstance(value, str):
        raise bad("Property password must be a string")
    if not 12 <= len(value) <= 1024:
        raise bad("Password must be between 12 and 1024 characters long")
    if not (re.search("[a-z]", value) and re.search("[A-Z]", value) and re.search("[0-9]", value)):
        raise bad("Password must contain at least one lowercase letter, one uppercase letter and one digit")
    return value


def parse_rfc3339(value: Any, what: str) -> datetime:
    if not isinstance(value, str) or not RFC3339_RE.match(value):
        raise bad(f"{what} must be an RFC 3339 timestamp such as 2026-03-31T18:17:37Z")
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError:
        raise bad(f"{what} is not a valid date-time: {value}") from None
    return parsed.astimezone(UTC)


# --- IPv4 access rules ------------------------------------------------------------------
# Not in the OpenAPI snapshots (S1, S2): the shape is what clickhousectl 0.5.0 sends and reads --
# ``ipAccessList: [{"source": "10.0.0.0/8", "portRange": "5432" | "5432..6432", "description"?}]``
# on create, ``{"add": [entries], "remove": [{"id"}]}`` on PATCH, entries with an ``id`` in responses.


def check_access_rule(rule: Any, where: str) -> dict[str, str]:
    """One access rule (without id): IPv4 address or CIDR, port or inclusive port range, description."""
    if not isinstance(rule, dict):
        raise bad(f"{where} must be an object with 'source' and 'portRange'")
    unknown = sorted(set(rule) - {"source", "portRange", "description"})
    if unknown:
        raise bad(f"{where}: unknown property {unknown[0]}")
    source = rule.get("source")
    if not isinstance(source, str) or not source:
        raise bad(f"{where}.source must be an IPv4 address or CIDR")
    try:
        network = ipaddress.ip_network(source, strict=True)
    except ValueError as exc:
        raise bad(f"{where}.source '{source}' is not a valid IPv4 address or CIDR: {exc}") from None
    if network.version != 4:
        raise bad(f"{where}.source '{source}': only IPv4 addresses and CIDRs are supported")
    ports = rule.get("portRange")
    match = PORT_RANGE_RE.match(ports) if isinstance(ports, str) else None
    if match is None:
        raise bad(f"{where}.portRange must be a port or an inclusive range such as 5432 or 5432..6432")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if not 1 <= low <= high <= 65535:
        raise bad(f"{where}.portRange '{ports}' must lie within 1..65535 with the lower port first")
    out = {"source": str(network) if "/" in source else source, "portRange": ports if match.group(2) else str(low)}
    description = rule.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise bad(f"{where}.description must be a string")
        if len(description) > 255:
            raise bad(f"{where}.description must be at most 255 characters")
        if description:
            out["description"] = description
    return out


def _no_duplicates(rules: list[dict[str, str]], where: str) -> None:
    seen: set[tuple[str, str]] = set()
    for rule in rules:
        key = (rule["source"], rule["portRange"])
        if key in seen:
            raise bad(f"{where}: duplicate access rule {rule['source']} on {rule['portRange']}")
        seen.add(key)


def check_access_list(body: dict[str, Any]) -> list[dict[str, str]] | None:
    """``ipAccessList`` of create: a list of rules (``[]`` = no access); None when omitted."""
    if body.get("ipAccessList") is None:
        return None
    rules = body["ipAccessList"]
    if not isinstance(rules, list):
        raise bad("Property ipAccessList must be an array of access rules")
    out = [check_access_rule(r, f"ipAccessList[{i}]") for i, r in enumerate(rules)]
    _no_duplicates(out, "ipAccessList")
    return out


def check_access_list_patch(body: dict[str, Any]) -> dict[str, list[Any]] | None:
    """``ipAccessList`` of PATCH: ``{"remove": [{"id"}], "add": [rules]}`` (removals first); None when omitted."""
    if body.get("ipAccessList") is None:
        return None
    patch = body["ipAccessList"]
    if not isinstance(patch, dict):
        raise bad("Property ipAccessList must be an object with 'add' and/or 'remove' arrays")
    unknown = sorted(set(patch) - {"add", "remove"})
    if unknown:
        raise bad(f"ipAccessList: unknown property {unknown[0]}; expected 'add' and/or 'remove'")
    add = patch.get("add") or []
    remove = patch.get("remove") or []
    if not isinstance(add, list) or not isinstance(remove, list):
        raise bad("ipAccessList.add and ipAccessList.remove must be arrays")
    ids: list[str] = []
    for i, item in enumerate(remove):
        rule_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(rule_id, str) or not rule_id:
            raise bad(f"ipAccessList.remove[{i}] must be an object with the 'id' of an access rule")
        ids.append(rule_id)
    rules = [check_access_rule(r, f"ipAccessList.add[{i}]") for i, r in enumerate(add)]
    _no_duplicates(rules, "ipAccessList.add")
    return {"add": rules, "remove": ids}


# --- configuration maps ----------------------------------------------------------------


def _config_value(key: str, value: Any, spec: dict[str, Any]) -> str:
    types = spec["types"]
    if isinstance(value, bool) or value is None:
        raise bad(f"pgConfig.{key}: invalid value {json.dumps(value)}")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise bad(f"pgConfig.{key}: invalid value")
        if isinstance(value, int) and abs(value) > 2**63:
            raise bad(f"pgConfig.{key}: value out of range")
        if isinstance(value, float) and "number" not in types:
            if not value.is_integer() or "integer" not in types:
                raise bad(f"pgConfig.{key} must be an integer or a string")
        elif "integer" not in types and "number" not in types:
            raise bad(f"pgConfig.{key} must be a string")
        minimum = spec["minimum"]
        if minimum is not None and value < minimum:
            raise bad(f"pgConfig.{key} must be >= {minimum}")
        if isinstance(value, float) and value.is_integer() and "number" not in types:
            value = int(value)
        return str(value)
    if not isinstance(value, str):
        raise bad(f"pgConfig.{key} must be a string or a number")
    if spec["enum"] is not None:
        if value not in spec["enum"]:
            raise bad(f"pgConfig.{key} must be one of: {', '.join(spec['enum'])}")
        return value
    if not CONFIG_VALUE_RE.match(value.strip()):
        raise bad(f"pgConfig.{key}: invalid value '{value}'")
    return value.strip()


def check_pg_config(
    body: dict[str, Any], *, allow_empty: bool, required: bool = False, strict: bool = False
) -> dict[str, str] | None:
    """Validate ``pgConfig``; returns the values normalised to strings (the API returns strings).

    Unknown keys, ``null`` values and values outside a closed enum are dropped without an error, as the
    live API does (clickhousectl PR #709); ``strict`` refuses them with 400 instead."""
    if "pgConfig" not in body or body["pgConfig"] is None:
        if required:
            raise bad("Missing required property: pgConfig")
        return None
    cfg = body["pgConfig"]
    if not isinstance(cfg, dict):
        raise bad("Property pgConfig must be an object")
    if not cfg and not allow_empty:
        raise bad("Property pgConfig must not be empty; omit it to keep the defaults")
    schema = pg_config_schema()
    unknown = sorted(k for k in cfg if k not in schema)
    if unknown and strict:
        raise bad(f"Unknown pgConfig parameter(s): {', '.join(unknown)}")
    out: dict[str, str] = {}
    for key, value in cfg.items():
        if key not in schema:
            continue
        spec = schema[key]
        out_of_enum = spec["enum"] is not None and isinstance(value, str) and value not in spec["enum"]
        if not strict and (value is None or out_of_enum):
            continue
        out[key] = _config_value(key, value, spec)
    return out


def check_bouncer_config(body: dict[str, Any], *, allow_empty: bool, required: bool = False) -> dict[str, str] | None:
    """Validate ``pgBouncerConfig``: string values, at most 64 keys."""
    if "pgBouncerConfig" not in body or body["pgBouncerConfig"] is None:
        if required:
            raise bad("Missing required property: pgBouncerConfig")
        return None
    cfg = body["pgBouncerConfig"]
    if not isinstance(cfg, dict):
        raise bad("Property pgBouncerConfig must be an object")
    if not cfg and not allow_empty:
        raise bad("Property pgBouncerConfig must not be empty; omit it to keep the defaults")
    if len(cfg) > 64:
        raise bad("Property pgBouncerConfig has more than 64 parameters")
    for key, value in cfg.items():
        if not re.match(r"^[a-z_][a-z0-9_]*$", key):
            raise bad(f"pgBouncerConfig: invalid parameter name '{key}'")
        if not isinstance(value, str):
            raise bad(f"pgBouncerConfig.{key} must be a string")
    return dict(cfg)


# --- request bodies --------------------------------------------------------------------


def validate_create(
    body: Any,
    *,
    regions: tuple[str, ...],
    sizes: tuple[str, ...],
    providers: tuple[str, ...],
    strict_pg_config: bool = False,
) -> dict[str, Any]:
    """``PostgresServicePostRequest`` -> normalised fields."""
    body = require_object(body)
    if "password" in body:
        raise bad("Property password is not accepted on create; set it with the password endpoint")
    return {
        "name": check_name(body, required=True),
        "provider": check_enum(body, "provider", providers, required=True),
        "region": check_region(body, regions),
        "size": check_enum(body, "size", sizes, required=True),
        "postgres_version": check_enum(body, "postgresVersion", VERSIONS, required=False) or DEFAULT_VERSION,
        "ha_type": check_enum(body, "haType", HA_TYPES, required=False) or "none",
        "tags": check_tags(body, value_required=False) or [],
        "pg_config": check_pg_config(body, allow_empty=False, strict=strict_pg_config) or {},
        "pg_bouncer_config": check_bouncer_config(body, allow_empty=False) or {},
        "ip_access_list": check_access_list(body),
    }


def validate_patch(body: Any, *, sizes: tuple[str, ...]) -> dict[str, Any]:
    """``PostgresServicePatchRequest``; keys present only when sent (``tags`` None = omitted)."""
    body = require_object(body)
    for fixed in ("provider", "region", "postgresVersion"):
        if fixed in body:
            raise bad(f"Property {fixed} cannot be changed")
    out: dict[str, Any] = {}
    name = check_name(body, required=False)
    if name is not None:
        out["name"] = name
    size = check_enum(body, "size", sizes, required=False)
    if size is not None:
        out["size"] = size
    ha = check_enum(body, "haType", HA_TYPES, required=False)
    if ha is not None:
        out["ha_type"] = ha
    out["tags"] = check_tags(body, value_required=True)
    access = check_access_list_patch(body)
    if access is not None:
        out["ip_access_list"] = access
    return out


def validate_replica(body: Any, *, strict_pg_config: bool = False) -> dict[str, Any]:
    body = require_object(body)
    return {
        "name": check_name(body, required=True),
        "tags": check_tags(body, value_required=False) or [],
        "pg_config": check_pg_config(body, allow_empty=False, strict=strict_pg_config),
        "pg_bouncer_config": check_bouncer_config(body, allow_empty=False),
    }


def validate_restore(body: Any, *, strict_pg_config: bool = False) -> dict[str, Any]:
    body = require_object(body)
    name = check_name(body, required=True)
    if body.get("restoreTarget") is None:
        raise bad("Missing required property: restoreTarget")
    return {
        "name": name,
        "restore_target": parse_rfc3339(body["restoreTarget"], "restoreTarget"),
        "tags": check_tags(body, value_required=False) or [],
        "pg_config": check_pg_config(body, allow_empty=False, strict=strict_pg_config),
        "pg_bouncer_config": check_bouncer_config(body, allow_empty=False),
    }


def validate_config(
    body: Any, *, replace: bool, strict_pg_config: bool = False
) -> tuple[dict[str, str] | None, dict[str, str] | None]:
    """Body of POST (replace: both sections required) or PATCH (merge) ``/config``."""
    body = require_object(body)
    pg = check_pg_config(body, allow_empty=True, required=replace, strict=strict_pg_config)
    bouncer = check_bouncer_config(body, allow_empty=True, required=replace)
    if pg is None and bouncer is None:
        raise bad("Request must contain pgConfig and/or pgBouncerConfig")
    return pg, bouncer


def validate_password(body: Any) -> str | None:
    body = require_object(body)
    if body.get("password") is None:
        return None
    return check_password(body["password"])


def validate_state(body: Any) -> str:
    body = require_object(body)
    command = check_enum(body, "command", STATE_COMMANDS, required=True)
    assert command is not None
    return command


def query_int(
    query: Any, key: str, *, default: int | None, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    raw = query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad(f"Query parameter {key} must be an integer") from None
    if minimum is not None and value < minimum:
        raise bad(f"Query parameter {key} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise bad(f"Query parameter {key} must be <= {maximum}")
    return value


def query_window(query: Any) -> tuple[datetime, datetime]:
    """``from_date`` (inclusive) and ``to_date`` (exclusive), both required RFC 3339."""
    for key in ("from_date", "to_date"):
        if not query.get(key):
            raise bad(f"Missing required query parameter: {key}")
    start = parse_rfc3339(query["from_date"], "from_date")
    end = parse_rfc3339(query["to_date"], "to_date")
    if end <= start:
        raise bad("to_date must be after from_date")
    return start, end
