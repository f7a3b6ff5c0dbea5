"""API-fault campaign: the operator (its own process) against a hostile API, with the simulator's
rate limit on (10 requests / 10 s per key). Every case has its own API key and organization, and
its faults are narrowed to that organization's paths, so the cases run side by side:

* ``storm``: a 429 storm (the next N requests answer 429);
* ``outage``: the API unreachable (every connection dropped) for a while;
* ``slow``: every answer delayed;
* ``lost``: the responses of the create, the password reset and the delete lost (applied, then the
  connection dropped);
* ``flaky``: created, updated (HA and tags) and deleted;

and, all along and for every case, 30 % of all requests answer 5xx (seeded: 500, 502 or 503).

Each resource must converge (Ready, spec applied, its Secret connects), have exactly one service,
and leave none after deletion; and at the simulator no organization ever received more than 10
requests in any 10 s window (counted from the simulator's request log, refused ones included).
"""

from __future__ import annotations

import random
import re
import threading
import time

import pytest
from campaign_harness import FULL, TIMEOUT, Campaign

pytestmark = [pytest.mark.campaign, pytest.mark.no_conformance, pytest.mark.timeout(TIMEOUT)]

STORM = 40 if FULL else 4  # > the client's 5 retries only in the full form
OUTAGE = 60.0 if FULL else 5.0
LATENCY = 4.0 if FULL else 1.0
ERROR_RATE = 0.3
ROUNDS = 3 if FULL else 1


def org_requests(c: Campaign, org_id: str, since: int) -> list:
    return [r for r in c.sim.requests[since:] if f"/organizations/{org_id}" in r.path]


def drop_for(c: Campaign, org_id: str, seconds: float) -> threading.Timer:
    faults = c.sim.faults
    faults.drop(count=10**6, when="before", path=f"/organizations/{re.escape(org_id)}")
    rule = faults.drops[-1]

    def end() -> None:
        with faults._lock:  # noqa: SLF001
            faults.drops = [r for r in faults.drops if r is not rule]

    timer = threading.Timer(seconds, end)
    timer.start()
    return timer


def check_rate(c: Campaign, orgs: dict[str, str], since: int) -> list[str]:
    problems = []
    for case, org in orgs.items():
        records = org_requests(c, org, since)
        peak = c.max_in_window(records, 10.0)
        if peak > 10:
            problems.append(f"{case}: {peak} requests in one 10 s window at the simulator (limit 10)")
    return problems


def one_round(c: Campaign, rng: random.Random, seed: int, r: int) -> list[str]:
    since = len(c.sim.requests)
    faults = c.sim.faults
    cases = ("storm", "outage", "slow", "lost", "flaky")
    names = {case: f"fault-{case}-{seed % 10000}-{r}" for case in cases}
    orgs: dict[str, str] = {}
    for case in cases:
        key = c.new_key()
        orgs[case] = key[2]
        c.credentials(f"{names[case]}-key", key)
    org_path = {case: f"/organizations/{re.escape(org)}" for case, org in orgs.items()}

    faults.force(429, count=STORM, path=org_path["storm"])
    outage = drop_for(c, orgs["outage"], OUTAGE)
    faults.latency, faults.latency_path = LATENCY, org_path["slow"]
    faults.drop(count=1, when="after", method="POST", path=org_path["lost"] + r"/postgres$")
    faults._rng = random.Random(rng.randrange(10**9))  # noqa: SLF001 -- seeded 5xx
    faults.error_status = rng.choice([500, 502, 503])
    faults.error_rate = ERROR_RATE  # on every request of every case, all along
    print(
        f"[faults] storm {STORM} x 429, outage {OUTAGE:g}s, latency {LATENCY:g}s, "
        f"{ERROR_RATE:.0%} x {faults.error_status} everywhere"
    )
    problems: list[str] = []
    t0 = time.monotonic()
    try:
        for case in cases:
            c.apply(c.manifest(names[case], f"{names[case]}-key", tags={"case": case}))
        for case in cases:
            problems += [f"[{case}] {p}" for p in c.wait_converged(names[case], timeout=180)]
            print(f"[faults] {case} converged at {time.monotonic() - t0:.1f}s")

        # an update under 5xx, and a password reset whose response is lost (applied, answer dropped)
        lost = names["lost"]
        faults.drop(count=1, when="after", method="PATCH", path=org_path["lost"] + r"/postgres/[^/]+/password$")
        c.patch_spec(names["flaky"], haType="async", tags={"case": "flaky", "phase": "update"})
        c.kube.delete("v1", "Secret", f"{lost}-connection", "campaigns")
        problems += [f"[lost password] {p}" for p in c.wait_converged(lost, timeout=120)]
        problems += [f"[flaky update] {p}" for p in c.wait_converged(names["flaky"], timeout=120)]
        print(f"[faults] password reset and update at {time.monotonic() - t0:.1f}s")

        # every deletion; the lost case's DELETE response is lost
        faults.drop(count=1, when="after", method="DELETE", path=org_path["lost"] + r"/postgres/[^/]+$")
        uids = {case: c.uid(names[case]) for case in cases}
        for case in cases:
            c.delete(names[case])
        for case in cases:
            problems += [f"[{case} delete] {p}" for p in c.wait_gone(names[case], uids[case])]
        print(f"[faults] deleted at {time.monotonic() - t0:.1f}s")
    finally:
        outage.cancel()
        c.remember_service_secrets()
        faults.reset()
        faults.error_status = 500
    return problems + check_rate(c, orgs, since)


def test_api_faults(campaign: Campaign, seed: int):
    rng = random.Random(seed)
    problems: list[str] = []
    for r in range(ROUNDS):
        problems += [f"[seed {seed}, round {r}] {p}" for p in one_round(campaign, rng, seed, r)]
    assert problems == [], "\n".join(problems)
