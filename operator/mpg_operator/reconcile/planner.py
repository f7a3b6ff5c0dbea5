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

from mpg_operator.cloud.ids import canonical_id_or_none, same_id
from mpg_operator.cloud.models import PostgresServiceListItem, ServiceState
from mpg_operator.reconcile import commands, configuration, replication
from mpg_operator.reconcile.connection import ANN_HAND_OVER_TO, PORT, password_acceptable
from mpg_operator.reconcile.desired import OWNER_TAGS, TAG_NAME, TAG_NAMESPACE, TAG_UID, Desired
from mpg_operator.reconcile.model import (
    AdoptService,
    ClaimService,
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
    SendCommand,
    UpdateService,
    parse_time,
)
from mpg_operator.resource import AdoptionPolicy, OnServiceMissing

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
    if desired.size is not None and remote.size != desired.size:
        diffs.append("size")
    if desired.ha_type is not None and (remote.ha_type or "none") != desired.ha_type:
        diffs.append("haType")
    remote_tags = {t.key: (t.value or "") for t in remote.tags or []}
    if remote_tags != desired.all_tags:
        diffs.append("tags")
    return tuple(diffs)


def immutable_differences(desired: Desired, remote: PostgresServiceListItem) -> list[str]:
    """Human-readable mismatches of fields that cannot change without a new database."""
    out = []
    if desired.provider and remote.provider and remote.provider != desired.provider:
        out.append(f"provider is {remote.provider!r}, spec says {desired.provider!r}")
    if desired.region and remote.region and remote.region != desired.region:
        out.append(f"region is {remote.region!r}, spec says {desired.region!r}")
    if desired.postgres_version and remote.postgres_version and remote.postgres_version != desired.postgres_version:
        out.append(f"postgresVersion is {remote.postgres_version!r}, spec says {desired.postgres_version!r}")
    return out


def owner_uid(service: PostgresServiceListItem) -> str | None:
    """The uid of the ManagedPostgres the service's owner tag names (canonical), if any."""
    return canonical_id_or_none(service.tag_map().get(TAG_UID))


@dataclass(frozen=True)
class Located:
    """This resource's service in a LIST, and how it was found."""

    remote: PostgresServiceListItem | None
    duplicates: tuple[str, ...] = ()
    found_by: str = "id"
    previous_owner: str | None = None


def locate(services: list[PostgresServiceListItem], status_service_id: str | None, desired: Desired) -> Located:
    """Find this resource's service in a LIST: by recorded id; else by spec.serviceId (adoption);
    else by the owner uid tag; else, as a candidate to re-attach, by a previous owner's
    namespace/name tags. Other services carrying this uid are reported, never touched; services
    being deleted are only matched by id."""

    def live(candidates: list[PostgresServiceListItem]) -> list[PostgresServiceListItem]:
        kept = [s for s in candidates if s.state != ServiceState.DELETING]
        return sorted(kept, key=lambda s: (s.created_at or "", s.id or ""))

    tagged = [s for s in services if owner_uid(s) == desired.uid]
    chosen: PostgresServiceListItem | None = None
    found_by, previous = "id", None
    if status_service_id:
        chosen = next((s for s in services if s.id == status_service_id), None)
    elif desired.adopt_service_id:
        chosen = next((s for s in services if s.id == desired.adopt_service_id), None)
        found_by = "adopt"
    if chosen is None and not status_service_id and (found := live(tagged)):
        chosen, found_by = found[0], "tag"
    if chosen is None and not status_service_id and not desired.adopt_service_id:
        same_name = [
            s
            for s in services
            if s.tag_map().get(TAG_NAMESPACE) == desired.namespace
            and s.tag_map().get(TAG_NAME) == desired.name
            and owner_uid(s) != desired.uid
        ]
        if found := live(same_name):
            chosen, found_by = found[0], "reattach"
    if chosen is not None:
        owner = owner_uid(chosen)
        previous = owner if owner and owner != desired.uid else None
    others = tuple(s.id or "" for s in tagged if chosen is None or s.id != chosen.id)
    return Located(chosen, others, found_by, previous)


