"""One reconcile pass: observe, plan (pure core), execute, write status and events.

Handlers (:mod:`mpg_operator.controller.handlers`) call :meth:`Reconciler.reconcile` in a loop
per resource and :meth:`Reconciler.finalize` on deletion. Every remote call may fail; the order
of the steps is chosen so that a crash between any two of them loses no password and never
creates a second service (see :mod:`mpg_operator.reconcile.core`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pydantic

from mpg_operator.cloud.client import CloudClient
from mpg_operator.cloud.errors import (
    AmbiguousCreateError,
    AuthError,
    CloudError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
)
from mpg_operator.controller.cloudaccess import (
    ClientPool,
    Credentials,
    CredentialsError,
    ServiceSnapshots,
    resolve_credentials,
)
from mpg_operator.controller.kube import KubeApi, SecretConflictError, SecretRejectedError
from mpg_operator.controller.settings import OperatorSettings
from mpg_operator.reconcile import core
from mpg_operator.reconcile.core import EventReason
from mpg_operator.reconcile.connection import (
    Endpoint,
    ObservedSecret,
    generate_password,
    new_password_version,
    secret_annotations,
    secret_data,
)
from mpg_operator.reconcile.desired import Desired, desired_from
from mpg_operator.resource import ManagedPostgresSpec, ManagedPostgresStatus

log = logging.getLogger(__name__)

EventSink = Callable[[dict[str, Any], str, str, str], None]
"""(resource body, type, reason, message) -> None; posts a Kubernetes Event."""

REMEMBERED_ERRORS = (core.Reason.TERMINAL_INVALID_SPEC, core.Reason.QUOTA_EXCEEDED)
"""Rejections remembered per generation (not re-sent): the others are recomputed from each observation."""

SECRET_WRITE_ATTEMPTS = 4
"""Tries to store a password the API returned once (create), with backoff, before giving up on it."""


class DeletionStarted(Exception):
    """The resource began deleting while a pass was about to create its service: nothing is sent."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _rfc3339(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfc3339_precise(dt: datetime) -> str:
    """With microseconds: compared with the send time of a LIST, so a whole second is too coarse."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class PassResult:
    """What a pass did, for the loop that schedules the next one."""

    requeue_after: float
    ready: bool = False
    error: str | None = None


@dataclass
class _Outcome:
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)


class Reconciler:
    """Executes reconcile passes for ManagedPostgres resources."""

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

    # --- scheduling --------------------------------------------------------------------

    def _interval(self, active: bool) -> float:
        base = self.settings.poll_interval_active if active else self.settings.poll_interval
        spread = base * self.settings.jitter
        return max(0.1, base + random.uniform(-spread, spread))

    def _emit(self, body: dict[str, Any], events: list[tuple[str, str, str]]) -> None:
        uid = body["metadata"]["uid"]
        now = time.monotonic()
        for type_, reason, message in events:
            key = (uid, reason, message)
            if now - self._recent_events.get(key, -1e9) < 600:
                continue  # the same event was posted recently
            self._recent_events[key] = now
            meta = body["metadata"]
            log.log(
                logging.WARNING if type_ == "Warning" else logging.INFO,
                "%s/%s: %s: %s", meta.get("namespace"), meta.get("name"), reason, message,
            )
            self.post_event(body, type_, reason, message)

    # --- observation ---------------------------------------------------------------------

    def _desired(self, body: dict[str, Any]) -> Desired:
        meta = body["metadata"]
        spec = ManagedPostgresSpec.model_validate(body.get("spec") or {})
        return desired_from(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            generation=int(meta.get("generation") or 0),
            spec=spec,
            defaults=self.settings.defaults,
        )

    async def _client(self, desired: Desired) -> tuple[CloudClient, Credentials]:
        credentials = await resolve_credentials(
            self.kube,
            desired.namespace,
            desired.credentials_secret_name,
            self.settings.default_credentials_secret,
        )
        return self.clients.get(credentials), credentials

    async def _observe(
        self,
        client: CloudClient,
        desired: Desired,
        status: ManagedPostgresStatus,
        *,
        max_age: float,
        last_error: tuple[str, str, datetime | None] | None = None,
        with_secret: bool = True,
    ) -> core.Observed:
        # Batched: a recent LIST of the organization serves this resource too, even if it predates
        # our last request; the plan waits rather than acting on a snapshot that cannot show it.
        pending = core.parse_time(status.create_pending_since)
        snap = await self.snapshots.get(client, max_age=max_age)
        remote, duplicates = core.find_remote(snap.services, status.service_id, desired.uid)
        secret = (
            await self.kube.observe_connection_secret(desired.namespace, desired.connection_secret_name)
            if with_secret
            else None
        )
        return core.Observed(
            now=_now(),
            status=status,
            remote=remote,
            duplicates=duplicates,
            secret=secret,
            snapshot_after_pending=pending is None or snap.fetched_at >= pending.timestamp(),
            snapshot_stale=snap.fetched_at < self._last_mutation.get(desired.uid, 0.0),
            last_error=last_error,
            organization_id=client.organization_id,
        )

    # --- the live pass ---------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> PassResult:
        """One pass for a live resource; returns when to run the next one."""
        body = await self.kube.get_resource(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return PassResult(requeue_after=self.settings.poll_interval)
        generation = int(body["metadata"].get("generation") or 0)
        status = ManagedPostgresStatus.model_validate(body.get("status") or {})
        conditions = {c.type: c for c in status.conditions or []}
        try:
            desired = self._desired(body)
        except pydantic.ValidationError as e:
            message = "Invalid spec: " + "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            invalid = core.Condition("False", core.Reason.TERMINAL_INVALID_SPEC, message)
            await self._write_status(body, conditions, {}, synced=invalid, ready=None, applied=False)
            self._emit(body, [("Warning", EventReason.INVALID_SPEC, message)])
            return PassResult(requeue_after=self._interval(False), error=message)

        synced = conditions.get("Synced")
        last_error = None
        if (
            synced is not None
            and synced.status == "False"
            and synced.reason in REMEMBERED_ERRORS
            and synced.observed_generation == generation
        ):
            last_error = (synced.reason, synced.message, core.parse_time(synced.last_transition_time))

        try:
            client, credentials = await self._client(desired)
        except CredentialsError as e:
            cond = core.Condition("False", core.Reason.TERMINAL_CREDENTIALS, str(e))
            ready = _not_ready_unless_known(conditions, str(e))
            await self._write_status(body, conditions, {}, synced=cond, ready=ready, applied=False)
            self._emit(body, [("Warning", EventReason.CREDENTIALS_ERROR, str(e))])
            return PassResult(requeue_after=self._interval(False), error=str(e))

        await self._protect_credentials(body, desired, status)
        outcome = _Outcome()
        plan: core.Plan | None = None
        try:
            max_age = self.settings.list_max_age
            ready = conditions.get("Ready") is not None and conditions["Ready"].status == "True"
            if status.create_pending_since or status.pending_update or not ready:
                max_age = min(max_age, self.settings.poll_interval_active / 2)  # something is in flight
            observed = await self._observe(client, desired, status, max_age=max_age, last_error=last_error)
            plan = core.plan(desired, observed, create_grace=self._create_grace, update_confirm=self._update_confirm)
            if any(isinstance(a, core.ConfirmGone) for a in plan.actions):
                observed = await self._confirm_gone(client, observed, status.service_id or "")
                plan = core.plan(desired, observed, create_grace=self._create_grace, update_confirm=self._update_confirm)
            await self._execute(plan, body, desired, client, observed, outcome)
        except DeletionStarted:
            return PassResult(requeue_after=self.settings.poll_interval)
        except (CloudError, SecretConflictError, SecretRejectedError) as e:
            cond, event = self._classify(e, credentials, plan, desired)
            outcome.events.append(event)
            status_fields = dict(plan.status) if plan else {}
            status_fields.update(outcome.status)
            ready = plan.ready if plan and plan.ready and plan.ready.status != "True" else None
            if isinstance(e, (SecretConflictError, SecretRejectedError)):
                ready = core.Condition("False", cond.reason, cond.message)
            await self._write_status(body, conditions, status_fields, synced=cond, ready=ready, applied=False)
            self._emit(body, (plan.events if plan else []) + outcome.events)
            temporary = getattr(e, "temporary", False) or isinstance(e, AmbiguousCreateError)
            active = temporary or plan is None or (plan.active and not core.Reason(cond.reason).is_terminal)
            return PassResult(requeue_after=self._interval(active), error=str(e))

        status_fields = dict(plan.status)
        status_fields.update(outcome.status)
        await self._write_status(
            body, conditions, status_fields, synced=plan.synced, ready=plan.ready, applied=plan.fully_applied
        )
        self._emit(body, plan.events + outcome.events)
        return PassResult(
            requeue_after=self._interval(plan.active),
            ready=bool(plan.ready and plan.ready.status == "True"),
        )

    async def _patch_status(self, body: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        """Write status fields now, and keep ``body`` in step with what is stored."""
        meta = body["metadata"]
        stored = await self.kube.patch_status(meta["namespace"], meta["name"], fields)
        if isinstance(stored, dict):
            body["status"] = stored.get("status") or {}
            body["metadata"] = stored.get("metadata") or meta
        else:  # a client that returns nothing: apply the merge patch locally
            current = dict(body.get("status") or {})
            for key, value in fields.items():
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = value
            body["status"] = current
        return body

    # --- the credentials Secret outlives the resource ----------------------------------------

    @staticmethod
    def credentials_finalizer(uid: str) -> str:
        """This resource's finalizer on its API-key Secret (one per resource: no shared counting)."""
        return f"clickhouse.cloud/in-use-by-{uid}"

    async def _protect_credentials(self, body: dict[str, Any], desired: Desired, status: ManagedPostgresStatus) -> None:
        """Hold a finalizer on the credentialsRef Secret, so that deleting it together with the
        resource (a namespace or an Argo CD application going away) cannot strand the deletion."""
        wanted = desired.credentials_secret_name
        if self._protected.get(desired.uid) == wanted and status.credentials_secret_name == wanted:
            return
        finalizer = self.credentials_finalizer(desired.uid)
        old = status.credentials_secret_name
        if old and old != wanted:
            await self.kube.set_secret_finalizer(desired.namespace, old, finalizer, present=False)
        if wanted:
            await self.kube.set_secret_finalizer(desired.namespace, wanted, finalizer, present=True)
        if status.credentials_secret_name != wanted:
            await self._patch_status(body, {"credentialsSecretName": wanted})
        self._protected[desired.uid] = wanted

    async def release_credentials(self, body: dict[str, Any]) -> None:
        """Drop this resource's finalizer from its API-key Secret (after deletion is done)."""
        meta = body["metadata"]
        status = body.get("status") or {}
        spec_ref = ((body.get("spec") or {}).get("credentialsRef") or {}).get("name")
        finalizer = self.credentials_finalizer(meta["uid"])
        for name in {status.get("credentialsSecretName"), spec_ref} - {None}:
            await self.kube.set_secret_finalizer(meta["namespace"], name, finalizer, present=False)
        self._protected.pop(meta["uid"], None)
        self._last_mutation.pop(meta["uid"], None)

    async def _confirm_gone(self, client: CloudClient, observed: core.Observed, service_id: str) -> core.Observed:
        """GET the service: a 404 confirms it is gone; otherwise the GET's answer is the observation."""
        try:
            service = await client.get_service(service_id)
        except NotFoundError:
            return dataclasses.replace(observed, remote=None, confirmed_gone=True)
        return dataclasses.replace(observed, remote=service, fetched_by_id=True, snapshot_stale=False)

    async def _execute(
        self,
        plan: core.Plan,
        body: dict[str, Any],
        desired: Desired,
        client: CloudClient,
        observed: core.Observed,
        outcome: _Outcome,
    ) -> None:
        for action in plan.actions:
            if isinstance(action, core.AdoptService):
                await self._patch_status(body, {"serviceId": action.service_id, "createPendingSince": None})
            elif isinstance(action, core.CreateService):
                await self._create(body, desired, client, observed, outcome)
            elif isinstance(action, core.UpdateService):
                await client.update_service(action.service_id, desired.patch_request())
                self._last_mutation[desired.uid] = time.time()
                outcome.status["pendingUpdate"] = {"digest": action.digest, "sentAt": _rfc3339(_now())}
                outcome.events.append(("Normal", EventReason.UPDATED, f"Sent update of {', '.join(action.changed)} to service {action.service_id}"))
            elif isinstance(action, core.PublishSecret):
                await self._publish_secret(body, desired, client, observed, action, outcome)
            elif isinstance(action, core.DeleteService):
                self._last_mutation[desired.uid] = time.time()
                await client.delete_service(action.service_id)
                outcome.events.append(("Normal", EventReason.DELETE_REQUESTED, f"Requested deletion of service {action.service_id}"))

    async def _create(
        self, body: dict[str, Any], desired: Desired, client: CloudClient, observed: core.Observed, outcome: _Outcome
    ) -> None:
        # 1. The Secret the password will go to is ours and storable before anything is created.
        await self._write_secret(body, desired, None, "", "", "", None)
        # 2. Announce the create before sending it: after a crash we look for the service first.
        attempts = (observed.status.create_attempts or 0) + 1
        version = new_password_version()
        announced = await self._patch_status(
            body,
            {
                "createPendingSince": _rfc3339_precise(_now()),
                "createAttempts": attempts,
                "organizationId": client.organization_id,
                "passwordVersion": version,
            },
        )
        if announced["metadata"].get("deletionTimestamp"):
            # Deletion began meanwhile; the finalizer sees createPendingSince and waits it out.
            await self._patch_status(body, {"createPendingSince": None, "createAttempts": None})
            raise DeletionStarted()
        self._last_mutation[desired.uid] = time.time()
        try:
            service = await client.create_service(desired.create_request())
        except (InvalidRequestError, ConflictError, AuthError):
            # Rejected: nothing was created.
            await self._patch_status(body, {"createPendingSince": None, "createAttempts": None})
            raise
        recorded: dict[str, Any] = {
            "serviceId": service.id,
            "createPendingSince": None,
            "createAttempts": None,
            "state": service.state,
            "hostname": service.hostname,
            "username": service.username,
        }
        try:
            # 3. The password is returned this once: persist it before anything else.
            if service.password is not None and service.id:
                await self._store_initial_password(body, desired, client, service, version)
        finally:
            await self._patch_status(body, recorded)
            outcome.status.update(recorded)
            self._emit(body, [("Normal", EventReason.CREATED, f"Created service {service.id} ({desired.service_name}, {desired.size}, {desired.region})")])

    async def _store_initial_password(
        self, body: dict[str, Any], desired: Desired, client: CloudClient, service: Any, version: str
    ) -> None:
        password = service.password.get_secret_value()
        endpoint = Endpoint(hostname=service.hostname or "", username=service.username or "postgres", ca_pem="")
        delay = 0.5
        for attempt in range(SECRET_WRITE_ATTEMPTS):
            try:
                # No service name yet: until the CA is in, the Secret is not current.
                await self._write_secret(body, desired, endpoint, password, service.id, "", version)
                break
            except (SecretConflictError, SecretRejectedError):
                raise  # the next pass reports it; the password is then set anew
            except Exception:  # noqa: BLE001 -- Kubernetes unavailable for a moment: try again
                if attempt == SECRET_WRITE_ATTEMPTS - 1:
                    raise
                log.warning("Writing Secret %s/%s failed; retrying in %.1fs", desired.namespace, desired.connection_secret_name, delay)
                await asyncio.sleep(delay)
                delay *= 2
        self._emit(body, [("Normal", EventReason.CREDENTIALS_PUBLISHED, f"Wrote the initial credentials to Secret {desired.connection_secret_name}")])
        try:
            ca = await client.get_ca_certificates(service.id)
        except CloudError:
            return  # the next pass fetches it
        endpoint = Endpoint(hostname=endpoint.hostname, username=endpoint.username, ca_pem=ca)
        await self._write_secret(body, desired, endpoint, password, service.id, service.name or desired.service_name, version)

    async def _publish_secret(
        self,
        body: dict[str, Any],
        desired: Desired,
        client: CloudClient,
        observed: core.Observed,
        action: core.PublishSecret,
        outcome: _Outcome,
    ) -> None:
        secret: ObservedSecret | None = observed.secret
        old = secret.data if secret else {}
        if action.refresh_endpoint or not old.get("host"):
            service = await client.get_service(action.service_id)
            ca = await client.get_ca_certificates(action.service_id)
            endpoint = Endpoint(hostname=service.hostname or "", username=service.username or "postgres", ca_pem=ca)
        else:
            endpoint = Endpoint(hostname=old["host"], username=old.get("username") or "postgres", ca_pem=old.get("ca.crt", ""))
        outcome.status.update({"hostname": endpoint.hostname, "username": endpoint.username})

        async def write(password: str, version: str | None) -> None:
            await self._write_secret(body, desired, endpoint, password, action.service_id, action.service_name, version)

        if action.password == "generate":
            password = generate_password()
            await write(password, None)  # the Secret first: a crash after this loses nothing
            version = await self._announce_password(body)
            await client.set_password(action.service_id, password)
            await write(password, version)
            outcome.events.append(("Normal", EventReason.CREDENTIALS_PUBLISHED, f"Set a new password and published it in Secret {desired.connection_secret_name}"))
        elif action.password == "apply":
            password = old["password"]
            version = await self._announce_password(body)
            await client.set_password(action.service_id, password)
            await write(password, version)
            outcome.events.append(("Normal", EventReason.CREDENTIALS_PUBLISHED, f"Applied the password from Secret {desired.connection_secret_name}"))
        else:
            password = old.get("password", "")
            version = None
            if secret is not None and secret.password_confirmed(action.service_id, observed.status.password_version):
                version = observed.status.password_version or new_password_version()
                outcome.status["passwordVersion"] = version
            await write(password, version)
            outcome.events.append(("Normal", EventReason.SECRET_UPDATED, f"Refreshed the endpoint in Secret {desired.connection_secret_name}"))

    async def _announce_password(self, body: dict[str, Any]) -> str:
        """Before a password is sent: record the version it will have, which no Secret carries yet,
        so that no Secret passes for current until the one with this password is written."""
        version = new_password_version()
        await self._patch_status(body, {"passwordVersion": version})
        return version

    async def _write_secret(
        self,
        body: dict[str, Any],
        desired: Desired,
        endpoint: Endpoint | None,
        password: str,
        service_id: str,
        service_name: str,
        version: str | None,
    ) -> None:
        """Write the connection Secret (``endpoint=None``: only make sure it exists and is ours)."""
        await self.kube.write_connection_secret(
            namespace=desired.namespace,
            name=desired.connection_secret_name,
            owner=body,
            data=secret_data(endpoint, password) if endpoint is not None else None,
            annotations=secret_annotations(service_id, service_name, password, version) if endpoint is not None else {},
        )

    def _classify(
        self, error: Exception, credentials: Credentials, plan: core.Plan | None, desired: Desired
    ) -> tuple[core.Condition, tuple[str, str, str]]:
        creating = plan is not None and any(isinstance(a, core.CreateService) for a in plan.actions)
        if isinstance(error, SecretConflictError):
            msg = core.secret_conflict_message(desired, None)
            return core.Condition("False", core.Reason.TERMINAL_SECRET_CONFLICT, msg), ("Warning", EventReason.SECRET_CONFLICT, msg)
        if isinstance(error, SecretRejectedError):
            msg = f"spec.connectionSecret: {error}; nothing was created"
            return core.Condition("False", core.Reason.TERMINAL_INVALID_SPEC, msg), ("Warning", EventReason.INVALID_SPEC, msg)
        assert isinstance(error, CloudError)
        if isinstance(error, AmbiguousCreateError):
            msg = f"The outcome of a create request is unknown ({error}); looking for the service by its owner tag before retrying"
            return core.Condition("Unknown", core.Reason.CREATE_PENDING, msg), ("Warning", EventReason.CREATE_OUTCOME_UNKNOWN, msg)
        if isinstance(error, AuthError):
            msg = f"ClickHouse Cloud rejected the API key from Secret {credentials.source} (keys keyId, keySecret): {error.detail}"
            return core.Condition("False", core.Reason.TERMINAL_CREDENTIALS, msg), ("Warning", EventReason.CREDENTIALS_ERROR, msg)
        if isinstance(error, (NotFoundError, InvalidRequestError)) and plan is None:
            # Nothing but the organization's LIST was sent: the organization id is what is wrong.
            msg = f"Organization {credentials.organization_id} (from Secret {credentials.source}, key organizationId) was not accepted: {error.detail}"
            return core.Condition("False", core.Reason.TERMINAL_CREDENTIALS, msg), ("Warning", EventReason.CREDENTIALS_ERROR, msg)
        if isinstance(error, InvalidRequestError):
            msg = f"ClickHouse Cloud rejected the spec: {error.detail}"
            return core.Condition("False", core.Reason.TERMINAL_INVALID_SPEC, msg), ("Warning", EventReason.INVALID_SPEC, msg)
        if isinstance(error, ConflictError) and creating:
            msg = f"ClickHouse Cloud refused to create the service (quota reached?): {error.detail}"
            return core.Condition("False", core.Reason.QUOTA_EXCEEDED, msg), ("Warning", EventReason.CREATE_FAILED, msg)
        msg = f"ClickHouse Cloud API error, will retry: {error}"
        return core.Condition("False", core.Reason.API_ERROR, msg), ("Warning", EventReason.API_ERROR, msg)

    # --- status ----------------------------------------------------------------------------

    async def _write_status(
        self,
        body: dict[str, Any],
        conditions: dict[str, Any],
        fields: dict[str, Any],
        *,
        synced: core.Condition | None,
        ready: core.Condition | None,
        applied: bool,
    ) -> None:
        """Write what changed in status, and nothing when nothing did (steady state costs no write)."""
        meta = body["metadata"]
        generation = int(meta.get("generation") or 0)
        now = _rfc3339(_now())
        merged = {c.type: c.model_dump(by_alias=True, exclude_none=True) for c in conditions.values()}
        for type_, cond in (("Synced", synced), ("Ready", ready)):
            if cond is None:
                continue
            old = merged.get(type_)
            transition = now if old is None or old.get("status") != cond.status else old.get("lastTransitionTime", now)
            merged[type_] = {
                "type": type_,
                "status": cond.status,
                "reason": str(cond.reason),
                "message": cond.message,
                "observedGeneration": generation,
                "lastTransitionTime": transition,
            }
        status = dict(fields)
        status["conditions"] = [merged[t] for t in ("Ready", "Synced") if t in merged]
        if applied:
            status["observedGeneration"] = generation
        current = body.get("status") or {}
        changed = {k: v for k, v in status.items() if current.get(k) != v}
        if current.get("lastSyncedAt") is not None:
            changed["lastSyncedAt"] = None  # written by earlier versions on every pass
        if changed:
            await self._patch_status(body, changed)

    # --- deletion ----------------------------------------------------------------------------

    async def finalize(self, body: dict[str, Any]) -> tuple[bool, str]:
        """One deletion step. Returns (done, message); not done means: call again later."""
        meta = body["metadata"]
        status = ManagedPostgresStatus.model_validate(body.get("status") or {})
        try:
            desired = self._desired(body)
        except pydantic.ValidationError:
            msg = "The spec is invalid, so the remote service cannot be identified; nothing is deleted"
            self._emit(body, [("Warning", EventReason.DELETION_SKIPPED, msg)])
            return True, msg
        nothing_created = not status.service_id and not status.create_pending_since
        if desired.deletion_policy == "Orphan":
            plan = core.plan_delete(desired, core.Observed(now=_now(), status=status, remote=None))
            self._emit(body, plan.events)
            return True, "orphaned"
        escape = (
            f"To finish deleting without deleting the service, set spec.deletionPolicy: Orphan "
            f"(kubectl patch managedpostgres {meta['name']} -n {meta['namespace']} --type merge "
            "-p '{\"spec\":{\"deletionPolicy\":\"Orphan\"}}')"
        )
        which = status.service_id or "(create pending)"
        try:
            client, credentials = await self._client(desired)
            observed = await self._observe(client, desired, status, max_age=1.0, with_secret=False)
            plan = core.plan_delete(desired, observed, create_grace=self._create_grace)
            confirm = next((a for a in plan.actions if isinstance(a, core.ConfirmGone)), None)
            if confirm is not None:
                observed = await self._confirm_gone(client, observed, confirm.service_id)
                plan = core.plan_delete(desired, observed, create_grace=self._create_grace)
        except CredentialsError as e:
            if nothing_created:
                self._emit(body, [("Normal", EventReason.DELETED, "No service was ever created; nothing to delete")])
                return True, "nothing created"
            msg = f"Cannot delete service {which}: {e}. {escape}"
            self._emit(body, [("Warning", EventReason.DELETION_BLOCKED, msg)])
            return False, msg
        except CloudError as e:
            if nothing_created:
                self._emit(body, [("Normal", EventReason.DELETED, "No service was ever created; nothing to delete")])
                return True, "nothing created"
            if e.temporary:
                msg = f"ClickHouse Cloud API error while deleting service {which}, will retry: {e}"
                self._emit(body, [("Warning", EventReason.API_ERROR, msg)])
                return False, msg
            msg = f"Cannot delete service {which}: ClickHouse Cloud answered {e}. {escape}"
            self._emit(body, [("Warning", EventReason.DELETION_BLOCKED, msg)])
            return False, msg
        events = [
            (type_, reason, f"{message}. {escape}" if reason == EventReason.DELETION_BLOCKED else message)
            for type_, reason, message in plan.events
        ]
        outcome = _Outcome()
        try:
            await self._execute(plan, body, desired, client, observed, outcome)
        except NotFoundError:
            plan.release_finalizer = True  # a DELETE answered 404: gone
        except ConflictError as e:
            msg = f"ClickHouse Cloud refused to delete service {which}: {e.detail}. Delete its read replicas first, or: {escape}"
            self._emit(body, events + outcome.events + [("Warning", EventReason.DELETION_BLOCKED, msg)])
            return False, msg
        except CloudError as e:
            msg = f"ClickHouse Cloud API error while deleting service {which}, will retry: {e}"
            self._emit(body, events + outcome.events + [("Warning", EventReason.API_ERROR, msg)])
            return False, msg
        self._emit(body, events + outcome.events)
        return plan.release_finalizer, plan.ready.message if plan.ready else "deleted"


def _not_ready_unless_known(conditions: dict[str, Any], message: str) -> core.Condition | None:
    ready = conditions.get("Ready")
    if ready is not None and ready.status == "True":
        return None  # the service still works; only management is blocked
    return core.Condition("False", core.Reason.TERMINAL_CREDENTIALS, message)
