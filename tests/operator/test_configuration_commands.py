"""Unit tests of configuration (pgConfig, pgBouncerConfig, restartPolicy) and state commands
(restart, switchover by annotation token): desired + observed -> plan. No I/O."""

from datetime import timedelta

import pytest
from test_planner import NOW, SID, good_secret, make_desired, make_remote, observe

from mpg_operator.cloud.models import PostgresConfig
from mpg_operator.reconcile import commands, configuration, model, planner
from mpg_operator.resource import ManagedPostgresStatus


def status_with(**fields):
    return ManagedPostgresStatus.model_validate({"serviceId": SID, **fields})


def run(desired, status, remote_config=None, **remote_overrides):
    remote = make_remote(desired, **remote_overrides)
    return planner.plan(
        desired, observe(remote=remote, status=status, secret=good_secret(), remote_config=remote_config)
    )


def config(pg=None, bouncer=None):
    return PostgresConfig(pg_config=pg or {}, pg_bouncer_config=bouncer or {})


def applied(plan):
    return [a for a in plan.actions if isinstance(a, model.ApplyConfiguration)]


def sent(plan):
    return [(a.command, a.token) for a in plan.actions if isinstance(a, model.SendCommand)]


# --- when the configuration is read -----------------------------------------------------------


@pytest.mark.parametrize(
    "spec, record, verified_ago, needs",
    [
        ({}, None, None, False),  # nothing configured: no request at all
        ({"pgConfig": {"work_mem": "8MB"}}, None, None, True),  # never applied
        ({"pgConfig": {"work_mem": "8MB"}}, "same", 60, False),  # verified a minute ago
        ({"pgConfig": {"work_mem": "8MB"}}, "same", 4000, True),  # the periodic check is due
        ({"pgConfig": {"work_mem": "8MB"}}, "same", None, True),  # written, not read back yet
        ({"pgConfig": {"work_mem": "16MB"}}, "other", 60, True),  # the spec changed
        ({}, "keys", 60, True),  # keys to remove
    ],
)
def test_when_the_configuration_is_read(spec, record, verified_ago, needs):
    desired = make_desired(**spec)
    fields = {}
    if record:
        fields["configuration"] = {
            "digest": desired.config_digest if record == "same" else "0123",
            "pgKeys": ["work_mem"],
            **({"verifiedAt": model.rfc3339(NOW - timedelta(seconds=verified_ago))} if verified_ago else {}),
        }
    assert configuration.needs_read(desired, status_with(**fields), NOW) is needs


# --- what is sent -------------------------------------------------------------------------------


def test_a_changed_spec_replaces_the_configuration_keeping_foreign_keys_and_removing_dropped_ones():
    desired = make_desired(pgConfig={"work_mem": "8MB"}, pgBouncerConfig={"default_pool_size": "16"})
    status = status_with(configuration={"digest": "old", "pgKeys": ["statement_timeout", "work_mem"]})
    remote = config(
        {"work_mem": "4MB", "statement_timeout": "60s", "lock_timeout": "10s"},  # lock_timeout: set elsewhere
        {"max_client_conn": "500"},
    )
    plan = run(desired, status, remote)
    (action,) = applied(plan)
    assert action.config.pg_config == {"work_mem": "8MB", "lock_timeout": "10s"}
    assert action.config.pg_bouncer_config == {"max_client_conn": "500", "default_pool_size": "16"}
    assert action.digest == desired.config_digest
    assert action.pg_keys == ("work_mem",) and action.pg_bouncer_keys == ("default_pool_size",)
    assert set(action.changed) == {
        "pgConfig.work_mem",
        "pgConfig.statement_timeout",
        "pgBouncerConfig.default_pool_size",
    }
    assert plan.active and not plan.fully_applied


def test_numbers_compare_as_strings_and_a_matching_service_is_only_recorded():
    desired = make_desired(pgConfig={"max_connections": "200"})
    plan = run(desired, status_with(), config({"max_connections": 200}))
    assert applied(plan) == []
    record = plan.status["configuration"]
    assert record["digest"] == desired.config_digest and record["pgKeys"] == ["max_connections"]
    assert "verifiedAt" in record
    assert plan.fully_applied


