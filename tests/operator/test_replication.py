"""Read replicas and point-in-time restores in the pure core: desired + observed -> plan. No I/O."""

from datetime import timedelta

import pytest
from test_planner import NOW, SID, UID, good_secret, kinds, make_remote, observe

from mpg_operator.cloud.errors import ConflictError, InvalidRequestError
from mpg_operator.reconcile import decisions, model, planner, replication
from mpg_operator.reconcile.desired import TAG_UID, OperatorDefaults, desired_from
from mpg_operator.reconcile.model import PasswordMode, Reason, SourceResource
from mpg_operator.resource import ManagedPostgresSpec, ManagedPostgresStatus

PRIMARY_SID = "11111111-2222-4333-8444-555555555555"
ORG = "0f7c2c35-3c5e-4a59-9d8a-7f1f2d0b1c11"
OTHER_ORG = "9a7c2c35-3c5e-4a59-9d8a-7f1f2d0b1c22"
PRIMARY_PASSWORD = "Prim4ryPasswordXYZ"


def replica(**spec):
    return desired_from(
        namespace="shop",
        name="orders-ro",
        uid=UID,
        generation=1,
        spec=ManagedPostgresSpec.model_validate({"readReplicaOf": {"name": "orders-db"}, **spec}),
        defaults=OperatorDefaults(),
    )


def restore(source=None, **spec):
    source = source or {"managedPostgres": "orders-db"}
    return desired_from(
        namespace="shop",
        name="orders-pr-12",
        uid=UID,
        generation=1,
        spec=ManagedPostgresSpec.model_validate(
            {"restoreFrom": {**source, "pointInTime": "2026-11-27T11:30:00Z"}, **spec}
        ),
        defaults=OperatorDefaults(),
    )


def primary(**overrides):
    fields = {
        "name": "orders-db",
        "exists": True,
        "service_id": PRIMARY_SID,
        "state": "running",
        "listed": True,
        "organization_id": ORG,
        "password": PRIMARY_PASSWORD,
    }
    fields.update(overrides)
    return SourceResource(**fields)


# --- what inherits -------------------------------------------------------------------------------


def test_a_replica_and_a_restore_inherit_what_the_api_gives_them():
    r = replica()
    assert (r.provider, r.region, r.size, r.postgres_version, r.ha_type) == (None, None, None, None, None)
    request = r.read_replica_request()
    assert request.name == "orders-ro" and {t.key: t.value for t in request.tags}[TAG_UID] == UID
    c = restore()
    assert c.ha_type is None and c.size is None
    assert c.restore_request().restore_target == "2026-11-27T11:30:00Z"
    assert restore(size="r8gd.xlarge").size == "r8gd.xlarge"
    with pytest.raises(ValueError):
        r.create_request()  # never an ordinary create without provider, region and size


def test_inherited_fields_produce_no_difference_on_a_replica():
    r = replica()
    remote = make_remote(r, is_primary=False, size="r8gd.2xlarge", ha_type="none", provider="gcp", region="x")
    assert planner.mutable_differences(r, remote) == ()
    assert planner.immutable_differences(r, remote) == []


# --- creation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "status", "reason", "active"),
    [
        (None, None, Reason.WAITING_FOR_PRIMARY, True),
        (primary(exists=False, service_id=None), None, Reason.WAITING_FOR_PRIMARY, True),
        (primary(deleting=True), None, Reason.WAITING_FOR_PRIMARY, True),
        (primary(service_id=None, listed=False), None, Reason.WAITING_FOR_PRIMARY, True),
        (primary(state="creating"), None, Reason.WAITING_FOR_PRIMARY, True),
        (primary(listed=False), None, Reason.WAITING_FOR_PRIMARY, True),
        (primary(organization_id=OTHER_ORG), None, Reason.TERMINAL_SOURCE_ELSEWHERE, False),
        (
            primary(),
            ManagedPostgresStatus.model_validate(
                {"waitingForBackup": {"attempts": 2, "retryAfter": (NOW + timedelta(seconds=30)).isoformat()}}
            ),
            Reason.WAITING_FOR_BACKUP,
            True,
        ),
        (
            primary(),
            ManagedPostgresStatus.model_validate({"readReplicaOf": {"name": "orders-db", "released": True}}),
            Reason.TERMINAL_SERVICE_MISSING,
            False,
        ),
    ],
)
def test_a_replica_waits_for_its_primary(source, status, reason, active):
    plan = planner.plan(replica(), observe(status=status, source=source, organization_id=ORG))
    assert plan.actions == []
    assert plan.synced.reason == reason and plan.ready.reason == reason
    assert plan.active is active
    if reason.is_terminal:
        assert OTHER_ORG in plan.synced.message or "promoted" in plan.synced.message


def test_a_replica_is_created_through_its_running_primary():
    plan = planner.plan(replica(), observe(source=primary(), organization_id=ORG))
    assert plan.actions == [model.CreateService(PRIMARY_SID, read_replica=True)]


