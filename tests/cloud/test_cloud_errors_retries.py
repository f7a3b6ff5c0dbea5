"""Error taxonomy, retries with backoff, and the ambiguous-create rule."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from cloud_fakeapi import ORG, SID, FakeApi, Reply, err, ok

from mpg_operator.cloud import (
    AmbiguousCreateError,
    AuthError,
    ConflictError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    PostgresReadReplicaRequest,
    PostgresRestoreRequest,
    PostgresServiceCreateRequest,
    RateLimitedError,
    RateLimiter,
    ServerError,
    parse_error_text,
)

BASE = f"/organizations/{ORG}/postgres"
SERVICE = {"id": SID, "name": "oltp", "state": "creating"}
CREATE = PostgresServiceCreateRequest(name="oltp", provider="aws", region="us-east-1", size="r8gd.large")


@pytest.mark.parametrize(
    ("text", "code", "detail"),
    [
        (
            "BAD_REQUEST: Invalid service id <string:not-a-uuid>",
            "BAD_REQUEST",
            "Invalid service id <string:not-a-uuid>",
        ),
        ("NOT_FOUND", "NOT_FOUND", "NOT_FOUND"),
        ("CONFLICT: Conflict", "CONFLICT", "Conflict"),
        ("request body property can't be validated: name", None, "request body property can't be validated: name"),
        ("", None, ""),
    ],
)
def test_parse_error_text(text: str, code: str | None, detail: str) -> None:
    assert parse_error_text(text) == (code, detail)


@pytest.mark.parametrize(
    ("status", "error", "exc"),
    [
        (
            400,
            "BAD_REQUEST: Parent server is not ready for read replicas. There are no backups, yet.",
            InvalidRequestError,
        ),
        (422, "UNPROCESSABLE: bad", InvalidRequestError),
        (401, "UNAUTHORIZED", AuthError),
        (403, "FORBIDDEN: missing control-plane:postgres-service:manage", AuthError),
        (404, "NOT_FOUND: 67b4bc12", NotFoundError),
        (409, "CONFLICT: Conflict", ConflictError),
    ],
)
async def test_4xx_mapped_and_not_retried(fake: FakeApi, make_client, status, error, exc) -> None:
    fake.on("GET", f"{BASE}/{SID}", err(status, error))
    client = make_client()
    with pytest.raises(exc) as info:
        await client.get_service(SID)
    code, detail = parse_error_text(error)
    assert (info.value.status, info.value.code, info.value.detail) == (status, code, detail)
    assert info.value.operation == "postgresServiceGet" and info.value.request_id
    assert not info.value.temporary
    assert len(fake.requests()) == 1


async def test_5xx_retried_with_backoff_then_succeeds(fake: FakeApi, make_client) -> None:
    fake.on(
        "GET",
        f"{BASE}/{SID}",
        Reply(status=502, text="<html>bad gateway</html>"),
        err(500, "INTERNAL: oops"),
        ok(SERVICE),
    )
    client = make_client()
    assert (await client.get_service(SID)).id == SID
    assert len(fake.requests()) == 3


async def test_5xx_exhausted_raises_server_error(fake: FakeApi, make_client) -> None:
    fake.on("GET", f"{BASE}/{SID}", err(503, "SERVICE_UNAVAILABLE: try later"))
    client = make_client(max_retries=2)
    with pytest.raises(ServerError) as info:
        await client.get_service(SID)
    assert info.value.temporary and info.value.code == "SERVICE_UNAVAILABLE"
    assert len(fake.requests()) == 3


async def test_backoff_is_exponential_jittered_and_capped(fake: FakeApi, make_client) -> None:
    fake.on("GET", f"{BASE}/{SID}", err(500, "INTERNAL"))
    client = make_client(max_retries=4, backoff_base=0.1, backoff_cap=0.15)
    with pytest.raises(ServerError):
        await client.get_service(SID)
    gaps = [b.at - a.at for a, b in zip(fake.seen, fake.seen[1:])]
    assert len(gaps) == 4
    assert all(g <= 0.15 + 0.1 for g in gaps)  # cap (+ scheduling slack)


async def test_create_on_5xx_is_ambiguous_and_not_retried(fake: FakeApi, make_client) -> None:
    fake.on("POST", BASE, err(500, "INTERNAL: boom"))
    client = make_client()
    with pytest.raises(AmbiguousCreateError) as info:
        await client.create_service(CREATE)
    assert info.value.status == 500 and info.value.operation == "postgresServiceCreate"
    assert len(fake.requests()) == 1


@pytest.mark.parametrize("reply", [Reply(drop=True), Reply(delay=1.0, json={})], ids=["dropped", "read-timeout"])
async def test_create_without_response_is_ambiguous(fake: FakeApi, make_client, reply: Reply) -> None:
    fake.on("POST", BASE, reply)
    fake.on("POST", f"{BASE}/{SID}/readReplica", reply)
    fake.on("POST", f"{BASE}/{SID}/restoredService", reply)
    fake.on("PATCH", f"{BASE}/{SID}/password", reply)
    client = make_client(timeout=0.3)
    with pytest.raises(AmbiguousCreateError):
        await client.create_service(CREATE)
    with pytest.raises(AmbiguousCreateError):
        await client.create_read_replica(SID, PostgresReadReplicaRequest(name="ro"))
    with pytest.raises(AmbiguousCreateError):
        await client.restore_service(SID, PostgresRestoreRequest(name="r", restore_target="2026-01-01T00:00:00Z"))
    with pytest.raises(AmbiguousCreateError):
        await client.set_password(SID)  # server-generated: returned once
    assert len(fake.requests()) == 4


async def test_idempotent_calls_retry_dropped_connections_and_timeouts(fake: FakeApi, make_client) -> None:
    fake.on("GET", f"{BASE}/{SID}", Reply(drop=True), Reply(delay=1.0, json={}), ok(SERVICE))
    fake.on("PATCH", f"{BASE}/{SID}/password", Reply(drop=True), err(502, "BAD_GATEWAY"), ok({}))
    client = make_client(timeout=0.3)
    assert (await client.get_service(SID)).id == SID
    assert (await client.set_password(SID, "Supplied-Passw0rd")).password is None
    assert [s.method for s in fake.seen] == ["GET"] * 3 + ["PATCH"] * 3


async def test_network_error_after_retries(make_client) -> None:
    with socket.socket() as s:  # a loopback port with no listener: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    statuses: list[str] = []
    client = make_client(
        base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, on_response=lambda op, st, secs: statuses.append(st)
    )
    with pytest.raises(NetworkError) as info:
        await client.create_service(CREATE)  # never reached the server: retried, not ambiguous
    assert info.value.temporary and info.value.status is None
    assert statuses == ["network"] * 3


class RefuseFirst(httpx.AsyncBaseTransport):
    """Real HTTP, except the first ``n`` connection attempts fail as refused."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.n > 0:
            self.n -= 1
            raise httpx.ConnectError("refused", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_create_retried_when_connection_never_established(fake: FakeApi, make_client) -> None:
    fake.on("POST", BASE, ok(SERVICE))
    client = make_client(transport=RefuseFirst(2))
    assert (await client.create_service(CREATE)).id == SID
    assert len(fake.requests()) == 1
    assert client.stats.requests[("postgresServiceCreate", "network")] == 2


async def test_create_429_waits_for_reset_and_retries(fake: FakeApi, make_client) -> None:
    fake.on("POST", BASE, err(429, "TOO_MANY_REQUESTS", **{"X-RateLimit-Reset": "0.4"}), ok(SERVICE))
    client = make_client(rate_limiter=RateLimiter(100, 1.0))
    assert (await client.create_service(CREATE)).id == SID
    first, second = fake.requests()
    assert second.at - first.at >= 0.4


async def test_429_exhausted_raises_rate_limited_with_retry_after(fake: FakeApi, make_client) -> None:
    fake.on("GET", BASE, err(429, "TOO_MANY_REQUESTS", **{"X-RateLimit-Reset": "0.15"}))
    client = make_client(max_retries=1, rate_limiter=RateLimiter(100, 1.0))
    started = time.monotonic()
    with pytest.raises(RateLimitedError) as info:
        await client.list_services()
    assert info.value.retry_after == pytest.approx(0.25)  # reset + slack
    assert info.value.status == 429 and info.value.temporary
    assert len(fake.requests()) == 2 and time.monotonic() - started >= 0.25


async def test_unexpected_success_body(fake: FakeApi, make_client) -> None:
    fake.on("GET", f"{BASE}/{SID}", Reply(text="not json"))
    fake.on("POST", BASE, Reply(json={"status": 200}))
    client = make_client(max_retries=0)
    with pytest.raises(ServerError):
        await client.get_service(SID)
    with pytest.raises(AmbiguousCreateError):  # 200 but unreadable: the service may exist
        await client.create_service(CREATE)
