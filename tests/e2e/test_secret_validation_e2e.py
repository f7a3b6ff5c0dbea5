"""What Kubernetes refuses is found out before anything is created (issue 7, defect 8).

The CRD now refuses invalid Secret names and over-long names; the operator does not rely on it
(an older CRD may still be installed): it claims the connection Secret before the create, so a
name Kubernetes refuses gives a condition and an event, and no service whose password would be
lost. This module runs against a CRD stripped of those rules.
"""

from __future__ import annotations

import copy
import threading

import pytest
from support import e2e

from mpg_operator import crd as crd_module
from mpg_operator.sandbox import Sandbox

pytestmark = [pytest.mark.e2e]

NS = "lenient"


def lenient_crd() -> dict:
    """The CRD without name patterns and CEL rules (as an older release had it)."""
    crd = copy.deepcopy(crd_module.crd())

    def strip(node):
        if isinstance(node, dict):
            node.pop("x-kubernetes-validations", None)
            node.pop("pattern", None)
            for value in node.values():
                strip(value)
        elif isinstance(node, list):
            for value in node:
                strip(value)

    strip(crd["spec"]["versions"])
    return crd


@pytest.fixture(scope="module")
def sb():
    options = {"create_seconds": 0.05, "delete_seconds": 0.1, "rate_limit": None, "real_postgres": False}
    with Sandbox(simulator_options=options, namespaces=(NS,), crds=[lenient_crd()]) as sandbox:
        posts: list[bytes] = []
        lock = threading.Lock()

        def record(exchange):
            if exchange.method == "POST" and exchange.path.endswith("/postgres"):
                with lock:
                    posts.append(exchange.request_body)

        sandbox.simulator.add_observer(record)
        sandbox.posts = posts
        yield sandbox


def manifest(name: str, **spec) -> dict:
    return e2e.manifest(name, NS, **spec)


def test_a_secret_name_kubernetes_refuses_creates_nothing(sb):
    obj = sb.apply(manifest("badname-db", connectionSecret={"name": "Bad_Name"}))
    cond = sb.wait_for(
        lambda: (c := sb.condition("badname-db", "Synced", NS)) and c.get("reason") == "TerminalInvalidSpec" and c,
        timeout=30,
        what="condition",
    )
    assert "Bad_Name" in cond["message"] and "nothing was created" in cond["message"]
    assert not sb.is_ready("badname-db", NS)
    events = [e for e in sb.kube.list("v1", "Event", NS) if e["involvedObject"]["name"] == "badname-db"]
    assert "InvalidSpec" in {e["reason"] for e in events}
    assert not [p for p in sb.posts if obj["metadata"]["uid"].encode() in p]
    import time

    def secret_creates() -> int:
        return len([c for c in sb.kube.calls if c.resource == "secrets" and c.verb == "create"])

    before = secret_creates()
    time.sleep(2)  # many active intervals (0.5 s): the refused claim is not retried for this generation
    assert secret_creates() == before
    sb.delete("badname-db", NS)
    sb.wait_for(lambda: sb.get("badname-db", NS) is None, timeout=30, what="deleted")


def test_a_name_longer_than_a_label_value_still_gets_its_secret(sb):
    name = "a-very-long-resource-name-that-is-longer-than-sixty-three-characters-x"
    assert len(name) > 63
    sb.apply(manifest(name, serviceName="long-name-db", connectionSecret={"name": "long-name-connection"}))
    sb.wait_for(lambda: sb.is_ready(name, NS), timeout=30, what="Ready")
    secret = sb.kube.get("v1", "Secret", "long-name-connection", NS)
    label = secret["metadata"]["labels"]["mpg-operator.clickhouse.cloud/managedpostgres"]
    assert len(label) <= 63 and name.startswith(label[:40])
