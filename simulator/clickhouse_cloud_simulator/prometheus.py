"""Prometheus exposition of the documented Managed Postgres metric families (§5 of the reference).

Database numbers come from the real server (``PostgresFleet.stats``) when there is one;
CPU, memory, disk and network numbers are synthetic but consistent (they grow with uptime).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from clickhouse_cloud_simulator.store import Service, size_memory_bytes, size_vcpus

# (name, type, HELP) in the documented order; the first three HELP texts are verbatim from the docs.
FAMILIES: list[tuple[str, str, str]] = [
    ("PostgresServiceInfo", "gauge", "Information about PostgreSQL service, including status and version."),
    ("PostgresServer_CPUCores", "gauge", "Number of CPU cores allocated to the service."),
    ("PostgresServer_MemoryLimitBytes", "gauge", "Memory allocated to the service in bytes."),
    ("PostgresServer_StorageLimitBytes", "gauge", "Storage allocated to the service in bytes."),
    ("PostgresServer_CPUSeconds_Total", "counter", "CPU time spent in each mode, in seconds."),
    ("PostgresServer_MemoryUsedPercent", "gauge", "Memory used as a percentage of MemoryLimitBytes."),
    (
        "PostgresServer_MemoryCachePercent",
        "gauge",
        "Memory used for cache and buffers as a percentage of total memory.",
    ),
    ("PostgresServer_FilesystemUsedPercent", "gauge", "Storage used as a percentage of StorageLimitBytes."),
    ("PostgresServer_DiskReads_Total", "counter", "Number of disk read operations."),
    ("PostgresServer_DiskWrites_Total", "counter", "Number of disk write operations."),
    ("PostgresServer_NetworkReceiveBytes_Total", "counter", "Bytes received over the network."),
    ("PostgresServer_NetworkTransmitBytes_Total", "counter", "Bytes transmitted over the network."),
    ("PostgresServer_TuplesFetched_Total", "counter", "Number of rows fetched by queries."),
    ("PostgresServer_TuplesInserted_Total", "counter", "Number of rows inserted."),
    ("PostgresServer_TuplesUpdated_Total", "counter", "Number of rows updated."),
    ("PostgresServer_TuplesDeleted_Total", "counter", "Number of rows deleted."),
    ("PostgresServer_TransactionsCommitted_Total", "counter", "Number of committed transactions."),
    ("PostgresServer_TransactionsRolledBack_Total", "counter", "Number of rolled back transactions."),
    ("PostgresServer_Deadlocks_Total", "counter", "Number of deadlocks detected."),
    ("PostgresServer_ActiveConnections", "gauge", "Number of active connections by state."),
    (
        "PostgresServer_CacheHitRatio",
        "gauge",
        "Buffer cache hit ratio: blocks served from cache vs. total blocks accessed (%).",
    ),
    ("PostgresServer_DatabaseSizeBytes", "gauge", "Size of each database in bytes."),
]
FAMILY_NAMES = [f[0] for f in FAMILIES]
CPU_MODES = ("user", "system", "iowait", "softirq", "steal", "irq", "nice", "idle")
_CPU_SHARE = {
    "user": 0.03,
    "system": 0.012,
    "iowait": 0.002,
    "softirq": 0.001,
    "steal": 0.0005,
    "irq": 0.0003,
    "nice": 0.0,
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def fmt(value: float) -> str:
    """Integer-looking values without decimals (as the real endpoint prints them)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6g}" if abs(value) < 1e15 else repr(float(value))


def _num(stats: Mapping[str, Any] | None, *names: str, default: float = 0) -> float:
    """First numeric entry among ``names`` (top level or under ``database``/``totals``)."""
    if not stats:
        return default
    for scope in (stats, stats.get("database") or {}, stats.get("totals") or {}):
        if not isinstance(scope, Mapping):
            continue
        for name in names:
            value = scope.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return value
    return default


def _mapping(stats: Mapping[str, Any] | None, *names: str) -> dict[str, float]:
    if not stats:
        return {}
    for name in names:
        value = stats.get(name)
        if isinstance(value, Mapping):
            return {str(k): v for k, v in value.items() if isinstance(v, (int, float))}
        if isinstance(value, list):  # [{"datname"/"database"/"name": ..., "size"/"bytes": ...}]
            out = {}
            for row in value:
                if isinstance(row, Mapping):
                    key = row.get("datname") or row.get("database") or row.get("name") or row.get("state")
                    val = next((row[k] for k in ("size", "bytes", "size_bytes", "count") if k in row), None)
                    if key is not None and isinstance(val, (int, float)):
                        out[str(key)] = val
            return out
    return {}


