"""Scale benchmark: N ManagedPostgres resources against the simulator with its rate limit on.

The operator runs as its own process (``mpg-operator run``), against the Kubernetes emulator
and the simulator (services without PostgreSQL servers: 200 real servers would measure
PostgreSQL, not the operator). For each N (a small baseline first, then the full size) it reports:

* time until every resource is Ready, next to the floor the rate limit allows
  (each resource needs at least a POST and a CA download: 2 requests at ``limit/window`` per s);
* API requests per minute in steady state once all are Ready (should not grow with N);
* HTTP 429 responses received (target 0);
* the operator process's peak resident memory (VmHWM).

Usage: python benchmarks/operator_scale.py [--resources 200] [--baseline 20] [--steady 120]
Writes docs/benchmarks/operator-scale.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from mpg_operator.sandbox import Sandbox  # noqa: E402


def manifest(i: int) -> dict:
    return {
        "apiVersion": "clickhouse.cloud/v1alpha1",
        "kind": "ManagedPostgres",
        "metadata": {"name": f"db-{i:04d}", "namespace": "bench"},
        "spec": {
            "provider": "aws",
            "region": "us-west-2",
            "size": "r8gd.large",
            "credentialsRef": {"name": "clickhouse-cloud"},
            "tags": {"bench": "scale"},
        },
    }


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(n: int, args: argparse.Namespace) -> dict:
    options = {
        "create_seconds": args.create_seconds,
        "rate_limit": args.rate_limit,
        "rate_window": args.rate_window,
        "real_postgres": False,
        "service_quota": 10_000,
    }
    with Sandbox(simulator_options=options, namespaces=("bench",), start_operator=False) as sb:
        env = {**os.environ, **sb.operator_environment(), "MPG_POLL_INTERVAL": str(args.poll_interval),
               "MPG_POLL_INTERVAL_ACTIVE": str(args.poll_interval_active), "MPG_LIST_MAX_AGE": str(args.list_max_age)}
        log = open(sb.workdir / "operator.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "mpg_operator", "run", "--all-namespaces", "--metrics-port", "0"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            time.sleep(2)
            t0 = time.monotonic()
            start_index = len(sb.simulator.requests)
            for i in range(n):
                sb.apply(manifest(i))
            ready_at = None
            while time.monotonic() - t0 < args.timeout:
                ready = sum(1 for o in sb.kube.list("clickhouse.cloud/v1alpha1", "ManagedPostgres", "bench")
                            if any(c.get("type") == "Ready" and c.get("status") == "True"
                                   for c in (o.get("status") or {}).get("conditions") or []))
                if ready == n:
                    ready_at = time.monotonic() - t0
                    break
                time.sleep(1)
            requests = sb.simulator.requests[start_index:]
            create_phase = len(requests)
            # Steady state: count what the operator sends while nothing changes.
            steady_start = len(sb.simulator.requests)
            time.sleep(args.steady)
            steady = sb.simulator.requests[steady_start:]
            all_requests = sb.simulator.requests[start_index:]
            rss = peak_rss_mib(proc.pid)
            rate = args.rate_limit / args.rate_window
            return {
                "n": n,
                "ready_seconds": ready_at,
                "floor_seconds": max(0.0, (2 * n - args.rate_limit) / rate),
                "create_phase_requests": create_phase,
                "steady_requests_per_minute": len(steady) / (args.steady / 60),
                "steady_by_operation": _by_op(steady),
                "status_429": sum(1 for r in all_requests if r.status == 429),
                "peak_rss_mib": rss,
                "services": len(sb.simulator.services),
            }
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


def _by_op(records) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        key = f"{r.method} {'list' if r.path.rstrip('/').endswith('/postgres') else 'service'}"
        out[key] = out.get(key, 0) + 1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=200)
    parser.add_argument("--baseline", type=int, default=20)
    parser.add_argument("--rate-limit", type=int, default=10)
    parser.add_argument("--rate-window", type=float, default=10.0)
    parser.add_argument("--create-seconds", type=float, default=5.0)
    parser.add_argument("--poll-interval", type=float, default=60.0, help="steady-state pass interval (shipped: 300)")
    parser.add_argument("--poll-interval-active", type=float, default=15.0, help="pass interval while in flight (as shipped)")
    parser.add_argument("--list-max-age", type=float, default=30.0, help="LIST reuse window (as shipped)")
    parser.add_argument("--steady", type=float, default=240.0, help="seconds of steady state to observe")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks" / "operator-scale.md"))
    args = parser.parse_args()
    (ROOT / "docs" / "benchmarks").mkdir(parents=True, exist_ok=True)

    results = [run_one(n, args) for n in (args.baseline, args.resources)]
    lines = [
        "# Operator at scale: N ManagedPostgres resources sharing one API key",
        "",
        f"Command: `python benchmarks/operator_scale.py --resources {args.resources} --baseline {args.baseline} "
        f"--steady {args.steady:g}` (run on {time.strftime('%Y-%m-%d')}, 2-core machine).",
        "",
        f"Simulator rate limit {args.rate_limit} requests / {args.rate_window:g} s per key (on), create time "
        f"{args.create_seconds:g} s, services without PostgreSQL servers. Operator: steady pass every "
        f"{args.poll_interval:g} s, {args.poll_interval_active:g} s while in flight, LIST reused for {args.list_max_age:g} s. "
        "The operator is its own process (`mpg-operator run`).",
        "",
        "| resources | time to all Ready | floor from the rate limit | ratio | requests during create | steady requests/min | 429s | peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ready = f"{r['ready_seconds']:.0f} s" if r["ready_seconds"] is not None else "not reached"
        ratio = f"{r['ready_seconds'] / r['floor_seconds']:.2f}" if r["ready_seconds"] and r["floor_seconds"] else "-"
        lines.append(
            f"| {r['n']} | {ready} | {r['floor_seconds']:.0f} s | {ratio} | {r['create_phase_requests']} | "
            f"{r['steady_requests_per_minute']:.1f} ({r['steady_by_operation']}) | {r['status_429']} | {r['peak_rss_mib']:.0f} MiB |"
        )
    lines += [
        "",
        "Floor: every resource needs at least two requests (POST create, GET caCertificates); at "
        f"{args.rate_limit / args.rate_window:g} request/s that is (2N - burst) / rate seconds, before any LIST.",
        "Steady state is the number of requests per minute after all resources are Ready: batched "
        "observation (one LIST per organization serves every resource) keeps it flat as N grows.",
    ]
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
