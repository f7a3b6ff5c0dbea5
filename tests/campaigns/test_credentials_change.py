"""Credentials that change (issue 7, defects 4, 6 and 7). Three cases side by side, each with its own
organization:

* ``switch``: a Ready resource's ``credentialsRef`` switched to a key of another organization: no
  service is ever created in the other organization, the original service is kept (same id) and its
  Secret keeps working; a condition says why (``TerminalOrganizationChanged``); switched back, it
  converges on the same service; deleted, nothing is left;
* ``wrong-secret``: a key Secret with the right key id and a wrong secret, used by a second resource
  of the same organization: the healthy resource stays Ready, an update of it converges and its
  deletion finishes; the bad one never gets a POST answered 401 and its deletion finishes;
* ``wrong-org``: a wrong ``organizationId`` with nothing ever created: deleting the resource finishes.
"""

from __future__ import annotations

import time
import uuid

import pytest
from campaign_harness import TIMEOUT, Campaign

pytestmark = [pytest.mark.campaign, pytest.mark.no_conformance, pytest.mark.timeout(TIMEOUT)]


CREDENTIALS_ERRORS = {"TerminalCredentialsError", "CredentialsError"}


def reasons(c: Campaign, name: str) -> set[str]:
    return {c.condition(name, t).get("reason") for t in ("Ready", "Synced")} - {None}


def test_credentials_that_change(campaign: Campaign, seed: int):
    c = campaign
    tag = seed % 10000
    problems: list[str] = []
    k1, k2, k3, k4 = c.new_key(), c.new_key(), c.new_key(), c.new_key()
    switch, good, bad, wrong = (f"cred-switch-{tag}", f"cred-good-{tag}", f"cred-bad-{tag}", f"cred-wrongorg-{tag}")
    c.credentials(f"{switch}-k1", k1)
    c.credentials(f"{switch}-k2", k2)
    c.credentials(f"{good}-key", k3)
    c.credentials(f"{bad}-key", k3, keySecret="not-the-secret-" + uuid.uuid4().hex)
    c.credentials(f"{wrong}-key", k4, organizationId=str(uuid.uuid4()))

    c.apply(c.manifest(switch, f"{switch}-k1"))
    c.apply(c.manifest(good, f"{good}-key"))
    c.apply(c.manifest(wrong, f"{wrong}-key"))
    problems += [f"[switch] {p}" for p in c.wait_converged(switch)]
    problems += [f"[wrong-secret good] {p}" for p in c.wait_converged(good)]

    # switch to another organization's key
    (svc,) = c.services_tagged(c.uid(switch)) or [None]
    c.patch_spec(switch, credentialsRef={"name": f"{switch}-k2"})
    # the bad key of the same organization as ``good``
    since = len(c.sim.requests)
    c.apply(c.manifest(bad, f"{bad}-key"))
    # sample the healthy resource while the bad key is in use (at least 2 s, until both cases reacted)
    start, deadline = time.monotonic(), time.monotonic() + 30
    good_not_ready = []
    while time.monotonic() < deadline:
        if not c.is_ready(good):
            good_not_ready.append(c.condition(good).get("reason"))
        if (
            "TerminalOrganizationChanged" in reasons(c, switch)
            and reasons(c, bad) & CREDENTIALS_ERRORS
            and time.monotonic() > start + 2
        ):
            break
        time.sleep(0.3)
    if not reasons(c, bad) & CREDENTIALS_ERRORS:
        problems.append(f"[wrong-secret] {bad}: no credentials error condition (reasons {sorted(reasons(c, bad))})")
    if good_not_ready:
        problems.append(
            f"[wrong-secret] {good} left Ready while {bad} used a wrong secret: {sorted(set(map(str, good_not_ready)))}"
        )
    if "TerminalOrganizationChanged" not in reasons(c, switch):
        problems.append(f"[switch] no TerminalOrganizationChanged condition (reasons {sorted(reasons(c, switch))})")
    if c.services_in(k2[2]):
        problems.append(f"[switch] {len(c.services_in(k2[2]))} service(s) created in the other organization")
    after = c.services_tagged(c.uid(switch))
    if svc is None or [s.id for s in after] != [svc.id]:
        problems.append(f"[switch] the original service is not the one left: {[s.id for s in after]}")
    problems += [f"[switch] {p}" for p in c.check_ready_secret_works(switch)] if c.is_ready(switch) else []
    secret = c.secret(f"{switch}-connection") or {}
    ok, why = c.connects(secret.get("uri", ""))
    if not ok:
        problems.append(f"[switch] the Secret stopped working after the switch: {why}")

    # the healthy resource of the same organization: an update converges
    c.patch_spec(good, tags={"phase": "while-bad-key"})
    problems += [f"[wrong-secret good update] {p}" for p in c.wait_converged(good, timeout=60)]
    posts_401 = [
        r
        for r in c.sim.requests[since:]
        if r.method == "POST" and r.status == 401 and f"/organizations/{k3[2]}/" in r.path
    ]
    if posts_401:
        problems.append(f"[wrong-secret] {len(posts_401)} POST(s) answered 401 (the bad key re-sent creates)")

    # switch back: the same service, converged
    c.patch_spec(switch, credentialsRef={"name": f"{switch}-k1"})
    problems += [f"[switch back] {p}" for p in c.wait_converged(switch, timeout=60)]
    if svc is not None and [s.id for s in c.services_tagged(c.uid(switch))] != [svc.id]:
        problems.append("[switch back] not the original service")

    # every deletion finishes; nothing orphaned
    uids = {n: c.uid(n) for n in (switch, good, bad, wrong)}
    t0 = time.monotonic()
    for n in uids:
        c.delete(n)
    for n, uid in uids.items():
        problems += [f"[delete {n}] {p}" for p in c.wait_gone(n, uid, timeout=60)]
    print(f"[credentials] deletions finished in {time.monotonic() - t0:.1f}s")
    if c.services_in(k4[2]):
        problems.append("[wrong-org] a service was created with a wrong organization id")
    c.remember_service_secrets()
    assert problems == [], f"seed {seed}:\n" + "\n".join(problems)
