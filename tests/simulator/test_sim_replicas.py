"""Read replicas, promotion and point-in-time restores."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

NOT_READY = "BAD_REQUEST: Parent server is not ready for read replicas. There are no backups, yet."
READ_ONLY = "BAD_REQUEST: Read replicas cannot be modified directly! Please modify the parent database instead."


async def _primary_with_backup(api) -> dict:
    created = await api.create("primary", pgConfig={"work_mem": "8MB"})
    deadline = time.monotonic() + 10
    while True:
        status, data, _ = await api.call("POST", f"/postgres/{created['id']}/readReplica", {"name": "probe"})
        if status == 200:
            await api.ok("DELETE", f"/postgres/{data['result']['id']}")
            return created
        assert data["error"] == NOT_READY, data
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_replica_not_ready_until_first_backup(sim_api) -> None:
    created = await sim_api.create()
    status, data, _ = await sim_api.call("POST", f"/postgres/{created['id']}/readReplica", {"name": "r"})
    assert status == 400 and data["error"] == NOT_READY
    await sim_api.wait_state(created["id"], "running")
    await _primary_with_backup(sim_api)


async def test_replica_lifecycle_and_restrictions(sim_api) -> None:
    primary = await _primary_with_backup(sim_api)
    pid = primary["id"]
    replica = await sim_api.ok(
        "POST", f"/postgres/{pid}/readReplica", {"name": "replica", "tags": [{"key": "phase", "value": "rr"}]}
    )
    rid = replica["id"]
    assert replica["isPrimary"] is False and replica["state"] == "creating"
    assert "password" not in replica and "connectionString" not in replica
    assert (replica["size"], replica["region"], replica["postgresVersion"]) == (
        primary["size"],
        primary["region"],
        primary["postgresVersion"],
    )
    assert replica["tags"] == [{"key": "phase", "value": "rr"}]
    # inherits the primary's configuration
    assert (await sim_api.ok("GET", f"/postgres/{rid}/config"))["pgConfig"] == {"work_mem": "8MB"}
    await sim_api.wait_state(rid, "running")
    listed = {s["id"]: s["isPrimary"] for s in await sim_api.ok("GET", "/postgres")}
    assert listed[rid] is False

    status, data, _ = await sim_api.call("PATCH", f"/postgres/{rid}", {"size": "r8gd.xlarge"})
    assert status == 400 and data["error"] == READ_ONLY
    status, data, _ = await sim_api.call(
        "PATCH", f"/postgres/{rid}", raw=b"garbage", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and data["error"] == READ_ONLY  # rejected before the body is read
    status, data, _ = await sim_api.call("PATCH", f"/postgres/{rid}/password", {})
    assert status == 400 and "read replicas" in data["error"]
    status, data, _ = await sim_api.call("POST", f"/postgres/{rid}/readReplica", {"name": "chain"})
    assert status == 400 and "read replica of a read replica" in data["error"]
    # config works on a replica
    await sim_api.ok("PATCH", f"/postgres/{rid}/config", {"pgConfig": {"work_mem": "16MB"}})

    status, data, _ = await sim_api.call("DELETE", f"/postgres/{pid}")
    assert status == 409 and data["error"].startswith("CONFLICT: ")
    assert "depend" in data["error"] and "replica" in data["error"]

    await sim_api.ok("DELETE", f"/postgres/{rid}")
    await sim_api.ok("DELETE", f"/postgres/{pid}")
    await sim_api.wait_gone(pid)


async def test_password_change_reaches_replicas(sim_api, simulator) -> None:
    primary = await _primary_with_backup(sim_api)
    replica = await sim_api.ok("POST", f"/postgres/{primary['id']}/readReplica", {"name": "r"})
    result = await sim_api.ok("PATCH", f"/postgres/{primary['id']}/password", {})
    same = simulator.services[replica["id"]].password == result["password"]
    assert same, "the replica did not get the primary's new password"


async def test_promote_replica(sim_api) -> None:
    primary = await _primary_with_backup(sim_api)
    replica = await sim_api.ok("POST", f"/postgres/{primary['id']}/readReplica", {"name": "r"})
    rid = replica["id"]
    ack = await sim_api.ok("PATCH", f"/postgres/{rid}/state", {"command": "promote"})
    assert "isPrimary" not in ack  # the live promote response omits it
    deadline = time.monotonic() + 5
    while not (await sim_api.ok("GET", f"/postgres/{rid}"))["isPrimary"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert (await sim_api.ok("GET", f"/postgres/{primary['id']}"))["isPrimary"] is True
    # now independent: the old primary can be deleted, the promoted one patched
    await sim_api.ok("PATCH", f"/postgres/{rid}", {"tags": [{"key": "promoted", "value": "yes"}]})
    await sim_api.ok("DELETE", f"/postgres/{primary['id']}")
    status, _, _ = await sim_api.call("PATCH", f"/postgres/{primary['id']}/state", {"command": "promote"})
    assert status == 400


async def test_promote_primary_is_400(sim_api) -> None:
    created = await sim_api.create()
    status, data, _ = await sim_api.call("PATCH", f"/postgres/{created['id']}/state", {"command": "promote"})
    assert status == 400 and data["error"] == "BAD_REQUEST: Non read replica servers cannot be promoted."


async def test_restore_goes_through_restore_states(sim_api) -> None:
    source = await _primary_with_backup(sim_api)
    target = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    restored = await sim_api.ok(
        "POST",
        f"/postgres/{source['id']}/restoredService",
        {"name": "restored", "restoreTarget": target, "tags": [{"key": "from", "value": "pitr"}]},
    )
    assert restored["id"] != source["id"] and restored["isPrimary"] is True
    assert restored["state"] == "creating" and "password" not in restored
    seen = []
    deadline = time.monotonic() + 5
    while not seen or seen[-1] != "running":
        state = (await sim_api.ok("GET", f"/postgres/{restored['id']}"))["state"]
        if not seen or seen[-1] != state:
            seen.append(state)
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    order = ["creating", "restoring_backup", "replaying_wal", "finalizing_restore", "running"]
    assert [s for s in order if s in seen] == seen  # in order, none unknown
    assert seen[0] == "creating" and seen[-1] == "running" and len(seen) >= 4
    assert (await sim_api.ok("GET", f"/postgres/{source['id']}"))["state"] == "running"  # source untouched


async def test_restore_before_first_backup_is_400(sim_api) -> None:
    created = await sim_api.create()
    status, data, _ = await sim_api.call(
        "POST",
        f"/postgres/{created['id']}/restoredService",
        {"name": "r", "restoreTarget": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
    )
    assert status == 400 and "no backups" in data["error"]


async def test_no_backup_while_the_parent_is_still_provisioning(sim_api, simulator) -> None:
    simulator.faults.stuck_creating = True
    stuck = await sim_api.create("stuck")
    simulator.faults.stuck_creating = False
    await asyncio.sleep(0.7)  # past first_backup_seconds, but never running
    status, data, _ = await sim_api.call("POST", f"/postgres/{stuck['id']}/readReplica", {"name": "r"})
    assert status == 400 and data["error"] == NOT_READY


async def test_replica_of_a_restarting_parent_is_accepted(sim_api) -> None:
    primary = await _primary_with_backup(sim_api)
    await sim_api.ok("PATCH", f"/postgres/{primary['id']}/state", {"command": "restart"})
    replica = await sim_api.ok("POST", f"/postgres/{primary['id']}/readReplica", {"name": "r"})
    assert replica["isPrimary"] is False
