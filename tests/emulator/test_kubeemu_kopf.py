"""The key proof: a real kopf operator runs against the emulator through a kubeconfig."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pytest
from kopf.testing import KopfRunner
from kubeemu_testlib import GROUP, KIND, PLURAL, VERSION, widget

from kubeemu import KubeEmulator

API_VERSION = f"{GROUP}/{VERSION}"


@pytest.fixture(autouse=True)
def _restore_default_registry():
    """kopf's CLI (KopfRunner) replaces the process-wide default registry for good; put it back, or a
    later in-process operator (the Sandbox) whose handlers were imported earlier would run with none."""
    saved = kopf.get_default_registry()
    yield
    kopf.set_default_registry(saved)


def make_registry(kubeconfig: Path, ticks: list[str]) -> kopf.OperatorRegistry:
    """A tiny operator: create (status + owned Secret), update, timer, delete with a finalizer."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.server_timeout = 10
        settings.posting.level = logging.INFO
        settings.persistence.finalizer = "example.com/widget-operator"

    @kopf.on.create(GROUP, VERSION, PLURAL, id="created", registry=registry)
    def created(body: kopf.Body, name: str, namespace: str, spec: kopf.Spec, **_: Any) -> dict[str, Any]:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-credentials"},
            "stringData": {"region": spec["region"]},
        }
        kopf.adopt(secret, owner=body)
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        with client:
            kubernetes.client.CoreV1Api(client).create_namespaced_secret(namespace, secret)
        kopf.info(body, reason="Provisioned", message="credentials created")
        return {"phase": "Ready", "tier": spec.get("tier")}

    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec.tier", id="tier", registry=registry)
    def tier_changed(new: Any, patch: kopf.Patch, **_: Any) -> None:
        patch.status["tier"] = new

    @kopf.timer(GROUP, VERSION, PLURAL, interval=0.3, id="tick", registry=registry)
    def tick(name: str, **_: Any) -> None:
        ticks.append(name)

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="deleted", registry=registry)
    def deleted(name: str, **_: Any) -> None:
        ticks.append(f"deleted:{name}")

    return registry


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "scope",
    [
        ["--standalone", "--namespace=default"],
        ["--all-namespaces"],  # cluster-wide watches, and kopf's own peering discovery (absent: standalone)
    ],
    ids=["namespaced-standalone", "clusterwide-peering-check"],
)
def test_kopf_operator_lifecycle(
    emu: KubeEmulator, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch, scope: list[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    ticks: list[str] = []
    registry = make_registry(kubeconfig, ticks)
    args = ["run", *scope, "--verbose"]
    with KopfRunner(args, registry=registry, timeout=30) as runner:
        emu.apply(widget("w1", tier="small"))

        def status(key: str) -> Any:
            obj = emu.get(API_VERSION, KIND, "w1") or {}
            return (obj.get("status") or {}).get(key)

        # Created: the handler's result lands in status, the finalizer is there, the Secret is owned.
        emu.wait_for(lambda: (status("created") or {}).get("phase") == "Ready", timeout=20)
        obj = emu.get(API_VERSION, KIND, "w1")
        assert obj is not None
        assert "example.com/widget-operator" in obj["metadata"]["finalizers"]
        secret = emu.get("v1", "Secret", "w1-credentials")
        assert secret is not None and base64.b64decode(secret["data"]["region"]) == b"eu-west-1"
        assert secret["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
        emu.wait_for(lambda: any(e["reason"] == "Provisioned" for e in emu.list("v1", "Event", "default")))

        # Updated: the field handler sees the new value.
        emu.apply(widget("w1", tier="large"))
        emu.wait_for(lambda: status("tier") == "large", timeout=20)

        # The timer runs repeatedly.
        emu.wait_for(lambda: ticks.count("w1") >= 2, timeout=20)

        # Deleted: the delete handler runs, kopf removes its finalizer, the object and its Secret go.
        assert emu.delete(API_VERSION, KIND, "w1")
        emu.wait_for(lambda: emu.get(API_VERSION, KIND, "w1") is None, timeout=20)
        assert "deleted:w1" in ticks
        emu.wait_for(lambda: emu.get("v1", "Secret", "w1-credentials") is None, timeout=5)

    assert runner.exception is None
    assert runner.exit_code == 0
    # kopf only used what an operator's RBAC would grant; it saw no server-side failure.
    verbs = {(c.verb, c.resource, c.subresource) for c in emu.calls}
    assert ("patch", PLURAL, None) in verbs and ("patch", PLURAL, "status") in verbs
    assert ("watch", PLURAL, None) in verbs and ("create", "events", None) in verbs
    assert emu.server_errors == []


@pytest.mark.timeout(60)
def test_kopf_serves_a_namespace_created_after_start(
    emu: KubeEmulator, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    registry = make_registry(kubeconfig, [])
    with KopfRunner(["run", "--standalone", "--namespace=late"], registry=registry, timeout=30) as runner:
        emu.wait_for(lambda: any(c.resource == "namespaces" and c.verb == "watch" for c in emu.calls))
        emu.create_namespace("late")
        emu.apply(widget("w1", namespace="late"))
        emu.wait_for(
            lambda: ((emu.get(API_VERSION, KIND, "w1", "late") or {}).get("status") or {}).get("created"), timeout=20
        )
        assert emu.get("v1", "Secret", "w1-credentials", "late") is not None
    assert runner.exception is None
