"""Unit tests of the executor with fakes of the Kubernetes side and the cloud side: every path of
a pass and of a deletion step, the order of the writes that must come first, and what is never
sent. (End to end, the same paths run against the simulator and the emulator in tests/e2e.)"""

from __future__ import annotations

import base64
import copy
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import SecretStr

from mpg_operator.cloud.errors import (
    AmbiguousCreateError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    ServerError,
)
from mpg_operator.cloud.models import PostgresService, PostgresServiceListItem, Tag
from mpg_operator.controller.cloudaccess import ServiceSnapshots
from mpg_operator.controller.executor import Executor
from mpg_operator.controller.kube import SecretKeyError
from mpg_operator.controller.settings import OperatorSettings
from mpg_operator.reconcile.connection import ObservedSecret, SecretConflictError
from mpg_operator.reconcile.desired import TAG_UID

NS, NAME, UID = "shop", "orders-db", "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
ORG = "11111111-2222-3333-4444-555555555555"


# --- fakes ---------------------------------------------------------------------------------


class FakeKube:
    """The operator's Kubernetes calls over a dict, with the API server's semantics that matter:
    status merge patches, Secret ownership, and a log of every write in order."""

    def __init__(self, resource: dict[str, Any]) -> None:
        self.resource = resource
        self.secrets: dict[str, dict[str, Any]] = {}
        self.log: list[str] = []
        self.credentials: dict[str, str] | None = {"keyId": "k", "keySecret": "s3cret", "organizationId": ORG}
        self.fail_secret_writes = 0
        self.credentials_deleting = False

    async def get_resource(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.resource) if self.resource else None

    async def list_resources(self, namespace: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(self.resource)] if self.resource else []

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.log.append("status:" + ",".join(sorted(status)))
        stored = self.resource.setdefault("status", {})
        for key, value in status.items():
            if value is None:
                stored.pop(key, None)
            else:
                stored[key] = copy.deepcopy(value)
        return copy.deepcopy(self.resource)

    async def read_secret_data(self, namespace: str, name: str, keys: tuple[str, ...]) -> dict[str, str]:
        if self.credentials is None:
            raise SecretKeyError(namespace, name)
        return dict(self.credentials)

    async def observe_connection_secret(self, namespace: str, name: str) -> ObservedSecret | None:
        secret = self.secrets.get(name)
        if secret is None:
            return None
        return ObservedSecret(
            data=dict(secret["data"]), annotations=dict(secret["annotations"]), controller_uid=secret["owner"]
        )

    async def write_connection_secret(self, *, namespace, name, owner, data, annotations, labels=None) -> None:
        if self.fail_secret_writes:
            self.fail_secret_writes -= 1
            raise RuntimeError("the API server is unavailable")
        existing = self.secrets.get(name)
        if existing is not None and existing["owner"] != owner["metadata"]["uid"]:
            raise SecretConflictError(name)
        self.log.append("secret:" + ("claim" if data is None else "write"))
        secret = existing or {"owner": owner["metadata"]["uid"], "data": {}, "annotations": {}, "labels": {}}
        secret.setdefault("labels", {}).update(labels or {})
        secret["data"].update(data or {})
        for key, value in annotations.items():
            if value is None:
                secret["annotations"].pop(key, None)
            else:
                secret["annotations"][key] = value
        self.secrets[name] = secret

    async def set_secret_finalizer(self, namespace, name, finalizer, present) -> bool:
        if present and self.credentials_deleting:
            return False  # Kubernetes takes no new finalizer on an object being deleted
        self.log.append(f"finalizer:{'add' if present else 'remove'}")
        return present


