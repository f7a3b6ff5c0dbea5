"""The client against the simulator over real HTTP: full lifecycle, faults, rate limit."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clickhouse_cloud_simulator import Simulator
from mpg_operator.cloud import (
    AmbiguousCreateError,
    AuthError,
    CloudClient,
    InvalidRequestError,
    NotFoundError,
    PostgresConfig,
    PostgresReadReplicaRequest,
    PostgresRestoreRequest,
    PostgresServiceCreateRequest,
    PostgresServicePatchRequest,
    RateLimiter,
    ServiceState,
    Tag,
    clear_rate_limiters,
    replica_not_ready,
)

POLL = dict(timeout=10.0, interval=0.05)


def create_request(name: str = "oltp") -> PostgresServiceCreateRequest:
    return PostgresServiceCreateRequest(
        name=name,
        provider="aws",
        region="us-east-1",
        size="r8gd.large",
        postgres_version="18",
        tags=[Tag(key="k8s-uid", value="u-1")],
    )


@pytest.fixture(autouse=True)
def _fresh_rate_limiters() -> None:
    clear_rate_limiters()


@pytest.fixture
def sim(simulator: Simulator) -> Simulator:
    """The shared ``simulator`` fixture (tests/conftest.py): every response is checked against
    the vendored OpenAPI document at teardown."""
    return simulator


def client_for(sim: Simulator, **kw: Any) -> CloudClient:
    kw.setdefault("rate_limiter", RateLimiter(1000, 1.0))
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_cap", 0.05)
    return CloudClient(key_id=sim.key_id, key_secret=sim.key_secret, organization_id=sim.org_id, base_url=sim.url, **kw)


async def test_full_lifecycle(sim: Simulator) -> None:
    async with client_for(sim) as cloud:
        orgs = await cloud.list_organizations()
        assert [o.id for o in orgs] == [sim.org_id]

        created = await cloud.create_service(create_request())
        assert created.state == ServiceState.CREATING
        assert created.password is not None and created.connection_string is not None
        sid = created.id
        assert sid is not None
        assert [s.id for s in await cloud.list_services()] == [sid]

        running = await cloud.wait_for_state(sid, ServiceState.RUNNING, **POLL)
        assert running.password is None and running.connection_string is None  # redacted
        assert running.tag_map() == {"k8s-uid": "u-1"} and running.hostname

        patched = await cloud.update_service(
            sid,
            PostgresServicePatchRequest(
                size="r8gd.xlarge", tags=[Tag(key="k8s-uid", value="u-1"), Tag(key="env", value="dev")]
            ),
        )
        assert patched.tag_map() == {"k8s-uid": "u-1", "env": "dev"}
        deadline = time.monotonic() + 10
        while (await cloud.get_service(sid)).size != "r8gd.xlarge":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

        replaced = await cloud.replace_config(
            sid, PostgresConfig(pg_config={"max_connections": 200}, pg_bouncer_config={"default_pool_size": "16"})
        )
        assert replaced.pg_config == {"max_connections": "200"} and replaced.message
        merged = await cloud.patch_config(sid, PostgresConfig(pg_config={"work_mem": "8MB"}))
        assert merged.pg_config == {"max_connections": "200", "work_mem": "8MB"}
        assert (await cloud.get_config(sid)) == PostgresConfig(
            pg_config={"max_connections": "200", "work_mem": "8MB"}, pg_bouncer_config={"default_pool_size": "16"}
        )

        assert (await cloud.set_password(sid, "Supplied-Passw0rd-42")).password is None
        generated = await cloud.set_password(sid)
        assert generated.password is not None and len(generated.password.get_secret_value()) >= 12

        assert (await cloud.set_state(sid, "restart")).id == sid
        await cloud.wait_for_state(sid, ServiceState.RUNNING, **POLL)

        pem = await cloud.get_ca_certificates(sid)
        assert pem.startswith("-----BEGIN CERTIFICATE-----")
        assert "PostgresServiceInfo" in await cloud.get_service_prometheus(sid)
        assert "PostgresServiceInfo" in await cloud.get_org_prometheus()
        now = datetime.now(UTC)
        metrics = await cloud.get_metrics(sid, now - timedelta(hours=1), now)
        assert {m.key for m in metrics.metrics} >= {"cpu_usage", "connection_count"}
        assert await cloud.list_slow_query_patterns(sid, now - timedelta(hours=1), now, limit=10) == []

        assert await cloud.delete_service(sid) is True
        await cloud.wait_for_deleted(sid, **POLL)
        with pytest.raises(NotFoundError):
            await cloud.get_service(sid)
        assert await cloud.delete_service(sid) is False
        assert await cloud.list_services() == []
        assert cloud.stats.total("500") == 0


async def test_replica_and_restore(sim: Simulator) -> None:
    async with client_for(sim) as cloud:
        primary = await cloud.create_service(create_request("primary"))
        assert primary.id is not None
        with pytest.raises(InvalidRequestError, match="not ready for read replicas"):
            await cloud.create_read_replica(primary.id, PostgresReadReplicaRequest(name="ro"))
        await cloud.wait_for_state(primary.id, "running", **POLL)
        deadline = time.monotonic() + 10
        while True:  # 400 until the primary's first backup exists: the documented retry
            try:
                replica = await cloud.create_read_replica(primary.id, PostgresReadReplicaRequest(name="ro"))
                break
            except InvalidRequestError as exc:
                assert replica_not_ready(exc) and time.monotonic() < deadline
                await asyncio.sleep(0.05)
        assert replica.is_primary is False and replica.password is None
        with pytest.raises(InvalidRequestError, match="Read replicas cannot be modified"):
            await cloud.update_service(replica.id, PostgresServicePatchRequest(size="r8gd.xlarge"))
        target = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        restored = await cloud.restore_service(primary.id, PostgresRestoreRequest(name="pitr", restore_target=target))
        assert restored.id not in (primary.id, replica.id)
        await cloud.wait_for_state(restored.id, "running", **POLL)
        assert len(await cloud.list_services()) == 3


async def test_wrong_credentials_are_auth_errors(sim: Simulator) -> None:
    async with CloudClient(
        key_id=sim.key_id,
        key_secret="wrong-secret-value",
        organization_id=sim.org_id,
        base_url=sim.url,
        rate_limiter=RateLimiter(100, 1.0),
    ) as cloud:
        with pytest.raises(AuthError) as info:
            await cloud.list_services()
        assert info.value.status == 401 and "wrong-secret-value" not in str(info.value)


async def test_injected_faults(sim: Simulator) -> None:
    async with client_for(sim) as cloud:
        sim.faults.force(503, count=2, method="GET")
        assert await cloud.list_services() == []  # retried through two 503s
        sim.faults.drop(count=1, when="after", method="POST", path=r"/postgres$")
        with pytest.raises(AmbiguousCreateError):
            await cloud.create_service(create_request("lost-response"))
        # The create did happen: the caller must look it up, not create again.
        assert [s.name for s in await cloud.list_services()] == ["lost-response"]
        sim.faults.drop(count=1, when="before", method="GET")
        assert len(await cloud.list_services()) == 1  # idempotent: retried
        sim.faults.force(429, count=1, method="POST")
        sim.faults.forced_reset_seconds = 0.3
        started = time.monotonic()
        created = await cloud.create_service(create_request("after-429"))
        assert created.name == "after-429" and time.monotonic() - started >= 0.3
        assert len(await cloud.list_services()) == 2


async def test_no_429_against_the_simulators_real_limit(make_simulator) -> None:
    sim, _ = await make_simulator(rate_limit=5, rate_window=1.0)
    cloud = client_for(sim, rate_limiter=None, rate_limit=5, rate_window=1.0)
    other = client_for(sim, rate_limiter=None, rate_limit=5, rate_window=1.0)  # same key
    async with cloud, other:
        results = await asyncio.gather(*(c.list_services() for c in (cloud, other) for _ in range(8)))
    assert len(results) == 16
    statuses = [r.status for r in sim.requests]
    assert statuses.count(200) == 16 and 429 not in statuses
    # The simulator stamps requests when answered, not on arrival: allow some jitter.
    stamps = sorted(r.timestamp for r in sim.requests)
    assert all(b - a >= 0.9 for a, b in zip(stamps, stamps[5:]))


async def test_too_loose_limiter_gets_429_and_recovers_by_pausing(make_simulator) -> None:
    """A limiter set looser than the key's real limit provokes 429s; the pause still gets every call through."""
    sim, _ = await make_simulator(rate_limit=4, rate_window=0.5)
    async with client_for(sim, rate_limiter=RateLimiter(10, 0.5, margin=0.0), max_retries=10) as greedy:
        results = await asyncio.gather(*(greedy.list_services() for _ in range(12)))
    assert len(results) == 12
    statuses = [r.status for r in sim.requests]
    assert statuses.count(200) == 12 and statuses.count(429) >= 1
    assert greedy.stats.total("429") == statuses.count(429)
