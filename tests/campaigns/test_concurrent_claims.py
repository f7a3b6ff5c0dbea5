"""Concurrent claims (issue 16, class 2): whatever two or more resources can race for goes to exactly
one of them, and the others touch nothing. Its own sandbox with windows made wide on purpose: services
created in 0.3 s with real PostgreSQL behind them, no rate limit (every request lands as soon as it is
sent), and, in every other round, each PATCH of the claimed service held 1.2 s before the API applies
it. Three cases:

* ``service``: a service created elsewhere (the console), then claimed at once by several resources
  with ``spec.serviceId`` (one of them in upper case) and, in odd rounds, by a resource named as the
  service's previous owner (its tags name a resource that is gone: re-attach), applied a seeded
  0-0.6 s apart. Exactly one resource ends with the service (status, owner tag, Ready, a Secret that
  connects); every other ``spec.serviceId`` claimant is ``TerminalServiceOwned``, not Ready, and has no
  password in its Secret; the service got exactly one owner-tag PATCH and one password PATCH; deleting
  them all deletes the service once and leaves nothing. Full form: every third round the operator is
  killed (SIGKILL) right after the first claim PATCH was applied and answered, and started again.
* ``secret``: two new resources naming one connection Secret, applied at the same moment: one owns the
  Secret and a service, the other is ``TerminalSecretConflict`` and creates nothing.
* ``api-key``: resources sharing one API-key Secret, applied and deleted together while somebody else
  keeps rewriting that Secret (every write a conflict for the operator's optimistic finalizer updates);
  then the Secret itself is deleted while resources still use it, and a new resource names it: each
  live resource holds its finalizer, the new one creates nothing (it could not be deleted later), every
  deletion finishes and the Secret goes once the last resource is gone.

Reduced: 2 service rounds (fast API, slow PATCH) of 3 claimants, 1 Secret race, 4 resources on one
key. Full: ``MPG_CAMPAIGN_ROUNDS`` x 3 service rounds (default 4 x 3 = 12) of 4 claimants, 3 Secret
races, 8 resources on one key.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from campaign_harness import FULL, NS, TAG_UID, TIMEOUT, Campaign, KillPoint, Produced, own_campaign
from support import e2e
from support.e2e import MutationLog

from mpg_operator.cloud.models import PostgresServiceCreateRequest, Tag

pytestmark = [pytest.mark.campaign, pytest.mark.no_conformance, pytest.mark.timeout(TIMEOUT)]

SERVICE_ROUNDS = int(os.environ.get("MPG_CAMPAIGN_ROUNDS", "4")) * 3 if FULL else 2
CLAIMANTS = 4 if FULL else 3
SECRET_RACES = 3 if FULL else 1
SHARED_KEY_RESOURCES = 8 if FULL else 4
SLOW_PATCH = 1.2
OWNED = "TerminalServiceOwned"
CONFLICT = "TerminalSecretConflict"


@pytest.fixture(scope="module")
def claims(produced: Produced, live_campaigns: list[Campaign]) -> Iterator[Campaign]:
    with own_campaign(produced, live_campaigns, rate_limit=None, real_postgres=True, create_seconds=0.3) as c:
        c.mutations = MutationLog(accepted_only=True)  # type: ignore[attr-defined]
        c.sim.add_observer(c.mutations)  # type: ignore[attr-defined]
        yield c


def reasons(c: Campaign, name: str) -> set[str]:
    return {c.condition(name, t).get("reason") for t in ("Ready", "Synced")} - {None}


def service_id_of(c: Campaign, name: str) -> str | None:
    return ((c.get(name) or {}).get("status") or {}).get("serviceId")


def create_elsewhere(c: Campaign, console: tuple[str, str, str], name: str, tags: dict[str, str]) -> Any:
    request = PostgresServiceCreateRequest(
        name=name,
        provider="aws",
        region="us-west-2",
        size="r8gd.large",
        tags=[Tag(key=k, value=v) for k, v in tags.items()] or None,
    )
    service = e2e.as_someone_else(c.sim.url, console, lambda client: client.create_service(request))
    c.wait_for(lambda: c.sim.state_of(service.id) == "running", timeout=60, what=f"{name} running")
    return service


# --- services ---------------------------------------------------------------------------------------


def service_round(c: Campaign, rng: random.Random, seed: int, r: int) -> list[str]:
    tag = f"{seed % 10000}-{r}"
    slow = r % 2 == 1
    kill = FULL and r % 3 == 2
    key = c.new_key()
    console = c.new_key(org_id=key[2])
    creds = f"claim-{tag}-key"
    c.credentials(creds, key)
    service_name = f"claimed {tag}"
    reattacher = f"claim-{tag}-named" if r % 2 == 1 else None
    # The owner tags of a resource that is gone (named as the re-attaching claimant, if any).
    gone_owner = {
        TAG_UID: str(uuid.uuid4()),
        "mpg-operator.namespace": NS,
        "mpg-operator.name": reattacher or f"claim-{tag}-gone",
    }
    service = create_elsewhere(c, console, service_name, gone_owner)
    sid = service.id
    adopters = [f"claim-{tag}-{i}" for i in range(CLAIMANTS - (1 if reattacher else 0))]
    names = adopters + ([reattacher] if reattacher else [])
    rng.shuffle(names)
    faults = c.sim.faults
    if slow:
        faults.latency, faults.latency_method, faults.latency_path = SLOW_PATCH, "PATCH", f"/postgres/{sid}$"
    if kill:
        point = KillPoint("claim/patch-answered", "claim", "api", "PATCH", f"/postgres/{sid}$", when="after")
        c.kill_switch.arm(point, rng.uniform(0, 0.3), names[0])
    print(f"[claims] round {r}: {names}{' slow PATCH' if slow else ''}{' kill after the claim' if kill else ''}")

    problems: list[str] = []
    uids: dict[str, str] = {}
    try:
        for i, name in enumerate(names):
            spec: dict[str, Any] = {"serviceName": service_name}
            if name != reattacher:
                spec["serviceId"] = sid.upper() if i == 0 else sid
            uids[name] = c.apply(c.manifest(name, creds, **spec))["metadata"]["uid"]
            time.sleep(rng.uniform(0, 0.6))
        if kill:
            if c.kill_switch.fired.wait(60):
                c.operator.wait_dead()
                c.operator.start()
            else:
                problems.append(f"round {r}: the kill point was never reached")
            c.kill_switch.disarm()

        def settled() -> bool:
            decided = [n for n in names if service_id_of(c, n) or OWNED in reasons(c, n)]
            return len(decided) == len(names) and all(
                c.is_ready(n) for n in names if service_id_of(c, n) and OWNED not in reasons(c, n)
            )

        try:
            c.wait_for(settled, timeout=120, what=f"round {r}: every claimant decided")
        except TimeoutError as e:
            problems.append(f"round {r}: {e}: " + ", ".join(f"{n} {sorted(reasons(c, n))}" for n in names))
        faults.reset()
        owners = [n for n in names if service_id_of(c, n) == sid]
        if len(owners) != 1:
            problems.append(f"round {r}: {len(owners)} resources record service {sid}: {owners}")
        tags = {t.get("key"): t.get("value") for t in c.sim.services[sid].tags}
        if owners:
            winner = owners[0]
            problems += [f"round {r}: {p}" for p in c.wait_converged(winner, timeout=60)]
            if tags.get(TAG_UID) != uids[winner]:
                problems.append(f"round {r}: the service's owner tag is not the winner's ({winner})")
        for name in names:
            if name in owners:
                continue
            if name == reattacher and OWNED not in reasons(c, name):
                # Lost the race: the service no longer carries its name, so it created its own.
                if not c.is_ready(name) or service_id_of(c, name) in (None, sid):
                    problems.append(f"round {r}: {name} (re-attach, lost) neither refused nor on its own service")
                continue
            if OWNED not in reasons(c, name) or c.is_ready(name):
                problems.append(f"round {r}: {name}: reasons {sorted(reasons(c, name))}, Ready={c.is_ready(name)}")
            if "password" in (c.secret(f"{name}-connection") or {}):
                problems.append(f"round {r}: {name} lost the claim but its Secret holds a password")
        sent = c.mutations.by_service[sid]  # type: ignore[attr-defined]
        if sent.count("PATCH") != 1 or sent.count("PATCH /password") != 1:
            problems.append(f"round {r}: service {sid} got {sent} (one owner-tag PATCH, one password PATCH expected)")
    finally:
        faults.reset()
        for name in uids:
            c.delete(name)
    for name, uid in uids.items():
        problems += [f"round {r}: {p}" for p in c.wait_gone(name, uid, timeout=90)]
    if sid in c.sim.services and c.sim.services[sid].deleting_until is None:
        problems.append(f"round {r}: service {sid} left behind after every claimant was deleted")
    deletes = c.mutations.by_service[sid].count("DELETE")  # type: ignore[attr-defined]
    if deletes != 1:
        problems.append(f"round {r}: service {sid} got {deletes} DELETEs")
    return problems


def test_a_service_claimed_at_once_goes_to_exactly_one_resource(claims: Campaign, seed: int):
    rng = random.Random(seed)
    problems: list[str] = []
    for r in range(SERVICE_ROUNDS):
        problems += service_round(claims, rng, seed, r)
    claims.remember_service_secrets()
    assert problems == [], f"seed {seed}:\n" + "\n".join(problems)


# --- connection Secrets -----------------------------------------------------------------------------


def secret_race(c: Campaign, seed: int, r: int) -> list[str]:
    tag = f"{seed % 10000}-{r}"
    key = c.new_key()
    creds = f"secret-race-{tag}-key"
    c.credentials(creds, key)
    shared = f"secret-race-{tag}"
    names = [f"secret-race-{tag}-a", f"secret-race-{tag}-b"]
    barrier = threading.Barrier(len(names))
    uids: dict[str, str] = {}
    problems: list[str] = []

    def apply(name: str) -> None:
        barrier.wait(10)
        uids[name] = c.apply(c.manifest(name, creds, connectionSecret={"name": shared}))["metadata"]["uid"]

    threads = [threading.Thread(target=apply, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    def decided() -> bool:
        return all(c.is_ready(n) or CONFLICT in reasons(c, n) for n in names)

    try:
        c.wait_for(decided, timeout=90, what=f"race {r}: both decided")
    except TimeoutError as e:
        problems.append(f"race {r}: {e}: " + ", ".join(f"{n} {sorted(reasons(c, n))}" for n in names))
    refs = (c.raw_secret(shared) or {}).get("metadata", {}).get("ownerReferences") or []
    owners = [ref.get("uid") for ref in refs]
    winners = [n for n in names if c.is_ready(n)]
    if len(winners) != 1 or owners != [uids.get(winners[0])]:
        problems.append(f"race {r}: Ready {winners}, Secret owned by {len(owners)} owner(s)")
    for name in names:
        if name in winners:
            problems += [f"race {r}: {p}" for p in c.check_ready_secret_works(name, shared)]
            problems += [f"race {r}: {p}" for p in c.check_one_service(name)]
        elif c.services_tagged(uids[name], include_deleting=True):
            problems.append(f"race {r}: {name} lost the Secret but created a service")
    for name in names:
        c.delete(name)
    for name in names:
        problems += [f"race {r}: {p}" for p in c.wait_gone(name, uids[name], timeout=90)]
    return problems


def test_a_connection_secret_claimed_at_once_goes_to_exactly_one_resource(claims: Campaign, seed: int):
    problems: list[str] = []
    for r in range(SECRET_RACES):
        problems += secret_race(claims, seed, r)
    claims.remember_service_secrets()
    assert problems == [], f"seed {seed}:\n" + "\n".join(problems)


# --- API-key Secrets and their finalizers --------------------------------------------------------------


def in_use_finalizers(c: Campaign, secret: str) -> set[str]:
    meta = (c.raw_secret(secret) or {}).get("metadata") or {}
    return {f for f in meta.get("finalizers") or [] if f.startswith("clickhouse.cloud/in-use-by-")}


def test_an_api_key_secret_shared_and_rewritten_holds_every_user_and_goes_with_the_last(claims: Campaign, seed: int):
    c = claims
    rng = random.Random(seed)
    tag = seed % 10000
    key = c.new_key()
    creds = f"shared-key-{tag}"
    c.credentials(creds, key)
    stop = threading.Event()
    rewrites = [0]

    def rewrite() -> None:  # somebody else (a secrets manager, kubectl label) keeps writing the Secret
        deadline = time.monotonic() + 240
        while not stop.is_set() and time.monotonic() < deadline:
            if c.raw_secret(creds) is None:
                return
            try:
                c.kube.apply(
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": creds, "namespace": NS, "labels": {"rotation": str(rewrites[0])}},
                        "stringData": {"keyId": key[0], "keySecret": key[1], "organizationId": key[2]},
                    }
                )
                rewrites[0] += 1
            except Exception:  # noqa: BLE001 -- a write during its deletion
                pass
            time.sleep(rng.uniform(0.005, 0.05))

    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    problems: list[str] = []
    names = [f"shared-key-{tag}-{i}" for i in range(SHARED_KEY_RESOURCES)]
    uids = {n: c.apply(c.manifest(n, creds))["metadata"]["uid"] for n in names}
    try:
        for name in names:
            problems += c.wait_converged(name, timeout=120)
        expected = {f"clickhouse.cloud/in-use-by-{u}" for u in uids.values()}
        if in_use_finalizers(c, creds) != expected:
            problems.append(f"{len(in_use_finalizers(c, creds))} in-use finalizers on {creds}, {len(expected)} users")
        # Half deleted together, while the Secret keeps changing.
        first = names[: len(names) // 2]
        for name in first:
            c.delete(name)
        for name in first:
            problems += c.wait_gone(name, uids[name], timeout=90)
        expected = {f"clickhouse.cloud/in-use-by-{uids[n]}" for n in names if n not in first}
        try:
            c.wait_for(lambda: in_use_finalizers(c, creds) == expected, timeout=30, what="finalizers released")
        except TimeoutError:
            problems.append(
                f"after deleting {len(first)}: {len(in_use_finalizers(c, creds))} finalizers, expected {len(expected)}"
            )
    finally:
        stop.set()
        writer.join(10)
    # The API-key Secret deleted while resources use it: it stays until the last of them is gone, and
    # a resource that names it now creates nothing.
    c.kube.delete("v1", "Secret", creds, NS)
    late = f"shared-key-{tag}-late"
    uids[late] = c.apply(c.manifest(late, creds))["metadata"]["uid"]
    try:
        c.wait_for(
            lambda: "TerminalCredentialsError" in reasons(c, late), timeout=60, what=f"{late}: TerminalCredentialsError"
        )
    except TimeoutError:
        problems.append(f"{late}: no TerminalCredentialsError within 60 s (reasons {sorted(reasons(c, late))})")
    time.sleep(2)  # time enough to create, if it were going to
    if c.services_tagged(uids[late], include_deleting=True):
        problems.append(f"{late}: created a service with an API-key Secret that is being deleted")
    if c.raw_secret(creds) is None:
        problems.append(f"{creds} went while {len(names) - len(first)} resources used it")
    rest = [n for n in names if n not in first] + [late]
    for name in rest:
        c.delete(name)
    for name in rest:
        problems += c.wait_gone(name, uids[name], timeout=90)
    try:
        c.wait_for(lambda: c.raw_secret(creds) is None, timeout=30, what=f"{creds} gone")
    except TimeoutError:
        problems.append(f"{creds} still there after its last user went (finalizers {in_use_finalizers(c, creds)})")
    print(f"[claims] API-key Secret rewritten {rewrites[0]} times while {len(names)} resources used it")
    c.remember_service_secrets()
    assert problems == [], f"seed {seed}:\n" + "\n".join(problems)


# --- a copy that carries another resource's status ---------------------------------------------------


def test_a_copy_carrying_another_resources_status_touches_nothing(claims: Campaign, seed: int):
    """A backup restored under another name (Velero restores status too): the copy's status names the
    service of a resource that exists. The copy changes nothing (no tags, no password), does not delete
    the service when it goes, and the original stays Ready with a working Secret."""
    c = claims
    tag = seed % 10000
    key = c.new_key()
    creds = f"copy-{tag}-key"
    c.credentials(creds, key)
    original, copy = f"copy-{tag}-original", f"copy-{tag}-restored"
    uid = c.apply(c.manifest(original, creds))["metadata"]["uid"]
    problems = c.wait_converged(original)
    status = (c.get(original) or {}).get("status") or {}
    sid = status.get("serviceId")
    assert sid, problems
    sent_before = list(c.mutations.by_service[sid])  # type: ignore[attr-defined]
    manifest = c.manifest(copy, creds)
    manifest["metadata"]["annotations"] = {"clickhouse.cloud/paused": "true"}
    copy_uid = c.apply(manifest)["metadata"]["uid"]
    c.wait_for(lambda: "ReconcilePaused" in reasons(c, copy), timeout=30, what=f"{copy} paused")
    restored = {k: status[k] for k in ("serviceId", "organizationId", "passwordVersion", "state") if k in status}
    c.kube.patch_status("clickhouse.cloud/v1alpha1", "ManagedPostgres", copy, NS, restored)
    manifest["metadata"]["annotations"] = {}
    c.apply(manifest)
    try:
        c.wait_for(lambda: OWNED in reasons(c, copy), timeout=60, what=f"{copy}: {OWNED}")
    except TimeoutError as e:
        problems.append(f"{e}: {sorted(reasons(c, copy))}")
    if c.is_ready(copy):
        problems.append(f"{copy} is Ready on another resource's service")
    c.delete(copy)
    problems += c.wait_gone(copy, copy_uid, orphan=True, timeout=60)
    sent = c.mutations.by_service[sid]  # type: ignore[attr-defined]
    if sent != sent_before:
        problems.append(f"the copy sent {sent[len(sent_before) :]} to the original's service")
    problems += c.wait_converged(original)
    c.delete(original)
    problems += c.wait_gone(original, uid)
    c.remember_service_secrets()
    assert problems == [], f"seed {seed}:\n" + "\n".join(problems)
