"""Throughput of the ClickHouse Cloud API simulator (loopback only, bounded in count and time).

Measures requests/s for ``GET /postgres`` (list) and ``GET /postgres/{id}`` with the rate limit
off, at a few client concurrencies, and shows the rate-limited behaviour (10 requests / 10 s per
key by default). Writes ``docs/benchmarks/simulator-throughput.md``.

    .venv/bin/python benchmarks/simulator_throughput.py [--requests 3000] [--services 50]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import aiohttp

from clickhouse_cloud_simulator import Simulator, SimulatorConfig

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "simulator-throughput.md"


async def _load(
    session: aiohttp.ClientSession, url: str, auth: str, total: int, concurrency: int
) -> tuple[float, list[float], dict[int, int]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(total))

    async def worker() -> None:
        for _ in counter:
            t = time.perf_counter()
            async with session.get(url, headers={"Authorization": auth}) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, statuses


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run(requests: int, services: int) -> str:
    rows: list[str] = []
    cfg = SimulatorConfig(port=0, real_postgres=False, rate_limit=None, create_seconds=0.0)
    async with Simulator(cfg) as sim, aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        auth = "Basic " + base64.b64encode(f"{sim.key_id}:{sim.key_secret}".encode()).decode()
        base = f"{sim.url}/organizations/{sim.org_id}/postgres"
        sid = ""
        for i in range(services):
            async with session.post(
                base,
                json={"name": f"bench-{i}", "provider": "aws", "region": "us-east-1", "size": "r8gd.large"},
                headers={"Authorization": auth},
            ) as resp:
                sid = (await resp.json())["result"]["id"]
        await _load(session, base, auth, 200, 8)  # warm-up
        for label, url in ((f"GET list ({services} services)", base), ("GET one service", f"{base}/{sid}")):
            for concurrency in (1, 8, 32):
                elapsed, lat, statuses = await _load(session, url, auth, requests, concurrency)
                assert set(statuses) == {200}, statuses
                rows.append(
                    f"| {label} | {concurrency} | {requests} | {requests / elapsed:,.0f} | "
                    f"{statistics.median(lat) * 1000:.2f} | {_pct(lat, 0.99):.2f} |"
                )

    limited_cfg = SimulatorConfig(port=0, real_postgres=False)  # defaults: 10 requests / 10 s per key
    async with Simulator(limited_cfg) as sim, aiohttp.ClientSession() as session:
        auth = "Basic " + base64.b64encode(f"{sim.key_id}:{sim.key_secret}".encode()).decode()
        url = f"{sim.url}/organizations/{sim.org_id}/postgres"
        elapsed, _, statuses = await _load(session, url, auth, 50, 1)
        async with session.get(url, headers={"Authorization": auth}) as resp:
            reset = resp.headers.get("X-RateLimit-Reset")
            policy = resp.headers.get("X-RateLimit-Policy")
    limited = (
        f"50 sequential `GET /postgres` with the default limit: {statuses.get(200, 0)} × 200 and "
        f"{statuses.get(429, 0)} × 429 in {elapsed * 1000:.0f} ms; the next 429 said "
        f"`X-RateLimit-Reset: {reset}` and `X-RateLimit-Policy: {policy}`."
    )

    cmd = "python benchmarks/simulator_throughput.py " + " ".join(sys.argv[1:])
    return "\n".join(
        [
            "# Simulator throughput",
            "",
            f"Command: `{cmd.strip()}` (run from the repository root with the project's venv).",
            (
                f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} "
                f"{platform.release()}; client (aiohttp) and simulator share one process and one event loop, loopback only."
            ),
            "",
            "Rate limit off, no real PostgreSQL, no fault injection, no observers.",
            "",
            "| request | concurrency | requests | requests/s | median ms | p99 ms |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "## Rate-limited behaviour",
            "",
            limited,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per measurement (max 20000)")
    parser.add_argument("--services", type=int, default=50, help="services in the list (max 500)")
    args = parser.parse_args()
    report = asyncio.run(run(min(args.requests, 20000), min(args.services, 500)))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
