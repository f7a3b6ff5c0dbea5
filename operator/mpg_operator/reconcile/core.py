"""The reconcile core: pure functions from (desired, observed) to a plan. No I/O here.

One pass of the operator observes the remote service (from a batched LIST), the connection
Secret and the resource's status, calls :func:`plan` (or :func:`plan_delete`), executes the
actions in order, and writes the status the plan computed.

Safety rules encoded here:

* A create is announced in status (``createPendingSince``) before the POST; while a create is
  pending or its outcome is unknown, the service is looked up by its owner tag and never
  created a second time within the grace period.
* Immutable fields (provider, region, postgresVersion) are never "fixed" by deleting and
  re-creating: a mismatch is reported.
* A password is only ever written to the Secret before it is sent to the API.
* A service is re-created only when a GET confirmed it is gone (``confirmed_gone``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from mpg_operator.cloud.models import PostgresServiceListItem, ServiceState
from mpg_operator.reconcile.connection import ObservedSecret, password_acceptable
from mpg_operator.reconcile.desired import OWNER_TAGS, TAG_UID, Desired
from mpg_operator.resource import DeletionPolicy, ManagedPostgresStatus

CREATE_GRACE = timedelta(seconds=60)
"""Default wait for a create whose outcome is unknown to show in a LIST before it is sent again."""

UPDATE_SETTLE = timedelta(minutes=30)
"""How long an update in flight is waited for before it is sent again."""

UPDATE_CONFIRM = timedelta(seconds=15)
"""How long an update must keep showing before it counts as applied (the API may flip back)."""

TERMINAL_RETRY = timedelta(hours=1)
"""How long a request the API rejected is not retried, unless the spec changes."""

CREATE_BACKOFF_MAX = timedelta(minutes=30)
"""The longest wait before a create that showed nothing is sent again (the wait doubles per attempt)."""


class Reason(StrEnum):
    """Condition reasons. Those starting with ``Terminal`` need a change by the user."""

    AVAILABLE = "Available"
    CREATING = "Creating"
    UPDATING = "Updating"
    PROVISIONING = "Provisioning"
    UNAVAILABLE = "ServiceUnavailable"
    CREDENTIALS_PENDING = "PublishingCredentials"
    DELETING = "Deleting"
    RECONCILED = "ReconcileSuccess"
    API_ERROR = "ApiError"
    CREATE_PENDING = "CreatePending"
    TERMINAL_INVALID_SPEC = "TerminalInvalidSpec"
    TERMINAL_IMMUTABLE = "TerminalImmutableFieldChanged"
    TERMINAL_CREDENTIALS = "TerminalCredentialsError"
    TERMINAL_PASSWORD = "TerminalInvalidPassword"
    TERMINAL_READ_REPLICA = "TerminalReadReplica"
    TERMINAL_SECRET_CONFLICT = "TerminalSecretConflict"
    TERMINAL_ORGANIZATION_CHANGED = "TerminalOrganizationChanged"
    QUOTA_EXCEEDED = "QuotaExceeded"

    @property
    def is_terminal(self) -> bool:
        """Needs a change by the user: the same request is not re-sent for this generation."""
        return self.startswith("Terminal") or self is Reason.QUOTA_EXCEEDED


class EventReason(StrEnum):
    """The fixed vocabulary of the Events the operator posts on a ManagedPostgres."""

    CREATED = "Created"
    ADOPTED = "Adopted"
    UPDATED = "Updated"
    CREDENTIALS_PUBLISHED = "CredentialsPublished"
    SECRET_UPDATED = "SecretUpdated"
    DELETE_REQUESTED = "DeleteRequested"
    DELETED = "Deleted"
    ORPHANED = "Orphaned"
    INVALID_SPEC = "InvalidSpec"
    CREDENTIALS_ERROR = "CredentialsError"
    API_ERROR = "ApiError"
    CREATE_FAILED = "CreateFailed"
    CREATE_OUTCOME_UNKNOWN = "CreateOutcomeUnknown"
    CREATE_RETRIED = "CreateRetried"
    SERVICE_MISSING = "ServiceMissing"
    DUPLICATE_SERVICES = "DuplicateServices"
    DELETION_BLOCKED = "DeletionBlocked"
    DELETION_SKIPPED = "DeletionSkipped"
    SECRET_CONFLICT = "SecretConflict"


# --- observations and actions ---------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """Everything one pass knows, read before planning."""

    now: datetime
    status: ManagedPostgresStatus
    remote: PostgresServiceListItem | None
    """The service, found by ``status.serviceId`` or else by the owner tag."""
    duplicates: tuple[str, ...] = ()
    """Other services that carry this resource's owner tag (never touched)."""
    secret: ObservedSecret | None = None
    confirmed_gone: bool = False
    """A GET of ``status.serviceId`` answered 404 (the LIST alone is not trusted for that)."""
    fetched_by_id: bool = False
    """``remote`` comes from a GET sent after this operator's last request for the resource."""
    organization_id: str | None = None
    """The organization of the API key the resource's credentials name now."""
    snapshot_after_pending: bool = True
    """The LIST used was fetched after ``status.createPendingSince``."""
    snapshot_stale: bool = False
    """The LIST used was fetched before this operator's last request for the resource."""
    last_error: tuple[str, str, datetime | None] | None = None
    """(reason, message, since) of the last failure recorded for this generation, if any."""