def test_after_the_backup_wait_the_replica_is_sent_again():
    status = ManagedPostgresStatus.model_validate(
        {"waitingForBackup": {"attempts": 1, "retryAfter": (NOW - timedelta(seconds=1)).isoformat()}}
    )
    plan = planner.plan(replica(), observe(status=status, source=primary(), organization_id=ORG))
    assert kinds(plan) == ["CreateService"]


def test_the_backup_wait_doubles_up_to_five_minutes():
    base = timedelta(seconds=15)
    waits = [replication.backup_wait(NOW, n, base)["retryAfter"] for n in (1, 2, 3, 10)]
    assert waits == sorted(waits) and waits[0] == "2026-11-27T12:00:30.000000Z"
    assert waits[-1] == "2026-11-27T12:05:00.000000Z"


@pytest.mark.parametrize(
    ("desired", "observed_kw", "expected"),
    [
        (restore(), {"source": primary(state="stopped", password=None)}, model.CreateService(PRIMARY_SID)),
        (
            restore({"serviceId": PRIMARY_SID.upper()}),
            {"source_service_listed": True},
            model.CreateService(PRIMARY_SID),
        ),
    ],
)
def test_a_restore_is_created_from_its_source(desired, observed_kw, expected):
    plan = planner.plan(desired, observe(organization_id=ORG, **observed_kw))
    assert plan.actions == [expected]


def test_a_restore_of_an_unlisted_service_id_creates_nothing():
    plan = planner.plan(restore({"serviceId": PRIMARY_SID}), observe(organization_id=ORG))
    assert plan.actions == [] and plan.synced.reason == Reason.TERMINAL_SERVICE_NOT_FOUND and not plan.active


@pytest.mark.parametrize(
    ("desired", "error", "reason", "terminal"),
    [
        (
            replica(),
            InvalidRequestError("Parent server is not ready for read replicas. There are no backups, yet.", status=400),
            Reason.WAITING_FOR_BACKUP,
            False,
        ),
        (
            restore(),
            InvalidRequestError("Source server has no backups, yet. Try again later.", status=400),
            Reason.WAITING_FOR_BACKUP,
            False,
        ),
        (
            restore(),
            InvalidRequestError(
                "restoreTarget must be within the backup retention period: between a and b", status=400
            ),
            Reason.TERMINAL_RESTORE_REFUSED,
            True,
        ),
        (replica(), InvalidRequestError("something else", status=400), Reason.TERMINAL_INVALID_SPEC, True),
    ],
)
def test_what_a_refused_replica_or_restore_means(desired, error, reason, terminal):
    failure = decisions.classify(
        error, desired=desired, credentials_source="s", organization_id=ORG, listed=True, creating=True
    )
    assert failure.synced.reason == reason and failure.synced.reason.is_terminal is terminal
    assert failure.retry_soon is not terminal
    if reason == Reason.TERMINAL_RESTORE_REFUSED:
        assert "between a and b" in failure.synced.message  # the API's message
        assert reason in decisions.REMEMBERED_REJECTIONS  # not sent again for this generation


# --- a live replica -----------------------------------------------------------------------------


def live(desired, remote, secret=None, status=None, source=None):
    status = status or ManagedPostgresStatus(serviceId=SID, passwordVersion=None)
    return planner.plan(desired, observe(remote=remote, status=status, secret=secret, source=source))


@pytest.mark.parametrize(
    ("secret", "source", "mode", "ready"),
    [
        (None, primary(), PasswordMode.INHERIT, True),  # first publish
        (
            good_secret(name="orders-ro", password="OldPassw0rdXYZabc"),
            primary(),
            PasswordMode.INHERIT,
            True,
        ),  # primary rotated
        (good_secret(name="orders-ro", password=PRIMARY_PASSWORD), primary(), None, True),  # current: nothing to do
        (
            good_secret(name="orders-ro", password="OldPassw0rdXYZabc"),
            primary(password=None),
            None,
            True,
        ),  # primary mid-rotation
        (None, primary(password=None), PasswordMode.KEEP, False),  # not known yet: no password published
    ],
)
def test_a_replica_publishes_its_primarys_current_password(secret, source, mode, ready):
    r = replica()
    plan = live(r, make_remote(r, is_primary=False), secret=secret, source=source)
    published = [a for a in plan.actions if isinstance(a, model.PublishSecret)]
    assert [a.password for a in published] == ([mode] if mode else [])
    assert all(a.password not in (PasswordMode.GENERATE, PasswordMode.APPLY) for a in published)
    assert plan.ready.is_true is ready
    assert plan.status["readReplicaOf"] == {"name": "orders-db", "serviceId": PRIMARY_SID}


