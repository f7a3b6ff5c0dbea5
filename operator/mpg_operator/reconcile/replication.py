"""Read replicas and point-in-time restores: pure decisions (no I/O).

A read replica (``spec.readReplicaOf``) is created through its primary's service once that is
running and has a first backup (the API answers 400 until then: a waiting state retried with
backoff). It is never changed through the API, and publishes its primary's current password. Once
the service shows ``isPrimary: true`` (after a promote) the resource is released: an independent
primary, changed and rotated like any other. :func:`is_replica` is the one place that says which.

A restore (``spec.restoreFrom``) is created from a source service's backup; its password is not
known, so the ordinary credentials path sets a new one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mpg_operator.cloud.errors import CloudError, InvalidRequestError
from mpg_operator.cloud.ids import same_id
from mpg_operator.cloud.models import PostgresServiceListItem, ServiceState
from mpg_operator.reconcile.desired import Desired
from mpg_operator.reconcile.model import (
    Condition,
    CreateService,
    Event,
    EventReason,
    Observed,
    PasswordMode,
    Reason,
    SourceResource,
    parse_time,
    rfc3339,
)
from mpg_operator.resource import ManagedPostgresStatus

BACKUP_RETRY_MAX = timedelta(minutes=5)
"""The longest wait between create requests refused for lack of a backup."""


# --- is it a replica now? ------------------------------------------------------------------------


def released(status: ManagedPostgresStatus) -> bool:
    """The replica was promoted and recorded as an independent primary."""
    return status.read_replica_of is not None and bool(status.read_replica_of.released)


def is_replica(desired: Desired, status: ManagedPostgresStatus, remote: PostgresServiceListItem | None = None) -> bool:
    """Whether the resource is a read replica now: spec.readReplicaOf not yet released by a promote,
    or a service that shows ``isPrimary: false`` (e.g. a replica adopted by spec.serviceId)."""
    if desired.read_replica_of is not None and not released(status):
        return True
    return remote is not None and remote.is_primary is False


def blocking_replicas(primary: str, resources: Iterable[dict[str, Any]]) -> list[str]:
    """Names of the ManagedPostgres (bodies from the primary's namespace) that are read replicas of
    ``primary`` now: its deletion waits for them."""
    names = []
    for body in resources:
        spec = body.get("spec") or {}
        if (spec.get("readReplicaOf") or {}).get("name") != primary:
            continue
        try:
            status = ManagedPostgresStatus.model_validate(body.get("status") or {})
        except ValueError:
            status = ManagedPostgresStatus()
        if not released(status):
            names.append(str(body.get("metadata", {}).get("name")))
    return sorted(names)


def waiting_for_replicas(primary: str, replicas: list[str]) -> tuple[Condition, Event]:
    """What a primary being deleted says while read replicas still depend on it."""
    msg = (
        f"Deletion waits for the read replicas of {primary} to be deleted first (ClickHouse Cloud refuses to "
        f"delete a primary with replicas): {', '.join(replicas)}. Delete them, or promote them "
        "(annotation clickhouse.cloud/promote)"
    )
    return Condition.false(Reason.WAITING_FOR_REPLICAS, msg), Event.normal(EventReason.DELETION_WAITING, msg)


def delete_conflict(service_id: str, detail: str, escape: str) -> str:
    """What a DELETE answered 409 means: ClickHouse Cloud still shows read replicas of the service (being
    deleted, or not managed in this namespace); the DELETE is sent again later, with backoff."""
    return (
        f"ClickHouse Cloud refused to delete service {service_id} for now ({detail}); read replicas not yet "
        f"deleted are the usual cause. Trying again with backoff. {escape}"
    )


# --- status ---------------------------------------------------------------------------------------


def replica_status(
    desired: Desired, observed: Observed, remote: PostgresServiceListItem
) -> tuple[dict[str, object] | None, list[Event]]:
    """``status.readReplicaOf``, and an event when the service shows it was promoted (released)."""
    if desired.read_replica_of is None:
        return None, []
    recorded = observed.status.read_replica_of
    source = observed.source
    service_id = (recorded.service_id if recorded else None) or (source.service_id if source else None)
    out: dict[str, object] = {"name": desired.read_replica_of}
    if service_id:
        out["serviceId"] = service_id
    if released(observed.status):
        assert recorded is not None
        out.update({"released": True, "releasedAt": recorded.released_at})
        return out, []
    if remote.is_primary is not True:
        return out, []
    promote = observed.status.commands.promote if observed.status.commands else None
    how = f"promoted (token {promote.token})" if promote else "promoted outside this operator"
    out.update({"released": True, "releasedAt": rfc3339(observed.now)})
    event = Event.normal(
        EventReason.REPLICA_RELEASED,
        f"Service {remote.id} was {how} and is now an independent primary, no longer a replica of "
        f"{desired.read_replica_of}: it can be changed, and its password is its own",
    )
    return out, [event]


# --- creating a replica or a restore --------------------------------------------------------------


@dataclass(frozen=True)
class CreateDecision:
    """Create now (``action``), or wait / refuse (``condition``, ``terminal``)."""

    action: CreateService | None = None
    condition: Condition | None = None
    terminal: bool = False


def plan_create(desired: Desired, observed: Observed) -> CreateDecision | None:
    """How a replica or a restore is created (None: an ordinary service)."""
    if desired.read_replica_of is not None:
        if released(observed.status):
            msg = (
                "This former read replica was promoted; its service is gone and it cannot be created again as a "
                f"replica of {desired.read_replica_of}. Delete this resource"
            )
            return CreateDecision(condition=Condition.false(Reason.TERMINAL_SERVICE_MISSING, msg), terminal=True)
        return _from_source(desired, observed, desired.read_replica_of, replica=True)
    restore = desired.restore_from
    if restore is None:
        return None
    if restore.managed_postgres is not None:
        return _from_source(desired, observed, restore.managed_postgres, replica=False)
    assert restore.service_id is not None
    if not observed.source_service_listed:
        msg = (
            f"spec.restoreFrom.serviceId names service {restore.service_id}, which organization "
            f"{observed.organization_id or '(unknown)'} does not list; nothing is created"
        )
        return CreateDecision(condition=Condition.false(Reason.TERMINAL_SERVICE_NOT_FOUND, msg), terminal=True)
    return _after_backup_wait(observed, CreateService(restore.service_id, read_replica=False), replica=False)


def _from_source(desired: Desired, observed: Observed, name: str, *, replica: bool) -> CreateDecision:
    what = "primary" if replica else "restore source"
    waiting = Reason.WAITING_FOR_PRIMARY if replica else Reason.WAITING_FOR_SOURCE
    source = observed.source
    if source is None or not source.exists:
        msg = f"Waiting for the {what}: ManagedPostgres {name} does not exist in namespace {desired.namespace}"
        return CreateDecision(condition=Condition.false(waiting, msg))
    if source.deleting:
        msg = f"The {what} {name} is being deleted; nothing is created"
        return CreateDecision(condition=Condition.false(waiting, msg))
    if not source.service_id:
        msg = f"Waiting for the {what} {name} to have a service (its status.serviceId)"
        return CreateDecision(condition=Condition.false(waiting, msg))
    elsewhere = _other_organization(observed, source)
    if elsewhere:
        return CreateDecision(condition=Condition.false(Reason.TERMINAL_SOURCE_ELSEWHERE, elsewhere), terminal=True)
    if not source.listed:
        msg = (
            f"Waiting for the {what} {name}: its service {source.service_id} is not listed in organization "
            f"{observed.organization_id or '(unknown)'}"
        )
        return CreateDecision(condition=Condition.false(waiting, msg))
    if replica and source.state != ServiceState.RUNNING:
        msg = f"Waiting for the primary {name} to be running (it is {source.state or 'in an unknown state'})"
        return CreateDecision(condition=Condition.false(waiting, msg))
    return _after_backup_wait(observed, CreateService(source.service_id, read_replica=replica), replica=replica)


def _other_organization(observed: Observed, source: SourceResource) -> str | None:
    ours, theirs = observed.organization_id, source.organization_id
    if not ours or not theirs or same_id(ours, theirs):
        return None
    return (
        f"ManagedPostgres {source.name} lives in organization {theirs}, and this resource's API key is for "
        f"organization {ours}: a replica or a restore is made in its source's organization. Use credentials "
        "of that organization"
    )


def _after_backup_wait(observed: Observed, action: CreateService, *, replica: bool) -> CreateDecision:
    waiting = observed.status.waiting_for_backup
    retry_after = parse_time(waiting.retry_after) if waiting else None
    if retry_after is not None and observed.now < retry_after:
        return CreateDecision(condition=Condition.false(Reason.WAITING_FOR_BACKUP, backup_message(replica, waiting)))
    return CreateDecision(action=action)


# --- the "no backup yet" answer ---------------------------------------------------------------------


def backup_not_ready(error: CloudError) -> bool:
    """The 400 a replica or restore gets before the source's first backup: wait and try again."""
    detail = error.detail.lower() if isinstance(error, InvalidRequestError) else ""
    return "not ready for read replicas" in detail or "no backups" in detail


def backup_wait(now: datetime, attempts: int, base: timedelta) -> dict[str, object]:
    """``status.waitingForBackup`` after the ``attempts``-th refusal: the wait doubles, up to five minutes."""
    wait = min(base * (1 << min(attempts, 20)), BACKUP_RETRY_MAX)
    return {"attempts": attempts, "retryAfter": rfc3339(now + wait, precise=True)}


def backup_message(replica: bool, waiting: object | None = None) -> str:
    what = "The primary has" if replica else "The restore source has"
    when = f"; next attempt after {getattr(waiting, 'retry_after', '')}" if waiting is not None else ""
    return (
        f"{what} no backup yet (ClickHouse Cloud makes the first one shortly after a service is created); "
        f"the create request is sent again with backoff{when}"
    )


# --- credentials -----------------------------------------------------------------------------------


def replica_password_mode(desired: Desired, observed: Observed, confirmed: bool) -> tuple[PasswordMode, bool]:
    """(what to do with the replica's Secret, whether it holds the right password afterwards).

    A replica's password is its primary's: the Secret gets the primary's current, confirmed password
    (read from the primary's connection Secret) and follows its rotations. While that is not known
    (the primary is rotating), the Secret keeps what it has. ``confirmed``: the Secret's password is
    recorded as this service's current one."""
    secret = observed.secret
    has_password = secret is not None and bool(secret.password)
    primary_password = observed.source.password if observed.source else None
    if desired.read_replica_of is None or primary_password is None:
        return PasswordMode.KEEP, has_password
    if secret is None or secret.password != primary_password or not confirmed:
        return PasswordMode.INHERIT, True
    return PasswordMode.KEEP, True
