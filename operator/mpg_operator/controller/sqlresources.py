"""PostgresRole and PostgresDatabase passes: read the resource and its ManagedPostgres (Kubernetes only:
the ClickHouse Cloud API is never called here), connect over SQL with the administrative credentials of
the service's connection Secret, observe the catalog, plan (:mod:`mpg_operator.reconcile.sqlplan`),
execute, and persist status and the role's Secret.

The role's password: the Secret is written (pending: no digest) before ``ALTER ROLE ... PASSWORD``
runs, and confirmed (digest and version on the Secret, the version in status) after. A Secret password
that is not confirmed is set again on the next pass, so a crash anywhere ends with the Secret's password
working.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from mpg_operator.controller import sqlexec
from mpg_operator.controller.kube import KubeApi, SecretKeyError
from mpg_operator.controller.settings import OperatorSettings
from mpg_operator.reconcile import sqlplan as sp
from mpg_operator.reconcile.connection import (
    ANNOTATION_PREFIX,
    Endpoint,
    ObservedSecret,
    SecretConflictError,
    SecretRejectedError,
    SecretShape,
    SecretWrite,
    generate_password,
    new_password_version,
    password_acceptable,
    secret_write,
)
from mpg_operator.reconcile.model import EventType
from mpg_operator.reconcile.sqlplan import SqlEvent as E
from mpg_operator.reconcile.sqlplan import SqlReason as R
from mpg_operator.resource import ANNOTATION_ROTATE_PASSWORD
from mpg_operator.resource_sql import (
    DATABASE_KIND,
    DATABASE_PLURAL,
    ROLE_KIND,
    ROLE_PLURAL,
    DatabaseDeletionPolicy,
    OwnedObjectsPolicy,
    PostgresDatabaseSpec,
    PostgresRoleSpec,
)

log = logging.getLogger("mpg_operator.sql")
ANN_ROTATION_TOKEN = f"{ANNOTATION_PREFIX}/rotation-token"
"""On a role's Secret: the rotate-password token its password was made for (none: not rotated yet)."""
EventSink = Callable[[dict[str, Any], str, str, str], None]


class Waiting(Exception):
    """The pass cannot go on yet (the service is not there, not running, not reachable), or must not
    (a read replica, a conflict): a condition, and a requeue unless ``terminal``."""

    def __init__(self, reason: sp.SqlReason, message: str, *, terminal: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.terminal = terminal


@dataclass(frozen=True)
class Service:
    """What the SQL passes need of a ManagedPostgres."""

    admin: sqlexec.Admin
    service_id: str
    service_name: str


@dataclass
class PassResult:
    requeue_after: float
    ready: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _validation_message(e: ValidationError) -> str:
    """Where and what, never the input values (a spec may carry anything)."""
    parts = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:5]]
    return "; ".join(parts)


def _epoch(rfc3339: str | None) -> float | None:
    if rfc3339 is None:
        return None
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def desired_role(spec: PostgresRoleSpec, marker: str, admin_user: str) -> sp.DesiredRole:
    """The spec in the core's terms."""
    databases = frozenset(
        sp.Privilege("DATABASE", g.name, None, None, p) for g in spec.databases or [] for p in g.privileges
    )
    schemas = frozenset(
        sp.Privilege("SCHEMA", g.database, g.schema_, None, p) for g in spec.schemas or [] for p in g.privileges
    )
    tables = tuple(
        sp.TableGrantSpec(g.database, g.schema_, tuple(g.tables) if g.tables is not None else None, tuple(g.privileges))
        for g in spec.tables or []
    )
    defaults = frozenset(
        sp.DefaultPrivilege(g.database, g.schema_, g.for_role or admin_user, p)
        for g in spec.default_privileges or []
        for p in g.privileges
    )
    return sp.DesiredRole(
        name=spec.role_name,
        marker=marker,
        login=spec.login if spec.login is not None else True,
        connection_limit=spec.connection_limit if spec.connection_limit is not None else -1,
        valid_until=spec.valid_until,
        valid_until_epoch=_epoch(spec.valid_until),
        member_of=frozenset(spec.member_of or ()),
        databases=databases,
        schemas=schemas,
        tables=tables,
        default_privileges=defaults,
    )


