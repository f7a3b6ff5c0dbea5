"""The operator's own Prometheus metrics (kopf has none), with ``prometheus_client``.

``/metrics`` serves the operator's registry (text or OpenMetrics, as the scraper asks);
``/metrics/services`` serves the databases' metrics the relay (:mod:`.relay`) keeps. No label
names a resource on the high-volume series: resources are counted by state, Ready and Synced,
API calls by operation and status, limits and observation by organization.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from mpg_operator.controller.cloudaccess import ClientPool, ServiceSnapshots
    from mpg_operator.controller.observer import Observer
    from mpg_operator.controller.relay import MetricsRelay

API_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: from a fast LIST to a request that waited out a timeout."""
CREATE_TO_READY_BUCKETS = (30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200)
"""Seconds: a Managed Postgres service takes minutes to provision."""
DELETION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
PASS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

DRIFT_REASONS = {"Updated": "service", "ConfigurationApplied": "configuration"}
"""Events that, on a resource whose spec was already applied, mean drift was put back."""

DELETION_OUTCOMES = {
    "orphan": "orphaned",
    "protected": "kept",
    "observed": "kept",
    "nothing created": "nothing-created",
}


@dataclass(frozen=True)
class ResourceView:
    """What the metrics need of one ManagedPostgres (from the watch stream, no extra reads)."""

    state: str
    ready: str
    synced: str


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == type_:
            return cond
    return {}


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class OperatorMetrics:
    """The operator's registry and the hooks that feed it; cheap to call from the event loop."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.api_requests = Counter(
            "mpg_operator_api_requests",
            "ClickHouse Cloud API responses by operation and HTTP status (network: no response).",
            ["operation", "status"],
            registry=r,
        )
        self.api_duration = Histogram(
            "mpg_operator_api_request_duration_seconds",
            "ClickHouse Cloud API request latency (rate-limiter wait excluded) by operation.",
            ["operation"],
            buckets=API_LATENCY_BUCKETS,
            registry=r,
        )
        self.api_rate_limited = Counter(
            "mpg_operator_api_rate_limited",
            "429 responses received from the ClickHouse Cloud API, by operation.",
            ["operation"],
            registry=r,
        )
        self.reconciles = Counter(
            "mpg_operator_reconciles", "Reconcile passes by result (ok, error, exception).", ["result"], registry=r
        )
        self.reconcile_duration = Histogram(
            "mpg_operator_reconcile_duration_seconds", "Duration of reconcile passes.", buckets=PASS_BUCKETS, registry=r
        )
        self.create_to_ready = Histogram(
            "mpg_operator_create_to_ready_seconds",
            "Time from a ManagedPostgres' creation to its first Ready=True.",
            buckets=CREATE_TO_READY_BUCKETS,
            registry=r,
        )
        self.drift_corrections = Counter(
            "mpg_operator_drift_corrections",
            "Changes made elsewhere that the operator put back, by kind (service, configuration).",
            ["kind"],
            registry=r,
        )
        self.events = Counter(
            "mpg_operator_events", "Kubernetes Events posted, by type and reason.", ["type", "reason"], registry=r
        )
        self.deletions = Counter(
            "mpg_operator_deletions",
            "Finished deletions of ManagedPostgres resources by outcome (deleted, orphaned, kept, ...).",
            ["outcome"],
            registry=r,
        )
        self.deletion_duration = Histogram(
            "mpg_operator_deletion_duration_seconds",
            "Time from a ManagedPostgres' deletionTimestamp to the release of its finalizer.",
            buckets=DELETION_BUCKETS,
            registry=r,
        )
        start = Gauge("mpg_operator_start_time_seconds", "When the operator started (Unix time).", registry=r)
        start.set(time.time())
        self.resources: dict[str, ResourceView] = {}
        """uid -> state, Ready and Synced as last seen on the watch stream."""
        self._not_ready_since_create: set[str] = set()
        self.observer: Observer | None = None
        self.snapshots: ServiceSnapshots | None = None
        self.clients: ClientPool | None = None
        self.relay: MetricsRelay | None = None
        r.register(_LiveCollector(self))

    # --- hooks ------------------------------------------------------------------------------

    def on_api_response(self, operation: str, status: str, seconds: float) -> None:
        """The cloud client's response hook."""
        self.api_requests.labels(operation, status).inc()
        self.api_duration.labels(operation).observe(seconds)
        if status == "429":
            self.api_rate_limited.labels(operation).inc()

    def on_pass(self, result: str, seconds: float | None = None) -> None:
        """A reconcile pass ended (``seconds``: how long it ran; None when it raised)."""
        self.reconciles.labels(result).inc()
        if seconds is not None:
            self.reconcile_duration.observe(seconds)

    def on_resource(self, body: dict[str, Any], deleted: bool = False) -> None:
        """A ManagedPostgres as the watch stream shows it (status writes included)."""
        meta = body.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return
        if deleted:
            self.forget(uid)
            return
        status = body.get("status") or {}
        ready = _condition(status, "Ready")
        view = ResourceView(
            state=str(status.get("state") or "none"),
            ready=str(ready.get("status") or "Unknown"),
            synced=str(_condition(status, "Synced").get("status") or "Unknown"),
        )
        previous = self.resources.get(uid)
        self.resources[uid] = view
        if view.ready != "True":
            # Never Ready yet, as far as this process saw it first: its first Ready=True is a creation's.
            if previous is None and view.state in ("none", "creating"):
                self._not_ready_since_create.add(uid)
            return
        if uid in self._not_ready_since_create:
            self._not_ready_since_create.discard(uid)
            created = _timestamp(meta.get("creationTimestamp"))
            became_ready = _timestamp(ready.get("lastTransitionTime")) or time.time()
            if created is not None and became_ready >= created:
                self.create_to_ready.observe(became_ready - created)

    def forget(self, uid: str) -> None:
        self.resources.pop(uid, None)
        self._not_ready_since_create.discard(uid)

    def on_event(self, body: dict[str, Any], type_: str, reason: str) -> None:
        """An Event the operator posts; an update on an already applied spec is a drift correction."""
        self.events.labels(type_, reason).inc()
        kind = DRIFT_REASONS.get(reason)
        if kind is None:
            return
        meta = body.get("metadata") or {}
        observed = (body.get("status") or {}).get("observedGeneration")
        if observed is not None and observed == meta.get("generation"):
            self.drift_corrections.labels(kind).inc()

    def on_deleted(self, body: dict[str, Any], message: str) -> None:
        """A finalizer released: ``message`` is what :meth:`Executor.finalize` returned."""
        outcome = DELETION_OUTCOMES.get(message, "skipped" if message.startswith("The spec is invalid") else "deleted")
        self.deletions.labels(outcome).inc()
        started = _timestamp((body.get("metadata") or {}).get("deletionTimestamp"))
        if started is not None:
            self.deletion_duration.observe(max(0.0, time.time() - started))

    def counting_events(self, post: Callable[[dict[str, Any], str, str, str], None]) -> Callable[..., None]:
        """``post`` (an event sink) that also counts what it posts."""

        def post_and_count(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
            post(body, type_, reason, message)
            self.on_event(body, type_, reason)

        return post_and_count

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry's exposition in the format ``accept`` asks for: (body, content type)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _LiveCollector(Collector):
    """Series computed at scrape time from live state (resources, observer, limiters, relay)."""

    def __init__(self, metrics: OperatorMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Any]:
        m = self.m
        by_state = GaugeMetricFamily(
            "mpg_operator_managedpostgres_resources",
            "ManagedPostgres resources served, by service state, Ready and Synced.",
            labels=["state", "ready", "synced"],
        )
        counts: dict[tuple[str, str, str], int] = {}
        for view in m.resources.values():
            key = (view.state, view.ready, view.synced)
            counts[key] = counts.get(key, 0) + 1
        for key, n in sorted(counts.items()):
            by_state.add_metric(list(key), n)
        yield by_state
        if m.observer is not None:
            lists = CounterMetricFamily(
                "mpg_operator_observer_lists",
                "LISTs sent by the organizations' poller (steady, fast while in flight, failed).",
                labels=["reason"],
            )
            for reason, n in sorted(m.observer.lists.items()):
                lists.add_metric([reason], n)
            yield lists
        if m.snapshots is not None:
            age = GaugeMetricFamily(
                "mpg_operator_observation_age_seconds",
                "Age of the last successful LIST of each organization the operator serves.",
                labels=["organization"],
            )
            now = time.time()
            ages: dict[str, float] = {}
            for entry in m.snapshots.entries():
                if entry.snapshot is not None:
                    org = entry.client.organization_id
                    value = now - entry.snapshot.fetched_at
                    ages[org] = min(value, ages.get(org, value))
            for org, value in sorted(ages.items()):
                age.add_metric([org], value)
            yield age
        if m.clients is not None:
            yield from _limiter_families(m.clients)
        if m.relay is not None:
            yield from m.relay.health_families()


def _limiter_families(clients: ClientPool) -> Iterator[Any]:
    waits = CounterMetricFamily(
        "mpg_operator_ratelimiter_waits", "API requests that waited for the rate limiter.", labels=["organization"]
    )
    wait_seconds = CounterMetricFamily(
        "mpg_operator_ratelimiter_wait_seconds",
        "Seconds API requests spent waiting for the rate limiter.",
        labels=["organization"],
    )
    pauses = CounterMetricFamily(
        "mpg_operator_ratelimiter_pauses", "Pauses of an API key after a 429.", labels=["organization"]
    )
    in_window = GaugeMetricFamily(
        "mpg_operator_ratelimiter_requests_in_window",
        "Requests the rate limiter counts in its window now (the API allows 10 per 10 s per key).",
        labels=["organization"],
    )
    seen: set[int] = set()
    for client in clients.clients():
        limiter = client.rate_limiter
        if id(limiter) in seen:
            continue  # clients of one key share one limiter
        seen.add(id(limiter))
        org = [client.organization_id]
        waits.add_metric(org, limiter.stats.waited)
        wait_seconds.add_metric(org, limiter.stats.wait_seconds)
        pauses.add_metric(org, limiter.stats.pauses)
        in_window.add_metric(org, limiter.in_window())
    yield from (waits, wait_seconds, pauses, in_window)


RELAY_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def serve_metrics(metrics: OperatorMetrics, host: str, port: int) -> web.AppRunner:
    """Start an HTTP server with ``/metrics`` (and ``/metrics/services`` when the metrics have a
    relay); the caller cleans up the returned runner."""

    async def operator_metrics(request: web.Request) -> web.Response:
        body, content_type = metrics.render(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def service_metrics(_: web.Request) -> web.Response:
        if metrics.relay is None:
            return web.Response(status=404, text="the database metrics relay is not running\n")
        status, text = await metrics.relay.scrape()
        return web.Response(status=status, body=text.encode(), headers={"Content-Type": RELAY_CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", operator_metrics)
    app.router.add_get("/metrics/services", service_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
