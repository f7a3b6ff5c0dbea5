"""Run ``mpg-operator`` under tracemalloc; on SIGUSR1 append its top allocations to $MPG_TRACE_OUT.

Used by ``operator_scale.py --trace-memory FILE`` to find where the operator's memory goes:
``python benchmarks/operator_traced.py run --all-namespaces`` takes the operator's own arguments.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
import tracemalloc
from pathlib import Path

FRAMES = int(os.environ.get("MPG_TRACE_FRAMES", "12"))


def _census(out: Path) -> None:
    """Without tracemalloc: live objects by type (count, shallow bytes), dicts by size, tasks by coroutine."""
    from collections import Counter

    gc.collect()
    objs = gc.get_objects()
    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    tasks: Counter[str] = Counter()
    for o in objs:
        t = type(o)
        name = f"{t.__module__}.{t.__qualname__}"
        count[name] += 1
        try:
            size[name] += sys.getsizeof(o)
        except TypeError:
            pass
        if name == "_asyncio.Task":
            coro = o.get_coro()
            tasks[getattr(coro, "__qualname__", repr(coro))] += 1
    status = Path("/proc/self/status").read_text().splitlines()
    rss = next(line for line in status if line.startswith("VmRSS")).split(":")[1].strip()
    hwm = next(line for line in status if line.startswith("VmHWM")).split(":")[1].strip()
    lines = [
        f"=== {time.strftime('%H:%M:%S')} census: {len(objs)} gc objects, RSS {rss}, peak {hwm}",
        "-- by shallow size (gc-tracked containers only; str/bytes/int not counted), top 30:",
    ]
    lines += [f"{size[k] / 2**20:8.2f} MiB {count[k]:9d}  {k}" for k, _ in size.most_common(30)]
    lines.append("-- tasks by coroutine:")
    lines += [f"{n:7d}  {k}" for k, n in tasks.most_common(15)]
    with out.open("a") as fh:
        fh.write("\n".join(lines) + "\n")


def _dump(*_: object) -> None:
    out = Path(os.environ.get("MPG_TRACE_OUT", "operator-tracemalloc.txt"))
    if not tracemalloc.is_tracing():
        _census(out)
        return
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces(
        [
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
        ]
    )
    current, peak = tracemalloc.get_traced_memory()
    rss = next((line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS")), "")
    hwm = next((line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM")), "")
    lines = [
        f"=== {time.strftime('%H:%M:%S')} traced now {current / 2**20:.1f} MiB, traced peak {peak / 2**20:.1f} MiB, "
        f"{rss.split(':')[1].strip()} RSS, {hwm.split(':')[1].strip()} peak RSS, {len(gc.get_objects())} gc objects"
    ]
    by_file: dict[str, int] = {}
    for stat in snap.statistics("traceback"):
        # attribute to the first frame outside the standard library's generic containers
        frames = [f for f in stat.traceback if "site-packages" in f.filename or "mpg_operator" in f.filename]
        key = frames[-1].filename if frames else stat.traceback[-1].filename
        for marker in ("site-packages/", "operator/"):
            if marker in key:
                key = key.split(marker, 1)[1]
                break
        by_file[key] = by_file.get(key, 0) + stat.size
    lines.append("-- by package file (innermost frame in a package), top 25:")
    for key, size in sorted(by_file.items(), key=lambda kv: -kv[1])[:25]:
        lines.append(f"{size / 2**20:8.2f} MiB  {key}")
    lines.append("-- by line, top 30:")
    for stat in snap.statistics("lineno")[:30]:
        f = stat.traceback[0]
        lines.append(
            f"{stat.size / 2**20:8.2f} MiB  {stat.count:8d}  {f.filename.split('site-packages/')[-1]}:{f.lineno}"
        )
    lines.append("-- top 12 tracebacks:")
    for stat in snap.statistics("traceback")[:12]:
        lines.append(f"{stat.size / 2**20:.2f} MiB in {stat.count} blocks")
        lines += [f"    {f.filename.split('site-packages/')[-1]}:{f.lineno}" for f in stat.traceback[-FRAMES:]]
    with out.open("a") as fh:
        fh.write("\n".join(lines) + "\n")


def main() -> int:
    if FRAMES > 0:
        tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR1, _dump)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
    from mpg_operator.cli import main as operator_main

    sys.argv = ["mpg-operator", *sys.argv[1:]]
    return operator_main()


if __name__ == "__main__":
    sys.exit(main())