@dataclass
class FakeCloud:
    """A CloudClient's surface as the executor uses it, over an in-memory organization."""

    organization_id: str = ORG
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    fail: dict[str, Exception] = field(default_factory=dict)
    gone_on_get: bool = False

    def __hash__(self) -> int:
        return id(self)

    def _maybe_fail(self, op: str) -> None:
        self.calls.append(op)
        if op in self.fail:
            raise self.fail[op]

    def _item(self, sid: str, cls=PostgresServiceListItem, **extra):
        s = self.services[sid]
        return cls(
            id=sid,
            name=s["name"],
            provider="aws",
            region="us-west-2",
            size=s["size"],
            ha_type="none",
            state=s["state"],
            tags=[Tag(key=k, value=v) for k, v in s["tags"].items()],
            is_primary=True,
            hostname=f"{sid[:8]}.pg.example",
            username="postgres",
            **extra,
        )

    async def list_services(self):
        self._maybe_fail("LIST")
        return [self._item(sid) for sid in self.services]

    async def create_service(self, request):
        self._maybe_fail("POST")
        sid = str(uuid.uuid4())
        self.services[sid] = {
            "name": request.name,
            "size": request.size,
            "state": "running",
            "tags": {t.key: t.value for t in request.tags},
            "password": "Initial-Passw0rd-xyz",
        }
        return self._item(sid, PostgresService, password=SecretStr("Initial-Passw0rd-xyz"))

    async def get_service(self, service_id):
        self._maybe_fail("GET")
        if service_id not in self.services or self.gone_on_get:
            raise NotFoundError("not found", status=404)
        return self._item(service_id, PostgresService)

    async def get_ca_certificates(self, service_id):
        self._maybe_fail("CA")
        return "-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"

    async def set_password(self, service_id, password):
        self._maybe_fail("PASSWORD")
        self.services[service_id]["password"] = password

    async def update_service(self, service_id, request):
        self._maybe_fail("PATCH")
        self.services[service_id].update(name=request.name, size=request.size)

    async def delete_service(self, service_id):
        self._maybe_fail("DELETE")
        if service_id not in self.services:
            raise NotFoundError("not found", status=404)
        self.services[service_id]["state"] = "deleting"


class FakePool:
    def __init__(self, cloud: FakeCloud) -> None:
        self.cloud = cloud

    def get(self, credentials):
        return self.cloud


def resource(**spec) -> dict[str, Any]:
    return {
        "apiVersion": "clickhouse.cloud/v1alpha1",
        "kind": "ManagedPostgres",
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1},
        "spec": {
            "provider": "aws",
            "region": "us-west-2",
            "size": "r8gd.large",
            "credentialsRef": {"name": "creds"},
            **spec,
        },
    }


@dataclass
class World:
    kube: FakeKube
    cloud: FakeCloud
    executor: Executor
    events: list[tuple[str, str, str]]

    def status(self) -> dict[str, Any]:
        return self.kube.resource.get("status") or {}

    def condition(self, type_: str) -> dict[str, Any]:
        return next(c for c in self.status()["conditions"] if c["type"] == type_)

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]

    def deleting(self) -> dict[str, Any]:
        body = copy.deepcopy(self.kube.resource)
        body["metadata"]["deletionTimestamp"] = "2026-11-28T00:00:00Z"
        return body


@pytest.fixture
def world() -> World:
    kube = FakeKube(resource())
    cloud = FakeCloud()
    events: list[tuple[str, str, str]] = []
    # A fresh LIST on every pass (the batching of LISTs across resources is tested in test_cloudaccess).
    settings = OperatorSettings(
        create_grace=60.0, update_confirm=0.0001, list_max_age=30.0, poll_interval_active=0.0001
    )
    executor = Executor(
        kube=kube,
        settings=settings,
        clients=FakePool(cloud),
        snapshots=ServiceSnapshots(),
        post_event=lambda body, type_, reason, message: events.append((type_, reason, message)),
    )
    return World(kube, cloud, executor, events)


def secret_password(w: World) -> str:
    return w.kube.secrets[f"{NAME}-connection"]["data"]["password"]


# --- the live pass -------------------------------------------------------------------------


async def test_first_pass_claims_the_secret_and_marks_the_create_before_posting(world):
    result = await world.executor.run_pass(NS, NAME)
    log = world.kube.log
    # The claim, then the create-pending mark, both before the POST; the password right after it.
    assert log.index("secret:claim") < log.index(
        "status:createAttempts,createPendingSince,organizationId,passwordVersion"
    )
    assert world.cloud.calls[:2] == ["LIST", "POST"]
    assert secret_password(world) == "Initial-Passw0rd-xyz"
    status = world.status()
    (sid,) = world.cloud.services
    assert status["serviceId"] == sid and "createPendingSince" not in status and status["organizationId"] == ORG
    secret = world.kube.secrets[f"{NAME}-connection"]
    assert secret["annotations"]["mpg-operator.clickhouse.cloud/password-version"] == status["passwordVersion"]
    assert {"Created", "CredentialsPublished"} <= set(world.reasons())
    assert result.active and not result.ready


