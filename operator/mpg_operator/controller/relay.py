"""The databases' metrics, relayed into the cluster: Prometheus scrapes the operator, never the API.

* **Cost.** Scrapes of ``/metrics/services`` are served from memory. A scrape that finds an
  organization's data older than ``interval`` (60 s: the API refreshes no faster) starts one
  fetch of the organization-wide endpoint (``GET /postgres/prometheus``) through the operator's
  own client and rate limiter for that key; any number of scrapes in between cost nothing, and
  nobody scraping costs nothing at all. Only the first scrape of an organization waits for its
  data.
* **More than 100 services** in an organization (the org endpoint's limit): the relay asks the
  per-service endpoint for the services it relays, each at most once per ``interval`` and only
  while the key has idle capacity (half its window free, nobody waiting), so a queued create,
  update or LIST never waits for a metrics request.
* **Whose services.** Only services whose ``mpg-operator.uid`` owner tag names a resource this
  operator serves now; every sample gets ``namespace`` and ``managedpostgres`` labels from that
  resource. Another team's services in the same organization are never relayed.
* **Failures.** A failed fetch is not retried before the next turn (``interval`` later). The last
  good data keeps being served, with ``mpg_operator_relay_up`` 0 and
  ``mpg_operator_relay_data_age_seconds`` growing; with no good data at all for an organization
  that failed, the scrape answers 503 (never an empty 200 that hides the failure).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from mpg_operator.cloud.client import CloudClient
from mpg_operator.cloud.errors import CloudError
from mpg_operator.cloud.ids import canonical_id
from mpg_operator.controller.cloudaccess import ServiceSnapshots, SnapshotEntry
from mpg_operator.reconcile.planner import owner_uid

log = logging.getLogger(__name__)

RELAY_INTERVAL = 60.0
"""Seconds between two fetches of one organization's (or service's) metrics."""
ORG_ENDPOINT_LIMIT = 100
"""The organization endpoint reports at most this many services."""
FIRST_FETCH_WAIT = 10.0
"""Seconds a scrape waits for an organization's first data."""
SERVICE_LABEL = "postgres_service"
ADDED_LABELS = ("namespace", "managedpostgres")

Served = Callable[[], Mapping[str, tuple[str, str]]]
"""uid -> (namespace, name) of the resources the operator serves now."""


@dataclass
class _Data:
    """Parsed families of one fetch, and when it was sent."""

    families: list[Metric]
    fetched_at: float


@dataclass
class _Organization:
    """The relay's state for one organization."""

    organization_id: str
    org_data: _Data | None = None
    service_data: dict[str, _Data] = field(default_factory=dict)
    service_attempts: dict[str, float] = field(default_factory=dict)
    """service id -> ``time.monotonic()`` of its last per-service fetch."""
    per_service: bool = False
    attempted_at: float = float("-inf")
    up: bool = False
    error: str | None = None
    fetches: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0})
    task: asyncio.Task[None] | None = None

    def data(self) -> list[_Data]:
        if self.per_service:
            return list(self.service_data.values())
        return [self.org_data] if self.org_data is not None else []

    def fetched_at(self) -> float | None:
        """When the oldest data served was fetched (None: no data)."""
        times = [d.fetched_at for d in self.data()]
        return min(times) if times else None


def parse(text: str) -> list[Metric]:
    """The families of an exposition, sample names as the upstream wrote them."""
    families = list(text_string_to_metric_families(text))
    for family in families:
        if family.type != "counter":
            continue
        bare = f"# TYPE {family.name} counter" in text
        for i, sample in enumerate(family.samples):
            # The parser appends ``_total`` to a counter's samples; the API's counters end in ``_Total``.
            if bare and sample.name == family.name + "_total":
                family.samples[i] = sample._replace(name=family.name)
    return families


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample_line(name: str, labels: Mapping[str, str], value: float) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {floatToGoString(value)}"