class Action:
    """Base of the steps a plan asks the executor to take, in order."""


@dataclass(frozen=True)
class AdoptService(Action):
    """Record a service found by its owner tag as this resource's service."""

    service_id: str


@dataclass(frozen=True)
class CreateService(Action):
    """Mark the create pending in status, POST, publish the returned credentials, record the id."""


@dataclass(frozen=True)
class ConfirmGone(Action):
    """GET the recorded service id: a 404 confirms it is gone (never a LIST alone); any other
    answer replaces what the LIST showed (the LIST may predate this operator's last request)."""

    service_id: str


@dataclass(frozen=True)
class UpdateService(Action):
    """PATCH every mutable field, with the complete tag set."""

    service_id: str
    digest: str
    changed: tuple[str, ...]


@dataclass(frozen=True)
class PublishSecret(Action):
    """Write the connection Secret; fetch the endpoint (GET + CA) when it is not current.

    ``password`` says what to do about the password:
    ``keep`` (it is confirmed), ``apply`` (set the Secret's password through the API) or
    ``generate`` (write a new password to the Secret first, then set it through the API).
    """

    service_id: str
    service_name: str
    refresh_endpoint: bool
    password: str  # "keep" | "apply" | "generate"


@dataclass(frozen=True)
class DeleteService(Action):
    service_id: str


@dataclass(frozen=True)
class Condition:
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


