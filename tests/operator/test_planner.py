"""Unit tests of the reconcile decisions: desired spec + observed remote/Secret/status -> plan. No I/O."""

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from mpg_operator.cloud.models import PostgresServiceListItem, Tag
from mpg_operator.reconcile import deletion, model, planner
from mpg_operator.reconcile.connection import (
    ANN_PASSWORD_DIGEST,
    ANN_SERVICE_ID,
    ANN_SERVICE_NAME,
    REQUIRED_KEYS,
    Endpoint,
    ObservedSecret,
    SecretShape,
    password_digest,
    secret_write,
)
from mpg_operator.reconcile.desired import TAG_UID, OperatorDefaults, desired_from
from mpg_operator.resource import ManagedPostgresSpec, ManagedPostgresStatus, PendingUpdate

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
UID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
SID = "67b4bc12-8582-45d0-8806-fe9b2e5a54e6"


def make_desired(annotations=None, **spec_overrides):
    spec = {"provider": "aws", "region": "us-west-2", "size": "r8gd.large", "tags": {"team": "orders"}}
    spec.update(spec_overrides)
    return desired_from(
        namespace="shop",
        name="orders-db",
        uid=UID,
        generation=3,
        spec=ManagedPostgresSpec.model_validate(spec),
        defaults=OperatorDefaults(),
        annotations=annotations,
    )


def make_remote(desired=None, **overrides):
    desired = desired or make_desired()
    fields = {
        "id": SID,
        "name": desired.service_name,
        "provider": "aws",
        "region": "us-west-2",
        "postgres_version": "17",
        "size": desired.size,
        "ha_type": desired.ha_type,
        "tags": desired.tag_list(),
        "state": "running",
        "created_at": "2026-11-27T11:00:00Z",
        "is_primary": True,
    }
    fields.update(overrides)
    return PostgresServiceListItem(**fields)


def good_secret(service_id=SID, name="orders-db", password="Secr3tPassw0rdXYZ"):
    data = {k: "x" for k in REQUIRED_KEYS}
    data["password"] = password
    return ObservedSecret(
        data=data,
        annotations={
            ANN_SERVICE_ID: service_id,
            ANN_SERVICE_NAME: name,
            ANN_PASSWORD_DIGEST: password_digest(service_id, password),
        },
        controller_uid=UID,
    )


def observe(remote=None, status=None, secret=None, **kw):
    return model.Observed(
        now=NOW,
        status=status or ManagedPostgresStatus(),
        remote=remote,
        secret=secret,
        **kw,
    )


def kinds(plan):
    return [type(a).__name__ for a in plan.actions]


# --- create --------------------------------------------------------------------------------


def test_nothing_remote_creates_with_owner_tags_and_defaults():
    desired = make_desired()
    plan = planner.plan(desired, observe())
    assert kinds(plan) == ["CreateService"]
    request = desired.create_request()
    tags = {t.key: t.value for t in request.tags}
    assert tags[TAG_UID] == UID and tags["mpg-operator.namespace"] == "shop" and tags["team"] == "orders"
    assert request.name == "orders-db" and request.ha_type == "none"
    assert plan.ready.status == "False"


def test_pending_create_within_grace_waits_instead_of_creating_again():
    status = ManagedPostgresStatus(createPendingSince=(NOW - timedelta(seconds=10)).isoformat())
    plan = planner.plan(make_desired(), observe(status=status))
    assert plan.actions == []
    assert plan.synced.reason == model.Reason.CREATE_PENDING


def test_pending_create_with_stale_snapshot_waits_even_after_grace():
    status = ManagedPostgresStatus(createPendingSince=(NOW - timedelta(minutes=10)).isoformat())
    plan = planner.plan(make_desired(), observe(status=status, snapshot_after_pending=False))
    assert plan.actions == []


def test_pending_create_past_grace_creates_again_with_warning():
    status = ManagedPostgresStatus(createPendingSince=(NOW - timedelta(minutes=5)).isoformat())
    plan = planner.plan(make_desired(), observe(status=status))
    assert kinds(plan) == ["CreateService"]
    assert any(e.reason == "CreateRetried" for e in plan.events)


def test_create_grace_is_configurable():
    status = ManagedPostgresStatus(createPendingSince=(NOW - timedelta(seconds=10)).isoformat())
    plan = planner.plan(make_desired(), observe(status=status), create_grace=timedelta(seconds=5))
    assert kinds(plan) == ["CreateService"]


def test_service_found_by_tag_after_crash_is_adopted_not_recreated():
    status = ManagedPostgresStatus(createPendingSince=(NOW - timedelta(seconds=5)).isoformat())
    desired = make_desired()
    plan = planner.plan(desired, observe(remote=make_remote(desired, state="creating"), status=status))
    assert kinds(plan) == ["AdoptService"]
    assert plan.status["serviceId"] == SID
    assert plan.status["createPendingSince"] is None
    assert plan.ready.reason == model.Reason.CREATING


def test_recorded_service_missing_from_list_is_confirmed_by_get_first():
    status = ManagedPostgresStatus(serviceId=SID)
    plan = planner.plan(make_desired(), observe(status=status))
    assert kinds(plan) == ["ConfirmGone"]


def test_recorded_service_missing_from_a_stale_list_is_waited_for():
    status = ManagedPostgresStatus(serviceId=SID)
    plan = planner.plan(make_desired(), observe(status=status, snapshot_stale=True))
    assert plan.actions == [] and plan.active