# --- what blocks -------------------------------------------------------------------------------


def organization_mismatch(desired: Desired, observed: Observed) -> str | None:
    """A message when the credentials now point to another organization than the service's.

    A credentials switch cannot move a service: the other organization's API never shows it, and
    reading that as "the service is gone" would create a second, empty database.
    """
    recorded = observed.status.organization_id
    if not recorded or not observed.organization_id or same_id(recorded, observed.organization_id):
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


def secret_left_by_earlier(desired: Desired, observed: Observed) -> str | None:
    """A message when the connection Secret is an earlier same-named resource's, awaiting garbage
    collection (a resource deleted and created again): a wait, not a conflict."""
    secret = observed.secret
    if secret is None or not secret.left_by_earlier(desired.uid, desired.name):
        return None
    return (
        f"Secret {desired.connection_secret_name} belongs to an earlier ManagedPostgres {desired.name} "
        f"(uid {secret.controller_uid}) that is gone; waiting for Kubernetes to garbage-collect it"
    )


def secret_conflict_message(desired: Desired, controller_uid: str | None) -> str:
    owner = (
        f"is owned by another object (uid {controller_uid})"
        if controller_uid
        else "is not owned by this ManagedPostgres"
    )
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
        {
            "connectionSecretName": desired.connection_secret_name,
            "deletionPolicy": desired.deletion_policy,
            "port": PORT,
        }
    )
    moved = organization_mismatch(desired, observed)
    if moved:
        p.synced = Condition.false(Reason.TERMINAL_ORGANIZATION_CHANGED, moved)
        p.active = False
        return p  # Ready stays as it was: the service itself may still work
    remote = observed.remote
    if remote is None:
        return _plan_without_remote(desired, observed, p, create_grace)
    refused = _refuse_takeover(desired, observed, remote)
    if refused is not None:
        p.synced, event = refused
        p.ready = p.synced
        p.events.append(event)
        p.active = False
        return p
    if _claim_first(p, desired, observed, remote):
        return p

    _record_remote(p, observed, remote)
    _record_replica(p, desired, observed, remote)
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
                "Cannot change immutable fields of an existing database (it is never re-created): "
                + "; ".join(immutable),
            )
        )
    if desired.observe_only:
        update = _UpdateProgress(mutable_differences(desired, remote), False)
    else:
        update = _plan_update(p, desired, observed, remote, update_confirm, problems)
    credentials_ok = _plan_credentials(p, desired, observed, remote, problems)
    if not desired.observe_only and remote.state == ServiceState.RUNNING:
        update = _plan_day2(p, desired, observed, remote, update, problems)
    _conclude(p, desired, remote, problems, update, credentials_ok)
    return p


