"""Regression tests of issue 7's defects, end to end with the windows made wide on purpose:
the API is fast (a create is listed 0.05 s after the POST), so timing cannot hide a race.

The real operator (kopf) runs against the Kubernetes emulator and the simulator (services
without PostgreSQL servers; the password checks with real connections are in
test_operator_e2e.py). Every mutating API request is attributed to a resource by the owner tag
it carries or the service it names, so "nothing was sent" is checked, not assumed.
"""

from __future__ import annotations

import itertools
import time

import pytest
from support import e2e
from support.e2e import MutationLog

from mpg_operator.reconcile.desired import TAG_UID
from mpg_operator.sandbox import Sandbox

pytestmark = [pytest.mark.e2e]

NS = "promises"


@pytest.fixture(scope="module")
def sb(real_kubeconfig):
    options = {
        "create_seconds": 0.05,
        "resize_seconds": 0.2,
        "delete_seconds": 0.3,
        "rate_limit": None,
        "real_postgres": False,
    }
    with Sandbox(simulator_options=options, namespaces=(NS,), kube=e2e.on_real_server(real_kubeconfig)) as sandbox:
        sandbox.mutations = MutationLog()
        sandbox.simulator.add_observer(sandbox.mutations)
        yield sandbox
        assert sandbox.kube.server_errors == []


def manifest(name: str, **spec) -> dict:
    return e2e.manifest(name, NS, **spec)


def tagged(sb: Sandbox, uid: str) -> list:
    """The simulator's services carrying this owner uid (including ones being deleted)."""
    return [s for s in sb.remote_services() if {t["key"]: t.get("value") for t in s.tags or []}.get(TAG_UID) == uid]


def gone_or_deleting(sb: Sandbox, service_id: str) -> bool:
    return service_id not in sb.simulator.services or sb.simulator.state_of(service_id) in ("deleting", "deleted")


def condition(sb: Sandbox, name: str, type_: str) -> dict:
    return sb.condition(name, type_, NS) or {}


def events(sb: Sandbox, name: str) -> list[dict]:
    return [e for e in sb.kube.list("v1", "Event", NS) if (e.get("involvedObject") or {}).get("name") == name]


def wait_gone(sb: Sandbox, name: str, timeout: float = 30) -> None:
    sb.wait_for(lambda: sb.get(name, NS) is None, timeout=timeout, interval=0.05, what=f"{name} deleted")


# --- defect 1 (and 9: DELETE sent twice) ------------------------------------------------------


QUICK_ROUND = itertools.count()


@pytest.mark.parametrize("moment", ["at once", "create announced", "service recorded", "state recorded"] * 2)
def test_delete_right_after_create_never_orphans(sb, moment):
    name = f"quick-{moment.replace(' ', '-')}-{next(QUICK_ROUND)}"  # a new name each round: no predecessor's Secret
    obj = sb.apply(manifest(name))
    uid = obj["metadata"]["uid"]
    status_key = {
        "create announced": "createPendingSince",
        "service recorded": "serviceId",
        "state recorded": "state",
    }.get(moment)
    if status_key:  # watched: the moment may last milliseconds
        sb.kube.wait_for_change(obj, lambda version: (version.get("status") or {}).get(status_key), timeout=30)
    sb.delete(name, NS)
    wait_gone(sb, name)
    created = sb.mutations.created.get(uid, [])
    assert sb.mutations.creates.get(uid, 0) == len(created) <= 1
    # Whatever was created is deleted (being deleted or gone), never left running.
    sb.wait_for(
        lambda: all(gone_or_deleting(sb, sid) for sid in created), timeout=10, what="every created service deleted"
    )
    for service_id in created:
        assert sb.mutations.by_service[service_id].count("DELETE") == 1, "DELETE was sent more than once"


def test_a_resource_applied_again_waits_for_its_predecessors_secret_to_be_collected(sb):
    """The real garbage collector deletes a deleted resource's Secret some time after the resource
    (seconds; ~40 s when the Secret was written after its owner had gone). A resource applied again
    under the same name meanwhile finds that Secret: it waits, creating and writing nothing, and is not
    told of a conflict; once the Secret is collected it gets its own, with its new service's password. The predecessor's
    Secret is held here by a finalizer of the test, so the wait is certain."""
    name, secret = "again-db", "again-db-connection"
    first = sb.apply(manifest(name))
    sb.wait_for(lambda: sb.is_ready(name, NS), timeout=60, what="first Ready")
    held = sb.kube.get("v1", "Secret", secret, NS)
    sb.kube.apply({**held, "metadata": {**held["metadata"], "finalizers": ["example.com/hold"]}})
    sb.delete(name, NS)
    wait_gone(sb, name)
    again = sb.apply(manifest(name))
    uid = again["metadata"]["uid"]
    assert uid != first["metadata"]["uid"]
    waiting = sb.wait_for(
        lambda: (c := condition(sb, name, "Ready")).get("reason") == "PublishingCredentials" and c,
        timeout=30,
        what="waiting for the predecessor's Secret",
    )
    assert "garbage-collect" in waiting["message"] and first["metadata"]["uid"] in waiting["message"]
    time.sleep(1.5)  # several passes (0.5 s apart) while the Secret is held
    assert sb.mutations.creates.get(uid, 0) == 0
    assert condition(sb, name, "Synced").get("reason") != "TerminalSecretConflict"
    assert sb.kube.get("v1", "Secret", secret, NS)["metadata"]["ownerReferences"][0]["uid"] == first["metadata"]["uid"]
    sb.kube.apply({**held, "metadata": {**held["metadata"], "finalizers": []}})
    sb.wait_for(lambda: sb.is_ready(name, NS), timeout=90, what="Ready again")
    published = sb.kube.get("v1", "Secret", secret, NS)
    assert published["metadata"]["ownerReferences"][0]["uid"] == uid
    (service_id,) = [x.id for x in tagged(sb, uid)]
    data = sb.secret(secret, NS)
    assert data["host"] == sb.simulator.services[service_id].hostname
    e2e.assert_same_secret(data["password"], sb.simulator.services[service_id].password, "the new Secret")
    sb.delete(name, NS)
    wait_gone(sb, name, timeout=60)