async def test_second_pass_is_ready_and_a_steady_pass_writes_nothing(world):
    await world.executor.run_pass(NS, NAME)
    result = await world.executor.run_pass(NS, NAME)
    assert result.ready and world.condition("Ready")["reason"] == "Available"
    assert world.status()["observedGeneration"] == 1
    writes = len(world.kube.log)
    await world.executor.run_pass(NS, NAME)
    assert world.kube.log[writes:] == []
    assert world.cloud.calls.count("POST") == 1 and "PASSWORD" not in world.cloud.calls


@pytest.mark.parametrize(
    "error, synced, reason_event, pending_kept",
    [
        (InvalidRequestError("unknown size", status=400), ("False", "TerminalInvalidSpec"), "InvalidSpec", False),
        (ConflictError("quota", status=409), ("False", "QuotaExceeded"), "CreateFailed", False),
        (AmbiguousCreateError("connection dropped"), ("Unknown", "CreatePending"), "CreateOutcomeUnknown", True),
        (ServerError("boom", status=503), ("False", "ApiError"), "ApiError", True),
    ],
)
async def test_a_failed_create(world, error, synced, reason_event, pending_kept):
    world.cloud.fail["POST"] = error
    result = await world.executor.run_pass(NS, NAME)
    cond = world.condition("Synced")
    assert (cond["status"], cond["reason"]) == synced
    assert reason_event in world.reasons()
    assert ("createPendingSince" in world.status()) is pending_kept
    assert "password" not in world.kube.secrets[f"{NAME}-connection"]["data"]
    assert result.active is (synced[1] in ("CreatePending", "ApiError"))


async def test_a_rejected_create_is_not_sent_again_for_the_same_generation(world):
    world.cloud.fail["POST"] = InvalidRequestError("unknown size", status=400)
    await world.executor.run_pass(NS, NAME)
    await world.executor.run_pass(NS, NAME)
    assert world.cloud.calls.count("POST") == 1


async def test_a_taken_secret_name_creates_nothing(world):
    world.kube.secrets[f"{NAME}-connection"] = {
        "owner": "someone-else",
        "data": {"password": "theirs"},
        "annotations": {},
    }
    await world.executor.run_pass(NS, NAME)
    assert "POST" not in world.cloud.calls
    assert world.condition("Synced")["reason"] == world.condition("Ready")["reason"] == "TerminalSecretConflict"
    assert world.kube.secrets[f"{NAME}-connection"]["data"] == {"password": "theirs"}
    assert "SecretConflict" in world.reasons()


