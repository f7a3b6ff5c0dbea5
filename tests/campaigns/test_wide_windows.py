"""Wide windows on purpose: a fast API (services created in 0.05 s, no PostgreSQL behind them)
with delayed POST answers, and a resource deleted right after it was applied -- 8 runs side by side
in one organization (its LIST serves them all, as in real life), each with a moment of deletion:

* ``apply``: deleted right after the apply;
* ``pending``: deleted as soon as the status records ``createPendingSince`` (the POST about to be sent
  or in flight: every POST is held 0.7 s before the API applies it);
* ``service-recorded`` / ``state-recorded``: deleted as soon as the status records the service id /
  its state (the create answered; the organization's LIST may still predate it);
* ``created``: deleted as soon as the service exists in the API (POST applied, answer on its way);
* ``post-answered``: deleted when the POST was answered;
* ``random``: deleted after a random delay (0-1.5 s).

The service must not be orphaned: the resource disappears and no service with its uid tag remains
(issue 7, defect 1: the finalizer concluded "gone" from a LIST taken before its own POST).
Every round cycles through the moments (over rounds, each moment lands on other positions); the
random delays come from the seed. Reduced: one round of 8; full: ``MPG_CAMPAIGN_ROUNDS`` (default 4)
rounds.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
from collections.abc import Iterator

import pytest
from campaign_harness import FULL, TIMEOUT, Campaign, Produced, own_campaign

pytestmark = [pytest.mark.campaign, pytest.mark.no_conformance, pytest.mark.timeout(TIMEOUT)]

RUNS = 8
ROUNDS = int(os.environ.get("MPG_CAMPAIGN_ROUNDS", "4")) if FULL else 1
MODES = ("apply", "pending", "service-recorded", "state-recorded", "created", "post-answered", "random")
POST_LATENCY = 0.7
STATUS_KEYS = {"pending": "createPendingSince", "service-recorded": "serviceId", "state-recorded": "state"}


@pytest.fixture(scope="module")
def fast(produced: Produced, live_campaigns: list[Campaign]) -> Iterator[Campaign]:
    with own_campaign(produced, live_campaigns, rate_limit=None, real_postgres=False, create_seconds=0.05) as c:
        yield c


def one_round(c: Campaign, rng: random.Random, seed: int, r: int) -> list[str]:
    runs = []
    key = c.new_key()
    creds = f"wide-{seed % 10000}-{r}-key"
    c.credentials(creds, key)
    for i in range(RUNS):
        name = f"wide-{seed % 10000}-{r}-{i}"
        runs.append((name, key[2], MODES[(i + r * RUNS) % len(MODES)], rng.uniform(0, 1.5)))
    print("[wide] " + ", ".join(f"{n}:{m}" + (f"+{d:.2f}s" if m == "random" else "") for n, _, m, d in runs))

    pending_answers: list[str] = [name for name, _, mode, _ in runs if mode == "post-answered"]
    lock = threading.Lock()

    def delete_soon(name: str) -> None:
        threading.Thread(target=c.delete, args=(name,), daemon=True).start()

    def observe(ex) -> None:  # simulator thread: a POST answered (after the delayed answer)
        if ex.method != "POST" or not re.search(r"/postgres$", ex.path):
            return
        if ex.dropped or ex.status >= 300:
            return
        try:
            tags = {t["key"]: t.get("value") for t in json.loads(ex.request_body or b"{}").get("tags") or []}
        except ValueError:
            return
        with lock:
            name = tags.get("mpg-operator.name")
            if name in pending_answers:
                pending_answers.remove(name)
            else:
                name = None
        if name:
            delete_soon(name)

    c.sim.add_observer(observe)
    faults = c.sim.faults
    faults.latency, faults.latency_method, faults.latency_path = POST_LATENCY, "POST", r"/postgres$"

    uids: dict[str, str] = {}
    timers = []
    for name, _org, mode, delay in runs:
        obj = c.apply(c.manifest(name, creds))
        uids[name] = obj["metadata"]["uid"]
        if mode == "apply":
            c.delete(name)
        elif mode == "random":
            timers.append(threading.Timer(delay, c.delete, args=(name,)))
            timers[-1].start()
        elif mode == "created":

            def arrived(uid=obj["metadata"]["uid"]) -> bool:
                return bool(c.services_tagged(uid, include_deleting=True))

            threading.Thread(target=_when, args=(c, arrived, name), daemon=True).start()
        elif mode in STATUS_KEYS:

            def recorded(name=name, key=STATUS_KEYS[mode]) -> bool:
                return bool(((c.get(name) or {}).get("status") or {}).get(key))

            threading.Thread(target=_when, args=(c, recorded, name), daemon=True).start()
    problems: list[str] = []
    try:
        for name, _org, mode, delay in runs:
            for p in c.wait_gone(name, uids[name], timeout=90):
                problems.append(f"[seed {seed}, {name}, {mode}{f' +{delay:.2f}s' if mode == 'random' else ''}] {p}")
    finally:
        for t in timers:
            t.cancel()
        faults.reset()
        faults.latency_method = None
    return problems


def _when(c: Campaign, predicate, name: str) -> None:
    """Delete ``name`` as soon as ``predicate()`` holds."""
    try:
        c.wait_for(predicate, timeout=60, interval=0.02)
    except TimeoutError:
        pass
    c.delete(name)


def test_delete_right_after_create(fast: Campaign, seed: int):
    rng = random.Random(seed)
    problems: list[str] = []
    for r in range(ROUNDS):
        problems += one_round(fast, rng, seed, r)
    assert problems == [], "\n".join(problems)
