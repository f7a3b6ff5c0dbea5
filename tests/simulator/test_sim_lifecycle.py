"""The asynchronous state machine and the quirks of PATCH, config and passwords."""

from __future__ import annotations

import asyncio
import time

from clickhouse_cloud_simulator import Simulator


async def test_create_then_running(sim_api) -> None:
    started = time.monotonic()
    created = await sim_api.create()
    assert created["state"] == "creating"
    assert (await sim_api.ok("GET", f"/postgres/{created['id']}"))["state"] == "creating"
    running = await sim_api.wait_state(created["id"], "running")
    assert time.monotonic() - started >= 0.3  # FAST create_seconds
    assert running["createdAt"].endswith("Z") and running["isPrimary"] is True


async def test_restart_goes_through_restarting(sim_api) -> None:
    created = await sim_api.create()
    await sim_api.wait_state(created["id"], "running")
    ack = await sim_api.ok("PATCH", f"/postgres/{created['id']}/state", {"command": "restart"})
    assert ack["state"] == "restarting"
    await sim_api.wait_state(created["id"], "running")


async def test_restart_while_creating_is_rejected(sim_api) -> None:
    created = await sim_api.create()
    status, data, _ = await sim_api.call("PATCH", f"/postgres/{created['id']}/state", {"command": "restart"})
    assert status == 400 and "while it is creating" in data["error"]


async def test_delete_goes_through_deleting_then_404(make_simulator) -> None:
    # Long enough that the checks below all see "deleting", even on a loaded machine.
    _, sim_api = await make_simulator(delete_seconds=3.0)
    created = await sim_api.create()
    await sim_api.ok("DELETE", f"/postgres/{created['id']}")
    assert (await sim_api.ok("GET", f"/postgres/{created['id']}"))["state"] == "deleting"
    assert [s["state"] for s in await sim_api.ok("GET", "/postgres")] == ["deleting"]
    status, data, _ = await sim_api.call("PATCH", f"/postgres/{created['id']}", {"tags": []})
    assert status == 400 and "being deleted" in data["error"]
    await sim_api.ok("DELETE", f"/postgres/{created['id']}")  # repeated delete while deleting: accepted
    await sim_api.wait_gone(created["id"])
    assert await sim_api.ok("GET", "/postgres") == []
    status, _, _ = await sim_api.call("DELETE", f"/postgres/{created['id']}")
    assert status == 404


async def test_resize_lands_late_and_get_shows_old_value(sim_api) -> None:
    created = await sim_api.create(tags=[{"key": "a", "value": "1"}])
    sid = created["id"]
    await sim_api.wait_state(sid, "running")
    patched = await sim_api.ok(
        "PATCH", f"/postgres/{sid}", {"size": "r8gd.xlarge", "haType": "async", "tags": [{"key": "a", "value": "1"}]}
    )
    assert patched["state"] == "running"
    assert patched["size"] == "r8gd.large" and patched["haType"] == "none"
    got = await sim_api.ok("GET", f"/postgres/{sid}")
    assert got["size"] == "r8gd.large" and got["state"] == "running"
    deadline = time.monotonic() + 5
    while got["size"] != "r8gd.xlarge":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
        got = await sim_api.ok("GET", f"/postgres/{sid}")
    assert got["haType"] == "async" and got["storageSize"] == 236 and got["state"] == "running"
    assert got["tags"] == [{"key": "a", "value": "1"}]


async def test_patch_without_tags_clears_them(sim_api) -> None:
    created = await sim_api.create(tags=[{"key": "owner", "value": "me"}])
    patched = await sim_api.ok("PATCH", f"/postgres/{created['id']}", {"haType": "sync"})
    assert patched["tags"] == []


async def test_tags_merge_patch_switch_keeps_tags(make_simulator) -> None:
    _, api = await make_simulator(tags_merge_patch=True)
    created = await api.create(tags=[{"key": "owner", "value": "me"}])
    patched = await api.ok("PATCH", f"/postgres/{created['id']}", {"haType": "sync"})
    assert patched["tags"] == [{"key": "owner", "value": "me"}]


async def test_rename_changes_hostname_and_certificate(sim_api) -> None:
    created = await sim_api.create("first name")
    sid = created["id"]
    pem_before = (await sim_api.call("GET", f"/postgres/{sid}/caCertificates"))[1]
    assert pem_before == (await sim_api.call("GET", f"/postgres/{sid}/caCertificates"))[1]  # stable
    renamed = await sim_api.ok("PATCH", f"/postgres/{sid}", {"name": "second name"})
    assert renamed["name"] == "second name"
    assert renamed["hostname"].startswith("second-name-") and renamed["hostname"] != created["hostname"]
    assert renamed["hostname"].split(".", 1)[1] == created["hostname"].split(".", 1)[1]
    pem_after = (await sim_api.call("GET", f"/postgres/{sid}/caCertificates"))[1]
    assert pem_after != pem_before and pem_after.startswith("-----BEGIN CERTIFICATE-----")