class MetricsRelay:
    """Serves the organizations' Postgres metrics from memory; see the module docstring."""

    def __init__(
        self,
        snapshots: ServiceSnapshots,
        served: Served,
        *,
        interval: float = RELAY_INTERVAL,
        org_limit: int = ORG_ENDPOINT_LIMIT,
        first_fetch_wait: float = FIRST_FETCH_WAIT,
    ) -> None:
        self.snapshots = snapshots
        self.served = served
        self.interval = interval
        self.org_limit = org_limit
        self.first_fetch_wait = first_fetch_wait
        self._orgs: dict[str, _Organization] = {}

    # --- which organizations, through which client --------------------------------------

    def _entries(self) -> dict[str, SnapshotEntry]:
        """One listed entry per organization that has resources (two keys of one org: one fetch)."""
        entries: dict[str, SnapshotEntry] = {}
        for entry in self.snapshots.entries():
            if entry.snapshot is not None and entry.users:
                entries.setdefault(entry.client.organization_id, entry)
        return entries

    def _owners(self, entry: SnapshotEntry) -> dict[str, tuple[str, str]]:
        """service id -> (namespace, name) of its owner, for services of resources served now."""
        served = self.served()
        owners: dict[str, tuple[str, str]] = {}
        assert entry.snapshot is not None
        for service in entry.snapshot.services:
            uid = owner_uid(service)
            if service.id and uid is not None and uid in served:
                owners[service.id] = served[uid]
        return owners

    # --- fetching ---------------------------------------------------------------------------

    def _start_fetches(self, entries: Mapping[str, SnapshotEntry]) -> list[_Organization]:
        """Start the fetches that are due; the organizations with one under way."""
        now = time.monotonic()
        fetching = []
        for org_id, entry in entries.items():
            org = self._orgs.setdefault(org_id, _Organization(org_id))
            if org.task is None or org.task.done():
                assert entry.snapshot is not None
                org.per_service = len(entry.snapshot.services) > self.org_limit
                if not org.per_service and now - org.attempted_at < self.interval:
                    continue
                org.task = asyncio.ensure_future(self._fetch(org, entry))
            fetching.append(org)
        for org_id in list(self._orgs):
            if org_id not in entries:  # its resources are gone
                del self._orgs[org_id]
        return fetching

    async def _fetch(self, org: _Organization, entry: SnapshotEntry) -> None:
        client = entry.client
        try:
            if org.per_service:
                await self._fetch_services(org, client, set(self._owners(entry)))
            else:
                org.attempted_at = time.monotonic()
                sent_at = time.time()
                text = await client.get_org_prometheus(max_retries=0)
                org.org_data = _Data(parse(text), sent_at)
                org.service_data.clear()
                self._succeeded(org)
        except CloudError as e:
            self._failed(org, str(e))
        except ValueError as e:  # not the text format
            self._failed(org, f"unreadable exposition ({e})")
        except Exception as e:  # noqa: BLE001 -- shown as a failed fetch, not lost in an unawaited task
            log.exception("Metrics relay: fetching organization %s's metrics failed", org.organization_id)
            self._failed(org, type(e).__name__)

    async def _fetch_services(self, org: _Organization, client: CloudClient, service_ids: set[str]) -> None:
        for gone in set(org.service_data) - service_ids:
            del org.service_data[gone]
        for gone in set(org.service_attempts) - service_ids:
            del org.service_attempts[gone]
        now = time.monotonic()
        attempts = org.service_attempts
        due = sorted(
            (sid for sid in service_ids if now - attempts.get(sid, float("-inf")) >= self.interval),
            key=lambda sid: attempts.get(sid, float("-inf")),
        )
        limiter = client.rate_limiter
        for service_id in due:
            if not limiter.idle(reserve=limiter.limit // 2):
                break  # the rest at a later scrape: queued requests go first
            attempts[service_id] = org.attempted_at = time.monotonic()
            sent_at = time.time()
            text = await client.get_service_prometheus(service_id, max_retries=0)
            org.service_data[service_id] = _Data(parse(text), sent_at)
            self._succeeded(org)

    @staticmethod
    def _succeeded(org: _Organization) -> None:
        org.up, org.error = True, None
        org.fetches["ok"] += 1

    @staticmethod
    def _failed(org: _Organization, error: str) -> None:
        org.up, org.error = False, error
        org.fetches["error"] += 1
        log.warning("Metrics relay: fetching organization %s's metrics failed: %s", org.organization_id, error)

    # --- serving ----------------------------------------------------------------------------

    async def scrape(self) -> tuple[int, str]:
        """(HTTP status, exposition text) for a scrape of ``/metrics/services``."""
        entries = self._entries()
        first = [org.task for org in self._start_fetches(entries) if org.task is not None and not org.data()]
        if first:
            await asyncio.wait(first, timeout=self.first_fetch_wait)
        return self.render(entries)

    def render(self, entries: Mapping[str, SnapshotEntry] | None = None) -> tuple[int, str]:
        entries = self._entries() if entries is None else entries
        families: dict[str, tuple[str, str, list[str]]] = {}
        failed_without_data = []
        for org_id, entry in sorted(entries.items()):
            org = self._orgs.get(org_id)
            if org is None:
                continue
            if not org.data():
                if org.error is not None:
                    failed_without_data.append(f"organization {org_id}: {org.error}")
                continue
            owners = self._owners(entry)
            for data in org.data():
                for family in data.families:
                    _, _, lines = families.setdefault(family.name, (family.type, family.documentation, []))
                    for sample in family.samples:
                        owner = owners.get(canonical_id(sample.labels.get(SERVICE_LABEL, "")))
                        if owner is None:
                            continue  # not a service of a resource served here
                        labels = {**sample.labels, "namespace": owner[0], "managedpostgres": owner[1]}
                        lines.append(_sample_line(sample.name, labels, sample.value))
        if failed_without_data and not any(lines for _, _, lines in families.values()):
            return 503, "no database metrics to serve:\n" + "\n".join(failed_without_data) + "\n"
        blocks = []
        for name, (type_, help_text, lines) in families.items():
            if lines:
                blocks.append("\n".join([f"# HELP {name} {help_text}", f"# TYPE {name} {type_}", *lines]))
        age = self._age_family(entries)
        if age.samples:
            age_lines = [_sample_line(s.name, s.labels, s.value) for s in age.samples]
            blocks.append("\n".join([f"# HELP {age.name} {age.documentation}", f"# TYPE {age.name} gauge", *age_lines]))
        return 200, "\n\n".join(blocks) + "\n" if blocks else ""

    def _age_family(self, entries: Mapping[str, SnapshotEntry] | None = None) -> GaugeMetricFamily:
        age = GaugeMetricFamily(
            "mpg_operator_relay_data_age_seconds",
            "Age of the database metrics the relay serves for an organization (oldest fetch).",
            labels=["organization"],
        )
        now = time.time()
        for org_id, org in sorted(self._orgs.items()):
            if entries is not None and org_id not in entries:
                continue
            fetched_at = org.fetched_at()
            if fetched_at is not None:
                age.add_metric([org_id], now - fetched_at)
        return age

    def health_families(self) -> Iterator[Any]:
        """The relay's own series for the operator's ``/metrics``."""
        up = GaugeMetricFamily(
            "mpg_operator_relay_up",
            "1 if the relay's last fetch of an organization's database metrics succeeded.",
            labels=["organization"],
        )
        fetches = CounterMetricFamily(
            "mpg_operator_relay_fetches",
            "Fetches of database metrics from the API by the relay, by organization and result.",
            labels=["organization", "result"],
        )
        for org_id, org in sorted(self._orgs.items()):
            up.add_metric([org_id], 1 if org.up else 0)
            for result, n in sorted(org.fetches.items()):
                fetches.add_metric([org_id, result], n)
        yield up
        yield fetches
        yield self._age_family()

    async def aclose(self) -> None:
        tasks = [org.task for org in self._orgs.values() if org.task is not None and not org.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