# --- defects 2 and 3: Secrets the operator does not own --------------------------------------


def test_an_existing_unrelated_secret_is_never_overwritten(sb):
    sb.kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "app-config", "namespace": NS},
            "stringData": {"password": "the-app-password", "host": "db.internal"},
        }
    )
    before = sb.kube.get("v1", "Secret", "app-config", NS)
    obj = sb.apply(manifest("taken-db", connectionSecret={"name": "app-config"}))
    cond = sb.wait_for(
        lambda: (c := condition(sb, "taken-db", "Synced")).get("reason") == "TerminalSecretConflict" and c,
        timeout=30,
        what="conflict condition",
    )
    assert "app-config" in cond["message"] and "hand-over-to=taken-db" in cond["message"]
    assert condition(sb, "taken-db", "Ready")["status"] == "False"
    sb.wait_for(lambda: "SecretConflict" in {e["reason"] for e in events(sb, "taken-db")}, timeout=10, what="event")
    after = sb.kube.get("v1", "Secret", "app-config", NS)
    assert after["data"] == before["data"] and after["metadata"].get("annotations") == before["metadata"].get(
        "annotations"
    )
    assert not after["metadata"].get("ownerReferences")
    assert sb.mutations.creates.get(obj["metadata"]["uid"], 0) == 0, (
        "a service was created although its Secret is taken"
    )

    # Handing the Secret over explicitly lets the operator take it.
    after["metadata"].setdefault("annotations", {})["mpg-operator.clickhouse.cloud/hand-over-to"] = "taken-db"
    sb.kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "app-config", "namespace": NS, "annotations": after["metadata"]["annotations"]},
        }
    )
    sb.apply(manifest("taken-db", connectionSecret={"name": "app-config"}, tags={"wake": "up"}))
    sb.wait_for(lambda: sb.is_ready("taken-db", NS), timeout=30, what="Ready after hand-over")
    owned = sb.kube.get("v1", "Secret", "app-config", NS)
    assert [r["uid"] for r in owned["metadata"]["ownerReferences"]] == [obj["metadata"]["uid"]]
    assert "mpg-operator.clickhouse.cloud/hand-over-to" not in owned["metadata"].get("annotations", {})


def test_an_api_key_secret_is_never_used_as_connection_secret(sb):
    """The CRD refuses connectionSecret == credentialsRef; here the key Secret is another resource's."""
    sb.put_credentials(NS, name="team-key")
    before = sb.kube.get("v1", "Secret", "clickhouse-cloud", NS)
    obj = sb.apply(
        manifest("keyclash-db", credentialsRef={"name": "team-key"}, connectionSecret={"name": "clickhouse-cloud"})
    )
    sb.wait_for(
        lambda: condition(sb, "keyclash-db", "Synced").get("reason") == "TerminalSecretConflict",
        timeout=30,
        what="conflict condition",
    )
    after = sb.kube.get("v1", "Secret", "clickhouse-cloud", NS)
    assert after["data"] == before["data"]
    assert sb.mutations.creates.get(obj["metadata"]["uid"], 0) == 0


def test_two_resources_never_share_one_connection_secret(sb):
    first = sb.apply(manifest("share-a", connectionSecret={"name": "shared-connection"}))
    sb.wait_for(lambda: sb.is_ready("share-a", NS), timeout=30, what="first Ready")
    second = sb.apply(manifest("share-b", connectionSecret={"name": "shared-connection"}))
    sb.wait_for(
        lambda: condition(sb, "share-b", "Synced").get("reason") == "TerminalSecretConflict",
        timeout=30,
        what="second refused",
    )
    service_a = sb.get("share-a", NS)["status"]["serviceId"]
    password_sets = sb.mutations.by_service[service_a].count("PATCH /password")
    sb.wait_for(lambda: sb.get("share-b", NS)["status"].get("conditions"), timeout=5)
    import time

    time.sleep(2)  # several passes of both (0.5 s active interval): nobody resets the first's password
    assert sb.mutations.by_service[service_a].count("PATCH /password") == password_sets
    assert sb.is_ready("share-a", NS) and not sb.is_ready("share-b", NS)
    raw = sb.kube.get("v1", "Secret", "shared-connection", NS)
    assert raw["metadata"]["annotations"]["mpg-operator.clickhouse.cloud/service-id"] == service_a
    assert [r["uid"] for r in raw["metadata"]["ownerReferences"]] == [first["metadata"]["uid"]]
    assert sb.mutations.creates.get(second["metadata"]["uid"], 0) == 0