def _refuse_takeover(
    desired: Desired, observed: Observed, remote: PostgresServiceListItem
) -> tuple[Condition, Event] | None:
    """A service found by spec.serviceId or by a previous owner's name is not taken over when its
    owner still exists (two resources never share a service), or re-attaching is turned off; a
    service recorded in status that now carries the owner tag of another live resource was claimed
    by it, and this resource changes nothing (and deletes nothing)."""
    if observed.found_by == "id":
        if not observed.previous_owner_alive:
            return None  # no owner tag, or a gone resource's: this resource's own tags are put back
        tags = remote.tag_map()
        msg = (
            f"Service {remote.id} now carries the owner tag of another ManagedPostgres ({tags.get(TAG_NAMESPACE)}/"
            f"{tags.get(TAG_NAME)}, uid {observed.previous_owner}) that exists: it claimed the service, so this "
            "resource changes nothing and will not delete it. Delete one of the two resources (the other with "
            "deletionPolicy: Orphan if the service must stay)"
        )
        return Condition.false(Reason.TERMINAL_SERVICE_OWNED, msg), Event.warning(EventReason.ADOPTION_REFUSED, msg)
    if observed.found_by not in ("adopt", "reattach"):
        return None
    if observed.previous_owner_alive:
        msg = (
            f"Service {remote.id} belongs to another ManagedPostgres ({remote.tag_map().get(TAG_NAMESPACE)}/"
            f"{remote.tag_map().get(TAG_NAME)}, uid {observed.previous_owner}) that still exists: two resources "
            "never share a service. Delete that resource with deletionPolicy: Orphan first, or adopt another service"
        )
        return Condition.false(Reason.TERMINAL_SERVICE_OWNED, msg), Event.warning(EventReason.ADOPTION_REFUSED, msg)
    if observed.found_by == "reattach" and desired.adoption_policy == AdoptionPolicy.NEVER:
        msg = (
            f"Service {remote.id} was created for an earlier ManagedPostgres {desired.namespace}/{desired.name} "
            f"(uid {observed.previous_owner}) and adoptionPolicy is Never: nothing is created. To take it over, set "
            f"spec.serviceId: {remote.id}; to start afresh, delete that service"
        )
        return Condition.false(Reason.TERMINAL_ADOPTION_REQUIRED, msg), Event.warning(EventReason.ADOPTION_REFUSED, msg)
    return None


def _claim_first(p: Plan, desired: Desired, observed: Observed, remote: PostgresServiceListItem) -> bool:
    """A service to take over (spec.serviceId, a previous owner's name) becomes this resource's only once
    the API shows this resource's owner tag on it after this operator wrote it: nothing else (no
    update, no password) is sent to it before. True when the plan stops here."""
    if desired.observe_only or observed.found_by not in ("adopt", "reattach") or owner_uid(remote) == desired.uid:
        return False
    if observed.claim_sent:
        msg = f"Wrote this resource's owner tags to service {remote.id}; waiting for the API to show them"
    else:
        p.actions.append(ClaimService(remote.id or ""))
        msg = f"Claiming service {remote.id}: writing this resource's owner tags, then reading them back"
    p.synced = p.ready = Condition.false(Reason.CLAIMING, msg)
    p.active = True
    return True


def _record_remote(p: Plan, observed: Observed, remote: PostgresServiceListItem) -> None:
    """Adopt a service found by its tag, its id or a previous owner's name; mirror it in status."""
    if observed.status.service_id != remote.id:
        p.actions.append(AdoptService(remote.id or ""))
        if observed.found_by == "adopt":
            why = f"Adopted service {remote.id} named by spec.serviceId" + (
                f" (previous owner uid {observed.previous_owner}, no longer in this cluster)"
                if observed.previous_owner
                else ""
            )
        elif observed.found_by == "reattach":
            why = (
                f"Re-attached service {remote.id}, created for an earlier ManagedPostgres with this namespace/name "
                f"(uid {observed.previous_owner}, no longer in this cluster)"
            )
        else:
            why = f"Found service {remote.id} by its owner tag; adopting it"
        if observed.found_by in ("adopt", "reattach"):
            why += "; the API never returns a password, so a new one is set and published"
        p.events.append(Event.normal(EventReason.ADOPTED, why))
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


