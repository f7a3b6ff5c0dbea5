"""IPv4 access rules, the backups list and ``earliestRestoreTime`` over raw HTTP.

None of them is in the vendored OpenAPI document (nor in the newer S2 snapshot); the shapes are those
clickhousectl 0.5.0 sends and reads (``tests/conformance/test_clickhousectl_commands.py`` drives the
CLI itself): ``ipAccessList`` = [{source, portRange, description?}] on create, {add, remove: [{id}]}
on PATCH, rules with ``id`` in ``PostgresService``; ``GET …/backups`` = [{key, status, lastModified}]
with ``limit``/``totalCount``/``nextCursor`` in the envelope.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

OFFICE = {"source": "10.0.0.0/8", "portRange": "5432", "description": "office"}
VPN = {"source": "192.168.1.7", "portRange": "5432..6432"}


def pairs(svc):
    return [(r["source"], r["portRange"]) for r in svc["ipAccessList"]]


async def test_rules_stored_and_returned(sim_api, simulator) -> None:
    created = await sim_api.create(ipAccessList=[OFFICE, VPN])
    assert [{k: v for k, v in r.items() if k != "id"} for r in created["ipAccessList"]] == [OFFICE, VPN]
    ids = [r["id"] for r in created["ipAccessList"]]
    assert len(set(ids)) == 2 and all(ids)
    got = await sim_api.ok("GET", f"/postgres/{created['id']}")
    assert got["ipAccessList"] == created["ipAccessList"]
    listed = await sim_api.ok("GET", "/postgres")
    assert "ipAccessList" not in listed[0]  # PostgresServiceListItem has no rules
    assert simulator.services[created["id"]].ip_access_list == got["ipAccessList"]


async def test_default_allows_all_and_empty_blocks(sim_api) -> None:
    default = await sim_api.create("open")
    assert pairs(default) == [("0.0.0.0/0", "5432"), ("0.0.0.0/0", "6432")]
    blocked = await sim_api.create("closed", ipAccessList=[])
    assert blocked["ipAccessList"] == []
    assert (await sim_api.ok("GET", f"/postgres/{blocked['id']}"))["ipAccessList"] == []


@pytest.mark.parametrize(
    ("rules", "fragment"),
    [
        ({"source": "10.0.0.0/8"}, "ipAccessList must be an array"),
        (["10.0.0.0/8:5432"], "ipAccessList[0] must be an object"),
        ([{"portRange": "5432"}], "ipAccessList[0].source must be"),
        ([{"source": "10.0.0.0/33", "portRange": "5432"}], "not a valid IPv4 address or CIDR"),
        ([{"source": "10.0.0.1/8", "portRange": "5432"}], "has host bits set"),
        ([{"source": "example.com", "portRange": "5432"}], "not a valid IPv4 address"),
        ([{"source": "2001:db8::/32", "portRange": "5432"}], "only IPv4"),
        ([{"source": "10.0.0.0/8"}], "portRange must be a port or an inclusive range"),
        ([{"source": "10.0.0.0/8", "portRange": 5432}], "portRange must be a port"),
        ([{"source": "10.0.0.0/8", "portRange": "5432-6432"}], "portRange must be a port"),
        ([{"source": "10.0.0.0/8", "portRange": "0"}], "within 1..65535"),
        ([{"source": "10.0.0.0/8", "portRange": "70000"}], "within 1..65535"),
        ([{"source": "10.0.0.0/8", "portRange": "6432..5432"}], "lower port first"),
        ([{"source": "10.0.0.0/8", "portRange": "5432", "description": 7}], "description must be a string"),
        ([{"source": "10.0.0.0/8", "portRange": "5432", "description": "x" * 256}], "at most 255"),
        ([{"source": "10.0.0.0/8", "portRange": "5432", "ports": "5432"}], "unknown property ports"),
        ([OFFICE, {**OFFICE, "description": "again"}], "duplicate access rule 10.0.0.0/8 on 5432"),
    ],
)
async def test_create_rejects_bad_rules(sim_api, simulator, rules, fragment) -> None:
    status, data, _ = await sim_api.call(
        "POST",
        "/postgres",
        {"name": "x", "provider": "aws", "region": "us-east-1", "size": "r8gd.large", "ipAccessList": rules},
    )
    assert status == 400 and data["error"].startswith("BAD_REQUEST: ") and fragment in data["error"], data
    assert simulator.services == {}


async def test_patch_removes_then_adds(sim_api) -> None:
    svc = await sim_api.create(ipAccessList=[OFFICE, VPN], tags=[{"key": "env", "value": "prod"}])
    office_id = svc["ipAccessList"][0]["id"]
    # the same source and port may come back in the same PATCH: removals apply first
    patched = await sim_api.ok(
        "PATCH",
        f"/postgres/{svc['id']}",
        {
            "ipAccessList": {
                "remove": [{"id": office_id}],
                "add": [
                    {"source": "10.0.0.0/8", "portRange": "5432"},
                    {"source": "172.16.0.0/12", "portRange": "6432"},
                ],
            },
            "tags": svc["tags"],
        },
    )
    assert pairs(patched) == [("192.168.1.7", "5432..6432"), ("10.0.0.0/8", "5432"), ("172.16.0.0/12", "6432")]
    assert office_id not in [r["id"] for r in patched["ipAccessList"]]
    assert patched["tags"] == [{"key": "env", "value": "prod"}]
    # a PATCH without ipAccessList leaves the rules alone (and, like the API, clears omitted tags)
    renamed = await sim_api.ok("PATCH", f"/postgres/{svc['id']}", {"name": "renamed"})
    assert renamed["ipAccessList"] == patched["ipAccessList"] and renamed["tags"] == []
    emptied = await sim_api.ok(
        "PATCH",
        f"/postgres/{svc['id']}",
        {"ipAccessList": {"remove": [{"id": r["id"]} for r in patched["ipAccessList"]]}},
    )
    assert emptied["ipAccessList"] == []


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ([OFFICE], "must be an object with 'add' and/or 'remove'"),
        ({"replace": [OFFICE]}, "unknown property replace"),
        ({"add": OFFICE}, "must be arrays"),
        ({"remove": ["some-id"]}, "remove[0] must be an object with the 'id'"),
        ({"remove": [{"id": "no-such-rule"}]}, "Access rule no-such-rule not found"),
        ({"add": [{"source": "10.0.0.0/8", "portRange": "5432"}]}, "already exists"),
        ({"add": [{"source": "1.2.3.4", "portRange": "99999"}]}, "ipAccessList.add[0].portRange"),
        ({"add": [VPN, VPN]}, "duplicate access rule"),
    ],
)
async def test_patch_rejections_change_nothing(sim_api, patch, fragment) -> None:
    svc = await sim_api.create(ipAccessList=[OFFICE], tags=[{"key": "keep", "value": "me"}])
    status, data, _ = await sim_api.call("PATCH", f"/postgres/{svc['id']}", {"ipAccessList": patch, "name": "other"})
    assert status == 400 and fragment in data["error"], data
    after = await sim_api.ok("GET", f"/postgres/{svc['id']}")
    assert after["ipAccessList"] == svc["ipAccessList"] and after["name"] == "svc" and after["tags"] == svc["tags"]


async def test_replica_and_restore_copy_rules(sim_api, simulator) -> None:
    svc = await sim_api.create(ipAccessList=[OFFICE, VPN])
    await sim_api.wait_state(svc["id"], "running")
    await asyncio.sleep(simulator.config.first_backup_seconds)
    replica = await sim_api.ok("POST", f"/postgres/{svc['id']}/readReplica", {"name": "replica"})
    target = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    restored = await sim_api.ok(
        "POST", f"/postgres/{svc['id']}/restoredService", {"name": "restored", "restoreTarget": target}
    )
    for copy in (replica, restored):
        assert pairs(copy) == pairs(svc)
        assert {r["description"] for r in copy["ipAccessList"] if "description" in r} == {"office"}
        assert {r["id"] for r in copy["ipAccessList"]}.isdisjoint(r["id"] for r in svc["ipAccessList"])
    # the copies are independent of the source
    await sim_api.ok(
        "PATCH",
        f"/postgres/{restored['id']}",
        {"ipAccessList": {"remove": [{"id": r["id"]} for r in restored["ipAccessList"]]}},
    )
    assert pairs(await sim_api.ok("GET", f"/postgres/{svc['id']}")) == pairs(svc)


async def test_backups_and_earliest_restore_time(make_simulator) -> None:
    _sim, api = await make_simulator(first_backup_seconds=0.3, backup_interval_seconds=0.2)
    svc = await api.create()
    sid = svc["id"]
    assert "earliestRestoreTime" not in svc
    status, data, _ = await api.call("GET", f"/postgres/{sid}/backups")
    assert status == 200 and data["result"] == [] and data["totalCount"] == 0 and "nextCursor" not in data
    await api.wait_state(sid, "running")
    await asyncio.sleep(0.8)
    got = await api.ok("GET", f"/postgres/{sid}")
    earliest = datetime.fromisoformat(got["earliestRestoreTime"])
    assert earliest <= datetime.now(UTC)
    _, data, _ = await api.call("GET", f"/postgres/{sid}/backups")
    backups = data["result"]
    assert data["limit"] == 100 and data["totalCount"] == len(backups) >= 3
    assert [set(b) for b in backups] == [{"key", "status", "lastModified"}] * len(backups)
    assert [b["lastModified"] for b in backups] == sorted((b["lastModified"] for b in backups), reverse=True)
    assert len({b["key"] for b in backups}) == len(backups)
    # the oldest backup is the earliest restore point
    assert abs(datetime.fromisoformat(backups[-1]["lastModified"]) - earliest).total_seconds() < 1.0
    # paging: limit + nextCursor walk the list, newest first, even while new backups are taken
    seen, cursor = [], None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        _, page, _ = await api.call("GET", f"/postgres/{sid}/backups{query}")
        assert page["limit"] == 2 and len(page["result"]) <= 2
        seen += page["result"]
        cursor = page.get("nextCursor")
        if cursor is None:
            break
    keys = [b["key"] for b in seen]
    assert keys == sorted(set(keys), reverse=True) and {b["key"] for b in backups} <= set(keys)
    for query, fragment in (
        ("?limit=0", "limit must be >= 1"),
        ("?limit=101", "limit must be <= 100"),
        ("?cursor=%21%21", "Invalid cursor"),
    ):
        status, data, _ = await api.call("GET", f"/postgres/{sid}/backups{query}")
        assert status == 400 and fragment in data["error"], data
    status, data, _ = await api.call("GET", "/postgres/00000000-0000-0000-0000-000000000000/backups")
    assert status == 404
    # a restore at the advertised earliest time is accepted
    restored = await api.ok(
        "POST", f"/postgres/{sid}/restoredService", {"name": "earliest", "restoreTarget": got["earliestRestoreTime"]}
    )
    assert restored["state"] == "creating"