def test_a_key_the_api_dropped_is_a_condition_and_never_a_loop():
    desired = make_desired(pgConfig={"work_mem": "8MB", "lock_timeout": "10s"})
    just_written = status_with(
        configuration={"digest": desired.config_digest, "pgKeys": ["lock_timeout", "work_mem"], "appliedAt": "x"}
    )
    plan = run(desired, just_written, config({"work_mem": "8MB"}))  # lock_timeout was not kept
    assert applied(plan) == []
    assert plan.status["configuration"]["droppedKeys"] == ["pgConfig.lock_timeout"]
    assert plan.synced.reason == model.Reason.TERMINAL_CONFIGURATION_REJECTED
    assert "lock_timeout" in plan.synced.message
    assert plan.ready.status == "True"  # the service works
    assert not plan.active
    assert [e.reason for e in plan.events] == [model.EventReason.CONFIGURATION_REJECTED]

    # Later passes (with or without a read) say the same and send nothing.
    dropped = status_with(configuration={**plan.status["configuration"]})
    for remote_config in (None, config({"work_mem": "8MB"})):
        later = run(desired, dropped, remote_config)
        assert applied(later) == []
        assert later.synced.reason == model.Reason.TERMINAL_CONFIGURATION_REJECTED

    # A new spec is sent again.
    changed = make_desired(pgConfig={"work_mem": "8MB", "lock_timeout": "20s"})
    assert len(applied(run(changed, dropped, config({"work_mem": "8MB"})))) == 1


def test_a_change_made_elsewhere_is_put_back_at_the_periodic_check():
    desired = make_desired(pgConfig={"work_mem": "8MB"})
    verified = status_with(
        configuration={"digest": desired.config_digest, "pgKeys": ["work_mem"], "verifiedAt": "2026-11-27T10:00:00Z"}
    )
    (action,) = applied(run(desired, verified, config({"work_mem": "64MB"})))
    assert action.config.pg_config == {"work_mem": "8MB"}
    plan = run(desired, verified, config({"work_mem": "8MB", "statement_timeout": "1s"}))  # foreign key: fine
    assert applied(plan) == [] and plan.status["configuration"]["verifiedAt"] != "2026-11-27T10:00:00Z"


def test_an_interrupted_write_is_sent_again_even_when_the_service_shows_it():
    desired = make_desired(pgConfig={"max_connections": "200"})
    status = status_with(configuration={"digest": "old", "sendingDigest": desired.config_digest})
    (action,) = applied(run(desired, status, config({"max_connections": "200"})))
    assert action.config.pg_config == {"max_connections": "200"}


def test_no_configuration_while_the_service_is_not_running():
    desired = make_desired(pgConfig={"work_mem": "8MB"})
    assert applied(run(desired, status_with(), config(), state="restarting")) == []


def test_observe_only_sends_no_configuration():
    desired = make_desired(pgConfig={"work_mem": "8MB"}, managementPolicy="Observe")
    assert applied(run(desired, status_with(), config())) == []


def test_the_create_request_carries_the_configuration():
    request = make_desired(pgConfig={"work_mem": "8MB"}, pgBouncerConfig={"pool_mode": "transaction"}).create_request()
    assert request.to_wire()["pgConfig"] == {"work_mem": "8MB"}
    assert request.to_wire()["pgBouncerConfig"] == {"pool_mode": "transaction"}
    assert "pgConfig" not in make_desired().create_request().to_wire()  # the API refuses {}


# --- restart needed ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message, parameters",
    [
        (None, None),
        ("Configuration updated.", None),
        (
            "The changes in the following parameters require a database restart to take effect: max_connections. "
            "You can restart the database by using the restart endpoint.",
            ["max_connections"],
        ),
        (
            "require a database restart to take effect: max_connections, max_worker_processes.",
            ["max_connections", "max_worker_processes"],
        ),
        ("A restart is required.", ["(see the API's message)"]),
    ],
)
def test_restart_parameters_from_the_answer(message, parameters):
    assert configuration.restart_parameters(message) == parameters


def test_applied_status_records_a_pending_restart():
    desired = make_desired(pgConfig={"max_connections": "200"})
    action = model.ApplyConfiguration(
        SID, config({"max_connections": "200"}), desired.config_digest, ("max_connections",), (), ()
    )
    status = status_with(configuration={"sendingDigest": desired.config_digest})
    fields = configuration.applied_status(status, action, "require a restart: max_connections.", NOW)
    assert fields["pendingRestart"] is True
    record = fields["configuration"]
    assert record["digest"] == desired.config_digest and "sendingDigest" not in record
    assert record["restartParameters"] == ["max_connections"] and "verifiedAt" not in record


