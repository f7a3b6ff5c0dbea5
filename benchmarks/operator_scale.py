"""Scale benchmark: N ManagedPostgres resources on one API key, against the simulator with its rate limit on.

The operator runs as its own process (``mpg-operator run``) with its SHIPPED settings (steady pass
300 s, 15 s while in flight, organization LIST every 30 s, 2.5 s while in flight on an idle key,
create grace 60 s, update confirmation 15 s), against the Kubernetes emulator and the simulator
(services without PostgreSQL servers: 1,000 real servers would measure PostgreSQL, not the
operator; a service takes ``--create-seconds`` to turn ``running``). For each N it reports, next to
its target:

* time until every resource is Ready, next to the floor the rate limit allows
  (each resource needs at least a POST and a CA download: 2 requests at ``limit/window`` per s);
* HTTP 429 responses received by the operator's key over the whole run (target 0);
* the operator process's peak resident memory (VmHWM; target <= 150 MiB at 1,000);
* steady state once all are Ready (after ``--settle`` s): API requests/s (target <= 0.1) and
  Kubernetes writes/min (mutating calls the emulator recorded; target 0), over ``--steady`` s;
* drift detection latency: a service is changed behind the operator's back with another API key
  of the same organization (its size); latency = until the operator's key sends the PATCH that
  puts it back (target <= 60 s), ``--drifts`` samples at random moments;
* Ready lag: from the moment a service turns ``running`` in the simulator to its resource's Ready
  condition turning True (recorded by a listener on the emulator's store), p50/p95, (a) during the
  bulk create, when the key is saturated, and (b) for ``--late`` resources created one at a time
  once everything is steady, when the key has spare budget (target p95 <= 5 s).

Usage: python benchmarks/operator_scale.py --resources 1000 [--baseline 0] [--steady 400]
Results are merged into docs/benchmarks/operator-scale.json (by N) and rendered to
docs/benchmarks/operator-scale.md. ``--trace-memory`` runs the operator under tracemalloc
(benchmarks/operator_traced.py) and writes its top allocations next to the log.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from mpg_operator.sandbox import Sandbox  # noqa: E402

GROUP_VERSION = "clickhouse.cloud/v1alpha1"
MUTATING = {"create", "update", "patch", "delete", "deletecollection"}
SHORTENED: dict[str, str] = {}  # operator settings the benchmark shortens: none
TESTING_ONLY = (
    "MPG_POLL_INTERVAL",
    "MPG_POLL_INTERVAL_ACTIVE",
    "MPG_LIST_MAX_AGE",
    "MPG_LIST_FAST_INTERVAL",
    "MPG_CREATE_GRACE",
    "MPG_UPDATE_CONFIRM",
)
TARGETS = {"drift": 60.0, "steady_rps": 0.1, "ready_lag_p95": 5.0, "rss_mib": 150.0, "writes": 0.0, "429": 0}


def manifest(i: int, prefix: str = "db") -> dict:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "ManagedPostgres",
        "metadata": {"name": f"{prefix}-{i:04d}", "namespace": "bench"},
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


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


class ReadyWatch:
    """Records, from the emulator's store, when each ManagedPostgres first turns Ready (monotonic)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.ready_at: dict[str, float] = {}  # uid -> time.monotonic()
        self.names: dict[str, str] = {}  # uid -> name
        self.lock = threading.Lock()
        store.add_listener(self._on_change)

    def _on_change(self) -> None:
        try:
            event = self.store._history[-1]
        except IndexError:
            return
        obj = event.object
        if obj.get("kind") != "ManagedPostgres":
            return
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        if not uid or uid in self.ready_at:
            return
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                with self.lock:
                    self.ready_at[uid] = time.monotonic()
                    self.names[uid] = meta.get("name", "")
                return

    def count(self, names: set[str] | None = None) -> int:
        with self.lock:
            if names is None:
                return len(self.ready_at)
            return sum(1 for n in self.names.values() if n in names)

    def close(self) -> None:
        self.store.remove_listener(self._on_change)


def running_times(sb: Sandbox) -> dict[str, float]:
    """owner uid -> time.monotonic() its service turned (or will turn) running."""
    out: dict[str, float] = {}
    for svc in sb.simulator.services.values():
        uid = next((t["value"] for t in svc.tags if t.get("key") == "mpg-operator.uid"), None)
        if uid:
            out[uid] = svc.phases[-1][1] if svc.phases else svc.created_mono
    return out


def ready_lags(watch: ReadyWatch, running: dict[str, float], names: set[str] | None = None) -> list[float]:
    with watch.lock:
        items = [(uid, t) for uid, t in watch.ready_at.items() if names is None or watch.names.get(uid) in names]
    return [t - running[uid] for uid, t in items if uid in running]


