"""Prometheus exposition: documented families, label order, ``_Total`` counters, formatting."""

from __future__ import annotations

import re

from clickhouse_cloud_simulator.prometheus import CPU_MODES, FAMILY_NAMES, fmt

SAMPLE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\{(?P<labels>[^}]*)\} (?P<value>-?[0-9.e+]+)$")
LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')

DOCUMENTED = [
    "PostgresServiceInfo",
    "PostgresServer_CPUCores",
    "PostgresServer_MemoryLimitBytes",
    "PostgresServer_StorageLimitBytes",
    "PostgresServer_CPUSeconds_Total",
    "PostgresServer_MemoryUsedPercent",
    "PostgresServer_MemoryCachePercent",
    "PostgresServer_FilesystemUsedPercent",
    "PostgresServer_DiskReads_Total",
    "PostgresServer_DiskWrites_Total",
    "PostgresServer_NetworkReceiveBytes_Total",
    "PostgresServer_NetworkTransmitBytes_Total",
    "PostgresServer_TuplesFetched_Total",
    "PostgresServer_TuplesInserted_Total",
    "PostgresServer_TuplesUpdated_Total",
    "PostgresServer_TuplesDeleted_Total",
    "PostgresServer_TransactionsCommitted_Total",
    "PostgresServer_TransactionsRolledBack_Total",
    "PostgresServer_Deadlocks_Total",
    "PostgresServer_ActiveConnections",
    "PostgresServer_CacheHitRatio",
    "PostgresServer_DatabaseSizeBytes",
]


def parse(text: str) -> list[dict]:
    """Families of an exposition, checking the layout on the way."""
    assert text.endswith("\n") and not text.endswith("\n\n")
    families = []
    for block in text.rstrip("\n").split("\n\n"):
        lines = block.split("\n")
        help_line, type_line, samples = lines[0], lines[1], lines[2:]
        name = help_line.split(" ")[2]
        assert help_line.startswith(f"# HELP {name} ") and len(help_line) > len(f"# HELP {name} ") + 5
        kind = type_line.split(" ")[3]
        assert type_line == f"# TYPE {name} {kind}" and kind in ("gauge", "counter")
        assert (kind == "counter") == name.endswith("_Total")
        parsed = []
        for line in samples:
            m = SAMPLE.match(line)
            assert m and m["name"] == name, line
            labels = LABEL.findall(m["labels"])
            assert ",".join(f'{k}="{v}"' for k, v in labels) == m["labels"], line
            parsed.append((dict(labels), [k for k, _ in labels], m["value"]))
        families.append({"name": name, "type": kind, "samples": parsed})
    return families


async def test_service_exposition(sim_api, simulator) -> None:
    created = await sim_api.create('name "quoted"', postgresVersion="18")
    await sim_api.wait_state(created["id"], "running")
    status, text, headers = await sim_api.call("GET", f"/postgres/{created['id']}/prometheus")
    assert status == 200 and headers["Content-Type"] == "text/plain; charset=UTF-8"
    assert "\n\n# HELP PostgresServer_CPUCores" in text  # a blank line between families
    families = parse(text)
    assert [f["name"] for f in families] == DOCUMENTED == FAMILY_NAMES
    by_name = {f["name"]: f for f in families}
    for fam in families:
        assert fam["samples"], fam["name"]
        for labels, order, value in fam["samples"]:
            assert order[:3] == ["clickhouse_org", "postgres_service", "postgres_service_name"]
            assert labels["clickhouse_org"] == simulator.org_id
            assert labels["postgres_service"] == created["id"]
            assert labels["postgres_service_name"] == 'name \\"quoted\\"'
            assert float(value) >= 0
    info_labels, info_order, info_value = by_name["PostgresServiceInfo"]["samples"][0]
    assert info_order[3:] == ["postgres_status", "postgres_version"] and info_value == "1"
    assert (info_labels["postgres_status"], info_labels["postgres_version"]) == ("running", "18")
    assert by_name["PostgresServer_CPUCores"]["samples"][0][2] == "2"  # r8gd.large
    assert by_name["PostgresServer_MemoryLimitBytes"]["samples"][0][2] == str(16 * 1024**3)
    assert by_name["PostgresServer_StorageLimitBytes"]["samples"][0][2] == str(118 * 1024**3)
    assert [s[0]["mode"] for s in by_name["PostgresServer_CPUSeconds_Total"]["samples"]] == list(CPU_MODES)
    assert {s[1][3] for s in by_name["PostgresServer_ActiveConnections"]["samples"]} == {"state"}
    assert "postgres" in {s[0]["database"] for s in by_name["PostgresServer_DatabaseSizeBytes"]["samples"]}


async def test_org_exposition_covers_all_services(sim_api) -> None:
    a = await sim_api.create("a")
    b = await sim_api.create("b")
    status, text, _ = await sim_api.call("GET", "/postgres/prometheus")
    assert status == 200
    info = parse(text)[0]
    assert {s[0]["postgres_service"] for s in info["samples"]} == {a["id"], b["id"]}
    assert {s[0]["postgres_status"] for s in info["samples"]} == {"creating"}


async def test_empty_org_exposition_still_has_families(sim_api) -> None:
    _, text, _ = await sim_api.call("GET", "/postgres/prometheus")
    assert [f["name"] for f in parse(text)] == DOCUMENTED


def test_value_formatting() -> None:
    assert fmt(1) == "1" and fmt(2.0) == "2" and fmt(12.5) == "12.5" and fmt(True) == "1"
    assert fmt(17179869184) == "17179869184"
