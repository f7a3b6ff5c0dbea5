"""Kubernetes API errors, rendered as ``Status`` objects like the real API server."""

from __future__ import annotations

from typing import Any

REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
}


class ApiError(Exception):
    """An error answered as a ``v1/Status`` with ``code``, ``reason`` and ``message``."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason if reason is not None else REASONS.get(code, "Unknown")  # "": none, as some answers have
        self.details = details

    def status(self) -> dict[str, Any]:
        """The ``Status`` body for this error."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            **({"reason": self.reason} if self.reason else {}),
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(group_resource: tuple[str, str], name: str | None) -> dict[str, Any]:
    group, plural = group_resource
    details: dict[str, Any] = {"kind": plural}
    if name:
        details = {"name": name, **({"group": group} if group else {}), "kind": plural}
    elif group:
        details["group"] = group
    return details


def _qualified(group_resource: tuple[str, str]) -> str:
    group, plural = group_resource
    return f"{plural}.{group}" if group else plural


def not_found(group_resource: tuple[str, str], name: str) -> ApiError:
    """``<plural>.<group> "name" not found`` (404)."""
    return ApiError(404, f'{_qualified(group_resource)} "{name}" not found', "NotFound", _details(group_resource, name))


def already_exists(group_resource: tuple[str, str], name: str) -> ApiError:
    """``<plural>.<group> "name" already exists`` (409 AlreadyExists)."""
    return ApiError(
        409, f'{_qualified(group_resource)} "{name}" already exists', "AlreadyExists", _details(group_resource, name)
    )


def conflict(group_resource: tuple[str, str], name: str) -> ApiError:
    """A stale ``resourceVersion`` (409 Conflict), worded like the real server."""
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {_qualified(group_resource)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        "Conflict",
        _details(group_resource, name),
    )


def invalid(group_kind: tuple[str, str], name: str, causes: list[tuple[str, str]]) -> ApiError:
    """``Kind.group "name" is invalid: field: message`` (422 Invalid).

    ``causes`` is a list of ``(field, "field: Type: detail")`` pairs.
    """
    group, kind = group_kind
    qualified = f"{kind}.{group}" if group else kind
    texts = [text for _, text in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details = {
        "name": name,
        **({"group": group} if group else {}),
        "kind": kind,
        "causes": [
            {"reason": _cause_reason(text), "message": text.split(": ", 1)[-1], "field": field}
            for field, text in causes
        ],
    }
    return ApiError(422, f'{qualified} "{name}" is invalid: {joined}', "Invalid", details)


def _cause_reason(text: str) -> str:
    for marker, reason in (
        ("Required value", "FieldValueRequired"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Forbidden", "FieldValueForbidden"),
        ("Too long", "FieldValueTooLong"),
        ("Duplicate value", "FieldValueDuplicate"),
    ):
        if marker in text:
            return reason
    return "FieldValueInvalid"


def bad_request(message: str) -> ApiError:
    """A malformed request (400 BadRequest)."""
    return ApiError(400, message, "BadRequest")
