"""API-fault campaign: the operator (its own process) against a hostile API, with the simulator's
rate limit on (10 requests / 10 s per key). Every case has its own API key and organization, and
its faults are narrowed to that organization's paths, so the cases run side by side:

* ``storm``: a 429 storm (the next N requests answer 429);
* ``outage``: the API unreachable (every connection dropped) for a while;
* ``slow``: every answer delayed;
* ``lost``: the responses of the create, the password reset and the delete lost (applied, then the
  connection dropped);
* then, alone, ``flaky``: 30 % of all requests answer 5xx (seeded), through create, update and delete.

Each resource must converge (Ready, spec applied, its Secret connects), have exactly one service,
and leave none after deletion; and at the simulator no organization ever received more than 10
requests in any 10 s window (counted from the simulator's request log, refused ones included).
"""

from __future__ import annotations

import random
import re
import threading

import pytest

from campaign_harness import FULL, Campaign

pytestmark = [pytest.mark.campaign, pytest.mark.no_conformance, pytest.mark.timeout(900)]

STORM = 40 if FULL else 12
OUTAGE = 60.0 if FULL else 8.0
LATENCY = 4.0 if FULL else 1.5
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
    cases = ("storm", "outage", "slow", "lost")
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
    problems: list[str] = []
    try:
        for case in cases:
            c.apply(c.manifest(names[case], f"{names[case]}-key"))
        for case in cases:
            problems += [f"[{case}] {p}" for p in c.wait_converged(names[case], timeout=180)]

        # lost password-reset response: the Secret deleted, the PATCH /password applied, answer lost
        lost = names["lost"]
        faults.drop(count=1, when="after", method="PATCH", path=org_path["lost"] + r"/postgres/[^/]+/password$")
        c.kube.delete("v1", "Secret", f"{lost}-connection", "campaigns")
        c.wait_for(lambda: c.secret(f"{lost}-connection") is not None, timeout=60, what="Secret recreated")
        problems += [f"[lost password] {p}" for p in c.wait_converged(lost, timeout=120)]

        # every deletion; the lost case's DELETE response is lost
        faults.drop(count=1, when="after", method="DELETE", path=org_path["lost"] + r"/postgres/[^/]+$")
        uids = {case: c.uid(names[case]) for case in cases}
        for case in cases:
            c.delete(names[case])
        for case in cases:
            problems += [f"[{case} delete] {p}" for p in c.wait_gone(names[case], uids[case])]
    finally:
        outage.cancel()
        c.remember_service_secrets()
        faults.reset()
    problems += check_rate(c, orgs, since)

    # 30 % 5xx on every request (alone: the error rate is not per organization)
    name = f"fault-flaky-{seed % 10000}-{r}"
    key = c.new_key()
    c.credentials(f"{name}-key", key)
    since = len(c.sim.requests)
    faults._rng = random.Random(rng.randrange(10**9))  # noqa: SLF001 -- seeded 5xx
    faults.error_status = rng.choice([500, 502, 503])
    faults.error_rate = 0.3
    try:
        c.apply(c.manifest(name, f"{name}-key", tags={"team": "flaky"}))
        problems += [f"[flaky] {p}" for p in c.wait_converged(name, timeout=180)]
        c.patch_spec(name, haType="async", tags={"team": "flaky", "phase": "update"})
        problems += [f"[flaky update] {p}" for p in c.wait_converged(name, timeout=180)]
        uid = c.uid(name)
        c.delete(name)
        problems += [f"[flaky delete] {p}" for p in c.wait_gone(name, uid)]
    finally:
        c.remember_service_secrets()
        faults.reset()
        faults.error_status = 500
    problems += check_rate(c, {"flaky": key[2]}, since)
    return problems


def test_api_faults(campaign: Campaign, seed: int):
    rng = random.Random(seed)
    problems: list[str] = []
    for r in range(ROUNDS):
        problems += [f"[seed {seed}, round {r}] {p}" for p in one_round(campaign, rng, seed, r)]
    assert problems == [], "\n".join(problems)