def test_a_replica_is_never_updated_and_says_why():
    r = replica(size="r8gd.xlarge")
    plan = live(
        r,
        make_remote(r, is_primary=False, size="r8gd.large"),
        good_secret(name="orders-ro", password=PRIMARY_PASSWORD),
        None,
        primary(),
    )
    assert not any(isinstance(a, model.UpdateService) for a in plan.actions)
    assert plan.synced.reason == Reason.TERMINAL_READ_REPLICA and "size" in plan.synced.message
    assert "clickhouse.cloud/promote" in plan.synced.message


def test_a_rotation_is_not_done_on_a_replica():
    r = desired_from(
        namespace="shop",
        name="orders-ro",
        uid=UID,
        generation=1,
        spec=ManagedPostgresSpec.model_validate({"readReplicaOf": {"name": "orders-db"}}),
        defaults=OperatorDefaults(),
        annotations={"clickhouse.cloud/rotate-password": "t1"},
    )
    plan = live(
        r, make_remote(r, is_primary=False), good_secret(name="orders-ro", password=PRIMARY_PASSWORD), None, primary()
    )
    assert not any(isinstance(a, model.PublishSecret) for a in plan.actions)


# --- promotion releases it ------------------------------------------------------------------------


def promoted_status(**extra):
    return ManagedPostgresStatus.model_validate(
        {
            "serviceId": SID,
            "readReplicaOf": {"name": "orders-db", "serviceId": PRIMARY_SID},
            "commands": {"promote": {"token": "go", "phase": "Sent"}},
            **extra,
        }
    )


def test_a_promoted_replica_is_released_once_the_service_shows_it():
    r = replica()
    still = live(
        r,
        make_remote(r, is_primary=False),
        good_secret(name="orders-ro", password=PRIMARY_PASSWORD),
        promoted_status(),
        primary(),
    )
    assert "released" not in still.status["readReplicaOf"]
    assert replication.is_replica(r, promoted_status())

    plan = live(
        r,
        make_remote(r, is_primary=True),
        good_secret(name="orders-ro", password=PRIMARY_PASSWORD),
        promoted_status(),
        primary(),
    )
    assert plan.status["readReplicaOf"]["released"] is True
    assert [e.reason for e in plan.events] == [model.EventReason.REPLICA_RELEASED]
    assert "token go" in plan.events[0].message


def test_a_released_replica_is_an_ordinary_primary():
    r = desired_from(
        namespace="shop",
        name="orders-ro",
        uid=UID,
        generation=2,
        spec=ManagedPostgresSpec.model_validate({"readReplicaOf": {"name": "orders-db"}, "size": "r8gd.xlarge"}),
        defaults=OperatorDefaults(),
        annotations={"clickhouse.cloud/rotate-password": "t1"},
    )
    status = promoted_status(readReplicaOf={"name": "orders-db", "serviceId": PRIMARY_SID, "released": True})
    assert not replication.is_replica(r, status)
    plan = live(
        r,
        make_remote(r, is_primary=True, size="r8gd.large"),
        good_secret(name="orders-ro", password=PRIMARY_PASSWORD),
        status,
    )
    assert [a for a in plan.actions if isinstance(a, model.UpdateService)][0].changed == ("size",)
    assert [a.password for a in plan.actions if isinstance(a, model.PublishSecret)] == [PasswordMode.GENERATE]
    assert plan.status["readReplicaOf"]["released"] is True and not plan.events


# --- deletion of a primary ------------------------------------------------------------------------


def body(name, replica_of=None, status=None):
    spec = {"readReplicaOf": {"name": replica_of}} if replica_of else {"provider": "aws"}
    return {"metadata": {"name": name}, "spec": spec, "status": status or {}}


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ([], []),
        ([body("orders-db"), body("other")], []),
        ([body("ro-2", "orders-db"), body("ro-1", "orders-db"), body("x", "other-db")], ["ro-1", "ro-2"]),
        ([body("ro-1", "orders-db", {"readReplicaOf": {"name": "orders-db", "released": True}})], []),
        ([body("ro-1", "orders-db", {"readReplicaOf": {"name": "orders-db"}})], ["ro-1"]),
    ],
)
def test_a_primary_waits_for_its_replicas_not_for_promoted_ones(resources, expected):
    assert replication.blocking_replicas("orders-db", resources) == expected


def test_waiting_for_replicas_says_which_and_how():
    condition, event = replication.waiting_for_replicas("orders-db", ["ro-1"])
    assert condition.reason == Reason.WAITING_FOR_REPLICAS and not condition.reason.is_terminal
    assert "ro-1" in event.message and "clickhouse.cloud/promote" in event.message
    assert event.type == model.EventType.NORMAL


def test_a_conflict_on_delete_is_not_a_storm():
    error = ConflictError("CONFLICT: Cannot delete this service: 1 read replica(s) depend on it.", status=409)
    msg = replication.delete_conflict(SID, error.detail, "escape")
    assert "backoff" in msg and "escape" in msg
