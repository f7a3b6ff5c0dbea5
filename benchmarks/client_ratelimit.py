"""Benchmark: the client's shared per-key rate limiter against the simulator's real limit.

Starts an in-process simulator with its rate limit ON (default 10 requests / 10 s per key),
then runs, one after the other and each with its own API key:

1. ``limited``: N concurrent callers (default 50) looping ``list_services`` for ``--duration``
   seconds through clients that share the key's :func:`rate_limiter_for` limiter;
2. ``naive``: the same callers for ``--baseline-duration`` seconds without a client-side
   limiter and without retries, each pausing ``--naive-think`` seconds between calls
   (a controller polling every second), as a baseline.

It reports requests the server saw, 200s, 429s, the achieved rate against the limit and the
most requests the server saw in any window. Usage::

    .venv/bin/python benchmarks/client_ratelimit.py                      # 60 s + 20 s
    .venv/bin/python benchmarks/client_ratelimit.py --duration 15 --baseline-duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from clickhouse_cloud_simulator import Simulator, SimulatorConfig
from mpg_operator.cloud import (
    CloudClient,
    RateLimitedError,
    UnlimitedRateLimiter,
    rate_limiter_for,
)


@dataclass
class Result:
    mode: str
    seconds: float
    callers: int
    sent: int  # requests the server received
    ok: int
    rate_limited: int
    other_errors: int
    calls_completed: int  # caller-level calls that returned a result
    achieved_rate: float  # successful requests per second
    limit_rate: float  # limit / window
    max_in_window: int  # most requests the server received in any window
    call_p50: float | None  # seconds per completed call, including waiting for the limiter
    call_p95: float | None


def max_in_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    best, j = 0, 0
    for i, t in enumerate(stamps):
        while stamps[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


class TransitJitter(httpx.AsyncHTTPTransport):
    """Each request waits ``uniform(0, jitter)`` s before it goes out: the time between the limiter
    letting a request go and the server counting it varies (event-loop lag, a busy server)."""

    def __init__(self, jitter: float, seed: int = 1) -> None:
        super().__init__()
        self.jitter = jitter
        self._rng = random.Random(seed)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self._rng.uniform(0, self.jitter))
        return await super().handle_async_request(request)


async def run_phase(
    sim: Simulator,
    mode: str,
    callers: int,
    seconds: float,
    think: float,
    limit: int,
    window: float,
    jitter: float = 0.0,
) -> Result:
    key_id, key_secret, _ = sim.add_key(org_id=sim.org_id)
    common: dict[str, Any] = dict(
        key_id=key_id, key_secret=key_secret, organization_id=sim.org_id, base_url=sim.url, timeout=30.0
    )
    if mode == "limited":
        limiter = rate_limiter_for(key_id, limit, window)
        clients = [
            CloudClient(
                **common,
                rate_limiter=limiter,  # 5 clients, 1 key
                **({"transport": TransitJitter(jitter, seed=i)} if jitter else {}),
            )
            for i in range(5)
        ]
    else:
        clients = [CloudClient(**common, rate_limiter=UnlimitedRateLimiter(), max_retries=0)]
    first = len(sim.requests)
    durations: list[float] = []
    errors = {"429": 0, "other": 0}

    async def caller(i: int) -> None:
        client = clients[i % len(clients)]
        while True:
            started = time.monotonic()
            try:
                await client.list_services()
                durations.append(time.monotonic() - started)
            except RateLimitedError:
                errors["429"] += 1
            except Exception:  # noqa: BLE001 - counted, the benchmark goes on
                errors["other"] += 1
            if think:
                await asyncio.sleep(think)

    started = time.monotonic()
    tasks = [asyncio.create_task(caller(i)) for i in range(callers)]
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.monotonic() - started
    for c in clients:
        await c.aclose()

    records = [r for r in sim.requests[first:] if r.key_id == key_id]
    ok = sum(1 for r in records if r.status == 200)
    q = statistics.quantiles(durations, n=20) if len(durations) >= 2 else None
    return Result(
        mode=mode,
        seconds=round(elapsed, 1),
        callers=callers,
        sent=len(records),
        ok=ok,
        rate_limited=sum(1 for r in records if r.status == 429),
        other_errors=errors["other"],
        calls_completed=len(durations),
        achieved_rate=round(ok / elapsed, 3),
        limit_rate=round(limit / window, 3),
        max_in_window=max_in_window([r.timestamp for r in records], window),
        call_p50=round(statistics.median(durations), 2) if durations else None,
        call_p95=round(q[18], 2) if q else None,
    )


def markdown(results: list[Result]) -> str:
    head = (
        "| mode | seconds | callers | requests sent | 200 | 429 | achieved req/s | limit req/s "
        "| max in any window | call p50 s | call p95 s |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {r.mode} | {r.seconds} | {r.callers} | {r.sent} | {r.ok} | {r.rate_limited} | "
        f"{r.achieved_rate} | {r.limit_rate} | {r.max_in_window} | {r.call_p50} | {r.call_p95} |"
        for r in results
    ]
    return "\n".join([head, *rows])


async def main_async(args: argparse.Namespace) -> list[Result]:
    config = SimulatorConfig(
        port=0, rate_limit=args.limit, rate_window=args.window, real_postgres=False, create_seconds=0.2
    )
    async with Simulator(config) as sim:
        results = [
            await run_phase(
                sim, "limited", args.callers, args.duration, 0.0, args.limit, args.window, args.transit_jitter
            )
        ]
        if args.baseline_duration > 0:
            await asyncio.sleep(args.window)  # let the server's windows expire between phases
            results.append(
                await run_phase(
                    sim, "naive", args.callers, args.baseline_duration, args.naive_think, args.limit, args.window
                )
            )
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--callers", type=int, default=50)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of the limited phase")
    p.add_argument("--baseline-duration", type=float, default=20.0, help="seconds of the naive phase (0: skip)")
    p.add_argument("--naive-think", type=float, default=1.0, help="pause of each naive caller between calls")
    p.add_argument("--limit", type=int, default=10, help="requests per window (server and client)")
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument(
        "--transit-jitter",
        type=float,
        default=0.0,
        help="limited phase: each request waits uniform(0, S) s before it goes out",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    print(json.dumps([asdict(r) for r in results], indent=2) if args.json else markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
