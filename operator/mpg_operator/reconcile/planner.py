"""The live plan: from (desired, observed) to the next steps for a ManagedPostgres that is not
being deleted. Pure functions; the executor runs the actions in order.

Safety rules encoded here:

* A create is announced in status (``createPendingSince``) before the POST; while a create is
  pending or its outcome is unknown, the service is looked up by its owner tag and not created
  again before a grace period that doubles with every attempt.
* Nothing is created while the connection Secret's name belongs to something else: a password
  the API returns once must have a place to go.
* Immutable fields (provider, region, postgresVersion) are never "fixed" by deleting and
  re-creating: a mismatch is reported.
* A password is only ever written to the Secret before it is sent to the API.
* A service is re-created only when a GET confirmed it is gone, never when the credentials now
  point to another organization.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from mpg_operator.cloud.models import PostgresServiceListItem, ServiceState
from mpg_operator.reconcile.connection import ANN_HAND_OVER_TO, PORT, password_acceptable
from mpg_operator.reconcile.desired import OWNER_TAGS, TAG_UID, Desired
from mpg_operator.reconcile.model import (
    AdoptService,
    Condition,
    ConfirmGone,
    CreateService,
    Event,
    EventReason,
    Observed,
    PasswordMode,
    Plan,
    PublishSecret,
    Reason,
    UpdateService,
    parse_time,
)

CREATE_GRACE = timedelta(seconds=60)
"""Default wait for a create whose outcome is unknown to show in a LIST before it is sent again."""

CREATE_BACKOFF_MAX = timedelta(minutes=30)
"""The longest wait before a create that showed nothing is sent again (the wait doubles per attempt)."""

UPDATE_SETTLE = timedelta(minutes=30)
"""How long an update in flight is waited for before it is sent again."""

UPDATE_CONFIRM = timedelta(seconds=15)
"""How long an update must keep showing before it counts as applied (the API may flip back)."""

TERMINAL_RETRY = timedelta(hours=1)
"""How long a request the API rejected is not retried, unless the spec changes."""


# --- what is compared ------------------------------------------------------------------------


def observed_status_fields(remote: PostgresServiceListItem) -> dict[str, object]:
    """Status fields copied verbatim from the remote service (user tags only)."""
    tags = {t.key: (t.value or "") for t in remote.tags or [] if t.key not in OWNER_TAGS}
    return {
        "serviceId": remote.id,
        "state": remote.state,
        "serviceName": remote.name,
        "isPrimary": remote.is_primary,
        "provider": remote.provider,
        "region": remote.region,
        "size": remote.size,
        "haType": remote.ha_type,
        "postgresVersion": remote.postgres_version,
        "tags": tags,
        "createdAt": remote.created_at,
    }


def mutable_differences(desired: Desired, remote: PostgresServiceListItem) -> tuple[str, ...]:
    """Names of the mutable fields whose remote value differs from the desired one."""
    diffs = []
    if remote.name != desired.service_name:
        diffs.append("serviceName")
    if remote.size != desired.size:
        diffs.append("size")
    if (remote.ha_type or "none") != desired.ha_type:
        diffs.append("haType")
    remote_tags = {t.key: (t.value or "") for t in remote.tags or []}
    if remote_tags != desired.all_tags:
        diffs.append("tags")
    return tuple(diffs)


def immutable_differences(desired: Desired, remote: PostgresServiceListItem) -> list[str]:
    """Human-readable mismatches of fields that cannot change without a new database."""
    out = []
    if remote.provider and remote.provider != desired.provider:
        out.append(f"provider is {remote.provider!r}, spec says {desired.provider!r}")
    if remote.region and remote.region != desired.region:
        out.append(f"region is {remote.region!r}, spec says {desired.region!r}")
    if desired.postgres_version and remote.postgres_version and remote.postgres_version != desired.postgres_version:
        out.append(f"postgresVersion is {remote.postgres_version!r}, spec says {desired.postgres_version!r}")
    return out


def find_remote(
    services: list[PostgresServiceListItem], service_id: str | None, uid: str
) -> tuple[PostgresServiceListItem | None, tuple[str, ...]]:
    """Find this resource's service in a LIST: by recorded id first, else by owner tag.

    Returns the service and the ids of any other services carrying the same owner tag.
    Services being deleted are only matched by id.
    """
    tagged = [s for s in services if s.tag_map().get(TAG_UID) == uid]
    by_id = next((s for s in services if service_id and s.id == service_id), None)
    if by_id is not None:
        chosen: PostgresServiceListItem | None = by_id
    else:
        live = [s for s in tagged if s.state != ServiceState.DELETING]
        live.sort(key=lambda s: (s.created_at or "", s.id or ""))
        chosen = live[0] if live else None
    others = tuple(s.id or "" for s in tagged if chosen is None or s.id != chosen.id)
    return chosen, others


# --- what blocks -------------------------------------------------------------------------------


def organization_mismatch(desired: Desired, observed: Observed) -> str | None:
    """A message when the credentials now point to another organization than the service's.

    A credentials switch cannot move a service: the other organization's API never shows it, and
    reading that as "the service is gone" would create a second, empty database.
    """
    recorded = observed.status.organization_id
    if not recorded or not observed.organization_id or recorded == observed.organization_id:
        return None
    which = observed.status.service_id or "(create pending)"
    source = "spec.credentialsRef" if desired.credentials_secret_name else "the operator default"
    return (
        f"Service {which} lives in organization {recorded}, but the API key of {source} is for "
        f"organization {observed.organization_id}; a service cannot move between organizations, so "
        "nothing is changed. Point credentialsRef back to a key of the service's organization"
    )


def secret_conflict(desired: Desired, observed: Observed) -> str | None:
    """A message when the connection Secret exists and is not this resource's to write."""
    secret = observed.secret
    if secret is None or secret.claimable_by(desired.uid, desired.name):
        return None
    return secret_conflict_message(desired, secret.controller_uid)


