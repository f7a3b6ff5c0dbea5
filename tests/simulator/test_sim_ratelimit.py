"""The per-key fixed-window rate limit (on by default: 10 requests / 10 s)."""

from __future__ import annotations

import asyncio

from clickhouse_cloud_simulator import SimulatorConfig
from clickhouse_cloud_simulator.ratelimit import RateLimiter


def test_defaults_match_the_real_api() -> None:
    cfg = SimulatorConfig()
    assert (cfg.rate_limit, cfg.rate_window, cfg.rate_limited) == (10, 10.0, True)
    assert SimulatorConfig(rate_limit=None).rate_limited is False


async def test_eleventh_request_is_429_with_headers(make_simulator) -> None:
    _, api = await make_simulator(rate_limit=10, rate_window=10.0)
    remaining = []
    for _ in range(10):
        status, _, headers = await api.call("GET", "/postgres")
        assert status == 200
        assert headers["X-RateLimit-Limit"] == "10"
        assert headers["X-RateLimit-Policy"] == '10;w=10;comment="fixed window"'
        remaining.append(int(headers["X-RateLimit-Remaining"]))
    assert remaining == list(range(9, -1, -1))
    status, body, headers = await api.call("GET", "/postgres")
    assert status == 429
    assert body["status"] == 429 and body["error"].startswith("TOO_MANY_REQUESTS: Rate limit exceeded")
    assert headers["X-RateLimit-Remaining"] == "0"
    assert 0 < float(headers["X-RateLimit-Reset"]) <= 10


async def test_window_resets_and_keys_are_separate(make_simulator) -> None:
    sim, api = await make_simulator(rate_limit=3, rate_window=0.5)
    other = sim.add_key(org_id=sim.org_id)[:2]
    statuses = [(await api.call("GET", "/postgres"))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert (await api.call("GET", "/postgres", auth=other))[0] == 200  # its own window
    _, _, headers = await api.call("GET", "/postgres")
    await asyncio.sleep(float(headers["X-RateLimit-Reset"]) + 0.05)
    assert (await api.call("GET", "/postgres"))[0] == 200


async def test_no_rate_limit_means_no_headers(sim_api) -> None:
    for _ in range(15):
        status, _, headers = await sim_api.call("GET", "/postgres")
        assert status == 200
    assert "X-RateLimit-Limit" not in headers


def test_limiter_unit_fixed_window() -> None:
    now = [100.0]
    limiter = RateLimiter(2, 10.0, clock=lambda: now[0])
    assert limiter.hit("k")[0] and limiter.hit("k")[0]
    allowed, headers = limiter.hit("k")
    assert not allowed and headers["X-RateLimit-Reset"] == "10"
    now[0] += 9.5
    assert limiter.hit("k")[1]["X-RateLimit-Reset"] == "0.5"
    now[0] += 0.5
    allowed, headers = limiter.hit("k")
    assert allowed and headers["X-RateLimit-Remaining"] == "1"