def operator_requests(sb: Sandbox, start: int, key_id: str) -> list[Any]:
    return [r for r in sb.simulator.requests[start:] if r.key_id == key_id]


def wait_until(predicate, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def measure_drift(sb: Sandbox, args: argparse.Namespace, n: int, op_key: str) -> list[float | None]:
    """Change services' size with another key of the same organization; time until the operator PATCHes back."""
    other_id, other_secret, org = sb.simulator.add_key(org_id=sb.simulator.org_id)
    uid_to_service = {
        next((t["value"] for t in s.tags if t.get("key") == "mpg-operator.uid"), None): s.id
        for s in sb.simulator.services.values()
    }
    objs = {o["metadata"]["name"]: o for o in sb.kube.list(GROUP_VERSION, "ManagedPostgres", "bench")}
    rng = random.Random(7)
    latencies: list[float | None] = []
    with httpx.Client(base_url=sb.simulator.url, auth=(other_id, other_secret), timeout=30) as api:
        for k in range(args.drifts):
            time.sleep(rng.uniform(0, 30))  # a random moment of the 30 s LIST cycle
            name = f"db-{rng.randrange(n):04d}"
            service_id = uid_to_service.get(objs[name]["metadata"]["uid"])
            if service_id is None:
                latencies.append(None)
                continue
            path = f"/organizations/{org}/postgres/{service_id}"
            start = len(sb.simulator.requests)
            sent = time.time()
            r = api.patch(path, json={"size": "r8gd.xlarge"})
            r.raise_for_status()

            def corrected(start: int = start, path: str = path) -> Any:
                return next(
                    (
                        q
                        for q in sb.simulator.requests[start:]
                        if q.key_id == op_key and q.method == "PATCH" and q.path.endswith(path)
                    ),
                    None,
                )

            wait_until(lambda: corrected() is not None, timeout=180, interval=0.2)
            hit = corrected()
            latencies.append(hit.timestamp - sent if hit else None)
            print(
                f"  drift {k + 1}/{args.drifts} on {name}: "
                f"{f'{latencies[-1]:.1f} s' if latencies[-1] is not None else 'not corrected'}",
                flush=True,
            )
            time.sleep(args.update_settle)  # let the correction settle before the next one
    return latencies


def run_one(n: int, args: argparse.Namespace) -> dict:
    options = {
        "create_seconds": args.create_seconds,
        "rate_limit": args.rate_limit,
        "rate_window": args.rate_window,
        "real_postgres": False,
        "service_quota": 10_000,
    }
    with Sandbox(simulator_options=options, namespaces=("bench",), start_operator=False) as sb:
        sb.kube.kmock.max_recorded = 10**8  # count every Kubernetes call (the default drops old ones)
        env = {**os.environ, **sb.operator_environment()}
        for name in TESTING_ONLY:  # the sandbox's test settings: back to the shipped defaults
            env.pop(name, None)
        env.update(SHORTENED)
        op_key = sb.simulator.key_id
        log_path = sb.workdir / "operator.log"
        log = open(log_path, "w")
        command = [sys.executable, "-m", "mpg_operator", "run", "--all-namespaces", "--metrics-port", "0"]
        trace_out = None
        if args.trace_memory:
            trace_out = Path(args.trace_memory)
            env["MPG_TRACE_OUT"] = str(trace_out)
            command = [sys.executable, str(ROOT / "benchmarks" / "operator_traced.py"), *command[3:]]
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        watch = ReadyWatch(sb.kube.store)
        try:
            time.sleep(2)
            t0 = time.monotonic()
            start_index = len(sb.simulator.requests)
            for i in range(n):
                sb.apply(manifest(i))
            print(f"[{n}] applied {n} resources", flush=True)
            last_print = 0.0
            while time.monotonic() - t0 < args.timeout and watch.count() < n:
                if time.monotonic() - last_print > 60:
                    last_print = time.monotonic()
                    print(
                        f"[{n}] {time.monotonic() - t0:.0f} s: {watch.count()} Ready, RSS {rss_mib(proc.pid):.0f} MiB",
                        flush=True,
                    )
                time.sleep(1)
            ready_seconds = time.monotonic() - t0 if watch.count() >= n else None
            create_phase = len(operator_requests(sb, start_index, op_key))
            bulk_lags = ready_lags(watch, running_times(sb))
            print(f"[{n}] all Ready in {ready_seconds} s", flush=True)
            if trace_out is not None:
                proc.send_signal(signal.SIGUSR1)

            # Steady state: nothing changes; count API requests and Kubernetes writes.
            time.sleep(args.settle)
            steady_start = len(sb.simulator.requests)
            calls_start = len(sb.kube.calls)
            t_steady = time.monotonic()
            time.sleep(args.steady)
            steady_seconds = time.monotonic() - t_steady
            steady = operator_requests(sb, steady_start, op_key)
            writes = [c for c in sb.kube.calls[calls_start:] if c.verb in MUTATING]
            print(
                f"[{n}] steady: {len(steady)} requests, {len(writes)} Kubernetes writes in {steady_seconds:.0f} s",
                flush=True,
            )

            drifts = measure_drift(sb, args, n, op_key) if args.drifts else []

            # Ready lag with spare budget: resources created one at a time once all is steady.
            late_names = {f"late-{i:04d}" for i in range(args.late)}
            for i in range(args.late):
                sb.apply(manifest(i, prefix="late"))
                wait_until(lambda i=i: watch.count({f"late-{i:04d}"}) == 1, timeout=120)
                time.sleep(args.late_gap)
            late_lags = ready_lags(watch, running_times(sb), late_names)

            all_requests = operator_requests(sb, start_index, op_key)
            if trace_out is not None:
                proc.send_signal(signal.SIGUSR1)
                time.sleep(5)
            rate = args.rate_limit / args.rate_window if args.rate_limit else float("inf")
            return {
                "n": n,
                "date": time.strftime("%Y-%m-%d"),
                "ready_seconds": ready_seconds,
                "floor_seconds": max(0.0, (2 * n - args.rate_limit) / rate),
                "create_phase_requests": create_phase,
                "steady_seconds": steady_seconds,
                "steady_requests_per_second": len(steady) / steady_seconds,
                "steady_by_operation": _by_op(steady),
                "steady_kube_writes_per_minute": len(writes) / (steady_seconds / 60),
                "steady_kube_writes_by_kind": _by_call(writes),
                "drift_seconds": drifts,
                "bulk_ready_lag": {
                    "p50": percentile(bulk_lags, 50),
                    "p95": percentile(bulk_lags, 95),
                    "n": len(bulk_lags),
                },
                "late_ready_lag": {
                    "p50": percentile(late_lags, 50),
                    "p95": percentile(late_lags, 95),
                    "n": len(late_lags),
                    "values": [round(v, 2) for v in late_lags],
                },
                "status_429": sum(1 for r in all_requests if r.status == 429),
                "requests_total": len(all_requests),
                "peak_rss_mib": peak_rss_mib(proc.pid),
                "services": len(sb.simulator.services),
                "settings": {
                    "rate_limit": args.rate_limit,
                    "rate_window": args.rate_window,
                    "create_seconds": args.create_seconds,
                    "steady": args.steady,
                    "settle": args.settle,
                    "drifts": args.drifts,
                    "late": args.late,
                },
            }
        finally:
            watch.close()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            if args.keep_log:
                Path(args.keep_log).write_text(log_path.read_text())


def _by_op(records) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        key = f"{r.method} {'list' if r.path.rstrip('/').endswith('/postgres') else 'service'}"
        out[key] = out.get(key, 0) + 1
    return out


def _by_call(calls) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in calls:
        key = f"{c.verb} {c.plural}{'/' + c.subresource if c.subresource else ''}"
        out[key] = out.get(key, 0) + 1
    return out


def _fmt(value: float | None, unit: str = " s", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def render(results: list[dict], command: str) -> str:
    t = TARGETS
    lines = [
        "# Operator at scale: N ManagedPostgres resources sharing one API key",
        "",
        f"Command: `{command}` (2-core machine shared with other work; each N is one run, merged by N "
        "from `operator-scale.json`).",
        "",
        "The operator is its own process (`mpg-operator run`) with its shipped settings, nothing shortened: steady "
        "pass every 300 s (±20 %), 15 s while in flight; the organization's poller LISTs every 30 s, every 2.5 s "
        "while something is in flight and the key is idle; create grace 60 s; update confirmation 15 s. Simulator: "
        "rate limit 10 requests / 10 s per key (on), services turn `running` 5 s after the create, no PostgreSQL "
        "servers behind them.",
        "",
        "| resources | time to all Ready | rate-limit floor | ratio | 429s (target 0) | peak RSS (target ≤ 150 MiB at 1,000) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = f"{r['ready_seconds'] / r['floor_seconds']:.2f}" if r["ready_seconds"] and r["floor_seconds"] else "-"
        lines.append(
            f"| {r['n']} | {_fmt(r['ready_seconds'], ' s', 0)} | {r['floor_seconds']:.0f} s | {ratio} | "
            f"{r['status_429']} of {r['requests_total']} requests | {r['peak_rss_mib']:.0f} MiB |"
        )
    lines += [
        "",
        f"| resources | steady API requests/s (target ≤ {t['steady_rps']}) | steady Kubernetes writes/min (target 0) | "
        f"drift detected and corrected (target ≤ {t['drift']:.0f} s) | Ready lag, key saturated (bulk create) p50 / p95 | "
        f"Ready lag, spare budget p50 / p95 (target p95 ≤ {t['ready_lag_p95']:.0f} s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        drift = [d for d in r["drift_seconds"] if d is not None]
        missed = sum(1 for d in r["drift_seconds"] if d is None)
        drift_text = (
            (
                f"max {max(drift):.1f} s, mean {statistics.mean(drift):.1f} s ({len(drift)} samples"
                f"{f', {missed} not corrected' if missed else ''})"
            )
            if drift
            else "-"
        )
        bulk, late = r["bulk_ready_lag"], r["late_ready_lag"]
        lines.append(
            f"| {r['n']} | {r['steady_requests_per_second']:.3f} ({r['steady_by_operation']} in {r['steady_seconds']:.0f} s) | "
            f"{r['steady_kube_writes_per_minute']:.2f} {r['steady_kube_writes_by_kind'] or ''} | {drift_text} | "
            f"{_fmt(bulk['p50'])} / {_fmt(bulk['p95'])} (n={bulk['n']}) | "
            f"{_fmt(late['p50'])} / {_fmt(late['p95'])} (n={late['n']}) |"
        )
    lines += [
        "",
        "* Floor: every resource needs at least two requests (POST create, GET caCertificates); at 1 request/s "
        "that is (2N − burst) / rate seconds, before any LIST.",
        "* 429s: responses with status 429 to the operator's key over the whole run (create, steady, drift, late creates).",
        "* Steady state: after all are Ready and a settle period, for the stated time (longer than the 300 s pass "
        "interval + jitter, so every resource ran a pass); Kubernetes writes are the mutating calls the emulator "
        "recorded (status patches, Secrets, events, finalizers) from any client.",
        "* Drift: another API key of the same organization PATCHes a service's size at a random moment; the "
        "latency runs until the operator's key sends the PATCH that restores it (the poller's LIST sees the "
        "change, wakes that resource, its pass corrects it). A sample taken while the previous correction "
        "is still being confirmed (in flight) is seen by the 2.5 s fast refresh; one in full steady state by "
        "the 30 s LIST, so the bound is about 30 s plus a pass.",
        "* Ready lag: from the simulator's `running` transition to the Ready condition turning True in the "
        "emulator's store. During the bulk create the key is saturated by creates, so observation waits its "
        "turn (the fast refresh never delays queued requests); the spare-budget figure comes from resources "
        "created one at a time once all is steady.",
        "* Ready lag with a saturated key: the LIST that shows `running` waits in the key's FIFO queue behind "
        "the creates already queued (up to the 32 first passes allowed at once), about 30–60 s at 1 request/s.",
        "* Where the operator's memory goes: [operator-memory.md](operator-memory.md).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=200)
    parser.add_argument("--baseline", type=int, default=0, help="also run this many first (0: none)")
    parser.add_argument("--rate-limit", type=int, default=10)
    parser.add_argument("--rate-window", type=float, default=10.0)
    parser.add_argument("--create-seconds", type=float, default=5.0)
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after all Ready before steady state counts")
    parser.add_argument("--steady", type=float, default=400.0, help="seconds of steady state to observe")
    parser.add_argument("--drifts", type=int, default=5, help="drift samples")
    parser.add_argument("--update-settle", type=float, default=20.0, help="seconds after a drift is corrected")
    parser.add_argument("--late", type=int, default=6, help="resources created one at a time at the end")
    parser.add_argument("--late-gap", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--trace-memory", default="", help="file for tracemalloc top allocations (slower)")
    parser.add_argument("--keep-log", default="", help="copy the operator log here")
    parser.add_argument("--json", default=str(ROOT / "docs" / "benchmarks" / "operator-scale.json"))
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks" / "operator-scale.md"))
    parser.add_argument("--render-only", action="store_true", help="only rewrite the Markdown from the JSON")
    args = parser.parse_args()

    sizes = [s for s in (args.baseline, args.resources) if s] if not args.render_only else []
    command = "python " + " ".join(["benchmarks/operator_scale.py", *sys.argv[1:]])
    store = Path(args.json)
    data: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {}
    for n in sizes:
        result = run_one(n, args)
        result["command"] = command
        data[str(n)] = result
        store.parent.mkdir(parents=True, exist_ok=True)
        store.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(json.dumps(result, indent=1), flush=True)
    results = [data[k] for k in sorted(data, key=int)]
    commands = sorted({r.get("command", "") for r in results})
    Path(args.output).write_text(render(results, "`, `".join(commands)))
    print(Path(args.output).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
