"""Real helm 4.1 (default flags: server-side apply) installing, upgrading and uninstalling the chart.

Against the real kube-apiserver (``real_kubeconfig``; the kube-controller-manager runs, so the
Deployment gets its ReplicaSet, but no scheduler) and against a bare emulator (the chart brings its
own CRDs), each with the Prometheus Operator's ServiceMonitor CRD applied first by kubectl, as on a
cluster that runs it. The same assertions hold on both (``cluster`` is parametrized).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from clients_support import Client, make_client, table
from support import realkube

from kubeemu import KubeEmulator

CHART = "deploy/helm/mpg-operator"
RELEASE, RELEASE_NS = "mpg-operator", "mpg-system"
BASE = [
    "--namespace",
    RELEASE_NS,
    "--set",
    "image.repository=registry.example.com/mpg-operator",
    "--set",
    "credentials.existingSecret=clickhouse-cloud-api",
    "--set",
    "metrics.serviceMonitor.enabled=true",
]

SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "ServiceMonitor",
            "listKind": "ServiceMonitorList",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
            "shortNames": ["smon"],
            "categories": ["prometheus-operator"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    }
                },
            }
        ],
    },
}


HELM_OBJECTS = "app.kubernetes.io/managed-by=Helm"


class Cluster:
    """Where the chart goes: ``get``/``list`` of what is stored, the kubeconfig, and a namespace name
    the upgrade watches (fresh on the shared real server)."""

    def __init__(self, reader: Any, kubeconfig: Path, shop: str) -> None:
        self.reader, self.kubeconfig, self.shop = reader, kubeconfig, shop

    def get(self, *args: Any) -> dict | None:
        return self.reader.get(*args)

    def list(self, *args: Any, **kwargs: Any) -> list[dict]:
        return self.reader.list(*args, **kwargs)


@pytest.fixture(scope="module", params=["emulator", "real"])
def emu(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if request.param == "emulator":
        with KubeEmulator(namespaces=["default"]) as emulator:
            path = emulator.write_kubeconfig(tmp_path_factory.mktemp("helm") / "kubeconfig")
            yield Cluster(emulator, path, "shop")
            assert emulator.server_errors == []
        return
    kubeconfig = request.getfixturevalue("real_kubeconfig")
    api = realkube.client(kubeconfig)
    shop = f"shop-{uuid.uuid4().hex[:6]}"
    yield Cluster(realkube.Reader(api), kubeconfig, shop)
    # The session's control plane outlives the module: leave nothing of it behind (the CRDs stay, as
    # uninstall leaves them; the ServiceMonitor CRD was this module's own).
    core = kubernetes.client.CoreV1Api(api)
    for namespace in (RELEASE_NS, shop):
        with contextlib.suppress(kubernetes.client.ApiException):
            core.delete_namespace(namespace)
    with contextlib.suppress(kubernetes.client.ApiException):
        kubernetes.client.ApiextensionsV1Api(api).delete_custom_resource_definition(
            SERVICE_MONITOR_CRD["metadata"]["name"]
        )


@pytest.fixture(scope="module")
def kubeconfig(emu: Cluster) -> Path:
    return emu.kubeconfig


@pytest.fixture(scope="module")
def kubectl(kubeconfig: Path, client_tools: dict[str, Path]) -> Client:
    return make_client(client_tools["kubectl"], kubeconfig)


@pytest.fixture(scope="module")
def helm(kubeconfig: Path, client_tools: dict[str, Path]) -> Client:
    return make_client(client_tools["helm"], kubeconfig)


def release_secrets(emu: Cluster) -> dict[int, dict]:
    """Helm's release records (Secrets ``sh.helm.release.v1.<release>.v<N>``), by revision, decoded."""
    out = {}
    for secret in emu.list("v1", "Secret", RELEASE_NS, label_selector=f"owner=helm,name={RELEASE}"):
        blob = base64.b64decode(base64.b64decode(secret["data"]["release"]))
        release = json.loads(gzip.decompress(blob))
        out[int(secret["metadata"]["labels"]["version"])] = {"labels": secret["metadata"]["labels"], "release": release}
    return out


def test_kubectl_applies_a_crd_that_registers_its_api(emu: Cluster, kubectl: Client) -> None:
    kubectl("apply", "-f", "-", input=json.dumps(SERVICE_MONITOR_CRD))
    assert "No resources found" in kubectl.run("get", "servicemonitors", "-A").stderr
    assert "monitoring.coreos.com/v1" in kubectl("api-versions")
    # Its OpenAPI: served at once by the emulator, within moments by the real server (published async).
    deadline = time.monotonic() + 30
    while kubectl.run("explain", "servicemonitors", check=False).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "KIND:       ServiceMonitor" in kubectl("explain", "servicemonitors")


def test_install_dry_run_server_creates_nothing(emu: Cluster, helm: Client) -> None:
    out = helm("install", RELEASE, CHART, *BASE, "--create-namespace", "--dry-run=server")
    assert "kind: Deployment" in out
    assert emu.get("apps/v1", "Deployment", RELEASE, RELEASE_NS) is None
    assert not emu.list("rbac.authorization.k8s.io/v1", "ClusterRole", label_selector=HELM_OBJECTS)
    assert emu.get("v1", "Namespace", RELEASE_NS) is None  # --create-namespace: not even the namespace
    assert release_secrets(emu) == {}