@dataclass
class Plan:
    """What to do, what to report, and when to look again."""

    actions: list[Action] = field(default_factory=list)
    status: dict[str, object] = field(default_factory=dict)
    ready: Condition | None = None
    synced: Condition | None = None
    fully_applied: bool = False
    active: bool = True
    """True while something is in flight: look again soon."""
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(type, reason, message)."""
    release_finalizer: bool = False


# --- helpers -----------------------------------------------------------------------------


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time from status, or None."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


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


def _suppressed(observed: Observed) -> tuple[str, str] | None:
    """A terminal API rejection of this generation that is still too recent to retry."""
    if not observed.last_error:
        return None
    reason, message, since = observed.last_error
    if not (reason.startswith("Terminal") or reason == Reason.QUOTA_EXCEEDED):
        return None
    if since is not None and observed.now - since >= TERMINAL_RETRY:
        return None
    return reason, message


def organization_mismatch(desired: Desired, observed: Observed) -> str | None:
    """A message when the credentials now point to another organization than the service's.

    A credentials switch cannot move a service: the other organization's API never shows it, and
    reading that as "the service is gone" would create a second, empty database.
    """
    recorded = observed.status.organization_id
    if not recorded or not observed.organization_id or recorded == observed.organization_id:
        return None
    which = observed.status.service_id or "(create pending)"
    return (
        f"Service {which} lives in organization {recorded}, but the API key of "
        f"{'spec.credentialsRef' if desired.credentials_secret_name else 'the operator default'} is for "
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
        f"mpg-operator.clickhouse.cloud/hand-over-to={desired.name}"
    )


def create_wait(create_grace: timedelta, attempts: int) -> timedelta:
    """How long a create may take to show before it is sent again: doubles with each attempt."""
    wait = create_grace * (2 ** max(0, attempts - 1))
    return min(wait, max(create_grace, CREATE_BACKOFF_MAX))


# --- planning ----------------------------------------------------------------------------


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
    p.status["connectionSecretName"] = desired.connection_secret_name
    p.status["deletionPolicy"] = desired.deletion_policy
    p.status["port"] = 5432
    remote = observed.remote
    status = observed.status

    moved = organization_mismatch(desired, observed)
    if moved:
        p.synced = Condition("False", Reason.TERMINAL_ORGANIZATION_CHANGED, moved)
        p.active = False
        return p

    if remote is None:
        return _plan_without_remote(desired, observed, p, create_grace)

    if status.service_id != remote.id:
        p.actions.append(AdoptService(remote.id))
        p.events.append(("Normal", EventReason.ADOPTED, f"Found service {remote.id} by its owner tag; adopting it"))
    p.status.update(observed_status_fields(remote))
    p.status["createPendingSince"] = None
    p.status["createAttempts"] = None
    if observed.organization_id:
        p.status["organizationId"] = observed.organization_id
    if observed.duplicates:
        p.events.append(
            (
                "Warning",
                EventReason.DUPLICATE_SERVICES,
                f"Other services carry this resource's owner tag and are left alone: {', '.join(observed.duplicates)}",
            )
        )

    state = remote.state or ""
    if state == ServiceState.DELETING:
        p.ready = Condition("False", Reason.DELETING, f"Service {remote.id} is being deleted outside this operator")
        p.synced = Condition("False", Reason.API_ERROR, "The remote service is being deleted")
        return p

    synced_problems: list[tuple[str, str]] = []
    immutable = immutable_differences(desired, remote)
    if immutable:
        synced_problems.append(
            (
                Reason.TERMINAL_IMMUTABLE,
                "Cannot change immutable fields of an existing database (it is never re-created): "
                + "; ".join(immutable),
            )
        )

    is_replica = remote.is_primary is False
    diffs = mutable_differences(desired, remote)
    digest = desired.mutable_digest()
    pending = status.pending_update
    update_in_flight = False
    suppressed = _suppressed(observed)
    if diffs and is_replica:
        synced_problems.append(
            (Reason.TERMINAL_READ_REPLICA, "The service is a read replica: the API does not allow changing it")
        )
    elif diffs:
        if pending is not None and pending.matched_at:
            # It showed, then flipped back: not applied after all (the request stays in flight).
            p.status["pendingUpdate"] = {"digest": pending.digest, "sentAt": pending.sent_at, "matchedAt": None}
        sent_at = parse_time(pending.sent_at) if pending else None
        already_sent = (
            pending is not None
            and pending.digest == digest
            and sent_at is not None
            and observed.now - sent_at < UPDATE_SETTLE
        )
        if suppressed:
            synced_problems.append(suppressed)
        elif already_sent:
            update_in_flight = True
        elif state == ServiceState.RUNNING:
            p.actions.append(UpdateService(remote.id, digest, diffs))
            update_in_flight = True
        else:
            update_in_flight = True  # wait for running before changing anything
    elif pending is not None:
        matched_at = parse_time(pending.matched_at)
        if matched_at is None:
            p.status["pendingUpdate"] = {"digest": pending.digest, "sentAt": pending.sent_at, "matchedAt": observed.now.isoformat()}
            update_in_flight = True
        elif observed.now - matched_at < update_confirm:
            update_in_flight = True
        else:
            p.status["pendingUpdate"] = None

    secret = observed.secret
    running = state == ServiceState.RUNNING
    credentials_ok = False  # once this plan's actions have run
    taken = secret_conflict(desired, observed)
    if taken:
        synced_problems.insert(0, (Reason.TERMINAL_SECRET_CONFLICT, taken))
    elif running:
        refresh = secret is None or not secret.endpoint_current(remote.id, remote.name)
        confirmed = secret is not None and secret.password_confirmed(remote.id, status.password_version)
        if confirmed or is_replica:
            # Replicas inherit the primary's password; the API refuses to set one.
            password_mode = "keep"
            credentials_ok = confirmed or (secret is not None and bool(secret.password))
        elif secret is not None and secret.password and not password_acceptable(secret.password):
            password_mode = "keep"
            synced_problems.append(
                (
                    Reason.TERMINAL_PASSWORD,
                    f"The password in Secret {desired.connection_secret_name} does not meet the API's rules "
                    "(12+ characters with lower case, upper case and a digit); delete the key "
                    "to have the operator generate one",
                )
            )
        else:
            password_mode = "apply" if secret is not None and secret.password else "generate"
            credentials_ok = True
        if refresh or password_mode != "keep":
            p.actions.append(PublishSecret(remote.id, remote.name or desired.service_name, refresh, password_mode))

    # Conditions
    if synced_problems:
        reason, message = synced_problems[0]
        p.synced = Condition("False", reason, message)
    else:
        p.synced = Condition("True", Reason.RECONCILED, "The service matches the spec" if not diffs else "Update sent")

    if running and credentials_ok:
        p.ready = Condition("True", Reason.AVAILABLE, f"Service is running; Secret {desired.connection_secret_name} is published")
    elif running and taken:
        p.ready = Condition("False", Reason.TERMINAL_SECRET_CONFLICT, taken)
    elif running:
        p.ready = Condition("False", Reason.CREDENTIALS_PENDING, "Publishing the connection Secret")
    elif state == ServiceState.CREATING:
        p.ready = Condition("False", Reason.CREATING, "The service is being created")
    elif state in (ServiceState.UNAVAILABLE, ServiceState.STOPPED):
        p.ready = Condition("False", Reason.UNAVAILABLE, f"The service is {state}")
    else:
        p.ready = Condition("False", Reason.PROVISIONING, f"The service is {state or 'in an unknown state'}")

    p.fully_applied = running and credentials_ok and not diffs and not synced_problems and not update_in_flight
    p.active = not (running and credentials_ok and not update_in_flight) and not synced_problems
    if update_in_flight and p.ready.status == "True":
        p.ready = Condition("True", Reason.UPDATING, f"Service is running; applying changes to {', '.join(diffs)}")
    return p


def _plan_without_remote(desired: Desired, observed: Observed, p: Plan, create_grace: timedelta) -> Plan:
    status = observed.status
    suppressed = _suppressed(observed)
    p.ready = Condition("False", Reason.CREATING, "The service is being created")

    if status.service_id and observed.snapshot_stale:
        p.synced = Condition("True", Reason.RECONCILED, f"Waiting for service {status.service_id} to be listed")
        return p
    if status.service_id and not observed.confirmed_gone:
        # The LIST does not show our service: confirm with a GET before believing it.
        p.actions.append(ConfirmGone(status.service_id))
        p.synced = Condition("Unknown", Reason.API_ERROR, f"Service {status.service_id} is not listed; checking")
        return p
    taken = secret_conflict(desired, observed)
    if taken:
        # Never create a service whose password could not be stored.
        p.synced = Condition("False", Reason.TERMINAL_SECRET_CONFLICT, taken)
        p.ready = Condition("False", Reason.TERMINAL_SECRET_CONFLICT, taken)
        p.events.append(("Warning", EventReason.SECRET_CONFLICT, taken))
        p.active = False
        return p
    if status.service_id and observed.confirmed_gone:
        p.events.append(
            ("Warning", EventReason.SERVICE_MISSING, f"Service {status.service_id} no longer exists in ClickHouse Cloud; creating a new one")
        )
        p.status.update({"serviceId": None, "state": None, "hostname": None, "passwordVersion": None})

    pending_since = parse_time(status.create_pending_since)
    attempts = status.create_attempts or 0
    if pending_since is not None and not status.service_id:
        waited = observed.now - pending_since
        if observed.snapshot_stale or not observed.snapshot_after_pending or waited < create_wait(create_grace, attempts):
            p.synced = Condition(
                "Unknown",
                Reason.CREATE_PENDING,
                "A create request's outcome is not known yet; looking for the service by its owner tag "
                f"({TAG_UID}={desired.uid}) before creating again",
            )
            return p
        p.events.append(
            (
                "Warning",
                EventReason.CREATE_RETRIED,
                f"No service with owner tag {TAG_UID}={desired.uid} appeared after create attempt {max(attempts, 1)}; "
                f"creating again (the next attempt waits {create_wait(create_grace, attempts + 1).total_seconds():.0f}s)",
            )
        )

    if suppressed:
        p.synced = Condition("False", *suppressed)
        p.active = False
        return p

    p.actions.append(CreateService())
    p.synced = Condition("True", Reason.RECONCILED, "Create requested")
    return p


def plan_delete(desired: Desired, observed: Observed, *, create_grace: timedelta = CREATE_GRACE) -> Plan:
    """Decide the next step for a ManagedPostgres being deleted.

    ``release_finalizer`` is set once nothing remains to be done remotely. A service is only
    concluded gone when a GET answered 404 (or a DELETE did): a LIST may predate this operator's
    own create or delete request.
    """
    p = Plan()
    remote = observed.remote
    status = observed.status
    if desired.deletion_policy == DeletionPolicy.ORPHAN:
        which = remote.id if remote else status.service_id
        p.events.append(
            ("Normal", EventReason.ORPHANED, f"deletionPolicy is Orphan: service {which or '(none)'} is kept in ClickHouse Cloud")
        )
        p.release_finalizer = True
        return p
    moved = organization_mismatch(desired, observed)
    if moved:
        p.ready = Condition("False", Reason.TERMINAL_ORGANIZATION_CHANGED, moved)
        p.events.append(("Warning", EventReason.DELETION_BLOCKED, moved))
        return p
    service_id = remote.id if remote is not None else status.service_id
    if service_id and not observed.confirmed_gone and not observed.fetched_by_id and (remote is None or observed.snapshot_stale):
        p.actions.append(ConfirmGone(service_id))
        p.ready = Condition("False", Reason.DELETING, f"Checking service {service_id}")
        return p
    if remote is None and status.service_id:
        p.events.append(("Normal", EventReason.DELETED, f"Service {status.service_id} is gone"))
        p.release_finalizer = True
        return p
    if remote is None:
        pending_since = parse_time(status.create_pending_since)
        if pending_since is not None and (
            observed.snapshot_stale
            or not observed.snapshot_after_pending
            or observed.now - pending_since < create_wait(create_grace, status.create_attempts or 0)
        ):
            p.ready = Condition("False", Reason.DELETING, "Waiting for the outcome of a create request before deleting")
            return p
        p.release_finalizer = True
        return p
    if remote.state == ServiceState.DELETING:
        p.ready = Condition("False", Reason.DELETING, f"Service {remote.id} is being deleted")
        return p
    p.actions.append(DeleteService(remote.id))
    p.ready = Condition("False", Reason.DELETING, f"Deleting service {remote.id}")
    return p


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
        chosen = by_id
    else:
        live = [s for s in tagged if s.state != ServiceState.DELETING]
        live.sort(key=lambda s: (s.created_at or "", s.id or ""))
        chosen = live[0] if live else None
    others = tuple(s.id or "" for s in tagged if chosen is None or s.id != chosen.id)
    return chosen, others