@pytest.mark.parametrize(
    "spec, creates, reason",
    [
        ({}, False, "TerminalServiceMissing"),  # the default: Fail
        ({"onServiceMissing": "Fail"}, False, "TerminalServiceMissing"),
        ({"onServiceMissing": "Recreate"}, True, "ReconcileSuccess"),
        ({"onServiceMissing": "Recreate", "managementPolicy": "Observe"}, False, "TerminalServiceMissing"),
    ],
)
def test_a_service_confirmed_gone(spec, creates, reason):
    status = ManagedPostgresStatus(serviceId=SID)
    plan = planner.plan(make_desired(**spec), observe(status=status, confirmed_gone=True))
    assert (kinds(plan) == ["CreateService"]) is creates
    assert plan.synced.reason == reason
    assert [e.reason for e in plan.events] == ["ServiceMissing"]
    if not creates:
        assert plan.ready.reason == "TerminalServiceMissing" and "onServiceMissing: Recreate" in plan.ready.message


def test_rejected_create_is_not_retried_for_the_same_generation():
    err = model.LastRejection(
        model.Reason.TERMINAL_INVALID_SPEC, "BAD_REQUEST: unknown size", NOW - timedelta(minutes=5)
    )
    plan = planner.plan(make_desired(), observe(last_rejection=err))
    assert plan.actions == []
    assert plan.synced.status == "False" and plan.synced.reason == model.Reason.TERMINAL_INVALID_SPEC
    assert plan.active is False


def test_rejected_create_is_retried_after_a_long_pause():
    err = model.LastRejection(model.Reason.TERMINAL_INVALID_SPEC, "BAD_REQUEST: unknown size", NOW - timedelta(hours=2))
    plan = planner.plan(make_desired(), observe(last_rejection=err))
    assert kinds(plan) == ["CreateService"]


# --- credentials ---------------------------------------------------------------------------


def test_running_without_secret_generates_password_and_publishes():
    desired = make_desired()
    plan = planner.plan(desired, observe(remote=make_remote(desired), status=ManagedPostgresStatus(serviceId=SID)))
    (action,) = plan.actions
    assert isinstance(action, model.PublishSecret)
    assert action.password == "generate" and action.refresh_endpoint
    assert plan.ready.status == "True"  # once the action has run


def test_secret_with_unconfirmed_password_is_applied_not_replaced():
    desired = make_desired()
    secret = good_secret(password="UserChosenPassw0rd")
    secret = ObservedSecret(
        data=secret.data, annotations={**secret.annotations, ANN_PASSWORD_DIGEST: "stale"}, controller_uid=UID
    )
    plan = planner.plan(
        desired, observe(remote=make_remote(desired), status=ManagedPostgresStatus(serviceId=SID), secret=secret)
    )
    (action,) = plan.actions
    assert action.password == "apply" and not action.refresh_endpoint


def test_secret_with_weak_password_is_reported_not_sent():
    desired = make_desired()
    secret = good_secret(password="weak")
    secret = ObservedSecret(
        data=secret.data, annotations={**secret.annotations, ANN_PASSWORD_DIGEST: "stale"}, controller_uid=UID
    )
    plan = planner.plan(
        desired, observe(remote=make_remote(desired), status=ManagedPostgresStatus(serviceId=SID), secret=secret)
    )
    assert plan.actions == []
    assert plan.synced.reason == model.Reason.TERMINAL_PASSWORD
    assert "weak" not in plan.synced.message
    assert plan.ready.status == "False"


def test_steady_state_does_nothing_and_is_fully_applied():
    desired = make_desired()
    plan = planner.plan(
        desired,
        observe(remote=make_remote(desired), status=ManagedPostgresStatus(serviceId=SID), secret=good_secret()),
    )
    assert plan.actions == []
    assert plan.fully_applied and not plan.active
    assert plan.ready.status == "True" and plan.synced.status == "True"


def test_no_password_change_while_creating():
    desired = make_desired()
    plan = planner.plan(
        desired, observe(remote=make_remote(desired, state="creating"), status=ManagedPostgresStatus(serviceId=SID))
    )
    assert plan.actions == []
    assert plan.active


# --- updates and drift ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "remote_overrides, changed",
    [
        ({"size": "r8gd.xlarge"}, ("size",)),
        ({"ha_type": "async"}, ("haType",)),
        ({"name": "old name"}, ("serviceName",)),
        ({"tags": []}, ("tags",)),
    ],
)
def test_drift_is_corrected_with_a_complete_patch(remote_overrides, changed):
    desired = make_desired()
    remote = make_remote(desired, **remote_overrides)
    plan = planner.plan(
        desired,
        observe(remote=remote, status=ManagedPostgresStatus(serviceId=SID), secret=good_secret(name=remote.name)),
    )
    update = next(a for a in plan.actions if isinstance(a, model.UpdateService))
    assert update.changed == changed
    patch = desired.patch_request().to_wire()
    assert {t["key"] for t in patch["tags"]} >= {TAG_UID, "team"}
    assert patch["size"] == desired.size and patch["haType"] == "none"
    assert not plan.fully_applied


def test_update_already_sent_is_not_sent_again_while_settling():
    desired = make_desired(size="r8gd.xlarge")
    pending = PendingUpdate(digest=desired.mutable_digest(), sentAt=(NOW - timedelta(minutes=2)).isoformat())
    plan = planner.plan(
        desired,
        observe(
            remote=make_remote(desired, size="r8gd.large"),
            status=ManagedPostgresStatus(serviceId=SID, pendingUpdate=pending),
            secret=good_secret(),
        ),
    )
    assert plan.actions == []
    assert plan.active and not plan.fully_applied
    assert plan.ready.reason == model.Reason.UPDATING