async def test_the_initial_password_survives_a_flaky_api_server(world):
    world.kube.fail_secret_writes = 0
    original = world.kube.write_connection_secret
    calls = {"n": 0}

    async def flaky(**kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the first write of the password (after the claim)
            raise RuntimeError("the API server is unavailable")
        return await original(**kw)

    world.kube.write_connection_secret = flaky
    await world.executor.run_pass(NS, NAME)
    assert secret_password(world) == "Initial-Passw0rd-xyz"


async def test_a_crash_between_secret_and_api_applies_the_secret_password_next(world):
    await world.executor.run_pass(NS, NAME)
    await world.executor.run_pass(NS, NAME)
    del world.kube.secrets[f"{NAME}-connection"]  # lost: the operator generates a new password
    world.cloud.fail["PASSWORD"] = ServerError("died mid-way", status=503)
    await world.executor.run_pass(NS, NAME)
    written = secret_password(world)
    assert written != "Initial-Passw0rd-xyz"
    assert world.condition("Ready")["status"] == "False"
    del world.cloud.fail["PASSWORD"]
    await world.executor.run_pass(NS, NAME)
    (sid,) = world.cloud.services
    assert world.cloud.services[sid]["password"] == written == secret_password(world)  # applied, not replaced
    assert world.condition("Ready")["status"] == "True"


async def test_the_resource_starting_to_delete_stops_a_create_before_the_post(world):
    original = world.kube.patch_status

    async def patch(namespace, name, status):
        if "createPendingSince" in status and status["createPendingSince"]:
            world.kube.resource["metadata"]["deletionTimestamp"] = "2026-11-28T00:00:00Z"
        return await original(namespace, name, status)

    world.kube.patch_status = patch
    await world.executor.run_pass(NS, NAME)
    assert "POST" not in world.cloud.calls
    assert "createPendingSince" not in world.status()


async def test_missing_credentials_are_named(world):
    world.kube.credentials = None
    result = await world.executor.run_pass(NS, NAME)
    cond = world.condition("Synced")
    assert cond["reason"] == "TerminalCredentialsError" and "creds" in cond["message"] and "keyId" in cond["message"]
    assert world.cloud.calls == [] and result.error


async def test_an_api_key_secret_being_deleted_is_not_used_to_create(world):
    world.kube.credentials_deleting = True
    result = await world.executor.run_pass(NS, NAME)
    cond = world.condition("Synced")
    assert cond["reason"] == "TerminalCredentialsError" and "being deleted" in cond["message"]
    assert world.cloud.calls == [] and "createPendingSince" not in world.status() and result.error


async def test_an_invalid_stored_spec_is_a_condition(world):
    world.kube.resource["spec"]["size"] = 42
    await world.executor.run_pass(NS, NAME)
    assert world.condition("Synced")["reason"] == "TerminalInvalidSpec" and world.cloud.calls == []


# --- deletion ------------------------------------------------------------------------------


async def ready(world: World) -> str:
    await world.executor.run_pass(NS, NAME)
    await world.executor.run_pass(NS, NAME)
    (sid,) = world.cloud.services
    return sid


async def test_delete_sends_one_delete_then_confirms_gone_by_get(world):
    sid = await ready(world)
    done, _ = await world.executor.finalize(world.deleting())
    assert not done and world.cloud.calls.count("DELETE") == 1
    done, _ = await world.executor.finalize(world.deleting())  # the LIST predates the DELETE: GET instead
    assert not done and world.cloud.calls.count("DELETE") == 1 and world.cloud.calls[-1] == "GET"
    del world.cloud.services[sid]
    done, _ = await world.executor.finalize(world.deleting())
    assert done and world.cloud.calls[-1] == "GET"
    assert "Deleted" in world.reasons()


async def test_delete_never_trusts_a_list_that_does_not_show_the_service(world):
    await ready(world)
    world.executor.snapshots = ServiceSnapshots()  # a new LIST, which no longer shows the service
    world.cloud.services.clear()
    done, _ = await world.executor.finalize(world.deleting())
    assert done and world.cloud.calls[-1] == "GET"  # concluded gone only after the GET's 404


async def test_orphan_touches_nothing_remote(world):
    await ready(world)
    body = world.deleting()
    body["spec"]["deletionPolicy"] = "Orphan"
    calls = len(world.cloud.calls)
    done, _ = await world.executor.finalize(body)
    assert done and world.cloud.calls[calls:] == [] and "Orphaned" in world.reasons()


@pytest.mark.parametrize("created", [True, False])
async def test_credentials_gone_during_deletion(world, created):
    if created:
        await ready(world)
    world.kube.credentials = None
    done, message = await world.executor.finalize(world.deleting())
    assert done is (not created)
    if created:
        assert "DeletionBlocked" in world.reasons() and "deletionPolicy: Orphan" in message
        assert "DELETE" not in world.cloud.calls


async def test_a_wrong_organization_with_nothing_created_does_not_block(world):
    world.cloud.fail["LIST"] = NotFoundError("organization not found", status=404)
    done, _ = await world.executor.finalize(world.deleting())
    assert done


async def test_delete_refused_by_the_api_waits_with_backoff_and_the_way_out(world):
    await ready(world)
    world.cloud.fail["DELETE"] = ConflictError("service has read replicas", status=409)
    first = world.executor.finalize_retry_after(UID)
    done, message = await world.executor.finalize(world.deleting())
    assert not done and "read replicas" in message and "deletionPolicy: Orphan" in message
    assert world.events[-1][1] == "DeletionWaiting"  # a waiting state, not an error
    second = world.executor.finalize_retry_after(UID)
    await world.executor.finalize(world.deleting())
    assert first < second < world.executor.finalize_retry_after(UID)  # backoff


async def test_a_delete_answered_404_is_done(world):
    sid = await ready(world)
    world.executor._last_mutation.clear()
    world.cloud.fail["DELETE"] = NotFoundError("gone", status=404)
    done, _ = await world.executor.finalize(world.deleting())
    assert done and world.cloud.calls[-1] == "DELETE" and sid in world.cloud.services


async def test_no_secret_in_events_or_status(world):
    await ready(world)
    password = secret_password(world)
    assert password not in str(world.events) and password not in str(world.status())
    assert "s3cret" not in str(world.events) + str(world.status())
    assert base64.b64encode(password.encode()).decode() not in str(world.status())


# --- day 2 ------------------------------------------------------------------------------------


async def test_a_paused_resource_sends_nothing_and_says_so(world):
    world.kube.resource["metadata"]["annotations"] = {"clickhouse.cloud/paused": "true"}
    result = await world.executor.run_pass(NS, NAME)
    assert world.cloud.calls == [] and world.condition("Synced")["reason"] == "ReconcilePaused"
    assert "clickhouse.cloud/paused-" in world.condition("Synced")["message"] and not result.active
    done, message = await world.executor.finalize(world.deleting())
    assert not done and "paused" in message and world.cloud.calls == []


@pytest.mark.parametrize(
    "spec, event", [({"deletionProtection": True}, "DeletionProtected"), ({"managementPolicy": "Observe"}, "Orphaned")]
)
async def test_protected_or_observed_services_are_kept(world, spec, event):
    await ready(world)
    body = world.deleting()
    body["spec"].update(spec)
    calls = len(world.cloud.calls)
    done, _ = await world.executor.finalize(body)
    assert done and world.cloud.calls[calls:] == [] and event in world.reasons()


async def test_a_brought_password_goes_to_the_secret_first_then_to_the_api(world):
    await ready(world)
    world.kube.resource["spec"]["passwordSecretRef"] = {"name": "mine", "key": "pw"}
    world.kube.credentials["pw"] = "Br0ught-Passw0rd-xyz"  # FakeKube serves every read from one dict
    await world.executor.run_pass(NS, NAME)
    (sid,) = world.cloud.services
    assert world.cloud.services[sid]["password"] == "Br0ught-Passw0rd-xyz" == secret_password(world)
    log = world.kube.log
    assert log.index("status:passwordVersion") > max(
        i for i, e in enumerate(log[: log.index("status:passwordVersion")]) if e == "secret:write"
    )
    assert world.condition("Ready")["status"] == "True"


async def test_a_rotation_token_is_recorded_only_once_the_password_changed(world):
    await ready(world)
    world.kube.resource["metadata"]["annotations"] = {"clickhouse.cloud/rotate-password": "t1"}
    world.cloud.fail["PASSWORD"] = ServerError("boom", status=503)
    await world.executor.run_pass(NS, NAME)
    assert "passwordRotationToken" not in world.status()
    del world.cloud.fail["PASSWORD"]
    await world.executor.run_pass(NS, NAME)
    (sid,) = world.cloud.services
    assert world.status()["passwordRotationToken"] == "t1"
    assert world.cloud.services[sid]["password"] == secret_password(world) != "Initial-Passw0rd-xyz"
    assert "PasswordRotated" in world.reasons()
    calls = world.cloud.calls.count("PASSWORD")
    await world.executor.run_pass(NS, NAME)
    assert world.cloud.calls.count("PASSWORD") == calls  # once per token


async def test_adopting_a_service_whose_owner_still_exists_is_refused(world):
    sid = str(uuid.uuid4())
    world.cloud.services[sid] = {
        "name": "theirs",
        "size": "r8gd.large",
        "state": "running",
        "password": "x",
        "tags": {TAG_UID: "other-uid", "mpg-operator.namespace": NS, "mpg-operator.name": "other-db"},
    }
    world.kube.resource["spec"]["serviceId"] = sid
    original = world.kube.get_resource

    async def get_resource(namespace, name):
        if name == "other-db":
            return {"metadata": {"name": "other-db", "namespace": NS, "uid": "other-uid"}}
        return await original(namespace, name)

    world.kube.get_resource = get_resource
    await world.executor.run_pass(NS, NAME)
    assert world.condition("Synced")["reason"] == "TerminalServiceOwned"
    assert (
        world.cloud.calls.count("PATCH") == 0
        and "PASSWORD" not in world.cloud.calls
        and "POST" not in world.cloud.calls
    )