async def test_config_values_are_strings_and_restart_message(sim_api) -> None:
    created = await sim_api.create()
    path = f"/postgres/{created['id']}/config"
    assert await sim_api.ok("GET", path) == {"pgConfig": {}, "pgBouncerConfig": {}}
    result = await sim_api.ok(
        "PATCH", path, {"pgConfig": {"max_connections": 42, "work_mem": "8MB"}, "pgBouncerConfig": {}}
    )
    assert result["pgConfig"] == {"max_connections": "42", "work_mem": "8MB"}
    assert result["message"].startswith("The changes in the following parameters require a database restart")
    assert "max_connections" in result["message"] and "work_mem" not in result["message"]
    # merge keeps max_connections; pending restart still reported until a restart
    result = await sim_api.ok("PATCH", path, {"pgConfig": {"work_mem": "16MB"}})
    assert result["pgConfig"] == {"max_connections": "42", "work_mem": "16MB"}
    assert "max_connections" in result["message"]
    # replace drops what is absent
    result = await sim_api.ok(
        "POST", path, {"pgConfig": {"statement_timeout": "60s"}, "pgBouncerConfig": {"pool_mode": "transaction"}}
    )
    assert result["pgConfig"] == {"statement_timeout": "60s"}
    assert result["pgBouncerConfig"] == {"pool_mode": "transaction"}
    await sim_api.wait_state(created["id"], "running")
    await sim_api.ok("PATCH", f"/postgres/{created['id']}/state", {"command": "restart"})
    result = await sim_api.ok("PATCH", path, {"pgConfig": {"work_mem": "4MB"}})
    assert "message" not in result
    assert await sim_api.ok("GET", path) == {
        "pgConfig": {"statement_timeout": "60s", "work_mem": "4MB"},
        "pgBouncerConfig": {"pool_mode": "transaction"},
    }


async def test_password_reset_generated_vs_supplied(sim_api, simulator: Simulator) -> None:
    created = await sim_api.create()
    sid = created["id"]
    generated = await sim_api.ok("PATCH", f"/postgres/{sid}/password", {})
    assert set(generated) == {"password"}
    changed = generated["password"] != created["password"]
    assert changed, "a generated password must differ"
    again = await sim_api.ok("PATCH", f"/postgres/{sid}/password", {})
    changed = again["password"] != generated["password"]  # not idempotent
    assert changed, "each reset without a password must generate a new one"
    supplied = await sim_api.ok("PATCH", f"/postgres/{sid}/password", {"password": "Sup3rSecretPassword"})
    assert supplied == {}
    assert simulator.services[sid].password == "Sup3rSecretPassword"
    # an empty body (no content type) also generates
    status, data, _ = await sim_api.call("PATCH", f"/postgres/{sid}/password")
    assert status == 200 and "password" in data["result"]


async def test_switchover_is_accepted_without_change(sim_api) -> None:
    created = await sim_api.create()
    await sim_api.wait_state(created["id"], "running")
    before = await sim_api.ok("GET", f"/postgres/{created['id']}")
    ack = await sim_api.ok("PATCH", f"/postgres/{created['id']}/state", {"command": "switchover"})
    assert ack == before


async def test_out_of_band_drift_is_visible(sim_api, simulator: Simulator) -> None:
    created = await sim_api.create(tags=[{"key": "a", "value": "1"}])
    simulator.store.patch_out_of_band(
        created["id"], size="r6gd.medium", tags=[{"key": "b", "value": "2"}], state="unavailable"
    )
    got = await sim_api.ok("GET", f"/postgres/{created['id']}")
    assert got["size"] == "r6gd.medium" and got["tags"] == [{"key": "b", "value": "2"}]
    assert got["state"] == "unavailable"
    simulator.store.patch_out_of_band(created["id"], state=None)
    await sim_api.wait_state(created["id"], "running")


async def test_metrics_and_slow_queries(sim_api) -> None:
    created = await sim_api.create()
    base = f"/postgres/{created['id']}"
    window = "from_date=2020-01-01T00:00:00Z&to_date=2099-01-01T00:00:00Z"
    result = await sim_api.ok("GET", f"{base}/metrics?{window}")
    keys = [m["key"] for m in result["metrics"]]
    assert {"cpu_usage", "connection_count", "cache_hit_ratio"} <= set(keys)
    points = [p for m in result["metrics"] for s in m["series"] for p in s["dataPoints"]]
    assert points and all(isinstance(p["timestamp"], int) for p in points)
    assert await sim_api.ok("GET", f"{base}/slowQueryPatterns?{window}&limit=5&sort_by=call_count") == []
    status, _, _ = await sim_api.call(
        "GET", f"{base}/slowQueryPatterns/-42?db_name=postgres&db_user=postgres&db_operation=SELECT"
    )
    assert status == 404
    assert await sim_api.ok("GET", f"{base}/logs?{window}") == []