def test_install_creates_every_object_and_records_the_release(emu: Cluster, helm: Client, kubectl: Client) -> None:
    out = helm("install", RELEASE, CHART, *BASE, "--create-namespace")
    assert "STATUS: deployed" in out
    crds = {c["metadata"]["name"] for c in emu.list("apiextensions.k8s.io/v1", "CustomResourceDefinition")}
    assert {"managedpostgreses.clickhouse.cloud", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"} <= crds
    assert "No resources found" in kubectl.run("get", "managedpostgres", "-A").stderr  # the CRD's API is served
    rendered = [d for d in yaml.safe_load_all(helm("get", "manifest", RELEASE, "-n", RELEASE_NS)) if d]
    assert {d["kind"] for d in rendered} >= {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceMonitor",
    }
    for doc in rendered:
        stored = emu.get(doc["apiVersion"], doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace"))
        assert stored is not None, (doc["kind"], doc["metadata"]["name"])
        assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        managers = {(e["manager"], e["operation"]) for e in stored["metadata"]["managedFields"]}
        assert ("helm", "Apply") in managers  # Helm 4 applies server-side
    deployment = emu.get("apps/v1", "Deployment", RELEASE, RELEASE_NS)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("registry.example.com/mpg-operator:")
    records = release_secrets(emu)
    assert list(records) == [1]
    assert records[1]["labels"]["status"] == "deployed"
    assert records[1]["release"]["name"] == RELEASE
    listed = json.loads(helm("list", "-n", RELEASE_NS, "-o", "json"))
    assert [(r["name"], r["status"], r["revision"]) for r in listed] == [(RELEASE, "deployed", "1")]
    deploy_rows = table(kubectl("get", "deployments", "-n", RELEASE_NS))
    assert deploy_rows[0]["NAME"] == RELEASE and deploy_rows[0]["READY"] == "0/1"


def test_upgrade_changes_objects_and_prunes_the_rest(emu: Cluster, helm: Client, kubectl: Client) -> None:
    shop = emu.shop
    kubectl("create", "namespace", shop)
    helm("upgrade", RELEASE, CHART, *BASE, "--set", "image.tag=9.9.9", "--set", f"watchNamespaces={{{shop}}}")
    deployment = emu.get("apps/v1", "Deployment", RELEASE, RELEASE_NS)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/mpg-operator:9.9.9"
    assert deployment["metadata"]["generation"] == 2
    # Namespace-scoped RBAC now: a Role and RoleBinding in shop, the cluster-wide role replaced.
    assert emu.get("rbac.authorization.k8s.io/v1", "Role", RELEASE, shop) is not None
    assert emu.get("rbac.authorization.k8s.io/v1", "RoleBinding", RELEASE, shop)["roleRef"]["name"] == RELEASE
    assert emu.get("rbac.authorization.k8s.io/v1", "ClusterRole", RELEASE) is None
    assert emu.get("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", RELEASE) is None
    assert emu.get("rbac.authorization.k8s.io/v1", "ClusterRole", f"{RELEASE}-cluster") is not None
    records = release_secrets(emu)
    assert {rev: r["labels"]["status"] for rev, r in records.items()} == {1: "superseded", 2: "deployed"}
    bindings = table(kubectl("get", "rolebindings", "-n", shop))
    assert bindings[0]["ROLE"] == f"Role/{RELEASE}"


def test_uninstall_removes_the_release_and_keeps_the_crds(emu: Cluster, helm: Client, kubectl: Client) -> None:
    assert "uninstalled" in helm("uninstall", RELEASE, "-n", RELEASE_NS)
    assert emu.get("apps/v1", "Deployment", RELEASE, RELEASE_NS) is None
    assert emu.get("v1", "Service", f"{RELEASE}-metrics", RELEASE_NS) is None
    assert emu.get("v1", "ServiceAccount", RELEASE, RELEASE_NS) is None
    assert emu.get("rbac.authorization.k8s.io/v1", "Role", RELEASE, emu.shop) is None
    assert emu.list("rbac.authorization.k8s.io/v1", "ClusterRole", label_selector=HELM_OBJECTS) == []
    assert emu.list("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", label_selector=HELM_OBJECTS) == []
    assert emu.list("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", label_selector=HELM_OBJECTS) == []
    assert emu.list("monitoring.coreos.com/v1", "ServiceMonitor") == []
    assert release_secrets(emu) == {}
    crds = {c["metadata"]["name"] for c in emu.list("apiextensions.k8s.io/v1", "CustomResourceDefinition")}
    assert "managedpostgreses.clickhouse.cloud" in crds  # as docs/install.md says: CRDs stay
    assert "No resources found" in kubectl.run("get", "managedpostgres", "-A").stderr
    assert "Error: release: not found" in helm.run("status", RELEASE, "-n", RELEASE_NS, check=False).stderr