def test_update_is_resent_after_settle_timeout():
    desired = make_desired(size="r8gd.xlarge")
    pending = PendingUpdate(digest=desired.mutable_digest(), sentAt=(NOW - timedelta(hours=1)).isoformat())
    plan = planner.plan(
        desired,
        observe(
            remote=make_remote(desired, size="r8gd.large"),
            status=ManagedPostgresStatus(serviceId=SID, pendingUpdate=pending),
            secret=good_secret(),
        ),
    )
    assert kinds(plan) == ["UpdateService"]


def test_update_counts_as_applied_only_once_it_keeps_showing():
    desired = make_desired()
    sent = PendingUpdate(digest=desired.mutable_digest(), sentAt=(NOW - timedelta(minutes=1)).isoformat())
    status = ManagedPostgresStatus(serviceId=SID, pendingUpdate=sent)
    plan = planner.plan(desired, observe(remote=make_remote(desired), status=status, secret=good_secret()))
    assert plan.status["pendingUpdate"]["matchedAt"] == NOW.isoformat()
    assert not plan.fully_applied and plan.active

    matched = PendingUpdate(digest=sent.digest, sentAt=sent.sent_at, matchedAt=(NOW - timedelta(seconds=5)).isoformat())
    status = ManagedPostgresStatus(serviceId=SID, pendingUpdate=matched)
    plan = planner.plan(desired, observe(remote=make_remote(desired), status=status, secret=good_secret()))
    assert not plan.fully_applied  # 5 s < the 15 s confirmation

    matched = PendingUpdate(
        digest=sent.digest, sentAt=sent.sent_at, matchedAt=(NOW - timedelta(seconds=20)).isoformat()
    )
    status = ManagedPostgresStatus(serviceId=SID, pendingUpdate=matched)
    plan = planner.plan(desired, observe(remote=make_remote(desired), status=status, secret=good_secret()))
    assert plan.status["pendingUpdate"] is None
    assert plan.fully_applied and not plan.active


def test_update_that_flips_back_is_waited_for_not_resent():
    desired = make_desired(size="r8gd.xlarge")
    matched = PendingUpdate(
        digest=desired.mutable_digest(),
        sentAt=(NOW - timedelta(minutes=1)).isoformat(),
        matchedAt=(NOW - timedelta(seconds=5)).isoformat(),
    )
    status = ManagedPostgresStatus(serviceId=SID, pendingUpdate=matched)
    plan = planner.plan(
        desired, observe(remote=make_remote(desired, size="r8gd.large"), status=status, secret=good_secret())
    )
    assert plan.actions == []
    assert plan.status["pendingUpdate"]["matchedAt"] is None
    assert not plan.fully_applied and plan.active


def test_rename_refreshes_the_secret_endpoint():
    desired = make_desired(serviceName="orders renamed")
    remote = make_remote(desired)  # the rename has landed remotely
    plan = planner.plan(
        desired,
        observe(remote=remote, status=ManagedPostgresStatus(serviceId=SID), secret=good_secret(name="orders-db")),
    )
    (action,) = plan.actions
    assert isinstance(action, model.PublishSecret) and action.refresh_endpoint and action.password == "keep"


def test_immutable_change_is_reported_and_never_recreates():
    desired = make_desired(region="eu-west-1")
    plan = planner.plan(
        desired,
        observe(
            remote=make_remote(desired, region="us-west-2"),
            status=ManagedPostgresStatus(serviceId=SID),
            secret=good_secret(),
        ),
    )
    assert not any(isinstance(a, (model.CreateService, model.DeleteService)) for a in plan.actions)
    assert plan.synced.reason == model.Reason.TERMINAL_IMMUTABLE
    assert "region" in plan.synced.message
    assert not plan.fully_applied


def test_status_shows_remote_values_verbatim_without_owner_tags():
    desired = make_desired()
    remote = make_remote(desired, state="restarting", tags=desired.tag_list() + [Tag(key="console", value="x")])
    plan = planner.plan(
        desired, observe(remote=remote, status=ManagedPostgresStatus(serviceId=SID), secret=good_secret())
    )
    assert plan.status["state"] == "restarting"
    assert plan.status["tags"] == {"team": "orders", "console": "x"}
    assert plan.ready.status == "False"


def test_locate_prefers_recorded_id_and_reports_duplicates():
    desired = make_desired()
    a = make_remote(desired, id="a", created_at="2026-01-01T00:00:00Z")
    b = make_remote(desired, id="b", created_at="2026-01-02T00:00:00Z")
    other = make_remote(desired, id="c", tags=[Tag(key=TAG_UID, value="someone-else")])
    assert planner.locate([other, b, a], "b", desired) == planner.Located(b, ("a",), "id")
    assert planner.locate([other, b, a], None, desired) == planner.Located(a, ("b",), "tag")
    assert planner.locate([other], None, desired) == planner.Located(None, (), "id")


def test_locate_ignores_tagged_services_being_deleted():
    desired = make_desired()
    dying = make_remote(desired, id="a", state="deleting")
    assert planner.locate([dying], None, desired).remote is None