# --- defect 4: credentials switched to another organization ----------------------------------


def test_switching_to_another_organizations_key_never_recreates(sb):
    key_id, key_secret, other_org = sb.simulator.add_key()  # a key of a new organization
    sb.put_credentials(NS, name="other-org", keyId=key_id, keySecret=key_secret, organizationId=other_org)
    obj = sb.apply(manifest("moving-db"))
    uid = obj["metadata"]["uid"]
    sb.wait_for(lambda: sb.is_ready("moving-db", NS), timeout=30, what="Ready")
    service_id = sb.get("moving-db", NS)["status"]["serviceId"]

    sb.apply(manifest("moving-db", credentialsRef={"name": "other-org"}))
    cond = sb.wait_for(
        lambda: (c := condition(sb, "moving-db", "Synced")).get("reason") == "TerminalOrganizationChanged" and c,
        timeout=30,
        what="organization condition",
    )
    assert other_org in cond["message"] and service_id in cond["message"]
    assert sb.mutations.creates[uid] == 1
    assert sb.simulator.state_of(service_id) == "running"

    # Deleting now cannot reach the service: blocked, with the way out, and the service stays.
    sb.delete("moving-db", NS)
    sb.wait_for(
        lambda: "DeletionBlocked" in {e["reason"] for e in events(sb, "moving-db")}, timeout=30, what="DeletionBlocked"
    )
    blocked = next(e for e in events(sb, "moving-db") if e["reason"] == "DeletionBlocked")
    assert "deletionPolicy" in blocked["message"] and other_org in blocked["message"]
    assert sb.get("moving-db", NS) is not None and sb.simulator.state_of(service_id) == "running"

    # Pointing back at the service's organization lets the deletion finish: the service is deleted.
    sb.apply(manifest("moving-db"))
    wait_gone(sb, "moving-db")
    assert gone_or_deleting(sb, service_id)
    assert sb.mutations.creates[uid] == 1


# --- defect 7: nothing created, wrong organization ---------------------------------------


def test_a_wrong_organization_with_nothing_created_does_not_block_deletion(sb):
    sb.put_credentials(NS, name="wrong-org", organizationId="00000000-0000-0000-0000-000000000000")
    obj = sb.apply(manifest("wrongorg-db", credentialsRef={"name": "wrong-org"}))
    sb.wait_for(
        lambda: condition(sb, "wrongorg-db", "Synced").get("reason") == "TerminalCredentialsError",
        timeout=30,
        what="credentials condition",
    )
    sb.delete("wrongorg-db", NS)
    wait_gone(sb, "wrongorg-db", timeout=15)
    assert sb.mutations.creates.get(obj["metadata"]["uid"], 0) == 0


# --- defect 9: creates answered 500 are retried with backoff, not every grace period -------


def test_creates_that_fail_are_retried_with_backoff(sb):
    sb.simulator.faults.force(500, count=1000, method="POST", path=r"/postgres$")
    try:
        obj = sb.apply(manifest("flaky-create-db"))
        uid = obj["metadata"]["uid"]
        sb.wait_for(lambda: sb.mutations.creates.get(uid, 0) >= 2, timeout=30, what="a second create")
        import time

        # Grace is 3 s in the sandbox: without backoff, 12 s would hold 4-5 POSTs; with it (3, 6, 12 s) at most 3.
        time.sleep(12)
        attempts = sb.mutations.creates[uid]
        assert attempts <= 3, f"{attempts} creates in 12 s: no backoff"
        assert (sb.get("flaky-create-db", NS)["status"].get("createAttempts") or 0) >= 2
    finally:
        sb.simulator.faults.reset()
    sb.wait_for(lambda: sb.is_ready("flaky-create-db", NS), timeout=60, what="Ready once creates succeed")
    assert len(tagged(sb, uid)) == 1


# --- steady state costs no Kubernetes write ----------------------------------------------------


def test_steady_state_writes_nothing_to_kubernetes(sb):
    sb.apply(manifest("quiet-db"))
    sb.wait_for(lambda: sb.is_ready("quiet-db", NS), timeout=30, what="Ready")
    import time

    time.sleep(1.5)  # let the last writes of the create land
    mutating = ("create", "update", "patch", "delete")
    before = len(sb.kube.calls)
    time.sleep(3)  # passes of every resource in the module keep running meanwhile
    writes = [c for c in list(sb.kube.calls)[before:] if c.verb in mutating and c.name == "quiet-db"]
    assert writes == []