def _record_replica(p: Plan, desired: Desired, observed: Observed, remote: PostgresServiceListItem) -> None:
    """status.readReplicaOf of a replica (released once the service shows it was promoted)."""
    replica, events = replication.replica_status(desired, observed, remote)
    if replica is not None:
        p.status["readReplicaOf"] = replica
    p.events.extend(events)
    if observed.status.waiting_for_backup is not None:
        p.status["waitingForBackup"] = None


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
    if diffs and replication.is_replica(desired, observed.status, remote):
        problems.append(
            Condition.false(
                Reason.TERMINAL_READ_REPLICA,
                f"The service is a read replica and differs from the spec in {', '.join(diffs)}: the API does not "
                "allow changing a replica (size and haType are its primary's). Set them back, or promote it first "
                "(annotation clickhouse.cloud/promote)",
            )
        )
        return _UpdateProgress(diffs, False)
    if diffs:
        if pending is not None and pending.matched_at:
            # It showed, then flipped back: not applied after all (the request stays in flight).
            p.status["pendingUpdate"] = {"digest": pending.digest, "sentAt": pending.sent_at, "matchedAt": None}
        digest = desired.mutable_digest()
        sent_at = parse_time(pending.sent_at) if pending else None
        already_sent = (
            pending is not None
            and pending.digest == digest
            and sent_at is not None
            and observed.now - sent_at < UPDATE_SETTLE
        )
        rejected = recent_rejection(observed)
        if rejected:
            problems.append(rejected)
            return _UpdateProgress(diffs, False)
        # A LIST older than this operator's own last request (a claim, an update) may not show it yet.
        stale = observed.snapshot_stale and not observed.fetched_by_id
        if not already_sent and not stale and remote.state == ServiceState.RUNNING:
            p.actions.append(UpdateService(remote.id or "", digest, diffs))
        return _UpdateProgress(diffs, True)  # sent, settling, or waiting for running
    if pending is None:
        return _UpdateProgress(diffs, False)
    matched_at = parse_time(pending.matched_at)
    if matched_at is None:
        p.status["pendingUpdate"] = {
            "digest": pending.digest,
            "sentAt": pending.sent_at,
            "matchedAt": observed.now.isoformat(),
        }
        return _UpdateProgress(diffs, True)
    if observed.now - matched_at < update_confirm:
        return _UpdateProgress(diffs, True)
    p.status["pendingUpdate"] = None
    return _UpdateProgress(diffs, False)


def _plan_day2(
    p: Plan,
    desired: Desired,
    observed: Observed,
    remote: PostgresServiceListItem,
    update: _UpdateProgress,
    problems: list[Condition],
) -> _UpdateProgress:
    """Configuration, then state commands (none while an update or a configuration is being sent)."""
    config = configuration.plan_configuration(desired, observed, remote.id or "", recent_rejection(observed))
    p.actions.extend(config.actions)
    p.status.update(config.status)
    p.events.extend(config.events)
    p.restart_required = config.restart_required
    if config.problem is not None:
        problems.append(config.problem)
    sent = commands.plan_commands(desired, observed, remote, busy=update.in_flight or bool(config.actions))
    p.actions.extend(sent.actions)
    p.status.update(sent.status)
    p.events.extend(sent.events)
    problems.extend(sent.problems)
    diffs = update.diffs + (("configuration",) if config.in_flight else ())
    diffs += tuple(a.command for a in sent.actions if isinstance(a, SendCommand))
    return _UpdateProgress(diffs, update.in_flight or config.in_flight or sent.waiting)


