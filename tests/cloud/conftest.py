"""Fixtures of the client tests: a scripted fake API over real HTTP and client factories."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cloud_fakeapi import KEY_SECRET, ORG, FakeApi

from mpg_operator.cloud import CloudClient, RateLimiter, clear_rate_limiters


@pytest.fixture(autouse=True)
def _fresh_rate_limiters() -> None:
    clear_rate_limiters()


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    api = FakeApi()
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


ClientFactory = Callable[..., CloudClient]


@pytest.fixture
async def make_client(fake: FakeApi) -> AsyncIterator[ClientFactory]:
    """Clients on the fake API: fast backoff, no rate limit unless a test passes one."""
    clients: list[CloudClient] = []

    def factory(**kw: Any) -> CloudClient:
        kw.setdefault("key_id", f"key-{uuid.uuid4().hex[:8]}")
        kw.setdefault("key_secret", KEY_SECRET)
        kw.setdefault("organization_id", ORG)
        kw.setdefault("base_url", fake.url)
        kw.setdefault("backoff_base", 0.01)
        kw.setdefault("backoff_cap", 0.05)
        kw.setdefault("timeout", 5.0)
        kw.setdefault("rate_limiter", RateLimiter(1000, 1.0))
        client = CloudClient(**kw)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()