def secret_conflict_message(desired: Desired, controller_uid: str | None) -> str:
    owner = f"is owned by another object (uid {controller_uid})" if controller_uid else "is not owned by this ManagedPostgres"
    return (
        f"Secret {desired.connection_secret_name} already exists and {owner}; it is left untouched. "
        "Choose another spec.connectionSecret.name, delete that Secret, or hand it over with the annotation "
        f"{ANN_HAND_OVER_TO}={desired.name}"
    )


def create_wait(create_grace: timedelta, attempts: int) -> timedelta:
    """How long a create may take to show before it is sent again: doubles with each attempt."""
    wait = create_grace * (1 << min(max(0, attempts - 1), 30))
    return min(wait, max(create_grace, CREATE_BACKOFF_MAX))


def recent_rejection(observed: Observed) -> Condition | None:
    """A terminal API rejection of this generation that is still too recent to retry."""
    rejection = observed.last_rejection
    if rejection is None or not rejection.reason.is_terminal:
        return None
    if rejection.since is not None and observed.now - rejection.since >= TERMINAL_RETRY:
        return None
    return Condition.false(rejection.reason, rejection.message)


# --- the plan ----------------------------------------------------------------------------------


def plan(
    desired: Desired,
    observed: Observed,
    *,
    create_grace: timedelta = CREATE_GRACE,
    update_confirm: timedelta = UPDATE_CONFIRM,
) -> Plan:
    """Decide the next steps for a live (not deleting) ManagedPostgres.

    ``create_grace``: how long a create whose outcome is unknown may take to show in a LIST.
    ``update_confirm``: how long a sent update must keep showing before it counts as applied.
    """
    p = Plan()
    p.status.update(
        {"connectionSecretName": desired.connection_secret_name, "deletionPolicy": desired.deletion_policy, "port": PORT}
    )
    moved = organization_mismatch(desired, observed)
    if moved:
        p.synced = Condition.false(Reason.TERMINAL_ORGANIZATION_CHANGED, moved)
        p.active = False
        return p  # Ready stays as it was: the service itself may still work
    remote = observed.remote
    if remote is None:
        return _plan_without_remote(desired, observed, p, create_grace)

    _record_remote(p, observed, remote)
    if remote.state == ServiceState.DELETING:
        p.ready = Condition.false(Reason.DELETING, f"Service {remote.id} is being deleted outside this operator")
        p.synced = Condition.false(Reason.API_ERROR, "The remote service is being deleted")
        return p

    problems: list[Condition] = []
    immutable = immutable_differences(desired, remote)
    if immutable:
        problems.append(
            Condition.false(
                Reason.TERMINAL_IMMUTABLE,
                "Cannot change immutable fields of an existing database (it is never re-created): " + "; ".join(immutable),
            )
        )
    update = _plan_update(p, desired, observed, remote, update_confirm, problems)
    credentials_ok = _plan_credentials(p, desired, observed, remote, problems)
    _conclude(p, desired, remote, problems, update, credentials_ok)
    return p