@pytest.mark.parametrize("policy, restarts", [(None, False), ("Never", False), ("OnConfigChange", True)])
def test_a_pending_restart_is_sent_only_under_on_config_change_and_once(policy, restarts):
    desired = make_desired(pgConfig={"max_connections": "200"}, **({"restartPolicy": policy} if policy else {}))
    record = {"digest": desired.config_digest, "pgKeys": ["max_connections"], "verifiedAt": model.rfc3339(NOW)}
    status = status_with(pendingRestart=True, configuration={**record, "restartParameters": ["max_connections"]})
    plan = run(desired, status)
    token = configuration.restart_token(desired.config_digest)
    assert sent(plan) == ([("restart", token)] if restarts else [])
    assert plan.restart_required.reason == model.Reason.RESTART_PENDING
    assert "max_connections" in plan.restart_required.message
    assert ("OnConfigChange" if restarts else "clickhouse.cloud/restart") in plan.restart_required.message

    # Once recorded (sent, or lost in a crash), the same configuration never restarts again.
    for phase in ("Sent", "Sending", "Unknown", "Failed"):
        again = status_with(
            pendingRestart=True, configuration=record, commands={"restart": {"token": token, "phase": phase}}
        )
        assert sent(run(desired, again)) == []


def test_no_restart_pending_is_a_false_condition_for_a_configured_resource_only():
    assert run(make_desired(), status_with()).restart_required is None
    plan = run(make_desired(pgConfig={"work_mem": "8MB"}), status_with(), config({"work_mem": "8MB"}))
    assert plan.restart_required.status == "False"


# --- state commands by token ----------------------------------------------------------------


@pytest.mark.parametrize(
    "annotation, ha, recorded, expected",
    [
        ({"clickhouse.cloud/restart": "r1"}, "none", None, [("restart", "r1")]),
        ({"clickhouse.cloud/restart": "r1"}, "none", {"restart": {"token": "r1", "phase": "Sent"}}, []),
        (
            {"clickhouse.cloud/restart": "r2"},
            "none",
            {"restart": {"token": "r1", "phase": "Sent"}},
            [("restart", "r2")],
        ),
        ({"clickhouse.cloud/switchover": "s1"}, "async", None, [("switchover", "s1")]),
        ({"clickhouse.cloud/switchover": "s1"}, "none", None, []),  # refused: no standby
        ({}, "none", None, []),
    ],
)
def test_commands_once_per_token(annotation, ha, recorded, expected):
    desired = make_desired(annotations=annotation, haType=ha)
    status = status_with(**({"commands": recorded} if recorded else {}))
    assert sent(run(desired, status)) == expected


def test_a_switchover_without_a_standby_is_refused_clearly():
    desired = make_desired(annotations={"clickhouse.cloud/switchover": "s1"})
    plan = run(desired, status_with())
    assert plan.synced.reason == model.Reason.TERMINAL_COMMAND_REFUSED
    assert "haType none" in plan.synced.message
    assert [e.reason for e in plan.events] == [model.EventReason.COMMAND_REFUSED]


def test_a_command_found_sending_after_a_crash_is_not_sent_again():
    desired = make_desired(annotations={"clickhouse.cloud/restart": "r1"})
    plan = run(desired, status_with(commands={"restart": {"token": "r1", "phase": "Sending"}}))
    assert sent(plan) == []
    assert plan.status["commands"]["restart"]["phase"] == "Unknown"
    assert [e.reason for e in plan.events] == [model.EventReason.COMMAND_OUTCOME_UNKNOWN]


@pytest.mark.parametrize("state, pending_update", [("restarting", None), ("creating", None), ("running", "busy")])
def test_no_command_while_the_service_is_busy(state, pending_update):
    desired = make_desired(annotations={"clickhouse.cloud/restart": "r1"}, size="r8gd.xlarge")
    status = status_with()
    remote_overrides = {"state": state}
    if pending_update:
        remote_overrides["size"] = "r8gd.large"  # an update is being applied
        status = status_with(pendingUpdate={"digest": desired.mutable_digest(), "sentAt": model.rfc3339(NOW)})
    plan = run(desired, status, **remote_overrides)
    assert sent(plan) == []
    assert plan.active


def test_the_annotations_are_read_into_tokens():
    desired = make_desired(annotations={"clickhouse.cloud/restart": " r1 ", "clickhouse.cloud/switchover": ""})
    assert desired.command_tokens == {"restart": "r1"}
    assert commands.ANNOTATIONS[commands.StateCommand.RESTART] == "clickhouse.cloud/restart"


def test_promote_is_for_read_replicas_only_and_once():
    desired = make_desired(annotations={"clickhouse.cloud/promote": "p1"})
    assert sent(run(desired, status_with(), is_primary=False)) == [("promote", "p1")]
    done = status_with(commands={"promote": {"token": "p1", "phase": "Sent"}})
    promoted = run(desired, done)  # the service is a primary now
    assert sent(promoted) == [] and promoted.synced.status == "True"
    refused = run(desired, status_with())  # a primary never promoted
    assert sent(refused) == [] and refused.synced.reason == model.Reason.TERMINAL_COMMAND_REFUSED
    assert "not a read replica" in refused.synced.message
