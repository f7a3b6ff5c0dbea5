"""Deletion: from (desired, observed) to the next step for a ManagedPostgres being deleted, and
the gates before any remote call. Pure functions.

A service is concluded gone only when a GET answered 404 (or a DELETE did): a LIST may predate
this operator's own create or delete request, and a deletion that trusted it would leave a
database running with nothing in the cluster to show for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from mpg_operator.cloud.errors import CloudError, ConflictError
from mpg_operator.cloud.models import ServiceState
from mpg_operator.reconcile.desired import TAG_NAME, TAG_NAMESPACE, Desired
from mpg_operator.reconcile.model import (
    Condition,
    ConfirmGone,
    DeleteService,
    Event,
    EventReason,
    Observed,
    Plan,
    Reason,
    parse_time,
)
from mpg_operator.reconcile.planner import CREATE_GRACE, create_wait, organization_mismatch, owner_uid
from mpg_operator.resource import DeletionPolicy, ManagedPostgresStatus


class Gate(Enum):
    """What deletion does before it looks at the remote service."""

    PAUSED = "paused"
    """The resource is paused: no remote call, not even deletion's; the finalizer stays."""
    OBSERVED = "observed"
    """managementPolicy Observe: the service was never this resource's to delete; kept."""
    PROTECTED = "protected"
    """deletionProtection: the service is kept (the admission policy should have refused)."""
    ORPHAN = "orphan"
    """deletionPolicy Orphan: keep the service, release at once."""
    NOTHING_CREATED = "nothing-created"
    """No service id and no create in flight: nothing remote can exist; release at once."""
    PROCEED = "proceed"


def gate(desired: Desired, status: ManagedPostgresStatus) -> Gate:
    if desired.paused:
        return Gate.PAUSED
    if desired.observe_only:
        return Gate.OBSERVED
    if desired.deletion_protection:
        return Gate.PROTECTED
    if desired.deletion_policy == DeletionPolicy.ORPHAN:
        return Gate.ORPHAN
    if not status.service_id and not status.create_pending_since:
        return Gate.NOTHING_CREATED
    return Gate.PROCEED


def paused_message(desired: Desired) -> str:
    return (
        f"Deletion waits: the resource is paused (annotation clickhouse.cloud/paused), so nothing is sent to "
        f"ClickHouse Cloud. Remove the annotation to let the deletion proceed: kubectl annotate managedpostgres "
        f"{desired.name} -n {desired.namespace} clickhouse.cloud/paused-"
    )


def escape_hatch(namespace: str, name: str) -> str:
    """How a user finishes a blocked deletion without deleting the service."""
    return (
        "To finish deleting without deleting the service, set spec.deletionPolicy: Orphan "
        f"(kubectl patch managedpostgres {name} -n {namespace} --type merge "
        '-p \'{"spec":{"deletionPolicy":"Orphan"}}\')'
    )


@dataclass(frozen=True)
class Blocked:
    """Deletion cannot go on now: ``message`` says why (and how to proceed when it needs a user)."""

    message: str
    event: Event


def blocked_by(error: Exception, which: str, escape: str) -> Blocked:
    """What a failure while deleting means for the user."""
    if isinstance(error, CloudError) and error.temporary:
        msg = f"ClickHouse Cloud API error while deleting service {which}, will retry: {error}"
        return Blocked(msg, Event.warning(EventReason.API_ERROR, msg))
    if isinstance(error, ConflictError):
        msg = f"ClickHouse Cloud refused to delete service {which}: {error.detail}. Delete its read replicas first, or: {escape}"
        return Blocked(msg, Event.warning(EventReason.DELETION_BLOCKED, msg))
    detail = f"ClickHouse Cloud answered {error}" if isinstance(error, CloudError) else str(error)
    msg = f"Cannot delete service {which}: {detail}. {escape}"
    return Blocked(msg, Event.warning(EventReason.DELETION_BLOCKED, msg))


def plan_delete(desired: Desired, observed: Observed, *, create_grace: timedelta = CREATE_GRACE) -> Plan:
    """Decide the next step for a ManagedPostgres being deleted.

    ``release_finalizer`` is set once nothing remains to be done remotely.
    """
    p = Plan()
    remote = observed.remote
    status = observed.status
    which = remote.id if remote else status.service_id
    if desired.observe_only:
        p.events.append(
            Event.normal(
                EventReason.ORPHANED,
                f"managementPolicy is Observe: service {which or '(none)'} is not this resource's to delete; kept",
            )
        )
        p.release_finalizer = True
        return p
    if desired.deletion_protection:
        p.events.append(
            Event.warning(
                EventReason.DELETION_PROTECTED,
                f"deletionProtection is true: service {which or '(none)'} is kept in ClickHouse Cloud although the resource "
                "was deleted (the admission policy that refuses such deletions is not installed, or was bypassed)",
            )
        )
        p.release_finalizer = True
        return p
    if desired.deletion_policy == DeletionPolicy.ORPHAN:
        p.events.append(
            Event.normal(
                EventReason.ORPHANED,
                f"deletionPolicy is Orphan: service {which or '(none)'} is kept in ClickHouse Cloud",
            )
        )
        p.release_finalizer = True
        return p
    moved = organization_mismatch(desired, observed)
    if moved:
        p.ready = Condition.false(Reason.TERMINAL_ORGANIZATION_CHANGED, moved)
        p.events.append(
            Event.warning(EventReason.DELETION_BLOCKED, f"{moved}. {escape_hatch(desired.namespace, desired.name)}")
        )
        return p
    service_id = remote.id if remote is not None else status.service_id
    unconfirmed = not observed.confirmed_gone and not observed.fetched_by_id
    if service_id and unconfirmed and (remote is None or observed.snapshot_stale):
        p.actions.append(ConfirmGone(service_id))
        p.ready = Condition.false(Reason.DELETING, f"Checking service {service_id}")
        return p
    if remote is None and status.service_id:
        p.events.append(Event.normal(EventReason.DELETED, f"Service {status.service_id} is gone"))
        p.release_finalizer = True
        return p
    if remote is None:
        pending_since = parse_time(status.create_pending_since)
        if pending_since is not None and (
            observed.snapshot_stale
            or not observed.snapshot_after_pending
            or observed.now - pending_since < create_wait(create_grace, status.create_attempts or 0)
        ):
            p.ready = Condition.false(Reason.DELETING, "Waiting for the outcome of a create request before deleting")
            return p
        p.release_finalizer = True
        return p
    if observed.found_by in ("adopt", "reattach") and owner_uid(remote) != desired.uid:
        # Found by spec.serviceId or a previous owner's name, never claimed: not this resource's to delete.
        p.events.append(
            Event.normal(
                EventReason.ORPHANED,
                f"Service {remote.id} was never taken over by this resource (it does not carry its owner tag): "
                "it is not deleted",
            )
        )
        p.release_finalizer = True
        return p
    if remote.state == ServiceState.DELETING:
        p.ready = Condition.false(Reason.DELETING, f"Service {remote.id} is being deleted")
        return p
    if observed.previous_owner_alive:
        tags = remote.tag_map()
        p.events.append(
            Event.warning(
                EventReason.ORPHANED,
                f"Service {remote.id} carries the owner tag of another ManagedPostgres ({tags.get(TAG_NAMESPACE)}/"
                f"{tags.get(TAG_NAME)}, uid {observed.previous_owner}) that exists: it is that resource's service "
                "now and is not deleted",
            )
        )
        p.release_finalizer = True
        return p
    p.actions.append(DeleteService(remote.id or ""))
    p.ready = Condition.false(Reason.DELETING, f"Deleting service {remote.id}")
    return p
