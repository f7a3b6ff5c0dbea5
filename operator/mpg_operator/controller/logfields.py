"""Structured fields of the operator's decision log lines (JSON logs carry them as keys)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def decision_fields(body: Mapping[str, Any], reason: str, outcome: str) -> dict[str, Any]:
    """``namespace``, ``managedpostgres`` (the name: ``name`` is the logger's in a LogRecord),
    ``service_id``, ``reason`` and ``outcome`` of one decision.

    Only identifiers and the fixed vocabulary: never a password, key or connection string.
    """
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return {
        "namespace": meta.get("namespace"),
        "managedpostgres": meta.get("name"),
        "service_id": status.get("serviceId"),
        "reason": reason,
        "outcome": outcome,
    }