def _plan_credentials(
    p: Plan, desired: Desired, observed: Observed, remote: PostgresServiceListItem, problems: list[Condition]
) -> bool:
    """Publish the Secret when it is not current, set the password when it is not the one the API
    accepted last (or the user's, or a rotation is asked for); returns True when, after the plan's
    actions, the Secret holds what it should."""
    if secret_left_by_earlier(desired, observed):
        return False  # in flight until the garbage collector has deleted it
    taken = secret_conflict(desired, observed)
    if taken:
        problems.insert(0, Condition.false(Reason.TERMINAL_SECRET_CONFLICT, taken))
        return False
    if remote.state != ServiceState.RUNNING:
        return False
    secret = observed.secret
    service_id = remote.id or ""
    name = remote.name or desired.service_name
    refresh = (
        secret is None
        or not secret.endpoint_current(service_id, remote.name)
        or not secret.layout_current(desired.secret_shape)
    )
    brought = observed.brought_password
    if observed.brought_password_problem:
        problems.append(Condition.false(Reason.TERMINAL_PASSWORD, observed.brought_password_problem))
        if refresh:
            p.actions.append(PublishSecret(service_id, name, True, PasswordMode.KEEP))
        return False
    if brought is not None and not password_acceptable(brought):
        problems.append(Condition.false(Reason.TERMINAL_PASSWORD, f"{_password_rules(desired, brought=True)}"))
        return False
    if desired.observe_only:
        if refresh or (brought is not None and (secret is None or secret.password != brought)):
            p.actions.append(PublishSecret(service_id, name, True, PasswordMode.OBSERVED))
        return True
    confirmed = secret is not None and secret.password_confirmed(service_id, observed.status.password_version)
    if brought is not None and secret is not None and secret.password != brought:
        confirmed = False
    rotation = (
        desired.rotate_token
        if desired.rotate_token and desired.rotate_token != observed.status.password_rotation_token
        else None
    )
    credentials_ok = True
    if replication.is_replica(desired, observed.status, remote):
        # Replicas inherit the primary's password; the API refuses to set one.
        mode, credentials_ok = replication.replica_password_mode(desired, observed, confirmed)
        if desired.read_replica_of is None:
            credentials_ok = confirmed or credentials_ok
        rotation = None
    elif brought is not None:
        mode = PasswordMode.KEEP if confirmed and not rotation else PasswordMode.BRING
    elif confirmed:
        mode = PasswordMode.GENERATE if rotation else PasswordMode.KEEP
    elif not rotation and _carried_password(desired, observed, service_id):
        mode = PasswordMode.CARRY
    elif secret is not None and secret.password and not password_acceptable(secret.password):
        mode = PasswordMode.KEEP
        credentials_ok = False
        problems.append(Condition.false(Reason.TERMINAL_PASSWORD, _password_rules(desired, brought=False)))
    else:
        # An unconfirmed password in the Secret (edited by a user, or a change cut short by a crash)
        # is applied, which also completes an interrupted rotation; none at all: a new one.
        mode = PasswordMode.APPLY if secret is not None and secret.password else PasswordMode.GENERATE
    if refresh or mode != PasswordMode.KEEP:
        p.actions.append(
            PublishSecret(service_id, name, refresh, mode, rotation if mode != PasswordMode.KEEP else None)
        )
    return credentials_ok


def _carried_password(desired: Desired, observed: Observed, service_id: str) -> bool:
    """The spec names another connection Secret than before, and the earlier one (this resource's)
    holds the password the API accepted last: that password moves to the new Secret, unless the new
    one holds a password a user put there to have it set."""
    before, now = observed.previous_secret, observed.secret
    if before is None or not before.owned_by(desired.uid):
        return False
    if not before.password_confirmed(service_id, observed.status.password_version):
        return False
    return now is None or not now.password or now.password_written_here(service_id)


def _password_rules(desired: Desired, *, brought: bool) -> str:
    rules = "12+ characters with lower case, upper case and a digit"
    if brought and desired.password_secret:
        secret, key = desired.password_secret
        return f"The password in Secret {secret} (key {key}, spec.passwordSecretRef) does not meet the API's rules ({rules})"
    return (
        f"The password in Secret {desired.connection_secret_name} does not meet the API's rules ({rules}); "
        "delete the key to have the operator generate one"
    )


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
    elif desired.observe_only:
        differs = (
            f"; differs from the spec in {', '.join(update.diffs)} (not changed: observe only)" if update.diffs else ""
        )
        p.synced = Condition.true(
            Reason.OBSERVING, f"managementPolicy is Observe: nothing is sent to the service{differs}"
        )
    else:
        p.synced = Condition.true(
            Reason.RECONCILED, "The service matches the spec" if not update.diffs else "Update sent"
        )
    taken = next((c for c in problems if c.reason == Reason.TERMINAL_SECRET_CONFLICT), None)
    state = remote.state or ""
    if running and credentials_ok:
        p.ready = Condition.true(
            Reason.AVAILABLE, f"Service is running; Secret {desired.connection_secret_name} is published"
        )
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
    diffs_matter = bool(update.diffs) and not desired.observe_only
    p.fully_applied = running and credentials_ok and not diffs_matter and not problems and not update.in_flight
    p.active = not (running and credentials_ok and not update.in_flight) and not problems
    if update.in_flight and p.ready.is_true:
        p.ready = Condition.true(Reason.UPDATING, f"Service is running; applying changes to {', '.join(update.diffs)}")


