"""The database metrics relay against the simulator with real PostgreSQL behind each service:
real HTTP, the operator's own client and rate limiter, rows inserted with a real client."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mpg_operator.cloud.client import CloudClient
from mpg_operator.cloud.ratelimit import RateLimiter
from mpg_operator.controller.cloudaccess import ServiceSnapshots, current_resource
from mpg_operator.controller.relay import MetricsRelay
from mpg_operator.reconcile.desired import TAG_NAME, TAG_NAMESPACE, TAG_UID

ORG_PROMETHEUS = "/postgres/prometheus"


def owner_tags(uid: str, namespace: str, name: str) -> list[dict[str, str]]:
    return [
        {"key": TAG_UID, "value": uid},
        {"key": TAG_NAMESPACE, "value": namespace},
        {"key": TAG_NAME, "value": name},
    ]


def samples(text: str, name: str) -> list[Any]:
    """Samples of family ``name`` in an exposition, parsed with prometheus_client's parser."""
    found = []
    for family in text_string_to_metric_families(text):
        found += [s for s in family.samples if s.name in (name, name + "_total")]
    return found


def upstream_requests(sim: Any, suffix: str = ORG_PROMETHEUS) -> int:
    return sum(1 for r in sim.requests if r.method == "GET" and r.path.endswith(suffix))


@contextlib.asynccontextmanager
async def relay_for(sim: Any, served: dict[str, tuple[str, str]], **options: Any) -> AsyncIterator[MetricsRelay]:
    """A relay over a snapshot entry used by every served resource, as the operator has one."""
    client = CloudClient(
        key_id=sim.key_id,
        key_secret=sim.key_secret,
        organization_id=sim.org_id,
        base_url=sim.url,
        rate_limiter=RateLimiter(10, 10.0),
        max_retries=0,
    )
    snapshots = ServiceSnapshots()
    for uid in served:
        token = current_resource.set(uid)
        try:
            await snapshots.get(client, max_age=0.0)
        finally:
            current_resource.reset(token)
    relay = MetricsRelay(snapshots, lambda: served, **options)
    try:
        yield relay
    finally:
        await relay.aclose()
        await client.aclose()


async def insert_rows(sim: Any, service_id: str, rows: int) -> None:
    """Insert ``rows`` rows into the service's real server, as one of its clients."""
    uri = sim.services[service_id].connection_string()
    async with await psycopg.AsyncConnection.connect(
        uri, sslmode="require", connect_timeout=10, autocommit=True
    ) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS relay_probe (n int)")
        await conn.execute("INSERT INTO relay_probe SELECT generate_series(1, %s)", [rows])


@pytest.fixture
async def two_teams(pg_api: Any) -> dict[str, dict[str, Any]]:
    """Two running services of one organization: ours (served) and another team's."""
    ours = await pg_api.create("orders", tags=owner_tags("uid-ours", "shop", "orders-db"))
    theirs = await pg_api.create("billing", tags=owner_tags("uid-theirs", "billing", "ledger"))
    for svc in (ours, theirs):
        await pg_api.wait_state(svc["id"], "running", timeout=60)
    return {"ours": ours, "theirs": theirs}


async def test_inserted_rows_show_up_under_the_owner_labels_and_only_served_services(simulator_pg, two_teams):
    ours, theirs = two_teams["ours"], two_teams["theirs"]
    served = {"uid-ours": ("shop", "orders-db")}
    async with relay_for(simulator_pg, served, interval=0.5) as relay:
        status, text = await relay.scrape()
        assert status == 200
        (before,) = samples(text, "PostgresServer_TuplesInserted_Total")
        assert before.labels["postgres_service"] == ours["id"]
        assert before.labels["namespace"] == "shop" and before.labels["managedpostgres"] == "orders-db"
        await insert_rows(simulator_pg, ours["id"], 1234)
        deadline = time.monotonic() + 30
        while True:  # PostgreSQL flushes its statistics shortly after a session ends
            await asyncio.sleep(0.6)
            status, text = await relay.scrape()
            (after,) = samples(text, "PostgresServer_TuplesInserted_Total")
            if after.value >= before.value + 1234 or time.monotonic() > deadline:
                break
        assert after.value >= before.value + 1234
        assert theirs["id"] not in text and "billing" not in text
        families = {f.name for f in text_string_to_metric_families(text)}
        assert {
            "PostgresServiceInfo",
            "PostgresServer_CPUSeconds_Total",
            "PostgresServer_ActiveConnections",
        } <= families
        # The upstream names are kept (``_Total``, not ``_total``), as the official dashboard queries them.
        assert "\nPostgresServer_TuplesInserted_Total{" in text
        (info,) = samples(text, "PostgresServiceInfo")
        assert info.labels["postgres_status"] == "running"

        # The other team's resource, once this operator serves it, is relayed too.
        served["uid-theirs"] = ("billing", "ledger")
        _, text = await relay.scrape()
        owners = {s.labels["managedpostgres"] for s in samples(text, "PostgresServiceInfo")}
        assert owners == {"orders-db", "ledger"}


