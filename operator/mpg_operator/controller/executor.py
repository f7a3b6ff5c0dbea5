"""The executor: runs one pass of a ManagedPostgres as a short sequence of named steps around the
pure core (:mod:`mpg_operator.reconcile`), and one deletion step.

A live pass: read the resource → connect (its API key) → hold the credentials Secret →
observe (the organization's shared LIST, the connection Secret) → plan (pure) → execute the
plan's actions → persist status and events, once.

Two writes happen before that one status write, because a crash right after them must be
survivable: the create-pending mark (``createPendingSince``, before the POST: after a crash the
service is looked for by its owner tag before it is ever created again) and a password (in the
Secret, and its version in status, before it is sent to the API). Every remote call may fail;
the order of the steps is chosen so that a crash between any two of them loses no password and
never creates a second service.

Handlers (:mod:`mpg_operator.controller.handlers`) call :meth:`Executor.run_pass` in a loop per
resource and :meth:`Executor.finalize` on deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic

from mpg_operator.cloud.client import CloudClient
from mpg_operator.cloud.errors import (
    AmbiguousCreateError,
    AuthError,
    CloudError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermanentCloudError,
    TemporaryCloudError,
)
from mpg_operator.cloud.ids import same_id
from mpg_operator.cloud.models import PostgresService, PostgresServiceListItem, ServiceState, StateCommand
from mpg_operator.controller.cloudaccess import (
    ClientPool,
    Credentials,
    CredentialsError,
    ServiceSnapshots,
    resolve_credentials,
)
from mpg_operator.controller.kube import KubeApi, SecretKeyError
from mpg_operator.controller.logfields import decision_fields
from mpg_operator.controller.settings import OperatorSettings
from mpg_operator.reconcile import commands, configuration, decisions, deletion, planner, replication
from mpg_operator.reconcile.connection import (
    Endpoint,
    ObservedSecret,
    SecretConflictError,
    SecretRejectedError,
    generate_password,
    new_password_version,
    secret_write,
)
from mpg_operator.reconcile.desired import TAG_NAME, TAG_NAMESPACE, Desired, desired_from
from mpg_operator.reconcile.model import (
    AdoptService,
    ApplyConfiguration,
    ClaimService,
    Condition,
    ConfirmGone,
    CreateService,
    DeleteService,
    Event,
    EventReason,
    EventType,
    Observed,
    PasswordMode,
    Plan,
    PublishSecret,
    Reason,
    SendCommand,
    SourceResource,
    UpdateService,
    parse_time,
    rfc3339,
)
from mpg_operator.resource import ManagedPostgresSpec, ManagedPostgresStatus, RestartPolicy

log = logging.getLogger(__name__)

EventSink = Callable[[dict[str, Any], str, str, str], None]
"""(resource body, type, reason, message) -> None; posts a Kubernetes Event."""

SECRET_WRITE_ATTEMPTS = 4
"""Tries to store a password the API returned once (create), with backoff, before giving up on it."""

EVENT_REPEAT_AFTER = 600.0
"""Seconds before the same event (resource, reason, message) is posted again."""


class DeletionStarted(Exception):
    """The resource began deleting while a pass was about to create its service: nothing is sent."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class PassResult:
    """What a pass did, for the loop that schedules the next one."""

    requeue_after: float
    ready: bool = False
    error: str | None = None
    active: bool = False
    """Something is in flight (creating, updating, publishing): the next pass comes soon."""


@dataclass
class Resource:
    """One ManagedPostgres as read at the start of a pass (``body`` follows this pass's writes)."""

    body: dict[str, Any]
    status: ManagedPostgresStatus
    desired: Desired | None
    invalid: decisions.Failure | None = None

    @property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.body["metadata"]
        return meta

    @property
    def generation(self) -> int:
        return int(self.meta.get("generation") or 0)

    @property
    def stored_status(self) -> dict[str, Any]:
        return self.body.get("status") or {}

    @property
    def ready_was_true(self) -> bool:
        return any(c.type == "Ready" and c.status == "True" for c in self.status.conditions or [])


@dataclass
class Outcome:
    """What executing a plan changed: status fields and events to add."""

    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