@pytest.mark.parametrize(
    "tags, status_id, adopt, expect",
    [
        # A previous owner's namespace/name (rebuilt cluster, or Orphan then re-applied): a candidate.
        (
            {TAG_UID: "old-uid", "mpg-operator.namespace": "shop", "mpg-operator.name": "orders-db"},
            None,
            None,
            ("reattach", "old-uid"),
        ),
        # Another resource's name: never.
        ({TAG_UID: "old-uid", "mpg-operator.namespace": "shop", "mpg-operator.name": "other-db"}, None, None, None),
        # Adoption by id, whoever tagged it (the plan decides whether that owner is alive).
        ({TAG_UID: "old-uid"}, None, SID, ("adopt", "old-uid")),
        ({}, None, SID, ("adopt", None)),
        # Once the resource has its service, nothing else is looked for.
        (
            {TAG_UID: "old-uid", "mpg-operator.namespace": "shop", "mpg-operator.name": "orders-db"},
            "another-id",
            None,
            None,
        ),
    ],
)
def test_locate_adoption_and_reattach_candidates(tags, status_id, adopt, expect):
    desired = make_desired(**({"serviceId": adopt} if adopt else {}))
    service = make_remote(desired, id=SID, tags=[Tag(key=k, value=v) for k, v in tags.items()])
    found = planner.locate([service], status_id, desired)
    assert (None if found.remote is None else (found.found_by, found.previous_owner)) == expect


# --- deletion ------------------------------------------------------------------------------


def test_delete_policy_orphan_releases_without_api_call():
    desired = make_desired(deletionPolicy="Orphan")
    plan = deletion.plan_delete(desired, observe(remote=make_remote(desired)))
    assert plan.actions == [] and plan.release_finalizer


def test_delete_calls_delete_then_waits_for_gone():
    desired = make_desired()
    plan = deletion.plan_delete(desired, observe(remote=make_remote(desired)))
    assert kinds(plan) == ["DeleteService"] and not plan.release_finalizer
    plan = deletion.plan_delete(desired, observe(remote=make_remote(desired, state="deleting")))
    assert plan.actions == [] and not plan.release_finalizer
    # Not listed: only a GET answering 404 confirms it is gone.
    plan = deletion.plan_delete(desired, observe(remote=None, status=ManagedPostgresStatus(serviceId=SID)))
    assert kinds(plan) == ["ConfirmGone"] and not plan.release_finalizer
    plan = deletion.plan_delete(
        desired, observe(remote=None, status=ManagedPostgresStatus(serviceId=SID), confirmed_gone=True)
    )
    assert plan.release_finalizer


def test_delete_waits_for_an_unresolved_create():
    status = ManagedPostgresStatus(createPendingSince=(NOW - timedelta(seconds=5)).isoformat())
    plan = deletion.plan_delete(make_desired(), observe(status=status))
    assert not plan.release_finalizer


def test_delete_of_never_created_resource_releases():
    plan = deletion.plan_delete(make_desired(), observe())
    assert plan.release_finalizer and plan.actions == []


def test_event_vocabulary_is_fixed_and_documented():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sources = "".join(path.read_text() for path in (root / "operator" / "mpg_operator").rglob("*.py"))
    # Every event is an Event of an EventReason, never bare strings.
    assert not re.search(r'"(Normal|Warning)",\s*"', sources)
    readme = (root / "README.md").read_text()
    for reason in model.EventReason:
        assert f"`{reason.value}`" in readme, f"README does not list event reason {reason.value}"


# --- deletion never decides from a snapshot older than its own last request (defect 1, 9) ---

PENDING_NOW = ManagedPostgresStatus(createPendingSince=NOW.isoformat())


@pytest.mark.parametrize(
    "case, remote, status, kw, expect",
    [
        # The LIST predates this operator's own POST: it cannot show the service; GET it.
        (
            "listed before the create",
            None,
            ManagedPostgresStatus(serviceId=SID),
            {"snapshot_stale": True},
            "ConfirmGone",
        ),
        ("not listed, id known", None, ManagedPostgresStatus(serviceId=SID), {}, "ConfirmGone"),
        ("GET answered 404", None, ManagedPostgresStatus(serviceId=SID), {"confirmed_gone": True}, "release"),
        # The LIST predates our DELETE: it still shows "running"; GET instead of deleting twice.
        (
            "running in a LIST older than our DELETE",
            "running",
            ManagedPostgresStatus(serviceId=SID),
            {"snapshot_stale": True},
            "ConfirmGone",
        ),
        ("GET shows deleting", "deleting", ManagedPostgresStatus(serviceId=SID), {"fetched_by_id": True}, "wait"),
        (
            "GET shows running",
            "running",
            ManagedPostgresStatus(serviceId=SID),
            {"fetched_by_id": True},
            "DeleteService",
        ),
        ("fresh LIST shows running", "running", ManagedPostgresStatus(serviceId=SID), {}, "DeleteService"),
        # A create in flight: wait for its outcome, whatever the LIST says.
        ("create pending, stale LIST", None, PENDING_NOW, {"snapshot_stale": True}, "wait"),
        ("create pending, LIST before the mark", None, PENDING_NOW, {"snapshot_after_pending": False}, "wait"),
        ("create pending, within grace", None, PENDING_NOW, {}, "wait"),
        ("create pending, found by tag", "running", PENDING_NOW, {}, "DeleteService"),
        ("never created", None, ManagedPostgresStatus(), {}, "release"),
    ],
)
def test_plan_delete_table(case, remote, status, kw, expect):
    desired = make_desired()
    plan = deletion.plan_delete(
        desired, observe(remote=make_remote(desired, state=remote) if remote else None, status=status, **kw)
    )
    got = "release" if plan.release_finalizer else (kinds(plan)[0] if plan.actions else "wait")
    assert got == expect, case