async def test_fifty_scrapes_in_a_minute_cost_one_upstream_request(simulator_pg, two_teams):
    async with relay_for(simulator_pg, {"uid-ours": ("shop", "orders-db")}) as relay:
        before = upstream_requests(simulator_pg)
        texts = [await relay.scrape() for _ in range(50)]
        assert upstream_requests(simulator_pg) - before == 1
        assert all(status == 200 and "PostgresServer_TuplesInserted_Total" in text for status, text in texts)
        health = {f.name: f for f in relay.health_families()}
        assert [s.value for s in health["mpg_operator_relay_up"].samples] == [1]
        assert {s.labels["result"]: s.value for s in health["mpg_operator_relay_fetches"].samples} == {
            "ok": 1,
            "error": 0,
        }


async def test_upstream_errors_surface_as_staleness_not_an_empty_200(simulator_pg, two_teams):
    async with relay_for(simulator_pg, {"uid-ours": ("shop", "orders-db")}, interval=0.3) as relay:
        status, good = await relay.scrape()
        assert status == 200
        simulator_pg.faults.force(500, count=1000, path=ORG_PROMETHEUS + "$")
        before = upstream_requests(simulator_pg)
        await asyncio.sleep(0.4)
        await relay.scrape()  # starts the failing fetch
        await asyncio.sleep(0.5)
        status, text = await relay.scrape()
        assert status == 200 and samples(text, "PostgresServer_TuplesInserted_Total")  # the last good data
        (age,) = samples(text, "mpg_operator_relay_data_age_seconds")
        assert age.value >= 0.8
        health = {f.name: f for f in relay.health_families()}
        assert [s.value for s in health["mpg_operator_relay_up"].samples] == [0]
        errors = {s.labels["result"]: s.value for s in health["mpg_operator_relay_fetches"].samples}["error"]
        assert errors >= 1 and upstream_requests(simulator_pg) - before == errors  # one request each, no retries
        simulator_pg.faults.reset()

    # With no good data at all, the scrape fails loudly.
    simulator_pg.faults.force(500, count=1000, path=ORG_PROMETHEUS + "$")
    try:
        async with relay_for(simulator_pg, {"uid-ours": ("shop", "orders-db")}) as relay:
            status, text = await relay.scrape()
            assert status == 503 and "no database metrics" in text
    finally:
        simulator_pg.faults.reset()


async def test_above_the_org_endpoints_limit_per_service_endpoints_within_the_budget(simulator_pg, two_teams):
    # org_limit=1: two services in the organization are "more than the endpoint reports".
    served = {"uid-ours": ("shop", "orders-db"), "uid-theirs": ("billing", "ledger")}
    async with relay_for(simulator_pg, served, org_limit=1) as relay:
        before_org = upstream_requests(simulator_pg)
        before_one = upstream_requests(simulator_pg, "/prometheus") - before_org
        for _ in range(20):
            status, text = await relay.scrape()
            await asyncio.sleep(0.02)
        assert status == 200
        assert upstream_requests(simulator_pg) == before_org  # never the org endpoint
        per_service = upstream_requests(simulator_pg, "/prometheus") - upstream_requests(simulator_pg) - before_one
        assert per_service == 2  # each relayed service once per interval, whatever the scrapes
        owners = {s.labels["managedpostgres"] for s in samples(text, "PostgresServiceInfo")}
        assert owners == {"orders-db", "ledger"}
