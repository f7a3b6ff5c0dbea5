"""The local control plane (``scripts/control_plane.py``) is a real one: the pinned release, RBAC
enforced on ServiceAccount tokens it issues, and the garbage collector and namespace controller
running (what issue 17's tests of deletion rely on)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes
import pytest
from support import realkube
from support.controlplane import control_plane_script

pytestmark = pytest.mark.realcluster


def _client(kubeconfig: Path, token: str | None = None) -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    if token is not None:  # the same server and CA, authenticated by the token alone
        configuration.cert_file = configuration.key_file = None
        configuration.api_key = {"authorization": f"Bearer {token}"}
    return kubernetes.client.ApiClient(configuration)


def _eventually(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    pytest.fail(f"not within {seconds:.0f} s: {what}")


def _gone(read: Callable[[], object]) -> Callable[[], bool]:
    def check() -> bool:
        try:
            read()
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return True
            raise
        return False

    return check


@pytest.fixture
def core(real_kubeconfig: Path) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(_client(real_kubeconfig))


@pytest.fixture
def namespace(core: kubernetes.client.CoreV1Api) -> Iterator[str]:
    with realkube.fresh_namespace(core.api_client, "cp") as name:
        yield name


def test_the_server_reports_the_pinned_release(real_kubeconfig: Path) -> None:
    if os.environ.get("MPG_TEST_KUBECONFIG"):
        pytest.skip("MPG_TEST_KUBECONFIG names another cluster: its version is its own")
    info = kubernetes.client.VersionApi(_client(real_kubeconfig)).get_code()
    assert info.git_version == control_plane_script().versions()[0]


def test_a_service_account_token_is_authorized_by_rbac_only(
    real_kubeconfig: Path, core: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    token = core.create_namespaced_service_account_token(
        "reader", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    as_reader = kubernetes.client.CoreV1Api(_client(real_kubeconfig, token))
    with pytest.raises(kubernetes.client.ApiException) as refused:
        as_reader.list_namespaced_config_map(namespace)
    assert refused.value.status == 403

    rbac = kubernetes.client.RbacAuthorizationV1Api(_client(real_kubeconfig))
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "read-configmaps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader-reads-configmaps"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )

    def allowed() -> bool:
        try:
            as_reader.list_namespaced_config_map(namespace)
        except kubernetes.client.ApiException as e:
            if e.status == 403:
                return False
            raise
        return True

    _eventually(allowed, 10, "the RoleBinding lets the ServiceAccount list ConfigMaps")
    with pytest.raises(kubernetes.client.ApiException) as still_refused:
        as_reader.list_namespaced_secret(namespace)
    assert still_refused.value.status == 403


def test_the_garbage_collector_deletes_dependents_of_a_deleted_owner(
    core: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_secret(namespace, {"metadata": {"name": "dependent", "ownerReferences": [reference]}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "independent"}})

    core.delete_namespaced_config_map("owner", namespace)

    _eventually(
        _gone(lambda: core.read_namespaced_secret("dependent", namespace)), 60, "the dependent Secret is deleted"
    )
    assert core.read_namespaced_secret("independent", namespace).metadata.name == "independent"


def test_a_deleted_namespace_is_emptied_and_goes(core: kubernetes.client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_secret(namespace, {"metadata": {"name": "api-key"}, "stringData": {"keyId": "k"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "settings"}})

    core.delete_namespace(namespace)

    _eventually(_gone(lambda: core.read_namespace(namespace)), 60, f"namespace {namespace} is deleted")
    assert core.list_namespaced_secret(namespace).items == []
