"""Check simulator responses against the vendored OpenAPI document (test tooling; needs openapi-core).

Use :class:`ConformanceRecorder` as a simulator observer, then :meth:`ConformanceRecorder.problems`::

    rec = ConformanceRecorder()
    sim.add_observer(rec)
    ...
    assert rec.problems() == []

Responses with a status the document declares for the operation (200, 400, 500) are validated
by openapi-core; other error statuses (401, 404, 409, 429, 503 ...) against the declared error
schema of the operation (the real API uses the same envelope for them). Requests to paths the
document does not have (unknown paths) are checked for the error envelope only when they failed.
Dropped connections have no response and are skipped.

The document is the vendored one plus the API's newer parts (``_add_extensions``): ``/logs`` (S2),
``/backups``, ``ipAccessList`` and ``earliestRestoreTime`` on ``PostgresService`` (the shapes
clickhousectl 0.5.0 sends and reads; absent from both OpenAPI snapshots).
"""

from __future__ import annotations

import copy
import json
import threading
from functools import lru_cache
from typing import Any

from clickhouse_cloud_simulator.server import Exchange
from clickhouse_cloud_simulator.validation import openapi_document

SERVER = "https://api.clickhouse.cloud"


# --- Extensions: what the API has beyond the vendored snapshot (S1 2026-07-31) -------------------
# Neither S1 nor S2 has IPv4 access rules, ``earliestRestoreTime`` or the backups list; their shapes
# here are those clickhousectl 0.5.0 sends and reads (its PostgresService, PostgresIpAccessListEntryResponse
# and PostgresBackup structs, recorded against the simulator). ``/logs`` is from S2.
ACCESS_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "source": {"type": "string", "description": "IPv4 address or CIDR"},
        "portRange": {"type": "string", "pattern": "^[0-9]{1,5}([.][.][0-9]{1,5})?$"},
        "description": {"type": "string"},
    },
    "required": ["id", "source", "portRange"],
    "additionalProperties": False,
}
BACKUP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "key": {"type": "string"},
        "status": {"type": "string"},
        "lastModified": {"type": "string", "format": "date-time"},
    },
    "required": ["key", "status", "lastModified"],
    "additionalProperties": False,
}
LOG_ENTRY_SCHEMA: dict[str, Any] = {  # S2 PostgresLogEntry
    "type": "object",
    "properties": {
        "timestamp": {"type": "string", "format": "date-time"},
        "severity": {"type": "string"},
        "body": {"type": "string"},
    },
    "required": ["timestamp", "severity", "body"],
}


def _extension_path(
    summary: str, params: list[dict[str, Any]], result: dict[str, Any], envelope: dict[str, Any] | None = None
) -> dict[str, Any]:
    path_params = [
        {"in": "path", "name": name, "required": True, "schema": {"type": "string", "format": "uuid"}}
        for name in ("organizationId", "postgresId")
    ]
    error = {"$ref": "#/components/schemas/ExtensionError"}
    return {
        "get": {
            "summary": summary,
            "parameters": path_params + params,
            "responses": {
                "200": {
                    "description": "Successful response",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "status": {"type": "number"},
                                    "requestId": {"type": "string", "format": "uuid"},
                                    "result": result,
                                    **(envelope or {}),
                                },
                                "required": ["status", "requestId", "result"],
                                "additionalProperties": False,
                            }
                        }
                    },
                },
                "400": {"description": "Client error", "content": {"application/json": {"schema": error}}},
                "500": {"description": "Server error", "content": {"application/json": {"schema": error}}},
            },
        }
    }