class Executor:
    """Executes passes and deletion steps for ManagedPostgres resources."""

    def __init__(
        self,
        *,
        kube: KubeApi,
        settings: OperatorSettings,
        clients: ClientPool,
        snapshots: ServiceSnapshots,
        post_event: EventSink,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.clients = clients
        self.snapshots = snapshots
        self.post_event = post_event
        self._create_grace = timedelta(seconds=settings.create_grace)
        self._update_confirm = timedelta(seconds=settings.update_confirm)
        self._last_mutation: dict[str, float] = {}
        self._protected: dict[str, str | None] = {}
        self._recent_events: dict[tuple[str, str, str], float] = {}
        self._delete_conflicts: dict[str, int] = {}
        self._claim_locks: dict[tuple[str, str], asyncio.Lock] = {}

    # --- the live pass ---------------------------------------------------------------------

    async def run_pass(self, namespace: str, name: str) -> PassResult:
        """One pass for a live resource; returns when to run the next one."""
        resource = await self._read(namespace, name)
        if resource is None:
            return PassResult(requeue_after=self.settings.poll_interval)
        if resource.desired is None:
            assert resource.invalid is not None
            return await self._persist_failure(resource, resource.invalid, None, Outcome())
        desired = resource.desired
        if desired.paused:
            return await self._persist_failure(resource, decisions.paused(desired), None, Outcome())
        try:
            client, credentials = await self._connect(desired)
            await self._hold_credentials(resource, desired)
        except CredentialsError as e:
            return await self._persist_failure(
                resource, decisions.credentials_unusable(str(e), resource.ready_was_true), None, Outcome()
            )
        plan: Plan | None = None
        outcome = Outcome()
        try:
            observed = await self._observe(client, resource, with_secret=True)
            plan = await self._plan(client, desired, observed)
            await self._execute(plan, resource, client, observed, outcome)
        except DeletionStarted:
            return PassResult(requeue_after=self.settings.poll_interval)
        except (CloudError, SecretConflictError, SecretRejectedError) as e:
            failure = decisions.classify(
                e,
                desired=desired,
                credentials_source=credentials.source,
                organization_id=credentials.organization_id,
                listed=plan is not None,
                creating=plan is not None and any(isinstance(a, CreateService) for a in plan.actions),
            )
            return await self._persist_failure(resource, failure, plan, outcome)
        return await self._persist(resource, plan, outcome)

    async def _read(self, namespace: str, name: str) -> Resource | None:
        """The resource as stored now, its spec resolved against the operator's defaults."""
        body = await self.kube.get_resource(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        status = ManagedPostgresStatus.model_validate(body.get("status") or {})
        try:
            return Resource(body, status, self._desired(body))
        except pydantic.ValidationError as e:
            message = "Invalid spec: " + "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            cond = Condition.false(Reason.TERMINAL_INVALID_SPEC, message)
            failure = decisions.Failure(cond, Event.warning(EventReason.INVALID_SPEC, message), retry_soon=False)
            return Resource(body, status, None, failure)

    async def _connect(self, desired: Desired) -> tuple[CloudClient, Credentials]:
        credentials = await resolve_credentials(
            self.kube, desired.namespace, desired.credentials_secret_name, self.settings.default_credentials_secret
        )
        return self.clients.get(credentials), credentials

    async def _observe(
        self, client: CloudClient, resource: Resource, *, with_secret: bool, max_age: float | None = None
    ) -> Observed:
        """The organization's shared LIST (batched: a recent one serves every resource), the
        connection Secret and a password the user brings. The plan waits rather than acting on a
        LIST that cannot show this operator's own last request."""
        desired, status = resource.desired, resource.status
        assert desired is not None
        if max_age is None:
            in_flight = bool(status.create_pending_since or status.pending_update or not resource.ready_was_true)
            max_age = decisions.list_max_age(
                steady=self.settings.list_max_age,
                active_interval=self.settings.poll_interval_active,
                in_flight=in_flight,
            )
        pending = parse_time(status.create_pending_since)
        snap = await self.snapshots.get(client, max_age=max_age)
        observed = Observed(
            now=_now(),
            status=status,
            remote=None,
            snapshot_after_pending=pending is None or snap.fetched_at >= pending.timestamp(),
            snapshot_stale=snap.fetched_at < self._last_mutation.get(desired.uid, 0.0),
            last_rejection=decisions.last_rejection(status.conditions or [], resource.generation),
            organization_id=client.organization_id,
        )
        observed = await self._found(desired, observed, planner.locate(snap.services, status.service_id, desired))
        if with_secret:
            secret = await self.kube.observe_connection_secret(desired.namespace, desired.connection_secret_name)
            if secret is not None:
                secret = dataclasses.replace(secret, legacy_prefix=desired.secret_shape.key_prefix)
            previous = await self._previous_secret(desired, status)
            brought, problem = await self._brought_password(desired)
            observed = dataclasses.replace(
                observed,
                secret=secret,
                previous_secret=previous,
                brought_password=brought,
                brought_password_problem=problem,
            )
            observed = await self._observe_configuration(client, desired, observed)
            observed = await self._observe_source(desired, observed, snap.services)
        return observed

    async def _previous_secret(self, desired: Desired, status: ManagedPostgresStatus) -> ObservedSecret | None:
        """The connection Secret status names, when the spec names another one now (read only then)."""
        name = status.connection_secret_name
        if not name or name == desired.connection_secret_name:
            return None
        return await self.kube.observe_connection_secret(desired.namespace, name)

    # --- read replicas and restores: their source ---------------------------------------------

    async def _observe_source(
        self, desired: Desired, observed: Observed, services: list[PostgresServiceListItem]
    ) -> Observed:
        """The ManagedPostgres a replica or a restore names (its service in the LIST and, for a replica,
        its current confirmed password); or whether the LIST shows spec.restoreFrom.serviceId."""
        restore = desired.restore_from
        if restore is not None and restore.service_id is not None:
            listed = any(s.id == restore.service_id for s in services)
            return dataclasses.replace(observed, source_service_listed=listed)
        name = desired.read_replica_of or (restore.managed_postgres if restore else None)
        if name is None:
            return observed
        body = await self.kube.get_resource(desired.namespace, name)
        if body is None:
            return dataclasses.replace(observed, source=SourceResource(name=name, exists=False))
        status = ManagedPostgresStatus.model_validate(body.get("status") or {})
        service_id = status.service_id
        remote = next((s for s in services if service_id and s.id == service_id), None)
        password = None
        if desired.read_replica_of is not None and service_id:
            password = await self._confirmed_password_of(body, status)
        source = SourceResource(
            name=name,
            exists=True,
            deleting=bool(body["metadata"].get("deletionTimestamp")),
            service_id=service_id,
            state=(remote.state if remote else None) or status.state,
            listed=remote is not None,
            organization_id=status.organization_id,
            password=password,
        )
        return dataclasses.replace(observed, source=source)

    async def _confirmed_password_of(self, body: dict[str, Any], status: ManagedPostgresStatus) -> str | None:
        """A ManagedPostgres's current password: from its connection Secret, when the operator wrote it
        for that resource and it is the one the API accepted last."""
        try:
            other = self._desired(body)
        except pydantic.ValidationError:
            return None
        secret = await self.kube.observe_connection_secret(other.namespace, other.connection_secret_name)
        if secret is None or not secret.owned_by(other.uid) or not status.service_id:
            return None
        secret = dataclasses.replace(secret, legacy_prefix=other.secret_shape.key_prefix)
        if not secret.password_confirmed(status.service_id, status.password_version):
            return None
        return secret.password

    async def _observe_configuration(self, client: CloudClient, desired: Desired, observed: Observed) -> Observed:
        """GET the service's configuration when the plan will need it (spec changed, a write to
        verify, or the periodic check): unconfigured resources cost no request."""
        remote = observed.remote
        if (
            remote is None
            or remote.state != ServiceState.RUNNING
            or desired.observe_only
            or not configuration.needs_read(
                desired, observed.status, observed.now, timedelta(seconds=self.settings.config_resync)
            )
        ):
            return observed
        try:
            remote_config = await client.get_config(remote.id or "")
        except (NotFoundError, InvalidRequestError, TemporaryCloudError) as e:
            # The service may have gone since the LIST: the plan decides from the LIST; read next pass.
            log.warning("%s/%s: cannot read the configuration of %s: %s", desired.namespace, desired.name, remote.id, e)
            return observed
        return dataclasses.replace(observed, remote_config=remote_config)

    async def _found(self, desired: Desired, observed: Observed, located: planner.Located) -> Observed:
        """The observation with what ``located`` found; for a service to take over, whether the
        resource its owner tag names still exists (then it is never taken over)."""
        alive = False
        if located.remote is not None and located.previous_owner:
            tags = located.remote.tag_map()
            namespace, name = tags.get(TAG_NAMESPACE), tags.get(TAG_NAME)
            alive = True  # unless shown otherwise: never take a service from a resource that may exist
            if namespace and name:
                try:
                    owner = await self.kube.get_resource(namespace, name)
                    alive = owner is not None and same_id(owner["metadata"].get("uid"), located.previous_owner)
                except Exception:  # noqa: BLE001 -- cannot look (e.g. another namespace, no access)
                    log.warning(
                        "Cannot check whether %s/%s (uid %s) exists; not taking its service over",
                        namespace,
                        name,
                        located.previous_owner,
                    )
        return dataclasses.replace(
            observed,
            remote=located.remote,
            duplicates=located.duplicates,
            found_by=located.found_by,
            previous_owner=located.previous_owner,
            previous_owner_alive=alive,
        )

    async def _brought_password(self, desired: Desired) -> tuple[str | None, str | None]:
        """The password of spec.passwordSecretRef, or why it cannot be read."""
        if desired.password_secret is None:
            return None, None
        name, key = desired.password_secret
        try:
            values = await self.kube.read_secret_data(desired.namespace, name, (key,))
        except SecretKeyError as e:
            return None, f"spec.passwordSecretRef: {e}"
        return values[key], None

    async def _plan(self, client: CloudClient, desired: Desired, observed: Observed) -> Plan:
        """The core's plan; when it asks, GET the service first (or claim it) and plan again with the answer."""
        plan = self._plan_once(desired, observed)
        confirm = next((a for a in plan.actions if isinstance(a, ConfirmGone)), None)
        if confirm is not None:
            observed = await self._confirm_gone(client, observed, confirm.service_id, desired)
            plan = self._plan_once(desired, observed)
        claim = next((a for a in plan.actions if isinstance(a, ClaimService)), None)
        if claim is not None:
            observed = await self._claim(client, desired, observed, claim.service_id)
            plan = self._plan_once(desired, observed)
        return plan

    @contextlib.asynccontextmanager
    async def _mutating(self, uid: str) -> AsyncIterator[None]:
        """Around a request that changes the service: a LIST sent before its answer (or its failure)
        came back may not show it, so it counts as older than this operator's last action."""
        self._last_mutation[uid] = time.time()
        try:
            yield
        finally:
            self._last_mutation[uid] = time.time()

    def _plan_once(self, desired: Desired, observed: Observed) -> Plan:
        return planner.plan(desired, observed, create_grace=self._create_grace, update_confirm=self._update_confirm)

    async def _claim(self, client: CloudClient, desired: Desired, observed: Observed, service_id: str) -> Observed:
        """Claim a service to take over; the observation read back after the claim.

        Claims of one service in this operator take turns, and each reads the service afresh once it
        has the turn, so a claim never decides from a LIST older than another resource's claim: the
        first claimant writes its owner tags, every later one reads them, finds a live owner and is
        refused. Only what the API shows after the write counts: the plan adopts the service if the
        service then carries this resource's uid, and is refused if another resource's.
        """
        lock = self._claim_locks.setdefault((client.organization_id, service_id), asyncio.Lock())
        async with lock:
            observed = await self._confirm_gone(client, observed, service_id, desired)
            if not any(isinstance(a, ClaimService) for a in self._plan_once(desired, observed).actions):
                return observed  # refused, gone, or already this resource's
            try:
                async with self._mutating(desired.uid):
                    await client.update_service(service_id, desired.claim_request())
            except TemporaryCloudError as e:  # it may have been applied: what the API shows now decides
                log.warning("%s/%s: claim of service %s unanswered: %s", desired.namespace, desired.name, service_id, e)
            after = await self._confirm_gone(client, observed, service_id, desired)
        if after.remote is not None and planner.owner_uid(after.remote) == desired.uid:
            # Claimed: the service is taken over as it was found (for the Adopted event's account of it).
            after = dataclasses.replace(
                after, found_by=observed.found_by, previous_owner=observed.previous_owner, previous_owner_alive=False
            )
        return dataclasses.replace(after, claim_sent=True)

    async def _confirm_gone(
        self, client: CloudClient, observed: Observed, service_id: str, desired: Desired | None = None
    ) -> Observed:
        """GET the service: a 404 confirms it is gone; otherwise the GET's answer is the observation."""
        try:
            service = await client.get_service(service_id)
        except NotFoundError:
            return dataclasses.replace(observed, remote=None, confirmed_gone=True)
        observed = dataclasses.replace(observed, fetched_by_id=True, snapshot_stale=False)
        if desired is None:
            return dataclasses.replace(observed, remote=service)
        return await self._found(desired, observed, planner.locate([service], observed.status.service_id, desired))

    async def _execute(
        self, plan: Plan, resource: Resource, client: CloudClient, observed: Observed, outcome: Outcome
    ) -> None:
        desired = resource.desired
        assert desired is not None
        for action in plan.actions:
            if isinstance(action, AdoptService):
                await self._patch_status(resource, {"serviceId": action.service_id, "createPendingSince": None})
            elif isinstance(action, CreateService):
                await self._create(resource, client, observed, outcome, action)
            elif isinstance(action, UpdateService):
                async with self._mutating(desired.uid):
                    await client.update_service(action.service_id, desired.patch_request())
                outcome.status["pendingUpdate"] = {"digest": action.digest, "sentAt": rfc3339(_now())}
                outcome.events.append(
                    Event.normal(
                        EventReason.UPDATED,
                        f"Sent update of {', '.join(action.changed)} to service {action.service_id}",
                    )
                )
            elif isinstance(action, PublishSecret):
                await self._publish_secret(resource, client, observed, action, outcome)
            elif isinstance(action, ApplyConfiguration):
                await self._apply_configuration(resource, client, action, outcome)
            elif isinstance(action, SendCommand):
                await self._send_command(resource, client, action, outcome)
            elif isinstance(action, DeleteService):
                async with self._mutating(desired.uid):
                    await client.delete_service(action.service_id)
                outcome.events.append(
                    Event.normal(EventReason.DELETE_REQUESTED, f"Requested deletion of service {action.service_id}")
                )

    async def _apply_configuration(
        self, resource: Resource, client: CloudClient, action: ApplyConfiguration, outcome: Outcome
    ) -> None:
        """Mark the configuration as being sent, replace it, and record the answer at once (a
        restart the API asks for must not be forgotten by a crash before the pass ends)."""
        desired = resource.desired
        assert desired is not None
        stored = dict(resource.stored_status.get("configuration") or {})
        await self._patch_status(resource, {"configuration": {**stored, "sendingDigest": action.digest}})
        async with self._mutating(desired.uid):
            answer = await client.replace_config(action.service_id, action.config)
        status = ManagedPostgresStatus.model_validate(resource.stored_status)
        fields = configuration.applied_status(status, action, answer.message, _now())
        changes = decisions.status_changes(resource.stored_status, fields)
        if changes:
            await self._patch_status(resource, changes)
        outcome.events.append(
            Event.normal(
                EventReason.CONFIGURATION_APPLIED,
                f"Sent configuration ({', '.join(action.changed)}) to service {action.service_id}",
            )
        )
        restart = configuration.restart_parameters(answer.message)
        if restart:
            how = (
                "the operator restarts the service (restartPolicy OnConfigChange)"
                if desired.restart_policy == RestartPolicy.ON_CONFIG_CHANGE
                else "restart with the annotation clickhouse.cloud/restart=<new token> (restartPolicy Never)"
            )
            outcome.events.append(
                Event.normal(EventReason.RESTART_REQUIRED, f"{', '.join(restart)} take effect after a restart; {how}")
            )

    async def _send_command(
        self, resource: Resource, client: CloudClient, action: SendCommand, outcome: Outcome
    ) -> None:
        """Record the command as being sent, send it once, record the outcome (see :mod:`.commands`)."""
        desired = resource.desired
        assert desired is not None
        stored = dict(resource.stored_status.get("commands") or {})
        previous = stored.get(action.command)

        async def record(phase: commands.CommandPhase, message: str | None = None) -> None:
            entry = commands.command_record(action.token, phase, rfc3339(_now()), message)
            await self._patch_status(resource, {"commands": {**stored, action.command: entry}})

        await record(commands.CommandPhase.SENDING)
        try:
            async with self._mutating(desired.uid):
                await client.set_state(action.service_id, action.command)
        except AmbiguousCreateError as e:
            await record(commands.CommandPhase.UNKNOWN, e.detail)
            outcome.events.append(
                Event.warning(
                    EventReason.COMMAND_OUTCOME_UNKNOWN,
                    f"No answer to the {action.command} for token {action.token}; it may have happened and is not "
                    f"sent again. To ask again, set {commands.ANNOTATIONS[StateCommand(action.command)]} to a new "
                    "token",
                )
            )
            return
        except PermanentCloudError as e:
            await record(commands.CommandPhase.FAILED, e.detail)
            outcome.events.append(
                Event.warning(
                    EventReason.COMMAND_REFUSED,
                    f"The API refused the {action.command} for token {action.token}: {e.detail}",
                )
            )
            return
        except CloudError:
            # Not sent (no connection, rate limited): withdraw the mark so the next pass sends it.
            await self._patch_status(resource, {"commands": {**stored, action.command: previous}})
            raise
        await record(commands.CommandPhase.SENT)
        why = "restartPolicy OnConfigChange" if action.token.startswith("config-") else f"token {action.token}"
        outcome.events.append(
            Event.normal(EventReason.COMMAND_SENT, f"Sent {action.command} to service {action.service_id} ({why})")
        )
        if action.command == StateCommand.RESTART:
            outcome.status["pendingRestart"] = None

    async def _persist(self, resource: Resource, plan: Plan, outcome: Outcome) -> PassResult:
        """The one status write of the pass (only what changed), then the events."""
        await self._write_status(
            resource,
            {**plan.status, **outcome.status},
            plan.synced,
            plan.ready,
            applied=plan.fully_applied,
            restart_required=plan.restart_required,
        )
        self._emit(resource.body, plan.events + outcome.events)
        ready = bool(plan.ready and plan.ready.is_true)
        return PassResult(requeue_after=self._interval(plan.active), ready=ready, active=plan.active)

    async def _persist_failure(
        self, resource: Resource, failure: decisions.Failure, plan: Plan | None, outcome: Outcome
    ) -> PassResult:
        fields = {**(plan.status if plan else {}), **outcome.status}
        ready = failure.ready
        publishing = plan is not None and any(isinstance(a, PublishSecret) for a in plan.actions)
        if ready is None and publishing:
            # The Secret may already hold a password the API has not accepted: not Ready.
            ready = Condition.false(
                Reason.CREDENTIALS_PENDING, f"Publishing the connection Secret failed: {failure.synced.message}"
            )
        elif ready is None and plan is not None and plan.ready is not None and not plan.ready.is_true:
            ready = plan.ready
        await self._write_status(resource, fields, failure.synced, ready, applied=False)
        self._emit(resource.body, (plan.events if plan else []) + outcome.events + [failure.event])
        active = failure.retry_soon
        return PassResult(requeue_after=self._interval(active), error=failure.synced.message, active=active)

    # --- create ----------------------------------------------------------------------------

    async def _create(
        self,
        resource: Resource,
        client: CloudClient,
        observed: Observed,
        outcome: Outcome,
        action: CreateService | None = None,
    ) -> None:
        desired = resource.desired
        assert desired is not None
        action = action or CreateService()
        # 1. The Secret the password will go to is ours and storable before anything is created.
        await self._write_secret(resource, None, "", "", "", None)
        # 2. Announce the create before sending it: after a crash we look for the service first.
        version = new_password_version()
        announced = await self._patch_status(
            resource,
            {
                "createPendingSince": rfc3339(_now(), precise=True),
                "createAttempts": (observed.status.create_attempts or 0) + 1,
                "organizationId": client.organization_id,
                "passwordVersion": version,
            },
        )
        if announced.get("metadata", {}).get("deletionTimestamp"):
            # Deletion began meanwhile; nothing is sent, and the finalizer needs not wait.
            await self._patch_status(resource, {"createPendingSince": None, "createAttempts": None})
            raise DeletionStarted()
        try:
            async with self._mutating(desired.uid):
                service = await self._send_create(client, desired, action)
        except (InvalidRequestError, ConflictError, AuthError, NotFoundError) as e:
            if isinstance(e, NotFoundError) and not action.source_service_id:
                raise  # not an answer a create gets: the pending mark stays, the service is looked for first
            # Rejected (or the source service is gone): nothing exists.
            rejected: dict[str, Any] = {"createPendingSince": None, "createAttempts": None}
            if action.source_service_id and replication.backup_not_ready(e):
                attempts = (
                    observed.status.waiting_for_backup.attempts if observed.status.waiting_for_backup else 0
                ) + 1
                base = timedelta(seconds=self.settings.poll_interval_active)
                rejected["waitingForBackup"] = replication.backup_wait(_now(), attempts, base)
            await self._patch_status(resource, rejected)
            raise
        recorded: dict[str, Any] = {
            "serviceId": service.id,
            "createPendingSince": None,
            "createAttempts": None,
            "state": service.state,
            "hostname": service.hostname,
            "username": service.username,
            "waitingForBackup": None,
            **self._created_from(desired, action),
        }
        try:
            # 3. The password is returned this once: persist it before anything else.
            if service.password is not None and service.id:
                await self._store_initial_password(resource, client, service, version, observed.secret)
        finally:
            await self._patch_status(resource, recorded)
            outcome.status.update(recorded)
            self._emit(
                resource.body,
                [Event.normal(EventReason.CREATED, self._created_message(desired, action, service.id))],
            )

    @staticmethod
    def _created_message(desired: Desired, action: CreateService, service_id: str | None) -> str:
        if action.source_service_id is None:
            return f"Created service {service_id} ({desired.service_name}, {desired.size}, {desired.region})"
        if action.read_replica:
            return (
                f"Created service {service_id} ({desired.service_name}), a read replica of {desired.read_replica_of} "
                f"(service {action.source_service_id})"
            )
        assert desired.restore_from is not None
        return (
            f"Created service {service_id} ({desired.service_name}), a restore of service {action.source_service_id} "
            f"as of {desired.restore_from.point_in_time}; a new password is set once it is running"
        )

    @staticmethod
    async def _send_create(client: CloudClient, desired: Desired, action: CreateService) -> PostgresService:
        """POST the create: a new service, a read replica of the source, or a restore of it."""
        if action.source_service_id is None:
            return await client.create_service(desired.create_request())
        if action.read_replica:
            return await client.create_read_replica(action.source_service_id, desired.read_replica_request())
        return await client.restore_service(action.source_service_id, desired.restore_request())

    @staticmethod
    def _created_from(desired: Desired, action: CreateService) -> dict[str, Any]:
        """Status fields naming what a replica or a restore was created from."""
        if action.source_service_id is None:
            return {}
        if action.read_replica and desired.read_replica_of:
            return {"readReplicaOf": {"name": desired.read_replica_of, "serviceId": action.source_service_id}}
        assert desired.restore_from is not None
        return {
            "restoredFrom": {
                "serviceId": action.source_service_id,
                "pointInTime": desired.restore_from.point_in_time,
            }
        }

    async def _store_initial_password(
        self,
        resource: Resource,
        client: CloudClient,
        service: PostgresService,
        version: str,
        before: ObservedSecret | None,
    ) -> None:
        desired = resource.desired
        assert desired is not None and service.password is not None and service.id
        password = service.password.get_secret_value()
        endpoint = Endpoint(hostname=service.hostname or "", username=service.username or "postgres", ca_pem="")
        delay = 0.5
        for attempt in range(SECRET_WRITE_ATTEMPTS):
            try:
                # No service name yet: until the CA is in, the Secret is not current.
                await self._write_secret(resource, endpoint, password, service.id, "", version, before)
                break
            except (SecretConflictError, SecretRejectedError):
                raise  # the next pass reports it; the password is then set anew
            except Exception:  # noqa: BLE001 -- Kubernetes unavailable for a moment: try again
                if attempt == SECRET_WRITE_ATTEMPTS - 1:
                    raise
                log.warning(
                    "Writing Secret %s/%s failed; retrying in %.1fs",
                    desired.namespace,
                    desired.connection_secret_name,
                    delay,
                )
                await asyncio.sleep(delay)
                delay *= 2
        self._emit(
            resource.body,
            [
                Event.normal(
                    EventReason.CREDENTIALS_PUBLISHED,
                    f"Wrote the initial credentials to Secret {desired.connection_secret_name}",
                )
            ],
        )
        try:
            ca = await client.get_ca_certificates(service.id)
        except CloudError:
            return  # the next pass fetches it
        endpoint = Endpoint(hostname=endpoint.hostname, username=endpoint.username, ca_pem=ca)
        await self._write_secret(
            resource, endpoint, password, service.id, service.name or desired.service_name, version, before
        )

    # --- the connection Secret ------------------------------------------------------------------

    async def _publish_secret(
        self, resource: Resource, client: CloudClient, observed: Observed, action: PublishSecret, outcome: Outcome
    ) -> None:
        """Write the connection Secret; a password to set goes into it before it goes to the API."""
        desired = resource.desired
        assert desired is not None
        secret = observed.secret
        if action.refresh_endpoint or secret is None or not secret.value("host"):
            service = await client.get_service(action.service_id)
            ca = await client.get_ca_certificates(action.service_id)
            endpoint = Endpoint(hostname=service.hostname or "", username=service.username or "postgres", ca_pem=ca)
        else:
            endpoint = Endpoint(
                hostname=secret.value("host") or "",
                username=secret.value("username") or "postgres",
                ca_pem=secret.value("ca.crt") or "",
            )
        outcome.status.update({"hostname": endpoint.hostname, "username": endpoint.username})

        async def write(password: str | None, version: str | None) -> None:
            await self._write_secret(
                resource, endpoint, password, action.service_id, action.service_name, version, secret
            )

        name = desired.connection_secret_name
        mode = action.password
        if mode in (PasswordMode.GENERATE, PasswordMode.APPLY, PasswordMode.BRING):
            if mode == PasswordMode.GENERATE:
                password = generate_password()
            elif mode == PasswordMode.BRING:
                assert observed.brought_password is not None
                password = observed.brought_password
            else:
                password = (secret.password if secret else None) or ""
            if mode != PasswordMode.APPLY:
                await write(password, None)  # the Secret first: a crash after this loses nothing
            version = await self._announce_password(resource)
            await client.set_password(action.service_id, password)
            await write(password, version)
            said = {
                PasswordMode.GENERATE: f"Set a new password and published it in Secret {name}",
                PasswordMode.APPLY: f"Applied the password from Secret {name}",
                PasswordMode.BRING: f"Set the password from spec.passwordSecretRef and published it in Secret {name}",
            }[mode]
            outcome.events.append(Event.normal(EventReason.CREDENTIALS_PUBLISHED, said))
            if action.rotation_token:
                outcome.status["passwordRotationToken"] = action.rotation_token
                outcome.events.append(
                    Event.normal(EventReason.PASSWORD_ROTATED, f"Rotated the password (token {action.rotation_token})")
                )
        elif mode == PasswordMode.INHERIT:
            # A read replica: the primary's current password, which the API accepted for both.
            assert observed.source is not None and observed.source.password is not None
            inherited = observed.status.password_version or new_password_version()
            outcome.status["passwordVersion"] = inherited
            await write(observed.source.password, inherited)
            outcome.events.append(
                Event.normal(
                    EventReason.CREDENTIALS_PUBLISHED,
                    f"Published the password of the primary {desired.read_replica_of} in Secret {name}",
                )
            )
        elif mode == PasswordMode.CARRY:
            # A renamed Secret: the current password, as the earlier Secret holds it; no API call.
            assert observed.previous_secret is not None
            await write(observed.previous_secret.password, observed.status.password_version)
            outcome.events.append(
                Event.normal(
                    EventReason.SECRET_UPDATED,
                    f"Published the current password in Secret {name} (as Secret "
                    f"{observed.status.connection_secret_name} holds it; that one is left as it is)",
                )
            )
        elif mode == PasswordMode.OBSERVED:
            # Observe only: nothing is sent; the password is published only if the user brings it.
            await write(observed.brought_password, None)
            outcome.events.append(
                Event.normal(EventReason.SECRET_UPDATED, f"Published the observed endpoint in Secret {name}")
            )
        else:
            current: str | None = None
            if secret is not None and secret.password_confirmed(action.service_id, observed.status.password_version):
                current = observed.status.password_version or new_password_version()
                outcome.status["passwordVersion"] = current
            await write(secret.password if secret else None, current)
            outcome.events.append(Event.normal(EventReason.SECRET_UPDATED, f"Refreshed the endpoint in Secret {name}"))

    async def _announce_password(self, resource: Resource) -> str:
        """Before a password is sent: record the version it will have, which no Secret carries yet,
        so that no Secret passes for current until the one with this password is written."""
        version = new_password_version()
        await self._patch_status(resource, {"passwordVersion": version})
        return version

    async def _write_secret(
        self,
        resource: Resource,
        endpoint: Endpoint | None,
        password: str | None,
        service_id: str,
        service_name: str,
        version: str | None,
        before: ObservedSecret | None = None,
    ) -> None:
        """Write the connection Secret in the layout the spec asks for, removing what the operator wrote
        under an earlier one (``before``: the Secret as this pass found it); ``endpoint=None``: only make
        sure it exists and is this resource's."""
        desired = resource.desired
        assert desired is not None
        write = secret_write(
            desired.secret_shape,
            endpoint,
            password,
            service_id=service_id,
            service_name=service_name,
            version=version,
            before=before,
        )
        await self.kube.write_connection_secret(
            namespace=desired.namespace,
            name=desired.connection_secret_name,
            owner=resource.body,
            data=write.data,
            annotations=write.annotations,
            labels=write.labels,
        )

    # --- the credentials Secret outlives the resource ----------------------------------------

    @staticmethod
    def credentials_finalizer(uid: str) -> str:
        """This resource's finalizer on its API-key Secret (one per resource: no shared counting)."""
        return f"clickhouse.cloud/in-use-by-{uid}"

    async def _hold_credentials(self, resource: Resource, desired: Desired) -> None:
        """Hold a finalizer on the credentialsRef Secret, so that deleting it together with the
        resource (a namespace or an Argo CD application going away) cannot strand the deletion."""
        wanted = desired.credentials_secret_name
        recorded = resource.status.credentials_secret_name
        if self._protected.get(desired.uid) == wanted and recorded == wanted:
            return
        finalizer = self.credentials_finalizer(desired.uid)
        if wanted and not await self.kube.set_secret_finalizer(desired.namespace, wanted, finalizer, present=True):
            # Being deleted (Kubernetes takes no new finalizer then): a service made with it now could
            # not be deleted once it is gone, so nothing is done with it.
            raise CredentialsError(
                f"The API-key Secret {desired.namespace}/{wanted} (spec.credentialsRef) is being deleted, and "
                "this resource holds no finalizer on it: nothing is created or changed with a key that is "
                "going away. Point spec.credentialsRef at a Secret that stays, or recreate it once it is gone"
            )
        if recorded and recorded != wanted:
            await self.kube.set_secret_finalizer(desired.namespace, recorded, finalizer, present=False)
        if recorded != wanted:
            await self._patch_status(resource, {"credentialsSecretName": wanted})
        self._protected[desired.uid] = wanted

    async def release_credentials(self, body: dict[str, Any]) -> None:
        """Drop this resource's finalizer from its API-key Secret (after deletion is done)."""
        meta = body["metadata"]
        status = ManagedPostgresStatus.model_validate(body.get("status") or {})
        try:
            wanted = self._desired(body).credentials_secret_name
        except pydantic.ValidationError:
            wanted = None
        finalizer = self.credentials_finalizer(meta["uid"])
        for name in {n for n in (status.credentials_secret_name, wanted) if n}:
            await self.kube.set_secret_finalizer(meta["namespace"], name, finalizer, present=False)
        self._protected.pop(meta["uid"], None)
        self._last_mutation.pop(meta["uid"], None)

    # --- status and events -----------------------------------------------------------------------

    async def _patch_status(self, resource: Resource, fields: dict[str, Any]) -> dict[str, Any]:
        """Write status fields now, and keep ``resource.body`` in step with what is stored."""
        meta = resource.meta
        stored = await self.kube.patch_status(meta["namespace"], meta["name"], fields)
        if isinstance(stored, dict):
            resource.body["status"] = stored.get("status") or {}
            resource.body["metadata"] = stored.get("metadata") or meta
        else:  # a client that returns nothing: apply the merge patch locally
            current = dict(resource.stored_status)
            for key, value in fields.items():
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = value
            resource.body["status"] = current
        return resource.body

    async def _write_status(
        self,
        resource: Resource,
        fields: dict[str, Any],
        synced: Condition | None,
        ready: Condition | None,
        *,
        applied: bool,
        restart_required: Condition | None = None,
    ) -> None:
        """Write what changed in status, and nothing when nothing did (steady state costs no write)."""
        wanted = dict(fields)
        wanted["conditions"] = decisions.merge_conditions(
            list(resource.stored_status.get("conditions") or []),
            synced=synced,
            ready=ready,
            generation=resource.generation,
            now=_now(),
            restart_required=restart_required,
        )
        if applied:
            wanted["observedGeneration"] = resource.generation
        changes = decisions.status_changes(resource.stored_status, wanted)
        if changes:
            await self._patch_status(resource, changes)

    def _emit(self, body: dict[str, Any], events: list[Event]) -> None:
        """Post events (and log them); the same event is not repeated within ten minutes."""
        meta = body["metadata"]
        now = time.monotonic()
        for event in events:
            key = (meta["uid"], event.reason.value, event.message)
            if now - self._recent_events.get(key, -1e9) < EVENT_REPEAT_AFTER:
                continue
            self._recent_events[key] = now
            level = logging.WARNING if event.type == EventType.WARNING else logging.INFO
            log.log(
                level,
                "%s/%s: %s: %s",
                meta.get("namespace"),
                meta.get("name"),
                event.reason.value,
                event.message,
                extra=decision_fields(body, event.reason.value, event.type.value),
            )
            self.post_event(body, event.type.value, event.reason.value, event.message)

    def _interval(self, active: bool) -> float:
        base = self.settings.poll_interval_active if active else self.settings.poll_interval
        spread = base * self.settings.jitter
        return max(0.1, base + random.uniform(-spread, spread))

    def _desired(self, body: dict[str, Any]) -> Desired:
        meta = body["metadata"]
        return desired_from(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            generation=int(meta.get("generation") or 0),
            spec=ManagedPostgresSpec.model_validate(body.get("spec") or {}),
            defaults=self.settings.defaults,
            annotations=meta.get("annotations") or {},
        )

    # --- deletion ----------------------------------------------------------------------------

    async def finalize(self, body: dict[str, Any]) -> tuple[bool, str]:
        """One deletion step. Returns (done, message); not done means: call again later."""
        meta = body["metadata"]
        status = ManagedPostgresStatus.model_validate(body.get("status") or {})
        try:
            desired = self._desired(body)
        except pydantic.ValidationError:
            msg = "The spec is invalid, so the remote service cannot be identified; nothing is deleted"
            self._emit(body, [Event.warning(EventReason.DELETION_SKIPPED, msg)])
            return True, msg
        resource = Resource(body, status, desired)
        gate = deletion.gate(desired, status)
        if gate is deletion.Gate.PAUSED:
            msg = deletion.paused_message(desired)
            self._emit(body, [Event.warning(EventReason.PAUSED, msg)])
            return False, msg
        if gate in (deletion.Gate.ORPHAN, deletion.Gate.PROTECTED, deletion.Gate.OBSERVED):
            self._emit(body, deletion.plan_delete(desired, Observed(now=_now(), status=status, remote=None)).events)
            return True, gate.value
        if gate is deletion.Gate.PROCEED:
            replicas = replication.blocking_replicas(meta["name"], await self.kube.list_resources(meta["namespace"]))
            if replicas:
                waiting, event = replication.waiting_for_replicas(meta["name"], replicas)
                await self._write_status(resource, {}, None, waiting, applied=False)
                self._emit(body, [event])
                return False, waiting.message
        nothing = [Event.normal(EventReason.DELETED, "No service was ever created; nothing to delete")]
        escape = deletion.escape_hatch(meta["namespace"], meta["name"])
        which = status.service_id or "(create pending)"
        try:
            client, _ = await self._connect(desired)
            observed = await self._observe(client, resource, with_secret=False, max_age=1.0)
            plan = deletion.plan_delete(desired, observed, create_grace=self._create_grace)
            confirm = next((a for a in plan.actions if isinstance(a, ConfirmGone)), None)
            if confirm is not None:
                observed = await self._confirm_gone(client, observed, confirm.service_id, desired)
                plan = deletion.plan_delete(desired, observed, create_grace=self._create_grace)
        except (CredentialsError, CloudError) as e:
            if gate is deletion.Gate.NOTHING_CREATED:
                self._emit(body, nothing)
                return True, "nothing created"
            blocked = deletion.blocked_by(e, which, escape)
            self._emit(body, [blocked.event])
            return False, blocked.message
        outcome = Outcome()
        try:
            await self._execute(plan, resource, client, observed, outcome)
        except NotFoundError:
            plan.release_finalizer = True  # a DELETE answered 404: gone
        except ConflictError as e:
            # Replicas the API still shows (being deleted, or not managed here): wait, with backoff.
            self._delete_conflicts[meta["uid"]] = self._delete_conflicts.get(meta["uid"], 0) + 1
            msg = replication.delete_conflict(which, e.detail, escape)
            self._emit(body, plan.events + outcome.events + [Event.normal(EventReason.DELETION_WAITING, msg)])
            return False, msg
        except CloudError as e:
            blocked = deletion.blocked_by(e, which, escape)
            self._emit(body, plan.events + outcome.events + [blocked.event])
            return False, blocked.message
        self._emit(body, plan.events + outcome.events)
        self._delete_conflicts.pop(meta["uid"], None)
        return plan.release_finalizer, plan.ready.message if plan.ready else "deleted"

    def finalize_retry_after(self, uid: str) -> float:
        """Seconds before the next deletion step: longer after each DELETE the API refused with a 409."""
        refused = self._delete_conflicts.get(uid, 0)
        base = self.settings.poll_interval_active
        return min(base * (1 << min(refused, 10)), max(base, replication.BACKUP_RETRY_MAX.total_seconds()))
