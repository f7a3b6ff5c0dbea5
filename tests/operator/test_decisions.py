"""Table tests of the core's decisions around the plan: failures, conditions, status, freshness,
deletion gates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mpg_operator.cloud.errors import (
    AmbiguousCreateError,
    AuthError,
    ConflictError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    ServerError,
)
from mpg_operator.reconcile import decisions, deletion
from mpg_operator.reconcile.connection import SecretConflictError, SecretRejectedError
from mpg_operator.reconcile.desired import OperatorDefaults, desired_from
from mpg_operator.reconcile.model import Condition, Reason
from mpg_operator.reconcile.planner import create_wait
from mpg_operator.resource import Condition as StoredCondition
from mpg_operator.resource import ManagedPostgresSpec, ManagedPostgresStatus

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def desired(**spec):
    return desired_from(
        namespace="shop",
        name="orders-db",
        uid="u1",
        generation=2,
        spec=ManagedPostgresSpec.model_validate(
            {"provider": "aws", "region": "us-west-2", "size": "r8gd.large", **spec}
        ),
        defaults=OperatorDefaults(),
    )


@pytest.mark.parametrize(
    "error, listed, creating, status, reason, event, retry_soon",
    [
        (AmbiguousCreateError("dropped"), True, True, "Unknown", "CreatePending", "CreateOutcomeUnknown", True),
        (
            AuthError("bad key", status=401),
            False,
            False,
            "False",
            "TerminalCredentialsError",
            "CredentialsError",
            False,
        ),
        (
            NotFoundError("no such org", status=404),
            False,
            False,
            "False",
            "TerminalCredentialsError",
            "CredentialsError",
            False,
        ),
        (
            InvalidRequestError("bad org id", status=400),
            False,
            False,
            "False",
            "TerminalCredentialsError",
            "CredentialsError",
            False,
        ),
        (
            InvalidRequestError("unknown size", status=400),
            True,
            True,
            "False",
            "TerminalInvalidSpec",
            "InvalidSpec",
            False,
        ),
        (ConflictError("quota", status=409), True, True, "False", "QuotaExceeded", "CreateFailed", False),
        (ConflictError("busy", status=409), True, False, "False", "ApiError", "ApiError", True),
        (ServerError("boom", status=503), True, False, "False", "ApiError", "ApiError", True),
        (NetworkError("reset"), False, False, "False", "ApiError", "ApiError", True),
        (RateLimitedError("slow down", status=429), True, False, "False", "ApiError", "ApiError", True),
        (NotFoundError("service gone", status=404), True, False, "False", "ApiError", "ApiError", True),
        (SecretConflictError("taken"), True, True, "False", "TerminalSecretConflict", "SecretConflict", False),
        (
            SecretRejectedError("Kubernetes refused Secret 'Bad_Name'"),
            True,
            True,
            "False",
            "TerminalInvalidSpec",
            "InvalidSpec",
            False,
        ),
    ],
)
def test_classify(error, listed, creating, status, reason, event, retry_soon):
    failure = decisions.classify(
        error,
        desired=desired(),
        credentials_source="shop/creds",
        organization_id="org-1",
        listed=listed,
        creating=creating,
    )
    assert (failure.synced.status, failure.synced.reason, failure.event.reason) == (status, reason, event)
    assert failure.retry_soon is retry_soon
    assert failure.event.message == failure.synced.message
    if isinstance(error, (SecretConflictError, SecretRejectedError)):
        assert failure.ready == failure.synced  # the Secret cannot be published: not Ready either


def test_credentials_unusable_keeps_a_working_service_ready():
    assert decisions.credentials_unusable("no key", ready_was_true=True).ready is None
    assert decisions.credentials_unusable("no key", ready_was_true=False).ready.reason == Reason.TERMINAL_CREDENTIALS


STAMP = "2026-11-28T11:00:00Z"


@pytest.mark.parametrize(
    "stored, synced, expect_transition",
    [
        ([], Condition.true(Reason.RECONCILED, "ok"), "2026-11-28T12:00:00Z"),  # new condition
        (
            [{"type": "Synced", "status": "True", "reason": "ReconcileSuccess", "lastTransitionTime": STAMP}],
            Condition.true(Reason.RECONCILED, "other message"),
            STAMP,
        ),  # same status: time kept
        (
            [{"type": "Synced", "status": "True", "reason": "ReconcileSuccess", "lastTransitionTime": STAMP}],
            Condition.true(Reason.UPDATING, "other reason"),
            STAMP,
        ),  # same status, other reason: kept
        (
            [{"type": "Synced", "status": "True", "reason": "ReconcileSuccess", "lastTransitionTime": STAMP}],
            Condition.false(Reason.API_ERROR, "boom"),
            "2026-11-28T12:00:00Z",
        ),  # status changed: now
    ],
)
def test_merge_conditions_moves_transition_time_only_with_status(stored, synced, expect_transition):
    merged = decisions.merge_conditions(stored, synced=synced, ready=None, generation=3, now=NOW)
    (cond,) = [c for c in merged if c["type"] == "Synced"]
    assert cond["lastTransitionTime"] == expect_transition and cond["observedGeneration"] == 3
    assert cond["reason"] == synced.reason.value and cond["message"] == synced.message


def test_merge_conditions_keeps_an_undecided_condition_and_orders_ready_first():
    stored = [{"type": "Ready", "status": "True", "reason": "Available", "lastTransitionTime": STAMP}]
    merged = decisions.merge_conditions(
        stored, synced=Condition.true(Reason.RECONCILED, "ok"), ready=None, generation=1, now=NOW
    )
    assert [c["type"] for c in merged] == ["Ready", "Synced"] and merged[0] == stored[0]


@pytest.mark.parametrize(
    "stored, wanted, changes",
    [
        ({"a": 1, "b": {"x": 1}}, {"a": 1, "b": {"x": 1}}, {}),  # steady: nothing to write
        ({"a": 1}, {"a": 2}, {"a": 2}),
        ({"a": 1}, {"a": None}, {"a": None}),  # removal
        ({}, {"a": None}, {}),  # removing what is not there is no change
        ({"a": 1, "lastSyncedAt": "t"}, {"a": 1}, {"lastSyncedAt": None}),  # an earlier version's field goes once
    ],
)
def test_status_changes(stored, wanted, changes):
    assert decisions.status_changes(stored, wanted) == changes


@pytest.mark.parametrize(
    "reason, generation, remembered",
    [
        ("TerminalInvalidSpec", 2, True),
        ("QuotaExceeded", 2, True),
        ("TerminalInvalidSpec", 1, False),
        ("TerminalSecretConflict", 2, False),
        ("ApiError", 2, False),
        ("SomethingOld", 2, False),
    ],
)
def test_last_rejection_remembers_only_api_rejections_of_this_generation(reason, generation, remembered):
    conditions = [
        StoredCondition(
            type="Synced",
            status="False",
            reason=reason,
            message="m",
            observedGeneration=generation,
            lastTransitionTime=STAMP,
        )
    ]
    assert (decisions.last_rejection(conditions, 2) is not None) is remembered


@pytest.mark.parametrize("in_flight, expect", [(False, 30.0), (True, 7.5)])
def test_list_max_age(in_flight, expect):
    assert decisions.list_max_age(steady=30.0, active_interval=15.0, in_flight=in_flight) == expect


@pytest.mark.parametrize(
    "policy, status, gate",
    [
        ("Orphan", {"serviceId": "s"}, deletion.Gate.ORPHAN),
        ("Delete", {}, deletion.Gate.NOTHING_CREATED),
        ("Delete", {"createPendingSince": STAMP}, deletion.Gate.PROCEED),
        ("Delete", {"serviceId": "s"}, deletion.Gate.PROCEED),
    ],
)
def test_deletion_gate(policy, status, gate):
    assert deletion.gate(desired(deletionPolicy=policy), ManagedPostgresStatus.model_validate(status)) is gate


@pytest.mark.parametrize(
    "error, reason, has_escape",
    [
        (ServerError("boom", status=503), "ApiError", False),
        (ConflictError("read replicas attached", status=409), "DeletionBlocked", True),
        (AuthError("key revoked", status=401), "DeletionBlocked", True),
    ],
)
def test_deletion_blocked_says_how_to_proceed(error, reason, has_escape):
    escape = deletion.escape_hatch("shop", "orders-db")
    blocked = deletion.blocked_by(error, "svc-1", escape)
    assert blocked.event.reason == reason and ("deletionPolicy: Orphan" in blocked.message) is has_escape
    assert "svc-1" in blocked.message


def test_create_wait_doubles_and_is_capped():
    grace = timedelta(seconds=60)
    assert [create_wait(grace, n).total_seconds() for n in (0, 1, 2, 3)] == [60, 60, 120, 240]
    assert create_wait(grace, 30) == timedelta(minutes=30)