def _add_extensions(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    schemas["PostgresIpAccessListEntryResponse"] = ACCESS_RULE_SCHEMA
    schemas["PostgresBackup"] = BACKUP_SCHEMA
    schemas["PostgresLogEntry"] = LOG_ENTRY_SCHEMA
    schemas["ExtensionError"] = {
        "type": "object",
        "properties": {
            "status": {"type": "number"},
            "error": {"type": "string"},
            "requestId": {"type": "string", "format": "uuid"},
        },
    }
    props = schemas["PostgresService"]["properties"]
    props["ipAccessList"] = {
        "type": "array",
        "items": {"$ref": "#/components/schemas/PostgresIpAccessListEntryResponse"},
    }
    props["earliestRestoreTime"] = {"type": "string", "format": "date-time"}
    base = "/v1/organizations/{organizationId}/postgres/{postgresId}"
    query = [
        {"in": "query", "name": "from_date", "required": True, "schema": {"type": "string", "format": "date-time"}},
        {"in": "query", "name": "to_date", "required": True, "schema": {"type": "string", "format": "date-time"}},
    ]
    doc["paths"].setdefault(
        base + "/logs",
        _extension_path(
            "postgresLogsGetList (S2)",
            query,
            {"type": "array", "items": {"$ref": "#/components/schemas/PostgresLogEntry"}},
        ),
    )
    doc["paths"].setdefault(
        base + "/backups",
        _extension_path(
            "postgresServiceBackupGetList (clickhousectl 0.5.0)",
            [
                {"in": "query", "name": "cursor", "schema": {"type": "string"}},
                {"in": "query", "name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
            ],
            {"type": "array", "items": {"$ref": "#/components/schemas/PostgresBackup"}},
            {"limit": {"type": "integer"}, "totalCount": {"type": "integer"}, "nextCursor": {"type": "string"}},
        ),
    )


def response_document() -> dict[str, Any]:
    """The vendored document with one documented deviation of the real API relaxed.

    ``GET/POST/PATCH /config`` answer ``"pgBouncerConfig": {}`` (and ``"pgConfig": {}`` when
    nothing is set) -- the API docs' own example response does -- although the shared
    ``pgConfig``/``pgBouncerConfig`` schemas say ``minProperties: 1`` (a rule meant for requests).
    Only the two config *response* schemas get copies without ``minProperties``.
    """
    doc = copy.deepcopy(openapi_document())
    _add_extensions(doc)
    schemas = doc["components"]["schemas"]
    for name in ("pgConfig", "pgBouncerConfig"):
        relaxed = copy.deepcopy(schemas[name])
        relaxed.pop("minProperties", None)
        schemas[name + "InResponse"] = relaxed
    for holder in ("postgresInstanceConfig", "postgresInstanceUpdateConfigResponse"):
        props = copy.deepcopy(schemas[holder]["properties"])
        for name in ("pgConfig", "pgBouncerConfig"):
            props[name] = {"$ref": f"#/components/schemas/{name}InResponse"}
        schemas[holder + "InResponse"] = {**schemas[holder], "properties": props}
    for item in doc["paths"].values():
        for op in item.values():
            if not isinstance(op, dict):
                continue
            media = op.get("responses", {}).get("200", {}).get("content", {}).get("application/json", {})
            result = media.get("schema", {}).get("properties", {}).get("result", {})
            ref = result.get("$ref", "")
            for holder in ("postgresInstanceConfig", "postgresInstanceUpdateConfigResponse"):
                if ref == f"#/components/schemas/{holder}":
                    result["$ref"] = f"#/components/schemas/{holder}InResponse"
    return doc


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    return response_document()


@lru_cache(maxsize=1)
def _openapi() -> Any:
    from openapi_core import OpenAPI

    return OpenAPI.from_dict(_document())


@lru_cache(maxsize=1)
def _error_schema() -> dict[str, Any]:
    op = openapi_document()["paths"]["/v1/organizations/{organizationId}/postgres"]["get"]
    schema = dict(op["responses"]["400"]["content"]["application/json"]["schema"])
    schema["required"] = ["status", "error", "requestId"]
    return schema


def _match_operation(method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    """The templated path and operation of the document for a concrete path, if any."""
    parts = path.rstrip("/").split("/")
    best = None
    for template, item in _document()["paths"].items():
        tparts = template.split("/")
        if len(tparts) != len(parts) or method.lower() not in item:
            continue
        literal = 0
        for t, p in zip(tparts, parts):
            if t.startswith("{"):
                continue
            if t != p:
                break
            literal += 1
        else:
            if best is None or literal > best[0]:
                best = (literal, template, item[method.lower()])
    return (best[1], best[2]) if best else None


def _secrets_in(body: bytes) -> list[str]:
    """Values of ``password``/``connectionString`` anywhere in a JSON body."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("password", "connectionString") and isinstance(value, str) and value:
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    try:
        walk(json.loads(body))
    except ValueError:
        pass
    return found


def check_exchange(ex: Exchange) -> list[str]:
    """Problems of one exchange against the document (empty list = conforms); credentials masked."""
    if ex.dropped:
        return []
    problems = _check(ex)
    if problems:
        secrets = _secrets_in(ex.response_body) + _secrets_in(ex.request_body)
        for secret in sorted(secrets, key=len, reverse=True):
            problems = [p.replace(secret, "***") for p in problems]
    return problems


def _check(ex: Exchange) -> list[str]:
    import jsonschema
    from openapi_core.testing import MockRequest, MockResponse

    where = f"{ex.method} {ex.path} -> {ex.status}"
    content_type = ex.response_headers.get("Content-Type", "")
    matched = _match_operation(ex.method, ex.path)
    declared = matched is not None and str(ex.status) in matched[1].get("responses", {})
    if ex.status >= 400 and not declared:
        if not content_type.startswith("application/json"):
            return [f"{where}: error response is not JSON ({content_type})"]
        try:
            body = json.loads(ex.response_body)
            jsonschema.validate(body, _error_schema())
        except (ValueError, jsonschema.ValidationError) as exc:
            return [f"{where}: error envelope invalid: {str(exc).splitlines()[0]}"]
        if body.get("status") != ex.status:
            return [f"{where}: envelope status {body.get('status')} differs"]
        return []
    if matched is None:
        return [f"{where}: success on a path the document does not declare"]
    request = MockRequest(
        SERVER,
        ex.method.lower(),
        ex.path,
        args=dict(ex.query),
        headers=dict(ex.request_headers),
        data=ex.request_body or None,
        content_type=ex.request_headers.get("Content-Type", "application/json"),
    )
    data: Any = ex.response_body
    if not content_type.startswith("application/json"):
        data = ex.response_body.decode("utf-8")  # PEM / exposition text are strings in the document
    response = MockResponse(data, status_code=ex.status, headers=dict(ex.response_headers), content_type=content_type)
    try:
        _openapi().validate_response(request, response)
    except Exception as exc:  # noqa: BLE001 - openapi-core raises many kinds
        details = "; ".join(str(e).splitlines()[0] for e in getattr(exc, "schema_errors", [])[:3])
        return [f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} {details}".strip()]
    if ex.status >= 400:
        body = json.loads(ex.response_body)
        try:
            jsonschema.validate(body, _error_schema())
        except jsonschema.ValidationError as exc:
            return [f"{where}: error envelope invalid: {exc.message}"]
    return []


class ConformanceRecorder:
    """A simulator observer that keeps exchanges and validates them on demand."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()

    def __call__(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    def problems(self) -> list[str]:
        """Problems of every exchange recorded so far."""
        with self._lock:
            exchanges = list(self.exchanges)
        out: list[str] = []
        for ex in exchanges:
            out.extend(check_exchange(ex))
        return out

    def drain(self) -> list[str]:
        """Problems of the exchanges recorded since the last drain (which are then forgotten)."""
        with self._lock:
            exchanges, self.exchanges = self.exchanges, []
        out: list[str] = []
        for ex in exchanges:
            out.extend(check_exchange(ex))
        return out
