"""Conversions between API versions that share one storage: core/v1 and events.k8s.io/v1 Events.

The real API server stores an Event once and serves it under both groups, renaming fields on the way
(``k8s.io/kubernetes/pkg/apis/events/v1/conversion.go``): ``involvedObject`` is ``regarding``,
``message`` is ``note``, ``source``/``firstTimestamp``/``lastTimestamp``/``count`` are
``deprecatedSource``/``deprecatedFirstTimestamp``/``deprecatedLastTimestamp``/``deprecatedCount``,
``reportingComponent`` is ``reportingController``; everything else keeps its name.
"""

from __future__ import annotations

import copy
from typing import Any

# core/v1 field -> events.k8s.io/v1 field
_EVENT_RENAMES = {
    "involvedObject": "regarding",
    "message": "note",
    "source": "deprecatedSource",
    "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp",
    "count": "deprecatedCount",
    "reportingComponent": "reportingController",
}
_EVENT_RENAMES_BACK = {v: k for k, v in _EVENT_RENAMES.items()}


def _rename(obj: dict[str, Any], renames: dict[str, str], api_version: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out[renames.get(key, key)] = copy.deepcopy(value)
    out["apiVersion"] = api_version
    out["kind"] = "Event"
    return out


def core_event_to_events_v1(obj: dict[str, Any]) -> dict[str, Any]:
    """A stored core/v1 Event as events.k8s.io/v1 serves it."""
    out = _rename(obj, _EVENT_RENAMES, "events.k8s.io/v1")
    out.setdefault("eventTime", None)
    return out


def events_v1_to_core_event(obj: dict[str, Any]) -> dict[str, Any]:
    """An events.k8s.io/v1 Event body in its stored core/v1 form."""
    out = _rename(obj, _EVENT_RENAMES_BACK, "v1")
    if out.get("eventTime") is None:
        out.pop("eventTime", None)
    return out


CONVERTERS = {
    # (group, plural of the served type) -> (stored -> served, served -> stored)
    ("events.k8s.io", "events"): (core_event_to_events_v1, events_v1_to_core_event),
}