def test_pending_create_long_past_grace_releases_deletion():
    status = ManagedPostgresStatus(createPendingSince=(NOW - timedelta(minutes=10)).isoformat())
    assert deletion.plan_delete(make_desired(), observe(status=status)).release_finalizer


# --- credentials switched to another organization (defect 4) ---------------------------------


def test_credentials_of_another_organization_never_recreate_the_service():
    status = ManagedPostgresStatus(serviceId=SID, organizationId="org-a")
    plan = planner.plan(
        make_desired(), observe(remote=None, status=status, confirmed_gone=True, organization_id="org-b")
    )
    assert plan.actions == []
    assert plan.synced.reason == model.Reason.TERMINAL_ORGANIZATION_CHANGED
    assert "org-a" in plan.synced.message and "org-b" in plan.synced.message
    assert plan.ready is None  # the service itself may still work: Ready is left as it was


def test_credentials_of_another_organization_block_deletion():
    status = ManagedPostgresStatus(serviceId=SID, organizationId="org-a")
    plan = deletion.plan_delete(make_desired(), observe(remote=None, status=status, organization_id="org-b"))
    assert plan.actions == [] and not plan.release_finalizer
    assert plan.events[0].reason == model.EventReason.DELETION_BLOCKED


def test_same_organization_records_it():
    desired = make_desired()
    plan = planner.plan(
        desired,
        observe(
            remote=make_remote(desired),
            status=ManagedPostgresStatus(serviceId=SID),
            secret=good_secret(),
            organization_id="org-a",
        ),
    )
    assert plan.status["organizationId"] == "org-a" and plan.ready.status == "True"


# --- the connection Secret is written only when owned (defects 2, 3, 8) ----------------------


@pytest.mark.parametrize(
    "controller_uid, annotations, claimable",
    [
        (UID, {}, True),
        ("someone-else", {}, False),
        (None, {}, False),  # an unrelated Secret (or the API-key Secret)
        (None, {"mpg-operator.clickhouse.cloud/hand-over-to": "orders-db"}, True),
        (None, {"mpg-operator.clickhouse.cloud/hand-over-to": "other-db"}, False),
        ("someone-else", {"mpg-operator.clickhouse.cloud/hand-over-to": "orders-db"}, False),
    ],
)
def test_secret_claimable_only_when_owned_or_handed_over(controller_uid, annotations, claimable):
    secret = ObservedSecret(data={"password": "x"}, annotations=annotations, controller_uid=controller_uid)
    assert secret.claimable_by(UID, "orders-db") is claimable


def test_a_taken_secret_name_blocks_the_create():
    foreign = ObservedSecret(data={"password": "Th31rsNotOurs"}, controller_uid="another-resource")
    plan = planner.plan(make_desired(), observe(secret=foreign))
    assert plan.actions == []
    assert plan.synced.reason == plan.ready.reason == model.Reason.TERMINAL_SECRET_CONFLICT
    assert "orders-db-connection" in plan.synced.message and "hand-over-to=orders-db" in plan.synced.message
    assert [e.reason for e in plan.events] == [model.EventReason.SECRET_CONFLICT]


def test_a_taken_secret_is_never_written_for_a_running_service():
    desired = make_desired()
    foreign = ObservedSecret(data={}, controller_uid="another-resource")
    plan = planner.plan(
        desired, observe(remote=make_remote(desired), status=ManagedPostgresStatus(serviceId=SID), secret=foreign)
    )
    assert not any(isinstance(a, model.PublishSecret) for a in plan.actions)
    assert plan.ready.status == "False" and plan.synced.reason == model.Reason.TERMINAL_SECRET_CONFLICT


@pytest.mark.parametrize(
    ("controller_name", "waits"),
    [
        ("orders-db", True),  # this resource's name, another uid: an earlier one, deleted and created again
        ("other-db", False),  # another ManagedPostgres's Secret: a conflict
        (None, False),  # not a ManagedPostgres's (another kind): a conflict
    ],
)
def test_a_secret_left_by_an_earlier_resource_of_the_name_is_awaited_not_a_conflict(controller_name, waits):
    """The real garbage collector deletes an owner's Secrets some time after it goes: a resource
    deleted and applied again finds its predecessor's Secret. Nothing is written or created meanwhile."""
    left = ObservedSecret(data={"password": "Th31rsNotOurs"}, controller_uid="earlier", controller_name=controller_name)
    desired = make_desired()
    for observed in (
        observe(secret=left),
        observe(remote=make_remote(desired), status=ManagedPostgresStatus(serviceId=SID), secret=left),
    ):
        plan = planner.plan(desired, observed)
        assert not any(isinstance(a, (model.PublishSecret, model.CreateService)) for a in plan.actions)
        assert plan.ready.status == "False"
        if waits:
            assert plan.ready.reason == model.Reason.CREDENTIALS_PENDING and plan.active
            assert not plan.synced.reason.is_terminal and plan.events == []
        else:
            assert plan.synced.reason == model.Reason.TERMINAL_SECRET_CONFLICT and not plan.active
    if waits:
        assert "garbage-collect" in planner.plan(desired, observe(secret=left)).ready.message


# --- Ready means the Secret holds the password the API accepted last (defect 5) -------------