def service_samples(
    org_id: str, svc: Service, state: str, uptime: float, stats: Mapping[str, Any] | None
) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples per family for one service: family -> [(extra labels, value)]."""
    cores = size_vcpus(svc.size)
    memory = size_memory_bytes(svc.size)
    storage = svc.storage_size * 1024**3
    up = max(0.0, uptime)
    s: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in FAMILY_NAMES}
    s["PostgresServiceInfo"].append(({"postgres_status": state, "postgres_version": svc.postgres_version}, 1))
    s["PostgresServer_CPUCores"].append(({}, cores))
    s["PostgresServer_MemoryLimitBytes"].append(({}, memory))
    s["PostgresServer_StorageLimitBytes"].append(({}, storage))
    real_cpu = stats.get("cpu_seconds") if stats and isinstance(stats.get("cpu_seconds"), Mapping) else {}
    busy = 0.0
    values: dict[str, float] = {}
    for mode in CPU_MODES:
        if mode == "idle":
            continue
        real = real_cpu.get(mode)
        values[mode] = round(float(real) if isinstance(real, (int, float)) else cores * up * _CPU_SHARE[mode], 2)
        busy += values[mode]
    values["idle"] = round(max(0.0, cores * up - busy), 2)
    for mode in CPU_MODES:
        s["PostgresServer_CPUSeconds_Total"].append(({"mode": mode}, values[mode]))
    used_mem = _num(stats, "memory_bytes", default=0)
    mem_pct = round(100.0 * used_mem / memory, 4) if used_mem else 12.5
    s["PostgresServer_MemoryUsedPercent"].append(({}, mem_pct))
    s["PostgresServer_MemoryCachePercent"].append(({}, 31.25))
    sizes = _mapping(stats, "database_size_bytes", "database_sizes", "databases", "db_sizes", "sizes") or {
        "postgres": 7_654_435
    }
    used = sum(sizes.values()) + 64 * 1024**2  # data plus WAL/system files
    s["PostgresServer_FilesystemUsedPercent"].append(({}, round(100.0 * used / storage, 4)))
    blks_read = _num(stats, "blocks_read", "blks_read")
    blks_hit = _num(stats, "blocks_hit", "blks_hit")
    s["PostgresServer_DiskReads_Total"].append(({}, int(blks_read + 3 * up)))
    s["PostgresServer_DiskWrites_Total"].append(({}, int(_num(stats, "tup_inserted", "tuples_inserted") + 9 * up)))
    s["PostgresServer_NetworkReceiveBytes_Total"].append(({}, int(2048 * up)))
    s["PostgresServer_NetworkTransmitBytes_Total"].append(({}, int(4096 * up)))
    for fam, names in (
        ("PostgresServer_TuplesFetched_Total", ("tup_fetched", "tuples_fetched")),
        ("PostgresServer_TuplesInserted_Total", ("tup_inserted", "tuples_inserted")),
        ("PostgresServer_TuplesUpdated_Total", ("tup_updated", "tuples_updated")),
        ("PostgresServer_TuplesDeleted_Total", ("tup_deleted", "tuples_deleted")),
        ("PostgresServer_TransactionsCommitted_Total", ("xact_commit", "transactions_committed")),
        ("PostgresServer_TransactionsRolledBack_Total", ("xact_rollback", "transactions_rolled_back")),
        ("PostgresServer_Deadlocks_Total", ("deadlocks",)),
    ):
        s[fam].append(({}, int(_num(stats, *names))))
    conns = _mapping(stats, "connections", "connections_by_state", "activity")
    if not conns:
        conns = {"active": 1, "idle": 0} if stats is None else {}
    for conn_state in sorted(conns):
        s["PostgresServer_ActiveConnections"].append(({"state": conn_state}, int(conns[conn_state])))
    total = blks_hit + blks_read
    ratio = _num(stats, "cache_hit_ratio", default=100.0 if total == 0 else round(100.0 * blks_hit / total, 4))
    s["PostgresServer_CacheHitRatio"].append(({}, ratio))
    for db in sorted(sizes):
        s["PostgresServer_DatabaseSizeBytes"].append(({"database": db}, int(sizes[db])))
    return s


def render(org_id: str, entries: Iterable[tuple[Service, str, float, Mapping[str, Any] | None]]) -> str:
    """Exposition text for services: entries are (service, state, uptime seconds, fleet stats or None)."""
    per_service = [(svc, service_samples(org_id, svc, state, uptime, stats)) for svc, state, uptime, stats in entries]
    blocks: list[str] = []
    for name, kind, help_text in FAMILIES:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for svc, samples in per_service:
            base = f'clickhouse_org="{_escape(org_id)}",postgres_service="{svc.id}",postgres_service_name="{_escape(svc.name)}"'
            for extra, value in samples[name]:
                labels = base + "".join(f',{k}="{_escape(v)}"' for k, v in extra.items())
                lines.append(f"{name}{{{labels}}} {fmt(value)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
