"""Decisions around the plan: what a failure means, how conditions and status change, how
fresh an observation must be. Pure functions (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mpg_operator.cloud.errors import (
    AmbiguousCreateError,
    AuthError,
    CloudError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
)
from mpg_operator.reconcile import replication
from mpg_operator.reconcile.connection import SecretConflictError, SecretRejectedError
from mpg_operator.reconcile.desired import Desired
from mpg_operator.reconcile.model import Condition, Event, EventReason, LastRejection, Reason, parse_time, rfc3339
from mpg_operator.reconcile.planner import secret_conflict_message
from mpg_operator.resource import Condition as StoredCondition

REMEMBERED_REJECTIONS = frozenset(
    {Reason.TERMINAL_INVALID_SPEC, Reason.QUOTA_EXCEEDED, Reason.TERMINAL_RESTORE_REFUSED}
)
"""Rejections remembered for a generation (not re-sent); other terminal reasons are recomputed
from every observation, so they clear as soon as their cause does."""


@dataclass(frozen=True)
class Failure:
    """What a failed pass reports."""

    synced: Condition
    event: Event
    ready: Condition | None = None
    """Replaces Ready when the failure says something about it (a Secret that cannot be written)."""
    retry_soon: bool = True


def classify(
    error: Exception, *, desired: Desired, credentials_source: str, organization_id: str, listed: bool, creating: bool
) -> Failure:
    """Map a failure of a live pass to a condition and an event.

    ``listed``: the organization's LIST succeeded (a failure before it concerns the API key or
    organization); ``creating``: the pass was creating the service.
    """
    if isinstance(error, SecretConflictError):
        msg = secret_conflict_message(desired, None)
        cond = Condition.false(Reason.TERMINAL_SECRET_CONFLICT, msg)
        return Failure(cond, Event.warning(EventReason.SECRET_CONFLICT, msg), ready=cond, retry_soon=False)
    if isinstance(error, SecretRejectedError):
        msg = f"spec.connectionSecret: {error}; nothing was created"
        cond = Condition.false(Reason.TERMINAL_INVALID_SPEC, msg)
        return Failure(cond, Event.warning(EventReason.INVALID_SPEC, msg), ready=cond, retry_soon=False)
    if not isinstance(error, CloudError):
        raise TypeError(f"not a failure the core classifies: {type(error).__name__}")
    if isinstance(error, AmbiguousCreateError):
        msg = f"The outcome of a create request is unknown ({error}); looking for the service by its owner tag before retrying"
        return Failure(
            Condition.unknown(Reason.CREATE_PENDING, msg), Event.warning(EventReason.CREATE_OUTCOME_UNKNOWN, msg)
        )
    if isinstance(error, AuthError):
        msg = f"ClickHouse Cloud rejected the API key from Secret {credentials_source} (keys keyId, keySecret): {error.detail}"
        return _terminal(Reason.TERMINAL_CREDENTIALS, EventReason.CREDENTIALS_ERROR, msg)
    if isinstance(error, (NotFoundError, InvalidRequestError)) and not listed:
        # Nothing but the organization's LIST was sent: the organization id is what is wrong.
        msg = (
            f"Organization {organization_id} (from Secret {credentials_source}, key organizationId) "
            f"was not accepted: {error.detail}"
        )
        return _terminal(Reason.TERMINAL_CREDENTIALS, EventReason.CREDENTIALS_ERROR, msg)
    if creating and (desired.read_replica_of is not None or desired.restore_from is not None):
        waiting = _replica_or_restore_refused(error, desired)
        if waiting is not None:
            return waiting
    if isinstance(error, InvalidRequestError):
        return _terminal(
            Reason.TERMINAL_INVALID_SPEC,
            EventReason.INVALID_SPEC,
            f"ClickHouse Cloud rejected the spec: {error.detail}",
        )
    if isinstance(error, ConflictError) and creating:
        msg = f"ClickHouse Cloud refused to create the service (quota reached?): {error.detail}"
        return _terminal(Reason.QUOTA_EXCEEDED, EventReason.CREATE_FAILED, msg)
    msg = f"ClickHouse Cloud API error, will retry: {error}"
    return Failure(Condition.false(Reason.API_ERROR, msg), Event.warning(EventReason.API_ERROR, msg))


def _replica_or_restore_refused(error: CloudError, desired: Desired) -> Failure | None:
    """A replica or restore create refused: no backup yet (wait), or a target out of the window (terminal)."""
    replica = desired.read_replica_of is not None
    if replication.backup_not_ready(error):
        msg = replication.backup_message(replica)
        cond = Condition.false(Reason.WAITING_FOR_BACKUP, msg)
        return Failure(cond, Event.normal(EventReason.WAITING_FOR_BACKUP, msg), ready=cond)
    if isinstance(error, InvalidRequestError) and not replica:
        msg = f"ClickHouse Cloud refused the restore: {error.detail}"
        cond = Condition.false(Reason.TERMINAL_RESTORE_REFUSED, msg)
        return Failure(cond, Event.warning(EventReason.RESTORE_REFUSED, msg), ready=cond, retry_soon=False)
    return None


def _terminal(reason: Reason, event_reason: EventReason, message: str) -> Failure:
    return Failure(Condition.false(reason, message), Event.warning(event_reason, message), retry_soon=False)


def credentials_unusable(message: str, ready_was_true: bool) -> Failure:
    """No usable API key: management stops; a service that worked is not reported down."""
    cond = Condition.false(Reason.TERMINAL_CREDENTIALS, message)
    # Looking again costs only a Secret read: soon, so a fixed Secret is picked up quickly.
    return Failure(cond, Event.warning(EventReason.CREDENTIALS_ERROR, message), ready=None if ready_was_true else cond)


def paused(desired: Desired) -> Failure:
    """The resource carries clickhouse.cloud/paused: "true": no remote call until it is removed."""
    msg = (
        'Reconciliation is paused (annotation clickhouse.cloud/paused: "true"): nothing is sent to ClickHouse '
        f"Cloud. Remove it to resume: kubectl annotate managedpostgres {desired.name} -n {desired.namespace} "
        "clickhouse.cloud/paused-"
    )
    return Failure(Condition.false(Reason.PAUSED, msg), Event.normal(EventReason.PAUSED, msg), retry_soon=False)


def last_rejection(conditions: list[StoredCondition], generation: int) -> LastRejection | None:
    """The API rejection recorded for this generation, if it is one that is remembered."""
    synced = next((c for c in conditions if c.type == "Synced"), None)
    if synced is None or synced.status != "False" or synced.observed_generation != generation:
        return None
    try:
        reason = Reason(synced.reason)
    except ValueError:
        return None
    if reason not in REMEMBERED_REJECTIONS:
        return None
    return LastRejection(reason, synced.message, parse_time(synced.last_transition_time))


def list_max_age(*, steady: float, active_interval: float, in_flight: bool) -> float:
    """How old a LIST may be to serve a pass: younger while something is in flight."""
    return min(steady, active_interval / 2) if in_flight else steady


def merge_conditions(
    stored: list[dict[str, Any]],
    *,
    synced: Condition | None,
    ready: Condition | None,
    generation: int,
    now: datetime,
    restart_required: Condition | None = None,
) -> list[dict[str, Any]]:
    """The conditions to store: Ready, Synced and RestartRequired as decided (None keeps the
    stored one); the transition time moves only when the status does."""
    merged = {c["type"]: c for c in stored if c.get("type")}
    stamp = rfc3339(now)
    for type_, cond in (("Synced", synced), ("Ready", ready), ("RestartRequired", restart_required)):
        if cond is None:
            continue
        old = merged.get(type_)
        same_status = old is not None and old.get("status") == cond.status.value
        merged[type_] = {
            "type": type_,
            "status": cond.status.value,
            "reason": cond.reason.value,
            "message": cond.message,
            "observedGeneration": generation,
            "lastTransitionTime": old.get("lastTransitionTime", stamp) if same_status and old else stamp,
        }
    return [merged[t] for t in ("Ready", "Synced", "RestartRequired") if t in merged]


def _without_nulls(value: Any) -> Any:
    """A status value as stored: a merge patch never stores a null inside an object."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def status_changes(stored: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that turns ``stored`` into ``wanted`` (only keys ``wanted`` names; ``None``
    removes). Empty when nothing changed: a steady pass writes nothing."""
    changes: dict[str, Any] = {}
    for key, value in wanted.items():
        old = stored.get(key)
        if _without_nulls(old) == _without_nulls(value):
            continue
        if isinstance(old, dict) and isinstance(value, dict):
            # A merge patch merges objects: keys the wanted object lacks must be removed explicitly.
            value = {**{k: None for k in old if k not in value}, **value}
        changes[key] = value
    if stored.get("lastSyncedAt") is not None:
        changes["lastSyncedAt"] = None  # written on every pass by earlier versions
    return changes
