"""The operator's /metrics: prometheus_client's registry and exposition, parsed back with its parser."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from mpg_operator.cloud.client import CloudClient
from mpg_operator.cloud.config import ClientSettings
from mpg_operator.controller.cloudaccess import ClientPool, Credentials
from mpg_operator.controller.metrics import OperatorMetrics, serve_metrics

RESOURCE_LABELS = {"name", "uid", "managedpostgres", "resource"}


def families(metrics: OperatorMetrics) -> dict[str, Any]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def value(family: Any, sample_name: str, **labels: str) -> float:
    matching = [s.value for s in family.samples if s.name == sample_name and labels.items() <= s.labels.items()]
    assert len(matching) == 1, (sample_name, labels, family.samples)
    return matching[0]


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def resource(uid: str, state: str | None, ready: str, created: datetime, ready_at: datetime | None = None) -> dict:
    conditions = [{"type": "Synced", "status": "True"}, {"type": "Ready", "status": ready}]
    if ready_at is not None:
        conditions[1]["lastTransitionTime"] = iso(ready_at)
    status: dict[str, Any] = {"conditions": conditions}
    if state:
        status["state"] = state
    meta = {"uid": uid, "name": f"db-{uid}", "namespace": "shop", "creationTimestamp": iso(created), "generation": 1}
    return {"metadata": meta, "status": status}


def test_api_calls_counted_by_operation_and_status_with_latency_histograms():
    m = OperatorMetrics()
    m.on_api_response("postgresServiceGetList", "200", 0.03)
    m.on_api_response("postgresServiceGetList", "200", 0.7)
    m.on_api_response("postgresServiceCreate", "429", 0.01)
    f = families(m)
    requests = f["mpg_operator_api_requests"]
    assert requests.type == "counter"
    assert value(requests, "mpg_operator_api_requests_total", operation="postgresServiceGetList", status="200") == 2
    assert value(requests, "mpg_operator_api_requests_total", operation="postgresServiceCreate", status="429") == 1
    latency = f["mpg_operator_api_request_duration_seconds"]
    assert latency.type == "histogram"
    name = "mpg_operator_api_request_duration_seconds"
    assert value(latency, name + "_count", operation="postgresServiceGetList") == 2
    assert value(latency, name + "_bucket", operation="postgresServiceGetList", le="0.05") == 1
    assert value(latency, name + "_bucket", operation="postgresServiceGetList", le="1.0") == 2
    assert value(f["mpg_operator_api_rate_limited"], "mpg_operator_api_rate_limited_total") == 1


def test_create_to_ready_observed_once_per_creation_and_resources_counted_by_state():
    m = OperatorMetrics()
    created = datetime.now(UTC) - timedelta(minutes=5)
    m.on_resource(resource("a", None, "False", created))
    m.on_resource(resource("a", "creating", "False", created))
    m.on_resource(resource("a", "running", "True", created, ready_at=created + timedelta(seconds=200)))
    m.on_resource(resource("a", "running", "True", created, ready_at=created + timedelta(seconds=200)))
    # Already Ready when this process first sees it (an operator restart): not a creation it saw.
    m.on_resource(resource("b", "running", "True", created))
    # Ready, not Ready (an update), Ready again: no second observation.
    m.on_resource(resource("b", "running", "False", created))
    m.on_resource(resource("b", "running", "True", created))
    m.on_resource(resource("c", "stopped", "False", created))
    f = families(m)
    hist = f["mpg_operator_create_to_ready_seconds"]
    assert value(hist, "mpg_operator_create_to_ready_seconds_count") == 1
    assert value(hist, "mpg_operator_create_to_ready_seconds_sum") == 200
    assert value(hist, "mpg_operator_create_to_ready_seconds_bucket", le="300.0") == 1
    by_state = f["mpg_operator_managedpostgres_resources"]
    name = "mpg_operator_managedpostgres_resources"
    assert value(by_state, name, state="running", ready="True", synced="True") == 2
    assert value(by_state, name, state="stopped", ready="False", synced="True") == 1
    m.on_resource(resource("c", "stopped", "False", created), deleted=True)
    assert not [s for s in families(m)[name].samples if s.labels["state"] == "stopped"]


def test_events_drift_corrections_and_deletions():
    m = OperatorMetrics()
    posted: list[tuple[str, str]] = []
    post = m.counting_events(lambda body, type_, reason, message: posted.append((type_, reason)))
    applied = {"metadata": {"generation": 3}, "status": {"observedGeneration": 3}}
    changed = {"metadata": {"generation": 4}, "status": {"observedGeneration": 3}}
    post(applied, "Normal", "Updated", "Requested size r8gd.xlarge")  # put back a change made elsewhere
    post(changed, "Normal", "Updated", "Requested size r8gd.xlarge")  # the spec changed: not drift
    post(applied, "Normal", "ConfigurationApplied", "Applied the configuration")
    post(applied, "Warning", "ApiError", "500")
    assert len(posted) == 4
    deleting = {"metadata": {"deletionTimestamp": iso(datetime.now(UTC) - timedelta(seconds=42))}}
    m.on_deleted(deleting, "deleted")
    m.on_deleted(deleting, "orphan")
    f = families(m)
    assert value(f["mpg_operator_events"], "mpg_operator_events_total", type="Normal", reason="Updated") == 2
    drift = f["mpg_operator_drift_corrections"]
    assert value(drift, "mpg_operator_drift_corrections_total", kind="service") == 1
    assert value(drift, "mpg_operator_drift_corrections_total", kind="configuration") == 1
    deletions = f["mpg_operator_deletions"]
    assert value(deletions, "mpg_operator_deletions_total", outcome="deleted") == 1
    assert value(deletions, "mpg_operator_deletions_total", outcome="orphaned") == 1
    duration = f["mpg_operator_deletion_duration_seconds"]
    assert value(duration, "mpg_operator_deletion_duration_seconds_count") == 2
    assert 42 <= value(duration, "mpg_operator_deletion_duration_seconds_sum") / 2 < 60


async def test_rate_limiter_wait_and_organizations_from_the_live_clients():
    m = OperatorMetrics()
    pool = ClientPool(ClientSettings(base_url="http://127.0.0.1:9/v1"))
    m.clients = pool
    client: CloudClient = pool.get(Credentials("key-metrics", SecretStr("s"), "org-1", "ns/secret"))
    client.rate_limiter.stats.waited += 3
    client.rate_limiter.stats.wait_seconds += 1.5
    try:
        f = families(m)
        assert (
            value(f["mpg_operator_ratelimiter_waits"], "mpg_operator_ratelimiter_waits_total", organization="org-1")
            == 3
        )
        waited = f["mpg_operator_ratelimiter_wait_seconds"]
        assert value(waited, "mpg_operator_ratelimiter_wait_seconds_total", organization="org-1") == 1.5
    finally:
        await pool.aclose()


def test_no_series_carries_a_per_resource_label():
    m = OperatorMetrics()
    created = datetime.now(UTC)
    for i in range(20):
        m.on_resource(resource(f"u{i}", "running", "True", created))
        m.on_pass("ok", 0.1)
    for family in families(m).values():
        for sample in family.samples:
            assert not RESOURCE_LABELS & set(sample.labels), (family.name, sample.labels)
    assert len(families(m)["mpg_operator_managedpostgres_resources"].samples) == 1


async def test_endpoint_negotiates_openmetrics_and_serves_the_text_format_by_default():
    m = OperatorMetrics()
    m.on_pass("ok", 0.2)
    m.on_pass("error", 0.3)
    runner = await serve_metrics(m, "127.0.0.1", 0)
    try:
        port = runner.addresses[0][1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            plain = await http.get("/metrics")
            om = await http.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
            relay = await http.get("/metrics/services")
    finally:
        await runner.cleanup()
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    parsed = {f.name: f for f in text_string_to_metric_families(plain.text)}
    assert value(parsed["mpg_operator_reconciles"], "mpg_operator_reconciles_total", result="ok") == 1
    assert (
        value(parsed["mpg_operator_reconcile_duration_seconds"], "mpg_operator_reconcile_duration_seconds_count") == 2
    )
    assert time.time() - value(parsed["mpg_operator_start_time_seconds"], "mpg_operator_start_time_seconds") < 60
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    om_families = {f.name for f in openmetrics_families(om.text)}
    assert {"mpg_operator_reconciles", "mpg_operator_create_to_ready_seconds"} <= om_families
    assert relay.status_code == 404  # no relay attached to these metrics