def _record_remote(p: Plan, observed: Observed, remote: PostgresServiceListItem) -> None:
    """Adopt a service found by its tag; mirror the remote fields in status."""
    if observed.status.service_id != remote.id:
        p.actions.append(AdoptService(remote.id or ""))
        p.events.append(Event.normal(EventReason.ADOPTED, f"Found service {remote.id} by its owner tag; adopting it"))
    p.status.update(observed_status_fields(remote))
    p.status.update({"createPendingSince": None, "createAttempts": None})
    if observed.organization_id:
        p.status["organizationId"] = observed.organization_id
    if observed.duplicates:
        p.events.append(
            Event.warning(
                EventReason.DUPLICATE_SERVICES,
                f"Other services carry this resource's owner tag and are left alone: {', '.join(observed.duplicates)}",
            )
        )


@dataclass(frozen=True)
class _UpdateProgress:
    diffs: tuple[str, ...]
    in_flight: bool


def _plan_update(
    p: Plan,
    desired: Desired,
    observed: Observed,
    remote: PostgresServiceListItem,
    update_confirm: timedelta,
    problems: list[Condition],
) -> _UpdateProgress:
    """Send an update when the service differs, once; count it applied only once it keeps showing."""
    diffs = mutable_differences(desired, remote)
    pending = observed.status.pending_update
    if diffs and remote.is_primary is False:
        problems.append(
            Condition.false(Reason.TERMINAL_READ_REPLICA, "The service is a read replica: the API does not allow changing it")
        )
        return _UpdateProgress(diffs, False)
    if diffs:
        if pending is not None and pending.matched_at:
            # It showed, then flipped back: not applied after all (the request stays in flight).
            p.status["pendingUpdate"] = {"digest": pending.digest, "sentAt": pending.sent_at, "matchedAt": None}
        digest = desired.mutable_digest()
        sent_at = parse_time(pending.sent_at) if pending else None
        already_sent = (
            pending is not None and pending.digest == digest and sent_at is not None and observed.now - sent_at < UPDATE_SETTLE
        )
        rejected = recent_rejection(observed)
        if rejected:
            problems.append(rejected)
            return _UpdateProgress(diffs, False)
        if not already_sent and remote.state == ServiceState.RUNNING:
            p.actions.append(UpdateService(remote.id or "", digest, diffs))
        return _UpdateProgress(diffs, True)  # sent, settling, or waiting for running
    if pending is None:
        return _UpdateProgress(diffs, False)
    matched_at = parse_time(pending.matched_at)
    if matched_at is None:
        p.status["pendingUpdate"] = {"digest": pending.digest, "sentAt": pending.sent_at, "matchedAt": observed.now.isoformat()}
        return _UpdateProgress(diffs, True)
    if observed.now - matched_at < update_confirm:
        return _UpdateProgress(diffs, True)
    p.status["pendingUpdate"] = None
    return _UpdateProgress(diffs, False)


def _plan_credentials(
    p: Plan, desired: Desired, observed: Observed, remote: PostgresServiceListItem, problems: list[Condition]
) -> bool:
    """Publish the Secret when it is not current; returns True when, after the plan's actions,
    the Secret holds the password the API accepted last."""
    taken = secret_conflict(desired, observed)
    if taken:
        problems.insert(0, Condition.false(Reason.TERMINAL_SECRET_CONFLICT, taken))
        return False
    if remote.state != ServiceState.RUNNING:
        return False
    secret = observed.secret
    service_id = remote.id or ""
    refresh = secret is None or not secret.endpoint_current(service_id, remote.name)
    confirmed = secret is not None and secret.password_confirmed(service_id, observed.status.password_version)
    credentials_ok = True
    if confirmed or remote.is_primary is False:
        # Replicas inherit the primary's password; the API refuses to set one.
        mode = PasswordMode.KEEP
        credentials_ok = confirmed or (secret is not None and bool(secret.password))
    elif secret is not None and secret.password and not password_acceptable(secret.password):
        mode = PasswordMode.KEEP
        credentials_ok = False
        problems.append(
            Condition.false(
                Reason.TERMINAL_PASSWORD,
                f"The password in Secret {desired.connection_secret_name} does not meet the API's rules "
                "(12+ characters with lower case, upper case and a digit); delete the key "
                "to have the operator generate one",
            )
        )
    else:
        mode = PasswordMode.APPLY if secret is not None and secret.password else PasswordMode.GENERATE
    if refresh or mode != PasswordMode.KEEP:
        p.actions.append(PublishSecret(service_id, remote.name or desired.service_name, refresh, mode))
    return credentials_ok


