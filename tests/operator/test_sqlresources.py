"""The PostgresRole pass before any SQL runs: the service it needs missing, not running, a read replica,
or unreachable gives a condition and a requeue (never an exception loop), and no password in what it
writes. A stand-in for the Kubernetes calls; the unreachable case makes a real (refused) connection."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

from mpg_operator.controller.settings import OperatorSettings
from mpg_operator.controller.sqlresources import SqlReconciler
from mpg_operator.reconcile.connection import ANN_PASSWORD_DIGEST, ANN_PASSWORD_VERSION, ObservedSecret, password_digest

SERVICE_ID = str(uuid.uuid4())
ADMIN_PASSWORD = "Admin-Pass-Secret-42"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeKube:
    def __init__(self, mpg: dict | None, port: int) -> None:
        self.mpg = mpg
        self.port = port
        self.role = {
            "apiVersion": "clickhouse.cloud/v1alpha1",
            "kind": "PostgresRole",
            "metadata": {"name": "app", "namespace": "shop", "uid": str(uuid.uuid4()), "generation": 1},
            "spec": {"serviceRef": {"name": "orders-db"}, "roleName": "app"},
        }
        self.status_patches: list[dict] = []

    async def get_object(self, plural, namespace, name):
        return dict(self.role)

    async def get_resource(self, namespace, name):
        return self.mpg

    async def observe_connection_secret(self, namespace, name):
        if name != "orders-db-connection":
            return None
        data = {"host": "127.0.0.1", "port": str(self.port), "username": "postgres", "password": ADMIN_PASSWORD,
                "ca.crt": "-----BEGIN CERTIFICATE-----\nnot used\n-----END CERTIFICATE-----\n"}  # fmt: skip
        annotations = {ANN_PASSWORD_DIGEST: password_digest(SERVICE_ID, ADMIN_PASSWORD), ANN_PASSWORD_VERSION: "v1"}
        return ObservedSecret(data=data, annotations=annotations)

    async def patch_object_status(self, plural, namespace, name, status):
        self.status_patches.append(status)
        self.role["status"] = {**(self.role.get("status") or {}), **status}
        return self.role


def mpg(**status) -> dict:
    base = {"serviceId": SERVICE_ID, "state": "running", "connectionSecretName": "orders-db-connection",
            "passwordVersion": "v1"}  # fmt: skip
    return {"metadata": {"name": "orders-db", "namespace": "shop"}, "spec": {}, "status": {**base, **status}}


@pytest.mark.parametrize(
    ("service", "reason", "short_requeue"),
    [
        (None, "ServiceNotFound", True),
        (mpg(state="creating"), "WaitingForService", True),
        (mpg(passwordVersion="v2"), "WaitingForService", True),  # the service's password not confirmed
        ({**mpg(), "spec": {"readReplicaOf": {"name": "p"}}}, "TerminalReadReplica", False),
        (mpg(), "ServiceUnreachable", True),  # nothing listens on the port: a real refused connection
    ],
)
def test_the_pass_waits_with_a_condition(service, reason, short_requeue):
    kube = FakeKube(service, free_port())
    events: list[tuple] = []
    settings = OperatorSettings(poll_interval=300.0, poll_interval_active=1.0)
    sql = SqlReconciler(kube, settings, lambda body, type_, reason_, message: events.append((type_, reason_, message)))
    result = asyncio.run(sql.role_pass("shop", "app"))
    (patch,) = kube.status_patches
    ready = {c["type"]: c for c in patch["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert (result.requeue_after < 30) is short_requeue and not result.ready
    assert events == [("Warning", reason, ready["message"])]  # once: the next pass with the same reason posts none
    asyncio.run(sql.role_pass("shop", "app"))
    assert len(events) == 1
    assert ADMIN_PASSWORD not in str(kube.status_patches) + str(events)
