"""Simulator responses against the vendored OpenAPI document (openapi-core).

Every test that uses the ``simulator`` fixtures is checked at teardown (see ``tests/conftest.py``);
this module adds: the vendored copy equals the shared reference, the checker really catches
deviations, and a sweep that gets a 200 from every operation of the document.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.conformance import (
    ConformanceRecorder,
    _match_operation,
    check_exchange,
)

from clickhouse_cloud_simulator.server import Exchange
from clickhouse_cloud_simulator.validation import openapi_document

REPO = Path(__file__).resolve().parents[2]
VENDORED = REPO / "operator/mpg_operator/cloud/spec/clickhouse-cloud-openapi-postgres.json"
REFERENCE = REPO / "../shared/reference/clickhouse-cloud-openapi-postgres.json"
ORG = "0c330583-6396-86d0-82cd-ed0f23b0d38c"
SID = "f71df78e-ddad-82d0-8dfa-abbec741b82e"


def test_vendored_copy_equals_reference() -> None:
    if not REFERENCE.is_file():
        pytest.skip(f"reference copy not present at {REFERENCE}")
    assert json.loads(VENDORED.read_text()) == json.loads(REFERENCE.read_text())


def _exchange(method: str, path: str, status: int, body: object, ctype: str = "application/json") -> Exchange:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return Exchange(method, path, {}, {}, b"", status, {"Content-Type": ctype}, raw)


def test_checker_catches_deviations() -> None:
    good_service = {"id": SID, "name": "x", "state": "running", "isPrimary": True, "tags": [{"key": "a", "value": "b"}]}
    ok = _exchange(
        "GET", f"/v1/organizations/{ORG}/postgres/{SID}", 200, {"result": good_service, "requestId": SID, "status": 200}
    )
    assert check_exchange(ok) == []
    bad_cases = [
        # a state outside the enum, a string isPrimary, an id that is no uuid
        _exchange(
            "GET",
            f"/v1/organizations/{ORG}/postgres/{SID}",
            200,
            {"result": {**good_service, "state": "sleeping"}, "requestId": SID, "status": 200},
        ),
        _exchange(
            "GET",
            f"/v1/organizations/{ORG}/postgres/{SID}",
            200,
            {"result": {**good_service, "isPrimary": "yes"}, "requestId": SID, "status": 200},
        ),
        _exchange(
            "GET",
            f"/v1/organizations/{ORG}/postgres",
            200,
            {"result": [{**good_service, "id": "nope"}], "requestId": SID, "status": 200},
        ),
        # a tag value with a slash; a config value that is a boolean
        _exchange(
            "GET",
            f"/v1/organizations/{ORG}/postgres/{SID}",
            200,
            {"result": {**good_service, "tags": [{"key": "a", "value": "b/c"}]}, "requestId": SID, "status": 200},
        ),
        _exchange(
            "GET",
            f"/v1/organizations/{ORG}/postgres/{SID}/config",
            200,
            {"result": {"pgConfig": {"max_connections": True}, "pgBouncerConfig": {}}, "requestId": SID, "status": 200},
        ),
        # error envelopes: missing error text, undeclared status without envelope, non-JSON error
        _exchange("GET", f"/v1/organizations/{ORG}/postgres/{SID}", 400, {"status": 400, "requestId": SID}),
        _exchange("GET", f"/v1/organizations/{ORG}/postgres/{SID}", 404, {"message": "not found"}),
        _exchange("GET", f"/v1/organizations/{ORG}/postgres/{SID}", 429, "slow down", "text/plain"),
        # success on a path the document does not have
        _exchange("GET", f"/v1/organizations/{ORG}/mysql", 200, {"result": [], "requestId": SID, "status": 200}),
    ]
    for ex in bad_cases:
        assert check_exchange(ex), f"not caught: {ex.method} {ex.path} {ex.status} {ex.response_body[:80]!r}"


def test_problems_never_show_credentials() -> None:
    secret = "Sup3rSecretValue99"
    bad = _exchange(
        "POST",
        f"/v1/organizations/{ORG}/postgres",
        200,
        {
            "result": {
                "id": SID,
                "state": 42,
                "password": secret,
                "connectionString": f"postgres://postgres:{secret}@h:5432/postgres",
            },
            "requestId": SID,
            "status": 200,
        },
    )
    problems = check_exchange(bad)
    assert problems and not any(secret in p for p in problems)


def test_path_matching_prefers_literal_segments() -> None:
    template, op = _match_operation("GET", f"/v1/organizations/{ORG}/postgres/prometheus")
    assert template.endswith("/postgres/prometheus") and op["operationId"] == "postgresOrgPrometheusGet"
    template, op = _match_operation("GET", f"/v1/organizations/{ORG}/postgres/{SID}")
    assert op["operationId"] == "postgresServiceGet"


async def test_every_operation_answers_200_conformantly(make_simulator) -> None:
    sim, api = await make_simulator(first_backup_seconds=0.3)
    recorder = ConformanceRecorder()
    sim.add_observer(recorder)
    window = "from_date=2026-01-01T00:00:00Z&to_date=2026-01-02T00:00:00Z"

    await api.ok("GET", "/organizations")
    created = await api.create(
        "conformance",
        pgConfig={"max_connections": 100},
        pgBouncerConfig={"default_pool_size": "16"},
        tags=[{"key": "env", "value": "test"}],
    )
    sid = created["id"]
    base = f"/postgres/{sid}"
    await api.ok("GET", "/postgres")
    await api.wait_state(sid, "running")
    await api.ok("GET", base)
    await api.ok("PATCH", base, {"name": "renamed", "tags": [{"key": "env", "value": "test"}]})
    await api.ok("GET", f"{base}/caCertificates")
    await api.ok("GET", f"{base}/config")
    await api.ok("POST", f"{base}/config", {"pgConfig": {"max_connections": "150"}, "pgBouncerConfig": {}})
    await api.ok(
        "PATCH", f"{base}/config", {"pgConfig": {"work_mem": 4096}, "pgBouncerConfig": {"pool_mode": "transaction"}}
    )
    await api.ok("PATCH", f"{base}/password", {})
    await api.ok("PATCH", f"{base}/state", {"command": "switchover"})
    await api.ok("GET", f"{base}/metrics?{window}&bucket_size_seconds=3600")
    await api.ok("GET", f"{base}/slowQueryPatterns?{window}")
    await api.ok("GET", f"{base}/prometheus")
    await api.ok("GET", "/postgres/prometheus")
    deadline = time.monotonic() + 10
    while (status := (await api.call("POST", f"{base}/readReplica", {"name": "replica"}))[0]) != 200:
        assert status == 400 and time.monotonic() < deadline
        await asyncio.sleep(0.05)
    replica_id = next(s["id"] for s in await api.ok("GET", "/postgres") if not s["isPrimary"])
    await api.ok("PATCH", f"/postgres/{replica_id}/state", {"command": "promote"})
    target = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    await api.ok("POST", f"{base}/restoredService", {"name": "restored", "restoreTarget": target})
    await api.ok("PATCH", f"{base}/state", {"command": "restart"})
    await api.ok("DELETE", f"/postgres/{replica_id}")
    # error answers of several kinds
    await api.call("GET", "/postgres/not-a-uuid")
    await api.call("POST", "/postgres", {"name": ""})
    await api.call("GET", "/postgres", auth=("x", "y"))
    await api.call("GET", "/postgres/11111111-2222-3333-4444-555555555555")
    await api.call("GET", f"{base}/slowQueryPatterns/1?db_name=a&db_user=b&db_operation=SELECT")
    sim.faults.force(500)
    await api.call("GET", "/postgres")

    assert recorder.problems() == []
    covered = set()
    for ex in recorder.exchanges:
        matched = _match_operation(ex.method, ex.path)
        if matched and ex.status == 200:
            covered.add(matched[1]["operationId"])
    every = {op["operationId"] for item in openapi_document()["paths"].values() for op in item.values()}
    assert every - covered == {"slowQueryPatternGet"}  # no query patterns are simulated: 404 only


async def test_every_simulator_in_the_session_is_recorded() -> None:
    """tests/conftest.py attaches its recorder to simulators started outside its fixtures too."""
    from clickhouse_cloud_simulator import Simulator, SimulatorConfig

    async with Simulator(SimulatorConfig(port=0, real_postgres=False)) as sim:
        recorders = [o for o in sim._observers if isinstance(o, ConformanceRecorder)]
        assert len(recorders) == 1
        before = len(recorders[0].exchanges)
        import aiohttp

        async with aiohttp.ClientSession() as session, session.get(f"{sim.url}/organizations") as resp:
            assert resp.status == 401
        assert len(recorders[0].exchanges) == before + 1