def _secret_differs(observed: ObservedSecret | None, write: SecretWrite) -> bool:
    if observed is None:
        return True
    for wanted, have in ((write.data or {}, observed.data), (write.annotations, observed.annotations)):
        for key, value in wanted.items():
            if (have.get(key) or None) != value:
                return True
    return any(observed.labels.get(k) != v for k, v in write.labels.items())


class SqlReconciler:
    """Passes and finalization of PostgresRole and PostgresDatabase objects."""

    def __init__(self, kube: KubeApi, settings: OperatorSettings, post_event: EventSink) -> None:
        self.kube = kube
        self.settings = settings
        self.post_event = post_event
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        self._locks.pop(uid, None)

    @property
    def waiting_requeue(self) -> float:
        return max(2.0, min(30.0, self.settings.poll_interval_active * 4))

    # --- the service --------------------------------------------------------------------------------

    async def service(self, namespace: str, name: str, *, for_deletion: bool = False) -> Service | None:
        """The ManagedPostgres ``name`` and its administrative credentials; :class:`Waiting` when it is not
        usable yet; ``None`` (for a deletion) when it is gone or going: nothing is left to clean up."""
        mpg = await self.kube.get_resource(namespace, name)
        if mpg is None or (for_deletion and mpg.get("metadata", {}).get("deletionTimestamp")):
            if for_deletion:
                return None
            raise Waiting(R.SERVICE_NOT_FOUND, f"ManagedPostgres {name} does not exist in namespace {namespace}")
        spec, status = mpg.get("spec") or {}, mpg.get("status") or {}
        if sp.is_read_replica(spec, status):
            if for_deletion:
                return None
            raise Waiting(
                R.READ_REPLICA,
                f"ManagedPostgres {name} is a read replica (read-only): make roles and databases on its primary, "
                "they replicate",
                terminal=True,
            )
        service_id, secret_name = status.get("serviceId"), status.get("connectionSecretName")
        if not service_id or status.get("state") != "running" or not secret_name:
            raise Waiting(R.WAITING_FOR_SERVICE, f"ManagedPostgres {name} is not running yet")
        secret = await self.kube.observe_connection_secret(namespace, secret_name)
        if secret is None or not secret.password_confirmed(service_id, status.get("passwordVersion")):
            raise Waiting(R.WAITING_FOR_SERVICE, f"the connection Secret of ManagedPostgres {name} is not ready yet")
        host, port, user, ca = (secret.value(k) for k in ("host", "port", "username", "ca.crt"))
        if not (host and port and user and ca and secret.password):
            raise Waiting(R.WAITING_FOR_SERVICE, f"the connection Secret of ManagedPostgres {name} is incomplete")
        admin = sqlexec.Admin(host, int(port), user, secret.password, ca)
        return Service(admin, service_id, status.get("serviceName") or name)

    # --- status ----------------------------------------------------------------------------------------

    async def _persist(
        self,
        plural: str,
        obj: dict[str, Any],
        decided: dict[str, sp.Verdict],
        extra: dict[str, Any],
        events: list[tuple[str, str, str]],
    ) -> None:
        meta = obj["metadata"]
        stored = obj.get("status") or {}
        generation = int(meta.get("generation") or 0)
        conditions = sp.merge_conditions(stored.get("conditions") or [], decided, generation=generation, stamp=_now())
        wanted: dict[str, Any] = {**extra, "conditions": conditions}
        if decided.get("Ready") and decided["Ready"].status == "True":
            wanted["observedGeneration"] = generation
        changes = {k: v for k, v in wanted.items() if stored.get(k) != v}
        if changes:
            await self.kube.patch_object_status(plural, meta["namespace"], meta["name"], changes)
        old = {c.get("type"): c.get("reason") for c in stored.get("conditions") or []}
        warned: set[str] = set()
        for type_, verdict in decided.items():  # one Warning per new reason (Ready and Synced often share it)
            if verdict.status == "False" and old.get(type_) != verdict.reason and verdict.reason not in warned:
                warned.add(verdict.reason)
                events.append((EventType.WARNING, verdict.reason, verdict.message))
        for type_, reason, message in events:
            self.post_event(obj, str(type_), str(reason), message)

    async def _deletion_waits(
        self, plural: str, obj: dict[str, Any], e: Waiting | sqlexec.SqlError
    ) -> tuple[bool, str]:
        """A deletion step that cannot finish now: Ready=False says why; the finalizer stays."""
        reason = e.reason if isinstance(e, Waiting) else R.SQL_FAILED
        await self._persist(plural, obj, {"Ready": sp.Verdict("False", reason, str(e))}, {}, [])
        return False, str(e)

    async def _refuse(self, plural: str, obj: dict[str, Any], waiting: Waiting, extra: dict[str, Any]) -> PassResult:
        verdict = sp.Verdict("False", waiting.reason, waiting.message)
        await self._persist(plural, obj, {"Ready": verdict, "Synced": verdict}, extra, [])
        return PassResult(self.settings.poll_interval if waiting.terminal else self.waiting_requeue)

    # --- PostgresRole -----------------------------------------------------------------------------------

    async def role_pass(self, namespace: str, name: str) -> PassResult:
        obj = await self.kube.get_object(ROLE_PLURAL, namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return PassResult(self.settings.poll_interval)
        obj.setdefault("kind", ROLE_KIND)
        try:
            spec = PostgresRoleSpec.model_validate(obj.get("spec") or {})
        except ValidationError as e:
            return await self._refuse(
                ROLE_PLURAL, obj, Waiting(R.INVALID_SPEC, _validation_message(e), terminal=True), {}
            )
        secret_name = spec.secret.name if spec.secret else f"{name}-connection"
        extra: dict[str, Any] = {"serviceName": spec.service_ref.name, "secretName": secret_name}
        try:
            service = await self.service(namespace, spec.service_ref.name)
            assert service is not None
            extra["serviceId"] = service.service_id
            return await self._role_pass(obj, spec, service, secret_name, extra)
        except Waiting as w:
            return await self._refuse(ROLE_PLURAL, obj, w, extra)
        except sqlexec.SqlError as e:
            reason = R.SERVICE_UNREACHABLE if e.unreachable else R.SQL_FAILED
            return await self._refuse(ROLE_PLURAL, obj, Waiting(reason, str(e)), extra)

    async def _role_pass(
        self, obj: dict[str, Any], spec: PostgresRoleSpec, service: Service, secret_name: str, extra: dict[str, Any]
    ) -> PassResult:
        meta = obj["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        status = obj.get("status") or {}
        own_password: str | None = None
        if spec.password_secret_ref is not None:
            ref = spec.password_secret_ref
            try:
                own_password = (await self.kube.read_secret_data(namespace, ref.name, (ref.key,)))[ref.key]
            except SecretKeyError as e:
                raise Waiting(R.PASSWORD_SECRET_MISSING, str(e)) from None
            if not password_acceptable(own_password):
                raise Waiting(
                    R.PASSWORD_REJECTED,
                    f"the password in Secret {ref.name} key {ref.key} must have 12+ characters with lower and upper "
                    "case letters and a digit",
                    terminal=True,
                )
        observed_secret = await self.kube.observe_connection_secret(namespace, secret_name)
        if observed_secret is not None and not observed_secret.claimable_by(uid, name):
            raise Waiting(
                R.SECRET_CONFLICT,
                f"Secret {secret_name} exists and is not this PostgresRole's; it is left untouched",
                terminal=True,
            )
        marker = sp.marker(ROLE_KIND, namespace, name, uid)
        desired = desired_role(spec, marker, service.admin.username)
        async with sqlexec.session(service.admin) as session:
            catalog = await sqlexec.observe_role(session, desired.name, desired.databases_named())
            probe = sp.plan_role(desired, catalog, admin=service.admin.username, set_password=False)
            if probe.refusal is not None:
                raise Waiting(probe.refusal.reason, probe.refusal.message, terminal=True)

            token = (meta.get("annotations") or {}).get(ANNOTATION_ROTATE_PASSWORD)
            rotate = bool(token) and token != status.get("passwordRotationToken")
            secret_pw = observed_secret.password if observed_secret is not None else None
            confirmed = observed_secret is not None and observed_secret.password_confirmed(
                service.service_id, status.get("passwordVersion")
            )
            step = sp.password_step(
                secret_password=secret_pw,
                confirmed=confirmed,
                acceptable=password_acceptable(secret_pw),
                own_password=own_password,
                rotate=rotate and own_password is None,
                role_created=catalog.role is None,
                pending_for_rotation=bool(token)
                and observed_secret is not None
                and observed_secret.annotations.get(ANN_ROTATION_TOKEN) == token,
            )
            password = {
                sp.PasswordStep.NEW: generate_password,
                sp.PasswordStep.BRING_YOUR_OWN: lambda: own_password,
            }.get(step, lambda: secret_pw)()
            shape = SecretShape(
                spec.secret.key_prefix or "" if spec.secret else "",
                dict(spec.secret.labels or {}) if spec.secret else {},
                dict(spec.secret.annotations or {}) if spec.secret else {},
            )
            database = spec.database or (spec.databases[0].name if spec.databases else sqlexec.ADMIN_DATABASE)
            endpoint = Endpoint(
                hostname=service.admin.host,
                username=desired.name,
                ca_pem=service.admin.ca_pem,
                port=service.admin.port,
                database=database,
            )

            def write(version: str | None) -> SecretWrite:
                out = secret_write(
                    shape,
                    endpoint,
                    password,
                    service_id=service.service_id,
                    service_name=service.service_name,
                    version=version,
                    before=observed_secret,
                )
                # Which rotation the password was made for: a rotation cut short (before the Secret was
                # written, or after it but before status recorded it) resumes with it, not a new one.
                kept = observed_secret.annotations.get(ANN_ROTATION_TOKEN) if observed_secret else None
                out.annotations[ANN_ROTATION_TOKEN] = token if rotate else kept
                return out

            # 1. The Secret first: the password to be set is never only in memory.
            pending = write(status.get("passwordVersion") if step == sp.PasswordStep.KEEP else None)
            if _secret_differs(observed_secret, pending):
                await self._write_secret(namespace, secret_name, obj, pending)
            # 2. The role, its password, memberships and grants.
            plan = sp.plan_role(
                desired, catalog, admin=service.admin.username, set_password=step != sp.PasswordStep.KEEP
            )
            events: list[tuple[str, str, str]] = []
            if plan.statements:
                done = await session.run(plan.statements, password=password)
                log.info("PostgresRole %s/%s: ran %s", namespace, name, "; ".join(done))
                if plan.creates:
                    events.append((EventType.NORMAL, E.ROLE_CREATED, f"role {desired.name} created"))
                changed = [d for d in done if not d.startswith(("SetPassword", "CreateRole", "CommentOnRole"))]
                if changed and not plan.creates:
                    events.append(
                        (
                            EventType.NORMAL,
                            E.PRIVILEGES_APPLIED,
                            f"{len(changed)} change(s): {'; '.join(changed)}"[:900],
                        )
                    )
        # 3. Confirm: the Secret's password is the role's now.
        if step != sp.PasswordStep.KEEP:
            version = new_password_version()
            await self._write_secret(namespace, secret_name, obj, write(version))
            extra["passwordVersion"] = version
            if rotate or (step == sp.PasswordStep.NEW and not plan.creates and secret_pw):
                events.append(
                    (EventType.NORMAL, E.PASSWORD_ROTATED, f"the password of role {desired.name} was changed")
                )
        if rotate:
            extra["passwordRotationToken"] = token
        if plan.waiting:
            synced = sp.Verdict("False", R.WAITING, "; ".join(plan.waiting)[:900])
        else:
            synced = sp.Verdict("True", R.APPLIED, "the role, its memberships and privileges are as specified")
        ready = sp.Verdict("True", R.READY, f"role {desired.name} exists; Secret {secret_name} connects as it")
        await self._persist(ROLE_PLURAL, obj, {"Ready": ready, "Synced": synced}, extra, events)
        requeue = self.waiting_requeue if plan.waiting else self.settings.poll_interval
        return PassResult(requeue, ready=True)

    async def _write_secret(self, namespace: str, name: str, owner: dict[str, Any], write: SecretWrite) -> None:
        try:
            await self.kube.write_connection_secret(
                namespace=namespace,
                name=name,
                owner=owner,
                data=write.data,
                annotations=write.annotations,
                labels=write.labels,
            )
        except SecretConflictError:
            raise Waiting(
                R.SECRET_CONFLICT, f"Secret {name} exists and is not this PostgresRole's", terminal=True
            ) from None
        except SecretRejectedError as e:
            raise Waiting(R.SECRET_REJECTED, str(e), terminal=True) from None

    async def finalize_role(self, obj: dict[str, Any]) -> tuple[bool, str]:
        """Drop the role (after reassigning or refusing what it owns); ``(False, why)`` keeps the finalizer."""
        meta = obj["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        obj.setdefault("kind", ROLE_KIND)
        try:
            spec = PostgresRoleSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            return True, "invalid spec: nothing was made"
        try:
            service = await self.service(namespace, spec.service_ref.name, for_deletion=True)
            if service is None:
                return True, "the ManagedPostgres is gone: nothing to drop"
            async with sqlexec.session(service.admin) as session:
                catalog = await sqlexec.observe_role(session, spec.role_name, ())
                deps = await sqlexec.role_dependencies(session, spec.role_name)
                plan = sp.plan_role_drop(
                    catalog.role,
                    sp.marker(ROLE_KIND, namespace, name, uid),
                    deps,
                    policy=sp.OwnedPolicy(spec.owned_objects_policy or OwnedObjectsPolicy.REFUSE),
                    reassign_to=spec.reassign_owned_to,
                    roles=catalog.roles,
                    connectable=catalog.databases,
                    admin=service.admin.username,
                )
                if plan.refusal is not None:
                    raise Waiting(plan.refusal.reason, plan.refusal.message)
                if plan.statements:
                    done = await session.run(plan.statements)
                    log.info("PostgresRole %s/%s deleted: ran %s", namespace, name, "; ".join(done))
                    self.post_event(obj, EventType.NORMAL.value, E.ROLE_DROPPED.value, f"role {spec.role_name} dropped")
            return True, "dropped" if plan.statements else "not the operator's: forgotten"
        except (Waiting, sqlexec.SqlError) as e:
            return await self._deletion_waits(ROLE_PLURAL, obj, e)

    # --- PostgresDatabase --------------------------------------------------------------------------------

    async def database_pass(self, namespace: str, name: str) -> PassResult:
        obj = await self.kube.get_object(DATABASE_PLURAL, namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return PassResult(self.settings.poll_interval)
        obj.setdefault("kind", DATABASE_KIND)
        try:
            spec = PostgresDatabaseSpec.model_validate(obj.get("spec") or {})
        except ValidationError as e:
            return await self._refuse(
                DATABASE_PLURAL, obj, Waiting(R.INVALID_SPEC, _validation_message(e), terminal=True), {}
            )
        extra: dict[str, Any] = {"serviceName": spec.service_ref.name}
        try:
            service = await self.service(namespace, spec.service_ref.name)
            assert service is not None
            extra["serviceId"] = service.service_id
            return await self._database_pass(obj, spec, service, extra)
        except Waiting as w:
            return await self._refuse(DATABASE_PLURAL, obj, w, extra)
        except sqlexec.SqlError as e:
            reason = R.SERVICE_UNREACHABLE if e.unreachable else R.SQL_FAILED
            return await self._refuse(DATABASE_PLURAL, obj, Waiting(reason, str(e)), extra)

    async def _database_pass(
        self, obj: dict[str, Any], spec: PostgresDatabaseSpec, service: Service, extra: dict[str, Any]
    ) -> PassResult:
        meta = obj["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        status = obj.get("status") or {}
        desired = sp.DesiredDatabase(
            spec.database_name,
            sp.marker(DATABASE_KIND, namespace, name, uid),
            spec.owner or service.admin.username,
            spec.encoding,
            spec.locale,
        )
        events: list[tuple[str, str, str]] = []
        async with sqlexec.session(service.admin) as session:
            observed = await sqlexec.observe_database(session, desired.name)
            plan = sp.plan_database(
                desired,
                observed,
                roles=await sqlexec.role_names(session),
                claimed=bool(status.get("createRequested")),
                admin=service.admin.username,
            )
            if plan.refusal is not None:
                raise Waiting(plan.refusal.reason, plan.refusal.message, terminal=True)
            if plan.waiting:
                raise Waiting(R.WAITING, "; ".join(plan.waiting))
            if plan.creates:
                # Recorded first: CREATE DATABASE and its marker cannot share a transaction.
                stamp = _now()
                await self.kube.patch_object_status(DATABASE_PLURAL, namespace, name, {"createRequested": stamp})
                status["createRequested"] = stamp
            if plan.statements:
                done = await session.run(plan.statements)
                log.info("PostgresDatabase %s/%s: ran %s", namespace, name, "; ".join(done))
                events.append(
                    (EventType.NORMAL, E.DATABASE_CREATED, f"database {desired.name} created")
                    if plan.creates
                    else (EventType.NORMAL, E.DATABASE_UPDATED, "; ".join(done)[:900])
                )
        extra["createRequested"] = None
        obj["status"] = status
        ready = sp.Verdict("True", R.READY, f"database {desired.name} exists, owned by {desired.owner}")
        synced = (
            sp.Verdict("False", R.CREATION_ONLY, "; ".join(plan.notes))
            if plan.notes
            else sp.Verdict("True", R.APPLIED, "the database is as specified")
        )
        await self._persist(DATABASE_PLURAL, obj, {"Ready": ready, "Synced": synced}, extra, events)
        return PassResult(self.settings.poll_interval, ready=True)

    async def finalize_database(self, obj: dict[str, Any]) -> tuple[bool, str]:
        meta = obj["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        obj.setdefault("kind", DATABASE_KIND)
        try:
            spec = PostgresDatabaseSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            return True, "invalid spec: nothing was made"
        try:
            service = await self.service(namespace, spec.service_ref.name, for_deletion=True)
            if service is None:
                return True, "the ManagedPostgres is gone: nothing to drop"
            async with sqlexec.session(service.admin) as session:
                observed = await sqlexec.observe_database(session, spec.database_name)
                others = await sqlexec.other_sessions(session, spec.database_name) if observed else 0
                plan = sp.plan_database_drop(
                    observed,
                    sp.marker(DATABASE_KIND, namespace, name, uid),
                    policy=sp.DatabaseDeletion(spec.deletion_policy or DatabaseDeletionPolicy.RETAIN),
                    other_sessions=others,
                )
                if plan.refusal is not None:
                    raise Waiting(plan.refusal.reason, plan.refusal.message)
                if plan.statements:
                    done = await session.run(plan.statements)
                    log.info("PostgresDatabase %s/%s deleted: ran %s", namespace, name, "; ".join(done))
                    dropped = any(isinstance(s, sp.DropDatabase) for s in plan.statements)
                    event, message = (
                        (E.DATABASE_DROPPED, f"database {spec.database_name} dropped")
                        if dropped
                        else (E.DATABASE_RETAINED, f"database {spec.database_name} kept (deletionPolicy Retain)")
                    )
                    self.post_event(obj, EventType.NORMAL.value, event.value, message)
            return True, "done"
        except (Waiting, sqlexec.SqlError) as e:
            return await self._deletion_waits(DATABASE_PLURAL, obj, e)