def test_a_secret_with_an_older_password_version_is_not_trusted():
    desired = make_desired()
    old = good_secret()
    old = ObservedSecret(
        data=old.data,
        annotations={**old.annotations, "mpg-operator.clickhouse.cloud/password-version": "v1"},
        controller_uid=UID,
    )
    status = ManagedPostgresStatus(serviceId=SID, passwordVersion="v2")
    plan = planner.plan(desired, observe(remote=make_remote(desired), status=status, secret=old))
    (action,) = plan.actions
    assert action.password == "apply"  # set through the API again before Ready
    status = ManagedPostgresStatus(serviceId=SID, passwordVersion="v1")
    plan = planner.plan(desired, observe(remote=make_remote(desired), status=status, secret=old))
    assert plan.actions == [] and plan.ready.status == "True"


# --- creates that show nothing are retried with backoff (defect 9) ---------------------------


@pytest.mark.parametrize(
    "attempts, waited_s, creates",
    [
        (1, 59, False),
        (1, 61, True),
        (2, 61, False),
        (2, 121, True),
        (3, 239, False),
        (3, 241, True),
        (12, 1700, False),
        (12, 1801, True),
    ],
)
def test_create_retries_back_off(attempts, waited_s, creates):
    status = ManagedPostgresStatus(
        createPendingSince=(NOW - timedelta(seconds=waited_s)).isoformat(), createAttempts=attempts
    )
    plan = planner.plan(make_desired(), observe(status=status), create_grace=timedelta(seconds=60))
    assert (kinds(plan) == ["CreateService"]) is creates


def test_reason_is_terminal_is_the_one_definition():
    assert model.Reason.TERMINAL_SECRET_CONFLICT.is_terminal and model.Reason.QUOTA_EXCEEDED.is_terminal
    assert not model.Reason.API_ERROR.is_terminal and not model.Reason.CREATE_PENDING.is_terminal


# --- day 2: adoption, re-attach, observe-only, passwords --------------------------------------


def adopted(desired, found_by, previous=None, alive=False, secret=None, status=None, **kw):
    remote = make_remote(
        desired, tags=[Tag(key="console", value="x")] + ([Tag(key=TAG_UID, value=previous)] if previous else [])
    )
    return planner.plan(
        desired,
        observe(
            remote=remote,
            status=status or ManagedPostgresStatus(),
            secret=secret,
            found_by=found_by,
            previous_owner=previous,
            previous_owner_alive=alive,
            **kw,
        ),
    )


@pytest.mark.parametrize("found_by", ["adopt", "reattach"])
def test_takeover_claims_the_service_before_anything_else(found_by):
    desired = make_desired(**({"serviceId": SID} if found_by == "adopt" else {}))
    plan = adopted(desired, found_by, previous="old-uid")
    # Owner tags first, read back; no update and no password from an observation before the claim.
    assert kinds(plan) == ["ClaimService"] and plan.synced.reason == "ClaimingService"
    assert plan.ready.status == "False" and plan.active


@pytest.mark.parametrize("found_by", ["adopt", "reattach"])
def test_a_claim_the_api_shows_adopts_the_service_and_sets_a_new_password(found_by):
    desired = make_desired(**({"serviceId": SID} if found_by == "adopt" else {}))
    remote = make_remote(desired)  # read back after the claim: this resource's tags
    observed = observe(remote=remote, found_by=found_by, previous_owner="old-uid", claim_sent=True)
    plan = planner.plan(desired, observed)
    assert kinds(plan) == ["AdoptService", "PublishSecret"]  # the tags are on: nothing to update
    assert plan.actions[1].password == model.PasswordMode.GENERATE  # the API never returns a password
    (event,) = [e for e in plan.events if e.reason == "Adopted"]
    assert SID in event.message and "old-uid" in event.message and "new one is set" in event.message


def test_a_claim_the_api_does_not_show_yet_waits_without_claiming_again():
    desired = make_desired(serviceId=SID)
    plan = adopted(desired, "adopt", previous="old-uid", claim_sent=True)
    assert plan.actions == [] and plan.synced.reason == "ClaimingService" and plan.active


def test_takeover_of_a_running_service_with_a_secret_is_published_with_a_new_password():
    desired = make_desired(serviceId=SID)
    remote = make_remote(desired)  # already tagged as ours (the update landed)
    plan = planner.plan(desired, observe(remote=remote, status=ManagedPostgresStatus(serviceId=SID)))
    (action,) = plan.actions
    assert action.password == model.PasswordMode.GENERATE


@pytest.mark.parametrize(
    "found_by, spec, alive, reason",
    [
        ("adopt", {"serviceId": SID}, True, "TerminalServiceOwned"),
        ("reattach", {}, True, "TerminalServiceOwned"),
        ("reattach", {"adoptionPolicy": "Never"}, False, "TerminalAdoptionRequired"),
    ],
)
def test_takeover_refused(found_by, spec, alive, reason):
    desired = make_desired(**spec)
    plan = adopted(desired, found_by, previous="old-uid", alive=alive)
    assert plan.actions == [] and plan.synced.reason == plan.ready.reason == reason
    assert [e.reason for e in plan.events] == ["AdoptionRefused"]
    if reason == "TerminalAdoptionRequired":
        assert f"spec.serviceId: {SID}" in plan.synced.message


def test_adopting_an_id_the_organization_does_not_have():
    desired = make_desired(serviceId=SID)
    plan = planner.plan(desired, observe())
    assert kinds(plan) == ["ConfirmGone"]
    plan = planner.plan(desired, observe(confirmed_gone=True, organization_id="org-1"))
    assert plan.actions == [] and plan.synced.reason == "TerminalServiceNotFound" and SID in plan.synced.message


