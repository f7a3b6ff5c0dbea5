"""Identifiers compared as identifiers (issue 16, class 1): an id is the same id in any of the forms
users copy it in (upper case, braces, no hyphens, ``urn:uuid:``, blanks around it), wherever it comes
from -- the API-key Secret's ``organizationId``, ``spec.serviceId``, a status or a connection Secret
written by an older version of the operator in another form.

One resource per organization-id form, each with its own organization; the form is in the Secret from
the start (even cases) or replaces the canonical one once the resource is Ready (odd cases). Then: an
update converges; the status is rewritten the way an older version recorded it (``serviceId`` and
``organizationId`` in upper case) and the connection Secret's ``service-id`` annotation likewise, and
another update converges without a new password; deletion, with the status still in upper case,
finishes and deletes the one service the resource ever had, with no ``DeletionBlocked`` event. And a
service created elsewhere is adopted through ``spec.serviceId`` in upper case.

Reduced: 2 forms (drawn from the seed); full: all 5.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest
from campaign_harness import FULL, NS, TIMEOUT, Campaign
from support import e2e

from mpg_operator.cloud.models import PostgresServiceCreateRequest
from mpg_operator.reconcile.connection import ANN_SERVICE_ID

pytestmark = [pytest.mark.campaign, pytest.mark.no_conformance, pytest.mark.timeout(TIMEOUT)]

FORMS = {
    "upper": str.upper,
    "braces": lambda s: "{" + s + "}",
    "no-hyphens": lambda s: s.replace("-", ""),
    "urn": lambda s: "urn:uuid:" + s,
    "blanks": lambda s: f"  {s.upper()}\n",
}


def blocked(c: Campaign, name: str) -> list[str]:
    return [e.get("message", "") for e in c.events(name) if e.get("reason") == "DeletionBlocked"]


def password_patches(c: Campaign, org_id: str) -> int:
    return sum(
        1
        for r in c.sim.requests
        if r.method == "PATCH" and f"/organizations/{org_id}/" in r.path and r.path.endswith("/password")
    )


def one_form(c: Campaign, form: str, index: int, tag: int) -> list[str]:
    key = c.new_key()
    org = key[2]
    name, creds = f"ids-{form}-{tag}", f"ids-{form}-{tag}-key"
    switch = index % 2 == 1
    c.credentials(creds, key, **({} if switch else {"organizationId": FORMS[form](org)}))
    uid = c.apply(c.manifest(name, creds))["metadata"]["uid"]
    problems = c.wait_converged(name, timeout=60)
    if not problems:
        problems = life(c, name, creds, key, form, switch)
    c.kube.patch_status("clickhouse.cloud/v1alpha1", "ManagedPostgres", name, NS, {"organizationId": org.upper()})
    c.delete(name)
    problems += c.wait_gone(name, uid, timeout=60)
    if blocked(c, name):
        problems.append(f"DeletionBlocked: {blocked(c, name)[0][:200]}")
    creates = [r for r in c.sim.requests if r.method == "POST" and r.path.endswith(f"/organizations/{org}/postgres")]
    if len([r for r in creates if 200 <= r.status < 300]) != 1:
        problems.append(f"services created in the organization: statuses of its creates {[r.status for r in creates]}")
    return [f"[{form}{' switched' if switch else ''}] {p}" for p in problems]


def life(c: Campaign, name: str, creds: str, key: tuple[str, str, str], form: str, switch: bool) -> list[str]:
    """Updates of a Ready resource, with the id in ``form`` in its Secret and, from an older version, in
    its status and connection Secret."""
    org = key[2]
    if switch:
        c.credentials(creds, key, organizationId=FORMS[form](org))
    c.patch_spec(name, tags={"step": "1"})
    problems = c.wait_converged(name, timeout=60)
    status = (c.get(name) or {}).get("status") or {}
    if status.get("organizationId") != org:
        problems.append(f"status.organizationId is not the canonical id ({status.get('organizationId')!r})")
    service_id = status.get("serviceId")
    secret = c.raw_secret(f"{name}-connection")
    if problems or not service_id or secret is None:
        return problems or ["no service id or connection Secret after the first update"]
    sets = password_patches(c, org)

    # What an older version wrote: the ids as it found them.
    c.kube.patch_status(
        "clickhouse.cloud/v1alpha1",
        "ManagedPostgres",
        name,
        NS,
        {"organizationId": org.upper(), "serviceId": service_id.upper()},
    )
    annotations = {**(secret["metadata"].get("annotations") or {}), ANN_SERVICE_ID: service_id.upper()}
    c.kube.apply({**secret, "metadata": {**secret["metadata"], "annotations": annotations}})
    c.patch_spec(name, tags={"step": "2"})
    problems += c.wait_converged(name, timeout=60)
    service = c.sim.services.get(service_id)
    if service is None or {t.get("key"): t.get("value") for t in service.tags}.get("step") != "2":
        problems.append("the update after the upper-case status was not applied")
    if password_patches(c, org) != sets:
        problems.append("a new password was set after the ids were recorded in upper case")
    if c.condition(name, "Synced").get("reason") == "TerminalOrganizationChanged":
        problems.append("Synced is TerminalOrganizationChanged")
    return problems


def adopt_in_upper_case(c: Campaign, tag: int) -> list[str]:
    """A service created elsewhere, adopted with spec.serviceId in upper case."""
    key = c.new_key()
    console = c.new_key(org_id=key[2])
    request = PostgresServiceCreateRequest(
        name=f"ids adopt {tag}", provider="aws", region="us-west-2", size="r8gd.large"
    )
    service = e2e.as_someone_else(c.sim.url, console, lambda client: client.create_service(request))
    c.credentials(f"ids-adopt-{tag}-key", key)
    name = f"ids-adopt-{tag}"
    manifest = c.manifest(name, f"ids-adopt-{tag}-key", serviceId=service.id.upper(), serviceName=service.name)
    uid = c.apply(manifest)["metadata"]["uid"]
    found = c.wait_converged(name)
    if (c.get(name) or {}).get("status", {}).get("serviceId") != service.id:
        found.append("status.serviceId is not the adopted service's id in canonical form")
    c.delete(name)
    found += c.wait_gone(name, uid, timeout=60)
    return [f"[adopt, upper case] {p}" for p in found]


def test_ids_in_any_form_are_the_same_ids(campaign: Campaign, seed: int):
    c = campaign
    rng = random.Random(seed)
    tag = seed % 10000
    forms = list(FORMS) if FULL else rng.sample(sorted(FORMS), k=2)
    print(f"[identifiers] seed {seed}: forms {forms}")
    # Side by side: each case has its own organization (and so its own LIST and rate limit).
    with ThreadPoolExecutor(len(forms) + 1) as pool:
        cases = [pool.submit(one_form, c, form, i, tag) for i, form in enumerate(forms)]
        cases.append(pool.submit(adopt_in_upper_case, c, tag))
        problems = [p for case in cases for p in case.result()]
    c.remember_service_secrets()
    assert problems == [], f"seed {seed}:\n" + "\n".join(problems)
