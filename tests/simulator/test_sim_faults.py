"""Fault injection: forced statuses, error rate, latency, dropped connections, stuck creation."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from clickhouse_cloud_simulator import Simulator

CREATE = {"name": "svc", "provider": "aws", "region": "us-east-1", "size": "r8gd.large"}


async def test_forced_status_for_next_n_requests(sim_api, simulator: Simulator) -> None:
    simulator.faults.force(503, count=2, method="GET")
    for _ in range(2):
        status, data, _ = await sim_api.call("GET", "/postgres")
        assert status == 503 and data["error"].startswith("SERVICE_UNAVAILABLE") and data["status"] == 503
    assert (await sim_api.call("GET", "/postgres"))[0] == 200


async def test_forced_429_carries_reset_header(sim_api, simulator: Simulator) -> None:
    simulator.faults.forced_reset_seconds = 0.25
    simulator.faults.force(429)
    status, data, headers = await sim_api.call("GET", "/postgres")
    assert status == 429 and data["error"].startswith("TOO_MANY_REQUESTS")
    assert float(headers["X-RateLimit-Reset"]) == 0.25


async def test_fault_filters_by_path_and_method(sim_api, simulator: Simulator) -> None:
    created = await sim_api.create()
    simulator.faults.force(500, count=1, method="PATCH", path=r"/password$")
    assert (await sim_api.call("GET", f"/postgres/{created['id']}"))[0] == 200
    assert (await sim_api.call("PATCH", f"/postgres/{created['id']}", {"tags": []}))[0] == 200
    status, data, _ = await sim_api.call("PATCH", f"/postgres/{created['id']}/password", {})
    assert status == 500 and data["error"].startswith("INTERNAL_ERROR")
    assert (await sim_api.call("PATCH", f"/postgres/{created['id']}/password", {}))[0] == 200


async def test_error_rate(make_simulator) -> None:
    sim, api = await make_simulator(seed=7)
    sim.faults.error_rate = 0.5
    statuses = [(await api.call("GET", "/postgres"))[0] for _ in range(60)]
    assert set(statuses) == {200, 500}
    assert 15 <= statuses.count(500) <= 45
    sim.faults.reset()
    assert {(await api.call("GET", "/postgres"))[0] for _ in range(5)} == {200}


async def test_latency(sim_api, simulator: Simulator) -> None:
    simulator.faults.latency = 0.3
    simulator.faults.latency_method = "POST"
    started = time.monotonic()
    await sim_api.call("GET", "/postgres")
    assert time.monotonic() - started < 0.25
    started = time.monotonic()
    await sim_api.create()
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize(("when", "expected_services"), [("before", 0), ("after", 1)])
async def test_dropped_create(sim_api, simulator: Simulator, when: str, expected_services: int) -> None:
    simulator.faults.drop(count=1, when=when, method="POST", path=r"/postgres$")
    with pytest.raises(aiohttp.ClientConnectionError):
        await sim_api.call("POST", "/postgres", CREATE)
    assert len(await sim_api.ok("GET", "/postgres")) == expected_services
    assert simulator.requests[-2].status == 0  # the dropped request is recorded with status 0
    # the next create goes through normally
    await sim_api.create()


async def test_stuck_in_creating(sim_api, simulator: Simulator) -> None:
    simulator.faults.stuck_creating = True
    stuck = await sim_api.create("stuck")
    simulator.faults.stuck_creating = False
    fine = await sim_api.create("fine")
    await sim_api.wait_state(fine["id"], "running")
    await asyncio.sleep(0.1)
    assert (await sim_api.ok("GET", f"/postgres/{stuck['id']}"))["state"] == "creating"


async def test_faults_do_not_break_the_server(sim_api, simulator: Simulator) -> None:
    simulator.faults.force(502, count=3)
    simulator.faults.drop(count=2)
    outcomes = []
    for _ in range(8):
        try:
            outcomes.append((await sim_api.call("GET", "/postgres"))[0])
        except aiohttp.ClientConnectionError:
            outcomes.append("dropped")
    # aiohttp's client may silently retry a GET once on a dropped connection: count on the server
    served = [r.status for r in simulator.requests]
    assert served.count(0) == 2 and served.count(502) == 3
    assert "dropped" in outcomes and outcomes.count(502) == 3 and outcomes[-1] == 200


async def test_flip_back_shows_the_new_size_reverts_then_lands(make_simulator) -> None:
    simulator, api = await make_simulator(resize_seconds=1.0)
    svc = await api.create("flippy")
    await api.wait_state(svc["id"], "running")
    simulator.faults.flip_back = True
    await api.ok("PATCH", f"/postgres/{svc['id']}", {"size": "r8gd.xlarge", "tags": []})
    seen = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        size = (await api.ok("GET", f"/postgres/{svc['id']}"))["size"]
        if not seen or seen[-1] != size:
            seen.append(size)
        await asyncio.sleep(0.02)
    assert seen == ["r8gd.large", "r8gd.xlarge", "r8gd.large", "r8gd.xlarge"]