def test_observe_only_sends_nothing_and_publishes_what_it_knows():
    desired = make_desired(managementPolicy="Observe")
    remote = make_remote(desired, size="r8gd.xlarge")  # differs from the spec
    plan = planner.plan(desired, observe(remote=remote, status=ManagedPostgresStatus(serviceId=SID)))
    (action,) = plan.actions
    assert isinstance(action, model.PublishSecret) and action.password == model.PasswordMode.OBSERVED
    assert plan.synced.reason == "Observing" and "size" in plan.synced.message
    assert plan.ready.status == "True"
    assert planner.plan(desired, observe()).synced.reason == "TerminalServiceNotFound"  # never creates


@pytest.mark.parametrize(
    "secret_password, brought, rotate, recorded, mode",
    [
        ("Secr3tPassw0rdXYZ", None, None, None, None),  # steady
        ("Secr3tPassw0rdXYZ", None, "t1", None, "generate"),  # rotation asked
        ("Secr3tPassw0rdXYZ", None, "t1", "t1", None),  # that token is done
        ("Secr3tPassw0rdXYZ", "Br0ughtPassw0rdXY", None, None, "bring"),  # the user's password differs
        ("Br0ughtPassw0rdXY", "Br0ughtPassw0rdXY", None, None, None),  # and once it is in
    ],
)
def test_passwords_brought_and_rotated(secret_password, brought, rotate, recorded, mode):
    spec = {"passwordSecretRef": {"name": "pw", "key": "password"}} if brought else {}
    desired = make_desired(**spec)
    desired = dataclasses.replace(desired, rotate_token=rotate)
    status = ManagedPostgresStatus(serviceId=SID, passwordRotationToken=recorded)
    plan = planner.plan(
        desired,
        observe(
            remote=make_remote(desired),
            status=status,
            secret=good_secret(password=secret_password),
            brought_password=brought,
        ),
    )
    assert [a.password.value for a in plan.actions] == ([mode] if mode else [])
    if mode:
        assert plan.actions[0].rotation_token == (rotate if rotate != recorded else None)


def test_an_interrupted_rotation_is_completed_with_the_secrets_password():
    desired = dataclasses.replace(make_desired(), rotate_token="t2")
    unconfirmed = ObservedSecret(
        data={**good_secret().data, "password": "N3wPasswordFromCrash"},
        annotations={ANN_SERVICE_ID: SID, ANN_SERVICE_NAME: "orders-db"},
        controller_uid=UID,
    )
    plan = planner.plan(
        desired, observe(remote=make_remote(desired), status=ManagedPostgresStatus(serviceId=SID), secret=unconfirmed)
    )
    (action,) = plan.actions
    assert action.password == model.PasswordMode.APPLY and action.rotation_token == "t2"


def test_a_brought_password_that_cannot_be_read_is_named():
    desired = make_desired(passwordSecretRef={"name": "pw", "key": "password"})
    plan = planner.plan(
        desired,
        observe(
            remote=make_remote(desired),
            status=ManagedPostgresStatus(serviceId=SID),
            secret=good_secret(),
            brought_password_problem="Secret shop/pw lacks key(s) password",
        ),
    )
    assert plan.synced.reason == "TerminalInvalidPassword" and "shop/pw" in plan.synced.message
    assert not any(a.password != model.PasswordMode.KEEP for a in plan.actions)


# --- promises, round 3: identifiers, claims, the Secret's layout -------------------------------------

ORG = "85e6c2a4-1f0e-4c7b-9d2a-3b5f6e7d8c9a"


@pytest.mark.parametrize(
    "recorded, current, moved",
    [
        (ORG, ORG.upper(), False),
        (ORG.upper(), ORG, False),  # recorded in upper case by an older version
        (f"{{{ORG}}}", f" {ORG} ", False),
        (ORG.replace("-", ""), ORG, False),
        (ORG, "0e6c2a4f-1f0e-4c7b-9d2a-3b5f6e7d8c9a", True),
    ],
)
def test_an_organization_is_compared_as_an_id(recorded, current, moved):
    status = ManagedPostgresStatus(serviceId=SID, organizationId=recorded)
    observed = observe(remote=make_remote(), status=status, organization_id=current)
    assert (planner.organization_mismatch(make_desired(), observed) is not None) is moved
    plan = planner.plan(make_desired(), observed)
    assert (plan.synced.reason == "TerminalOrganizationChanged") is moved


def test_ids_from_status_and_spec_are_canonical():
    status = ManagedPostgresStatus.model_validate({"serviceId": SID.upper(), "organizationId": f" {ORG.upper()} "})
    assert status.service_id == SID and status.organization_id == ORG
    desired = make_desired(serviceId=SID.upper(), restoreFrom=None)
    assert desired.adopt_service_id == SID
    remote = PostgresServiceListItem(id=SID.upper(), tags=[Tag(key=TAG_UID, value=UID.upper())])
    assert remote.id == SID and planner.owner_uid(remote) == UID
    located = planner.locate([remote], None, make_desired())
    assert located.remote is remote and located.found_by == "tag"


def test_observe_only_adoption_claims_nothing():
    desired = make_desired(serviceId=SID, managementPolicy="Observe")
    plan = adopted(desired, "adopt")
    assert "ClaimService" not in kinds(plan) and kinds(plan)[0] == "AdoptService"


