"""Every client operation on the wire: method, path, headers, body, envelope parsing."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from cloud_fakeapi import KEY_SECRET, ORG, SID, FakeApi, Reply, ok

from mpg_operator import __version__
from mpg_operator.cloud import (
    PostgresConfig,
    PostgresReadReplicaRequest,
    PostgresRestoreRequest,
    PostgresServiceCreateRequest,
    PostgresServicePatchRequest,
    ServiceState,
    Tag,
)

BASE = f"/organizations/{ORG}/postgres"
SERVICE = {
    "id": SID,
    "name": "oltp",
    "provider": "aws",
    "region": "eu-west-2",
    "postgresVersion": "18",
    "size": "r6gd.medium",
    "storageSize": 59,
    "haType": "none",
    "tags": [],
    "isPrimary": True,
    "state": "running",
    "createdAt": "2026-05-25T16:42:16+00:00",
    "username": "postgres",
    "hostname": "oltp-6d8d2e3e.example.pg.clickhouse.cloud",
}


async def test_headers_auth_and_user_agent(fake: FakeApi, make_client) -> None:
    fake.on("GET", BASE, ok([SERVICE]))
    client = make_client(key_id="kid-1")
    items = await client.list_services()
    assert [i.id for i in items] == [SID] and items[0].state == ServiceState.RUNNING
    seen = fake.requests()[0]
    assert seen.headers["User-Agent"] == f"mpg-operator/{__version__}"
    user, secret = base64.b64decode(seen.headers["Authorization"].split()[1]).decode().split(":", 1)
    assert (user, secret) == ("kid-1", KEY_SECRET)


async def test_create_sends_json_and_returns_credentials_once(fake: FakeApi, make_client) -> None:
    created = {
        **SERVICE,
        "state": "creating",
        "password": "vV6cfEr2p_-TzkCDrZOx",
        "connectionString": "postgres://postgres:vV6cfEr2p_-TzkCDrZOx@h:5432/postgres",
    }
    fake.on("POST", BASE, ok(created))
    client = make_client()
    svc = await client.create_service(
        PostgresServiceCreateRequest(
            name="oltp",
            provider="aws",
            region="eu-west-2",
            size="r6gd.medium",
            postgres_version="18",
            tags=[Tag(key="k8s-uid", value="abc")],
        )
    )
    seen = fake.requests("POST")[0]
    assert seen.headers["Content-Type"] == "application/json"
    assert json.loads(seen.body) == {
        "name": "oltp",
        "provider": "aws",
        "region": "eu-west-2",
        "size": "r6gd.medium",
        "postgresVersion": "18",
        "tags": [{"key": "k8s-uid", "value": "abc"}],
    }
    assert svc.state == "creating" and svc.storage_size == 59
    assert svc.password is not None and svc.password.get_secret_value() == "vV6cfEr2p_-TzkCDrZOx"


async def test_get_patch_state(fake: FakeApi, make_client) -> None:
    fake.on("GET", f"{BASE}/{SID}", ok(SERVICE))
    fake.on("PATCH", f"{BASE}/{SID}", ok({**SERVICE, "size": "r6gd.large"}))
    fake.on("PATCH", f"{BASE}/{SID}/state", ok({**SERVICE, "state": "restarting"}))
    client = make_client()
    assert (await client.get_service(SID)).hostname == SERVICE["hostname"]
    patched = await client.update_service(
        SID, PostgresServicePatchRequest(size="r6gd.large", tags=[Tag(key="env", value="prod")])
    )
    assert patched.size == "r6gd.large"
    assert json.loads(fake.requests("PATCH")[0].body) == {
        "size": "r6gd.large",
        "tags": [{"key": "env", "value": "prod"}],
    }
    assert (await client.set_state(SID, "restart")).state == "restarting"
    assert json.loads(fake.requests("PATCH")[1].body) == {"command": "restart"}


async def test_delete_without_result_and_404_means_gone(fake: FakeApi, make_client) -> None:
    fake.on("DELETE", f"{BASE}/{SID}", ok(), Reply(status=404, json={"status": 404, "error": "NOT_FOUND"}))
    client = make_client()
    assert await client.delete_service(SID) is True
    assert await client.delete_service(SID) is False
    assert len(fake.requests("DELETE")) == 2  # a 404 is not retried


async def test_raw_text_endpoints(fake: FakeApi, make_client) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    prom = '# TYPE PostgresServiceInfo gauge\nPostgresServiceInfo{a="b"} 1\n'
    fake.on("GET", f"{BASE}/{SID}/caCertificates", Reply(text=pem, content_type="application/x-pem-file"))
    fake.on("GET", f"{BASE}/prometheus", Reply(text=prom))
    fake.on("GET", f"{BASE}/{SID}/prometheus", Reply(text=prom + "x 2\n"))
    client = make_client()
    assert await client.get_ca_certificates(SID) == pem
    assert await client.get_org_prometheus() == prom
    assert await client.get_service_prometheus(SID) == prom + "x 2\n"


async def test_config_get_replace_patch(fake: FakeApi, make_client) -> None:
    fake.on("GET", f"{BASE}/{SID}/config", ok({"pgConfig": {"max_connections": "42"}, "pgBouncerConfig": {}}))
    restart = "The changes in the following parameters require a database restart to take effect: max_connections."
    fake.on(
        "POST",
        f"{BASE}/{SID}/config",
        ok({"pgConfig": {"max_connections": "50"}, "pgBouncerConfig": {}, "message": restart}),
    )
    fake.on(
        "PATCH",
        f"{BASE}/{SID}/config",
        ok({"pgConfig": {"max_connections": "50", "work_mem": "8MB"}, "pgBouncerConfig": {"pool_mode": "transaction"}}),
    )
    client = make_client()
    assert (await client.get_config(SID)).pg_config == {"max_connections": "42"}
    replaced = await client.replace_config(SID, PostgresConfig(pg_config={"max_connections": 50}))
    assert replaced.message == restart
    assert json.loads(fake.requests("POST")[0].body) == {"pgConfig": {"max_connections": 50}, "pgBouncerConfig": {}}
    patched = await client.patch_config(SID, PostgresConfig(pg_config={"work_mem": "8MB"}))
    assert patched.pg_bouncer_config == {"pool_mode": "transaction"} and patched.message is None


async def test_password_supplied_and_generated(fake: FakeApi, make_client) -> None:
    fake.on("PATCH", f"{BASE}/{SID}/password", ok({}), ok({"password": "Gen3rated-Passw0rd"}))
    client = make_client()
    supplied = await client.set_password(SID, "Sup-plied-Passw0rd")
    assert supplied.password is None
    assert json.loads(fake.requests("PATCH")[0].body) == {"password": "Sup-plied-Passw0rd"}
    generated = await client.set_password(SID)
    assert json.loads(fake.requests("PATCH")[1].body) == {}
    assert generated.password is not None
    assert generated.password.get_secret_value() == "Gen3rated-Passw0rd"


async def test_replica_and_restore(fake: FakeApi, make_client) -> None:
    replica = {**SERVICE, "id": "r-1", "isPrimary": False, "state": "creating"}
    restored = {**SERVICE, "id": "r-2", "state": "restoring_backup"}
    fake.on("POST", f"{BASE}/{SID}/readReplica", ok(replica))
    fake.on("POST", f"{BASE}/{SID}/restoredService", ok(restored))
    client = make_client()
    r = await client.create_read_replica(SID, PostgresReadReplicaRequest(name="oltp-ro"))
    assert (r.id, r.is_primary) == ("r-1", False)
    s = await client.restore_service(
        SID, PostgresRestoreRequest(name="oltp-pitr", restore_target="2026-06-01T12:00:00Z")
    )
    assert s.state == ServiceState.RESTORING_BACKUP
    assert json.loads(fake.requests("POST")[1].body) == {"name": "oltp-pitr", "restoreTarget": "2026-06-01T12:00:00Z"}


async def test_metrics_slow_queries_and_organizations(fake: FakeApi, make_client) -> None:
    fake.on("GET", "/organizations", ok([{"id": ORG, "name": "Acme", "createdAt": "2026-01-01T00:00:00Z"}]))
    fake.on(
        "GET",
        f"{BASE}/{SID}/metrics",
        ok(
            {
                "metrics": [
                    {
                        "key": "cpu_usage",
                        "name": "CPU",
                        "unit": "%",
                        "description": "CPU usage",
                        "series": [{"label": "user", "dataPoints": [{"timestamp": 1780000000, "value": 12.5}]}],
                    }
                ]
            }
        ),
    )
    pattern = {
        "queryId": "-4242",
        "queryText": "select 1",
        "dbName": "postgres",
        "dbUser": "u",
        "dbOperation": "SELECT",
        "app": "psql",
        "callCount": 3,
        "totalDurationUs": 900,
    }
    fake.on("GET", f"{BASE}/{SID}/slowQueryPatterns", ok([pattern]))
    fake.on(
        "GET",
        f"{BASE}/{SID}/slowQueryPatterns/-4242",
        ok(
            {
                "aggregate": pattern,
                "recentExecutions": [
                    {"timestamp": "2026-06-01T00:00:00Z", "queryId": "-4242", "durationUs": 300, "pid": "17"}
                ],
            }
        ),
    )
    client = make_client()
    orgs = await client.list_organizations()
    assert [o.id for o in orgs] == [ORG]
    start = datetime(2026, 6, 1, tzinfo=UTC)
    m = await client.get_metrics(SID, start, "2026-06-02T00:00:00Z", bucket_size_seconds=3600)
    assert m.metrics[0].series[0].data_points[0].value == 12.5
    assert fake.requests()[-1].query == {
        "from_date": "2026-06-01T00:00:00Z",
        "to_date": "2026-06-02T00:00:00Z",
        "bucket_size_seconds": "3600",
    }
    patterns = await client.list_slow_query_patterns(SID, start, start.replace(day=2), limit=5)
    assert patterns[0].query_id == "-4242" and patterns[0].call_count == 3
    assert fake.requests()[-1].query["limit"] == "5" and "offset" not in fake.requests()[-1].query
    detail = await client.get_slow_query_pattern(SID, "-4242", db_name="postgres", db_user="u", db_operation="SELECT")
    assert detail.recent_executions[0].duration_us == 300
    assert detail.recent_executions[0].model_extra == {"pid": "17"}


async def test_tolerant_parsing_of_unknown_fields_and_values(fake: FakeApi, make_client) -> None:
    odd = {
        **SERVICE,
        "state": "hibernating",
        "size": "z9x.mega",
        "provider": "azure",
        "brandNewField": {"nested": [1, 2]},
        "tags": [{"key": "only-key"}],
    }
    fake.on("GET", f"{BASE}/{SID}", ok(odd))
    fake.on("GET", BASE, ok([odd, {"id": "bare"}]))
    client = make_client()
    svc = await client.get_service(SID)
    assert (svc.state, svc.size, svc.provider) == ("hibernating", "z9x.mega", "azure")
    assert svc.model_extra == {"brandNewField": {"nested": [1, 2]}}
    assert svc.tag_map() == {"only-key": None}
    listed = await client.list_services()
    assert [i.id for i in listed] == [SID, "bare"] and listed[1].state is None


async def test_ids_are_escaped_in_paths(fake: FakeApi, make_client) -> None:
    fake.on("GET", f"{BASE}/.*", ok(SERVICE))
    client = make_client()
    await client.get_service("../../evil")
    assert fake.requests()[0].path == f"{BASE}/..%2F..%2Fevil"


async def test_stats_and_response_hook(fake: FakeApi, make_client) -> None:
    seen: list[tuple[str, str]] = []
    fake.on("GET", f"{BASE}/{SID}", Reply(status=503, text="busy"), ok(SERVICE))
    fake.on("GET", f"{BASE}/nope", Reply(status=404, json={"status": 404, "error": "NOT_FOUND: nope"}))
    client = make_client(on_response=lambda op, status, secs: seen.append((op, status)))
    await client.get_service(SID)
    assert await client.delete_service("nope") is False  # DELETE route unscripted -> 404
    assert seen[:2] == [("postgresServiceGet", "503"), ("postgresServiceGet", "200")]
    assert client.stats.requests[("postgresServiceGet", "503")] == 1
    assert client.stats.requests[("postgresServiceGet", "200")] == 1
    assert client.stats.requests[("postgresServiceDelete", "404")] == 1
    assert client.stats.retries["postgresServiceGet"] == 1
    assert client.stats.total() == 3 and client.stats.total("404") == 1