def _plan_without_remote(desired: Desired, observed: Observed, p: Plan, create_grace: timedelta) -> Plan:
    """No service is listed for the resource: wait, confirm it is gone, or create it."""
    status = observed.status
    p.ready = Condition.false(Reason.CREATING, "The service is being created")
    wanted_id = status.service_id or desired.adopt_service_id

    if wanted_id and observed.snapshot_stale:
        p.synced = Condition.true(Reason.RECONCILED, f"Waiting for service {wanted_id} to be listed")
        return p
    if wanted_id and not observed.confirmed_gone:
        # The LIST does not show the service: confirm with a GET before believing it.
        p.actions.append(ConfirmGone(wanted_id))
        p.synced = Condition.unknown(Reason.API_ERROR, f"Service {wanted_id} is not listed; checking")
        return p
    if not status.service_id and desired.adopt_service_id:
        msg = (
            f"spec.serviceId names service {desired.adopt_service_id}, which organization "
            f"{observed.organization_id or '(unknown)'} does not have (GET answered 404); nothing is created"
        )
        p.synced = p.ready = Condition.false(Reason.TERMINAL_SERVICE_NOT_FOUND, msg)
        p.events.append(Event.warning(EventReason.SERVICE_MISSING, msg))
        p.active = False
        return p
    if status.service_id and (desired.on_service_missing != OnServiceMissing.RECREATE or desired.observe_only):
        msg = (
            f"Service {status.service_id} no longer exists in ClickHouse Cloud (GET answered 404); nothing is "
            "created (onServiceMissing is Fail). To start afresh with a new, empty service, set "
            "spec.onServiceMissing: Recreate"
        )
        p.synced = p.ready = Condition.false(Reason.TERMINAL_SERVICE_MISSING, msg)
        p.events.append(Event.warning(EventReason.SERVICE_MISSING, msg))
        p.active = False
        return p
    if desired.observe_only:
        msg = (
            f"managementPolicy is Observe and no service carries this resource's owner tag ({TAG_UID}={desired.uid}): "
            "set spec.serviceId to the service to observe"
        )
        p.synced = p.ready = Condition.false(Reason.TERMINAL_SERVICE_NOT_FOUND, msg)
        p.active = False
        return p
    waiting = secret_left_by_earlier(desired, observed)
    if waiting:  # nothing is created before the Secret is free
        p.synced = p.ready = Condition.false(Reason.CREDENTIALS_PENDING, waiting)
        p.active = True
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
            Event.warning(
                EventReason.SERVICE_MISSING,
                f"Service {status.service_id} no longer exists in ClickHouse Cloud; creating a new one (onServiceMissing is Recreate)",
            )
        )
        p.status.update({"serviceId": None, "state": None, "hostname": None, "passwordVersion": None})

    pending_since = parse_time(status.create_pending_since)
    attempts = status.create_attempts or 0
    if pending_since is not None and not status.service_id:
        waited = observed.now - pending_since
        if (
            observed.snapshot_stale
            or not observed.snapshot_after_pending
            or waited < create_wait(create_grace, attempts)
        ):
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

    from_source = replication.plan_create(desired, observed)
    if from_source is not None and from_source.action is None:
        assert from_source.condition is not None
        p.synced = p.ready = from_source.condition
        p.active = not from_source.terminal
        return p
    p.actions.append(from_source.action if from_source is not None and from_source.action else CreateService())
    p.synced = Condition.true(Reason.RECONCILED, "Create requested")
    return p
