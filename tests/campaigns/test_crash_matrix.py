"""Crash matrix: the operator (its own process) killed with SIGKILL at every step of create, update,
password reset and delete, at kill points chosen from outside it (``campaign_harness.KILL_POINTS``),
after a seeded random delay; then started again, and the invariants checked with real connections:

* exactly one remote service per resource (by its ``mpg-operator.uid`` tag);
* Ready=True means the Secret's ``uri`` connects (no lost password);
* after deletion the resource disappears (no stuck finalizer) and no tagged service remains (no orphan).

A run is one resource's lifecycle (create, update, password reset by deleting the connection
Secret, delete) with one kill per step. Reduced (CI): one lifecycle, its kill points drawn from the
seed. Full (``MPG_CAMPAIGN=full``): every kill point of every step, ``MPG_CAMPAIGN_ROUNDS`` times
(default 2) with different delays.
"""

from __future__ import annotations

import os
import random

import pytest
from campaign_harness import FULL, KILL_POINTS, STEPS, TIMEOUT, Campaign, KillPoint

pytestmark = [pytest.mark.campaign, pytest.mark.no_conformance, pytest.mark.timeout(TIMEOUT)]

MAX_DELAY = 0.5  # seconds between the kill point and the SIGKILL (uniform, seeded)


def plans(rng: random.Random) -> list[dict[str, KillPoint]]:
    by_step = {step: [p for p in KILL_POINTS if p.step == step] for step in STEPS}
    if not FULL:
        return [{step: rng.choice(points) for step, points in by_step.items()}]
    rounds = int(os.environ.get("MPG_CAMPAIGN_ROUNDS", "2"))
    out = []
    for _ in range(rounds):
        width = max(len(v) for v in by_step.values())
        shuffled = {step: rng.sample(points, len(points)) for step, points in by_step.items()}
        for i in range(width):
            out.append({step: points[i % len(points)] for step, points in shuffled.items()})
    return out


def _kill_and_restart(c: Campaign, point: KillPoint, delay: float, name: str, trigger, log: list[str]) -> None:
    c.kill_switch.arm(point, delay, name)
    trigger()
    fired = c.kill_switch.fired.wait(60)
    c.kill_switch.disarm()
    if not fired:
        log.append(f"{point.name}: kill point never reached within 60 s")
    c.restart_operator()


def lifecycle(c: Campaign, rng: random.Random, plan: dict[str, KillPoint], index: int, seed: int) -> list[str]:
    name = f"crash-{seed % 10000}-{index}"
    creds = f"{name}-key"
    c.credentials(creds, c.new_key())
    problems: list[str] = []

    def record(step: str, found: list[str]) -> None:
        point = plan[step]
        problems.extend(f"[seed {seed}, {point.name}, delay {delays[step]:.3f}s] {p}" for p in found)

    delays = {step: round(rng.uniform(0, MAX_DELAY), 3) for step in STEPS}
    print(f"[crash] {name}: " + ", ".join(f"{plan[s].name}+{delays[s]:.3f}s" for s in STEPS))

    # create
    _kill_and_restart(
        c,
        plan["create"],
        delays["create"],
        name,
        lambda: c.apply(c.manifest(name, creds, tags={"team": "crash"})),
        problems,
    )
    record("create", c.wait_converged(name))

    # update: size and tags
    _kill_and_restart(
        c,
        plan["update"],
        delays["update"],
        name,
        lambda: c.patch_spec(name, size="r8gd.xlarge", tags={"team": "crash", "round": "2"}),
        problems,
    )
    found = c.wait_converged(name)
    uid = c.uid(name)
    services = c.services_tagged(uid)
    if len(services) == 1 and services[0].size != "r8gd.xlarge":
        found.append(f"{name}: size not applied ({services[0].size})")
    record("update", found)

    # password reset: the connection Secret deleted, a new password written first and then set
    before = (c.secret(f"{name}-connection") or {}).get("password")
    _kill_and_restart(
        c,
        plan["password"],
        delays["password"],
        name,
        lambda: c.kube.delete("v1", "Secret", f"{name}-connection", "campaigns"),
        problems,
    )
    found = c.wait_converged(name)
    after = (c.secret(f"{name}-connection") or {}).get("password")
    if before and after and before == after:
        found.append(f"{name}: the recreated Secret kept the old password")
    record("password", found)

    # delete
    _kill_and_restart(c, plan["delete"], delays["delete"], name, lambda: c.delete(name), problems)
    record("delete", c.wait_gone(name, uid))
    c.remember_service_secrets()
    return problems


def test_crash_matrix(campaign: Campaign, seed: int):
    rng = random.Random(seed)
    problems: list[str] = []
    for i, plan in enumerate(plans(rng)):
        problems += lifecycle(campaign, rng, plan, i, seed)
    assert problems == [], "\n".join(problems)
