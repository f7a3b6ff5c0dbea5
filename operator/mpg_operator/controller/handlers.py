"""kopf handlers: thin glue between Kubernetes events and :class:`~mpg_operator.controller.executor.Executor`.

* A daemon per ManagedPostgres runs reconcile passes in a loop: soon while something is in
  flight, rarely (jittered) in steady state, and at once when the spec changes, the
  connection Secret is deleted, or the organization's poller (:mod:`.observer`) sees its
  service change or vanish.
* The delete handler (kopf's finalizer) deletes the remote service, or orphans it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from mpg_operator.controller.cloudaccess import ClientPool, ServiceSnapshots, current_resource
from mpg_operator.controller.executor import Executor
from mpg_operator.controller.kube import KubeApi
from mpg_operator.controller.kubehttp import login_as_operator
from mpg_operator.controller.metrics import OperatorMetrics, serve_metrics
from mpg_operator.controller.observer import Observer
from mpg_operator.controller.relay import MetricsRelay
from mpg_operator.controller.settings import OperatorSettings
from mpg_operator.controller.sqlresources import SqlReconciler
from mpg_operator.controller.wakeup import Wakeup
from mpg_operator.reconcile.connection import ANNOTATION_PREFIX, LABEL_MANAGED_BY, MANAGED_BY
from mpg_operator.resource import ANNOTATION_PAUSED, ANNOTATION_ROTATE_PASSWORD, GROUP, PLURAL, VERSION
from mpg_operator.resource_sql import DATABASE_PLURAL, ROLE_PLURAL

FINALIZER = f"{GROUP}/mpg-operator"
log = logging.getLogger("mpg_operator")

# Set by `mpg-operator run` (or tests/demo) before kopf starts.
METRICS_ADDRESS: tuple[str, int] | None = None


@dataclass
class Runtime:
    """Everything the handlers share, created at operator start-up."""

    settings: OperatorSettings
    kube: KubeApi
    clients: ClientPool
    snapshots: ServiceSnapshots
    executor: Executor
    metrics: OperatorMetrics
    sql: SqlReconciler
    wakeups: dict[str, Wakeup] = field(default_factory=dict)
    generations: dict[str, tuple[int, str | None, str | None]] = field(default_factory=dict)
    """uid -> what a pass acts on besides status: generation, pause and rotation annotations."""
    in_flight: set[str] = field(default_factory=set)
    """uids whose last pass left something in flight (creating, updating, settling)."""
    replica_of: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Read replica uid -> (namespace, name) of its primary: woken when the primary's Secret changes."""
    observer: Observer | None = None
    served: dict[str, tuple[str, str]] = field(default_factory=dict)
    """uid -> (namespace, name) of the resources whose reconcile loop runs here (the relay's owners)."""
    relay: MetricsRelay | None = None
    pass_slots: Any = field(default_factory=contextlib.nullcontext)
    """Bounds the first passes of resources running at once (``MPG_MAX_CONCURRENT_PASSES``)."""
    observer_task: asyncio.Task[None] | None = None
    trim_task: asyncio.Task[None] | None = None
    metrics_runner: Any = None

    def wakeup(self, uid: str) -> Wakeup:
        return self.wakeups.setdefault(uid, Wakeup())

    def wake_changed(self, uids: set[str]) -> None:
        """Wake the live resources among ``uids`` (their service changed between two LISTs)."""
        for uid in uids:
            event = self.wakeups.get(uid)
            if event is not None:
                event.set()

    def wake_replicas_of(self, namespace: str, primary: str) -> None:
        """Wake the read replicas of a primary (its password changed: theirs follows)."""
        self.wake_changed({uid for uid, of in self.replica_of.items() if of == (namespace, primary)})

    def start_observer(self) -> None:
        if self.observer is not None and self.observer_task is None:
            self.observer_task = asyncio.ensure_future(self.observer.run())
        if self.trim_task is None:
            self.trim_task = asyncio.ensure_future(trim_memory_forever())

    async def aclose(self) -> None:
        for task in (self.observer_task, self.trim_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self.observer_task = self.trim_task = None
        if self.relay is not None:
            await self.relay.aclose()
        await self.clients.aclose()
        await self.kube.aclose()
        if self.metrics_runner is not None:
            await self.metrics_runner.cleanup()


def _post_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    kopf.event(cast(kopf.Body, body), type=type_, reason=reason, message=message)  # a plain dict serves as well


def build_runtime(settings: OperatorSettings) -> Runtime:
    metrics = OperatorMetrics()
    kube = KubeApi()
    clients = ClientPool(settings.client, on_response=metrics.on_api_response)
    snapshots = ServiceSnapshots()
    post_event = metrics.counting_events(_post_event)
    executor = Executor(kube=kube, settings=settings, clients=clients, snapshots=snapshots, post_event=post_event)
    runtime = Runtime(settings, kube, clients, snapshots, executor, metrics, SqlReconciler(kube, settings, post_event))
    snapshots.on_change = runtime.wake_changed
    runtime.observer = Observer(
        snapshots,
        interval=settings.list_max_age,
        fast_interval=settings.list_fast_interval,
        # A resource's steady pass reads the snapshot at least every poll interval (+20 % jitter).
        forget_after=2 * settings.poll_interval + settings.list_max_age,
        in_flight=runtime.in_flight.__contains__,
    )
    runtime.relay = MetricsRelay(snapshots, lambda: runtime.served)
    metrics.observer, metrics.snapshots, metrics.clients, metrics.relay = (
        runtime.observer,
        snapshots,
        clients,
        runtime.relay,
    )
    if settings.max_concurrent_passes:
        runtime.pass_slots = asyncio.Semaphore(settings.max_concurrent_passes)
    return runtime


MALLOC_ARENAS = 2
"""glibc gives each thread that allocates its own malloc arena (up to 8 per core), and memory freed
in one stays with it: every worker thread (kopf's, asyncio's) then holds a partly empty arena.
Two arenas are enough for one event loop and a few threads (``MALLOC_ARENA_MAX`` overrides)."""


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """``mallopt(M_ARENA_MAX, arenas)`` on glibc, unless ``MALLOC_ARENA_MAX`` is set; True if applied."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no arenas to limit)
        return False
    m_arena_max = -8
    return bool(mallopt(m_arena_max, arenas))


TRIM_INTERVAL = 60.0
"""Seconds between two ``gc.collect()`` + ``malloc_trim(0)``: a LIST of 1,000 services, a burst of
passes or watch events leave garbage cycles and freed heap pages that would otherwise stay resident."""


async def trim_memory_forever(interval: float = TRIM_INTERVAL) -> None:
    """Collect cycles and give freed heap pages back to the OS, every ``interval`` seconds."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        trim = None
    while True:
        await asyncio.sleep(interval)
        gc.collect()
        if trim is not None:
            trim(0)


def _runtime(memo: Any) -> Runtime:
    return memo["runtime"]


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    limit_malloc_arenas()  # before worker threads start allocating
    settings.queueing.idle_timeout = 1.0  # per-object event workers (a task and a queue each) go soon
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # kopf.event() posts the operator's Events; kopf's own log lines are never posted as Events
    # (reason "Logging"): Events keep to the operator's fixed vocabulary of reasons.
    settings.posting.loggers = False
    settings.watching.label_selectors["", "v1", "secrets"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    runtime = build_runtime(OperatorSettings.from_env())
    if METRICS_ADDRESS is not None:
        runtime.metrics_runner = await serve_metrics(runtime.metrics, *METRICS_ADDRESS)
    runtime.start_observer()
    memo["runtime"] = runtime


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
    """kopf's credentials: the same the operator's own requests use (:mod:`.kubehttp`)."""
    return login_as_operator(settings)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "runtime" in memo:
        await _runtime(memo).aclose()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def spec_changed(type: str, body: kopf.Body, uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Wake the resource's loop when its spec, pause or rotation annotation changes (not on the
    operator's own status writes)."""
    if "runtime" not in memo:
        return
    runtime = _runtime(memo)
    runtime.metrics.on_resource(cast(dict[str, Any], body), deleted=type == "DELETED")
    meta = body.get("metadata", {})
    annotations = meta.get("annotations") or {}
    seen = (
        int(meta.get("generation") or 0),
        annotations.get(ANNOTATION_PAUSED),
        annotations.get(ANNOTATION_ROTATE_PASSWORD),
    )
    if runtime.generations.get(uid) != seen:
        runtime.generations[uid] = seen
        runtime.wakeup(uid).set()
    primary = ((body.get("spec") or {}).get("readReplicaOf") or {}).get("name")
    if primary and meta.get("namespace"):
        runtime.replica_of[uid] = (meta["namespace"], primary)


@kopf.on.event("", "v1", "secrets", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def connection_secret_changed(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A connection Secret was deleted or edited: let its owner check it now."""
    if "runtime" not in memo or type not in ("DELETED", "MODIFIED"):
        return
    runtime = _runtime(memo)
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("uid") in runtime.wakeups:
            runtime.wakeup(ref["uid"]).set()
            runtime.wake_replicas_of(body.get("metadata", {}).get("namespace", ""), ref.get("name", ""))


@kopf.daemon(
    GROUP,
    VERSION,
    PLURAL,
    id="reconcile",
    initial_delay=lambda **_: random.uniform(0, 1.0),
    cancellation_timeout=10.0,
)
async def reconcile_loop(
    name: str, namespace: str | None, uid: str, stopped: kopf.DaemonStopped, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    """Reconcile one ManagedPostgres until it is deleted or the operator stops."""
    assert namespace is not None  # a namespaced kind
    runtime = _runtime(memo)
    wake = runtime.wakeup(uid)
    current_resource.set(uid)  # this task's LISTs are this resource's: the observer polls its org
    runtime.served[uid] = (namespace, name)
    failures = 0
    started = False
    stop_watch = wake.ring_when_stopped(stopped)
    try:
        while not stopped:
            wake.clear()
            try:
                # A resource's first passes are bounded: when many start at once (operator start,
                # a bulk apply) the rest wait holding nothing, and the key's queue stays short.
                async with runtime.pass_slots if failures or not started else contextlib.nullcontext():
                    began = time.monotonic()
                    result = await runtime.executor.run_pass(namespace, name)
                started = True
                delay = result.requeue_after
                if result.active:  # the poller refreshes faster while the key is idle
                    runtime.in_flight.add(uid)
                else:
                    runtime.in_flight.discard(uid)
                runtime.metrics.on_pass("error" if result.error else "ok", time.monotonic() - began)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Kubernetes API trouble or a bug: back off, keep looping
                failures += 1
                delay = min(runtime.settings.poll_interval, runtime.settings.poll_interval_active * 2**failures)
                runtime.metrics.on_pass("exception")
                logger.error(f"Reconcile pass failed ({type(e).__name__}: {e}); retrying in {delay:.0f}s")
            await wake.sleep(delay)
    finally:
        stop_watch.cancel()
        runtime.wakeups.pop(uid, None)
        runtime.in_flight.discard(uid)
        runtime.generations.pop(uid, None)
        runtime.served.pop(uid, None)
        runtime.replica_of.pop(uid, None)


@kopf.on.delete(GROUP, VERSION, PLURAL, id="finalize")
async def finalize(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Delete (or orphan) the remote service; kopf removes the finalizer when this returns."""
    runtime = _runtime(memo)
    meta = body.get("metadata", {})
    fresh = await runtime.kube.get_resource(meta.get("namespace"), meta.get("name"))
    current = fresh or dict(body)
    done, message = await runtime.executor.finalize(current)
    if not done:
        raise kopf.TemporaryError(message, delay=runtime.executor.finalize_retry_after(meta.get("uid", "")))
    await runtime.executor.release_credentials(current)
    runtime.metrics.on_deleted(current, message)


# --- PostgresRole and PostgresDatabase: over SQL, never through the ClickHouse Cloud API -------------------


def _sql_seen(body: kopf.Body) -> tuple[int, str | None, str | None]:
    meta = body.get("metadata", {})
    annotations = meta.get("annotations") or {}
    return (
        int(meta.get("generation") or 0),
        annotations.get(ANNOTATION_PAUSED),
        annotations.get(ANNOTATION_ROTATE_PASSWORD),
    )


@kopf.on.event(GROUP, VERSION, ROLE_PLURAL)
@kopf.on.event(GROUP, VERSION, DATABASE_PLURAL)
async def sql_spec_changed(type: str, body: kopf.Body, uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Wake the object's loop when its spec or rotation annotation changes (not on status writes)."""
    if "runtime" not in memo or type == "DELETED":
        return
    runtime = _runtime(memo)
    seen = _sql_seen(body)
    if runtime.generations.get(uid) != seen:
        runtime.generations[uid] = seen
        runtime.wakeup(uid).set()


async def _sql_loop(
    kind: str, name: str, namespace: str, uid: str, stopped: kopf.DaemonStopped, memo: kopf.Memo, logger: Any
) -> None:
    runtime = _runtime(memo)
    wake = runtime.wakeup(uid)
    sql = runtime.sql
    run = sql.role_pass if kind == ROLE_PLURAL else sql.database_pass
    failures = 0
    stop_watch = wake.ring_when_stopped(stopped)
    try:
        while not stopped:
            wake.clear()
            try:
                async with sql.lock(uid):
                    result = await run(namespace, name)
                delay = result.requeue_after
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Kubernetes API trouble or a bug: back off, keep looping
                failures += 1
                delay = min(runtime.settings.poll_interval, runtime.settings.poll_interval_active * 2**failures)
                logger.error(f"{kind} pass failed ({type(e).__name__}); retrying in {delay:.0f}s")
            await wake.sleep(delay)
    finally:
        stop_watch.cancel()
        runtime.wakeups.pop(uid, None)
        runtime.generations.pop(uid, None)


@kopf.daemon(GROUP, VERSION, ROLE_PLURAL, id="sql", initial_delay=lambda **_: random.uniform(0, 0.5),
             cancellation_timeout=10.0)  # fmt: skip
async def role_loop(
    name: str, namespace: str | None, uid: str, stopped: kopf.DaemonStopped, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    """Reconcile one PostgresRole until it is deleted or the operator stops."""
    assert namespace is not None
    await _sql_loop(ROLE_PLURAL, name, namespace, uid, stopped, memo, logger)


@kopf.daemon(GROUP, VERSION, DATABASE_PLURAL, id="sql", initial_delay=lambda **_: random.uniform(0, 0.5),
             cancellation_timeout=10.0)  # fmt: skip
async def database_loop(
    name: str, namespace: str | None, uid: str, stopped: kopf.DaemonStopped, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    """Reconcile one PostgresDatabase until it is deleted or the operator stops."""
    assert namespace is not None
    await _sql_loop(DATABASE_PLURAL, name, namespace, uid, stopped, memo, logger)


async def _sql_finalize(kind: str, body: kopf.Body, memo: kopf.Memo) -> None:
    runtime = _runtime(memo)
    meta = body.get("metadata", {})
    fresh = await runtime.kube.get_object(kind, meta.get("namespace"), meta.get("name"))
    current = fresh or dict(body)
    sql = runtime.sql
    finalize = sql.finalize_role if kind == ROLE_PLURAL else sql.finalize_database
    async with sql.lock(meta.get("uid", "")):
        done, message = await finalize(current)
    if not done:
        raise kopf.TemporaryError(message, delay=sql.waiting_requeue)
    sql.forget(meta.get("uid", ""))


@kopf.on.delete(GROUP, VERSION, ROLE_PLURAL, id="finalize-sql")
async def finalize_role(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Drop the role (refusing or reassigning what it owns); kopf removes the finalizer when this returns."""
    await _sql_finalize(ROLE_PLURAL, body, memo)


@kopf.on.delete(GROUP, VERSION, DATABASE_PLURAL, id="finalize-sql")
async def finalize_database(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Forget (Retain) or drop (Delete) the database; kopf removes the finalizer when this returns."""
    await _sql_finalize(DATABASE_PLURAL, body, memo)