def _conclude(
    p: Plan,
    desired: Desired,
    remote: PostgresServiceListItem,
    problems: list[Condition],
    update: _UpdateProgress,
    credentials_ok: bool,
) -> None:
    """Conditions, and whether the generation counts as applied and the resource as in flight."""
    running = remote.state == ServiceState.RUNNING
    if problems:
        p.synced = problems[0]
    else:
        p.synced = Condition.true(Reason.RECONCILED, "The service matches the spec" if not update.diffs else "Update sent")
    taken = next((c for c in problems if c.reason == Reason.TERMINAL_SECRET_CONFLICT), None)
    state = remote.state or ""
    if running and credentials_ok:
        p.ready = Condition.true(Reason.AVAILABLE, f"Service is running; Secret {desired.connection_secret_name} is published")
    elif taken is not None:
        p.ready = taken
    elif running:
        p.ready = Condition.false(Reason.CREDENTIALS_PENDING, "Publishing the connection Secret")
    elif state == ServiceState.CREATING:
        p.ready = Condition.false(Reason.CREATING, "The service is being created")
    elif state in (ServiceState.UNAVAILABLE, ServiceState.STOPPED):
        p.ready = Condition.false(Reason.UNAVAILABLE, f"The service is {state}")
    else:
        p.ready = Condition.false(Reason.PROVISIONING, f"The service is {state or 'in an unknown state'}")
    p.fully_applied = running and credentials_ok and not update.diffs and not problems and not update.in_flight
    p.active = not (running and credentials_ok and not update.in_flight) and not problems
    if update.in_flight and p.ready.is_true:
        p.ready = Condition.true(Reason.UPDATING, f"Service is running; applying changes to {', '.join(update.diffs)}")


def _plan_without_remote(desired: Desired, observed: Observed, p: Plan, create_grace: timedelta) -> Plan:
    """No service is listed for the resource: wait, confirm it is gone, or create it."""
    status = observed.status
    p.ready = Condition.false(Reason.CREATING, "The service is being created")

    if status.service_id and observed.snapshot_stale:
        p.synced = Condition.true(Reason.RECONCILED, f"Waiting for service {status.service_id} to be listed")
        return p
    if status.service_id and not observed.confirmed_gone:
        # The LIST does not show our service: confirm with a GET before believing it.
        p.actions.append(ConfirmGone(status.service_id))
        p.synced = Condition.unknown(Reason.API_ERROR, f"Service {status.service_id} is not listed; checking")
        return p
    taken = secret_conflict(desired, observed)
    if taken:
        # Never create a service whose password could not be stored.
        p.synced = p.ready = Condition.false(Reason.TERMINAL_SECRET_CONFLICT, taken)
        p.events.append(Event.warning(EventReason.SECRET_CONFLICT, taken))
        p.active = False
        return p
    if status.service_id and observed.confirmed_gone:
        p.events.append(
            Event.warning(EventReason.SERVICE_MISSING, f"Service {status.service_id} no longer exists in ClickHouse Cloud; creating a new one")
        )
        p.status.update({"serviceId": None, "state": None, "hostname": None, "passwordVersion": None})

    pending_since = parse_time(status.create_pending_since)
    attempts = status.create_attempts or 0
    if pending_since is not None and not status.service_id:
        waited = observed.now - pending_since
        if observed.snapshot_stale or not observed.snapshot_after_pending or waited < create_wait(create_grace, attempts):
            p.synced = Condition.unknown(
                Reason.CREATE_PENDING,
                "A create request's outcome is not known yet; looking for the service by its owner tag "
                f"({TAG_UID}={desired.uid}) before creating again",
            )
            return p
        p.events.append(
            Event.warning(
                EventReason.CREATE_RETRIED,
                f"No service with owner tag {TAG_UID}={desired.uid} appeared after create attempt {max(attempts, 1)}; "
                f"creating again (the next attempt waits {create_wait(create_grace, attempts + 1).total_seconds():.0f}s)",
            )
        )

    rejected = recent_rejection(observed)
    if rejected:
        p.synced = rejected
        p.active = False
        return p

    p.actions.append(CreateService())
    p.synced = Condition.true(Reason.RECONCILED, "Create requested")
    return p