def test_a_service_another_live_resource_claimed_is_left_alone_and_not_deleted():
    desired = make_desired()
    remote = make_remote(desired, tags=[Tag(key=TAG_UID, value="other-uid")])
    status = ManagedPostgresStatus(serviceId=SID, passwordVersion="v1")
    observed = observe(
        remote=remote, status=status, secret=good_secret(), previous_owner="other-uid", previous_owner_alive=True
    )
    plan = planner.plan(desired, observed)
    assert plan.actions == [] and plan.synced.reason == plan.ready.reason == "TerminalServiceOwned"
    assert "will not delete it" in plan.synced.message
    gone = deletion.plan_delete(desired, dataclasses.replace(observed, fetched_by_id=True))
    assert gone.actions == [] and gone.release_finalizer and [e.reason for e in gone.events] == ["Orphaned"]


def test_an_owner_tag_of_a_gone_resource_on_our_service_is_put_back():
    desired = make_desired()
    remote = make_remote(desired, tags=[Tag(key=TAG_UID, value="gone-uid")])
    observed = observe(remote=remote, status=ManagedPostgresStatus(serviceId=SID), secret=good_secret())
    plan = planner.plan(desired, dataclasses.replace(observed, previous_owner="gone-uid"))
    assert kinds(plan)[0] == "UpdateService" and "tags" in plan.actions[0].changed


def test_no_update_from_a_list_older_than_the_last_request():
    desired = make_desired(size="r8gd.xlarge")
    observed = observe(remote=make_remote(), status=ManagedPostgresStatus(serviceId=SID), secret=good_secret())
    assert "UpdateService" in kinds(planner.plan(desired, observed))
    assert "UpdateService" not in kinds(planner.plan(desired, dataclasses.replace(observed, snapshot_stale=True)))
    fresh = dataclasses.replace(observed, snapshot_stale=True, fetched_by_id=True)
    assert "UpdateService" in kinds(planner.plan(desired, fresh))


def secret_with_layout(prefix="", labels=None, annotations=None, password="Secr3tPassw0rdXYZ", version=None):
    shape = SecretShape(key_prefix=prefix, labels=labels or {}, annotations=annotations or {})
    write = secret_write(
        shape,
        Endpoint(hostname="h", username="postgres", ca_pem="ca"),
        password,
        service_id=SID,
        service_name="orders-db",
        version=version,
        before=None,
    )
    return ObservedSecret(
        data={k: v for k, v in write.data.items() if v is not None},
        annotations={k: v for k, v in write.annotations.items() if v is not None},
        controller_uid=UID,
        labels={k: v for k, v in write.labels.items() if v is not None},
    )


@pytest.mark.parametrize(
    "spec_secret",
    [
        {"keyPrefix": "DB_"},
        {"labels": {"team": "orders"}},
        {"annotations": {"reloader.stakater.com/match": "true"}},
    ],
)
def test_a_layout_change_republishes_the_confirmed_password(spec_secret):
    desired = make_desired(connectionSecret={"name": "orders-db-connection", **spec_secret})
    status = ManagedPostgresStatus(serviceId=SID, passwordVersion="v1")
    secret = secret_with_layout(version="v1")
    plan = planner.plan(desired, observe(remote=make_remote(desired), status=status, secret=secret))
    (action,) = plan.actions
    assert action.password == model.PasswordMode.KEEP and action.refresh_endpoint
    # The same Secret laid out as asked is current: nothing to do.
    secret = secret_with_layout(
        prefix=spec_secret.get("keyPrefix", ""),
        labels=spec_secret.get("labels"),
        annotations=spec_secret.get("annotations"),
        version="v1",
    )
    assert planner.plan(desired, observe(remote=make_remote(desired), status=status, secret=secret)).actions == []


@pytest.mark.parametrize(
    "new_secret, previous_confirmed, rotate, mode",
    [
        (None, True, None, "carry"),  # renamed: the new Secret does not exist yet
        ("stale", True, None, "carry"),  # renamed back to a Secret left from earlier
        ("user", True, None, "apply"),  # a password a user put in the new Secret: set it
        (None, False, None, "generate"),  # the earlier Secret's password is not the current one
        (None, True, "t1", "generate"),  # a rotation asked at the same time
    ],
)
def test_a_renamed_secret_gets_the_current_password(new_secret, previous_confirmed, rotate, mode):
    desired = dataclasses.replace(make_desired(connectionSecret={"name": "second"}), rotate_token=rotate)
    status = ManagedPostgresStatus(serviceId=SID, passwordVersion="v2", connectionSecretName="first")
    previous = secret_with_layout(version="v2" if previous_confirmed else "v1")
    secret = {
        None: None,
        "stale": secret_with_layout(password="0ldPassw0rdFromBefore", version="v1"),
        "user": dataclasses.replace(
            secret_with_layout(version="v1"), data={**secret_with_layout().data, "password": "Us3rPickedPassw0rd"}
        ),
    }[new_secret]
    observed = observe(remote=make_remote(desired), status=status, secret=secret, previous_secret=previous)
    (action,) = planner.plan(desired, observed).actions
    assert action.password.value == mode


@pytest.mark.parametrize(
    "found_by, owner, deleted",
    [
        ("adopt", "other-uid", False),  # a claim lost (or never made): another resource's, or nobody's
        ("reattach", "gone-uid", False),
        ("adopt", UID, True),  # claimed (its tags landed) before a crash left the status unwritten
        ("tag", UID, True),
    ],
)
def test_a_service_never_taken_over_is_not_deleted(found_by, owner, deleted):
    desired = make_desired(serviceId=SID)
    remote = make_remote(desired, tags=[Tag(key=TAG_UID, value=owner)])
    observed = observe(remote=remote, found_by=found_by, previous_owner=None if owner == UID else owner)
    plan = deletion.plan_delete(desired, observed)
    assert ("DeleteService" in kinds(plan)) is deleted
    assert plan.release_finalizer is not deleted
