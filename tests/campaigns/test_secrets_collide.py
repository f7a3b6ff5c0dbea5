"""Secrets that collide (issue 7, defects 2, 3 and 5). Four cases side by side, each with its own
API key and organization:

* ``unrelated``: ``connectionSecret`` names an existing application Secret: it must not be modified
  (data, annotations, owners compared before/after), nothing is created, and a condition says the
  name is taken (reason ``TerminalSecretConflict``);
* ``api-key``: ``connectionSecret`` names an API-key Secret (another resource's): same; naming the
  resource's own ``credentialsRef`` Secret is refused at apply by the CRD (or conditioned the same way);
* ``shared``: two resources name the same connection Secret: only the first gets it (stays Ready,
  its password works); the second gets the conflict condition and creates nothing;
* ``rename``: the connection Secret renamed A -> B -> A: after every switch the resource converges
  and, whenever it says Ready for the current generation, the Secret it names connects.
"""

from __future__ import annotations

import time

import pytest
from campaign_harness import FULL, NS, TIMEOUT, Campaign

from kubeemu import ApiError

pytestmark = [pytest.mark.campaign, pytest.mark.no_conformance, pytest.mark.timeout(TIMEOUT)]

CONFLICT = "TerminalSecretConflict"
RENAMES = 2 if FULL else 1  # A->B->A cycles


def reasons(c: Campaign, name: str) -> set[str]:
    return {c.condition(name, t).get("reason") for t in ("Ready", "Synced")} - {None}


def snapshot(c: Campaign, secret: str) -> dict:
    raw = c.raw_secret(secret) or {}
    meta = raw.get("metadata") or {}
    return {
        "data": raw.get("data"),
        "stringData": raw.get("stringData"),
        "annotations": {
            k: v
            for k, v in (meta.get("annotations") or {}).items()
            if k != "kubectl.kubernetes.io/last-applied-configuration"
        },
        "labels": meta.get("labels"),
        "ownerReferences": meta.get("ownerReferences"),
        "finalizers": [f for f in meta.get("finalizers") or [] if not f.startswith("clickhouse.cloud/in-use-by-")],
    }


def changed(before: dict, after: dict) -> str:
    """What changed between two snapshots, by key names only (values may be secrets)."""
    b, a = before.get("data") or {}, after.get("data") or {}
    parts = [
        f"data keys added {sorted(set(a) - set(b))}",
        f"removed {sorted(set(b) - set(a))}",
        f"values changed {sorted(k for k in set(a) & set(b) if a[k] != b[k])}",
    ]
    parts += [
        f"{k} changed" for k in ("annotations", "labels", "ownerReferences", "finalizers") if before[k] != after[k]
    ]
    return ", ".join(parts)


def wait_conflict(c: Campaign, name: str, timeout: float = 60) -> list[str]:
    try:
        c.wait_for(lambda: CONFLICT in reasons(c, name), timeout=timeout, what=f"{name}: {CONFLICT}")
    except TimeoutError:
        cond = c.condition(name)
        return [
            f"{name}: no {CONFLICT} condition within {timeout:.0f}s (Ready={cond.get('status')} "
            f"reason={cond.get('reason')})"
        ]
    if c.is_ready(name):
        return [f"{name}: Ready=True although its Secret name is taken"]
    return []


def ready_means_working(c: Campaign, name: str, secret_of, until: float) -> list[str]:
    """Sample until ``until``: whenever Ready=True for the current generation, the named Secret connects."""
    problems: list[str] = []
    while time.monotonic() < until:
        obj = c.get(name) or {}
        status = obj.get("status") or {}
        if c.is_ready(name) and status.get("observedGeneration") == obj["metadata"]["generation"]:
            secret_name = secret_of()
            raw = c.raw_secret(secret_name)
            data = c.secret(secret_name) or {}
            ok, why = c.connects(data.get("uri", "")) if data else (False, "Secret missing")
            if not ok:
                # only a verdict if nothing moved meanwhile (not a race with the operator's next write)
                again = c.get(name) or {}
                raw_again = c.raw_secret(secret_name)
                if (
                    again.get("metadata", {}).get("resourceVersion") == obj["metadata"]["resourceVersion"]
                    and (raw_again or {}).get("metadata", {}).get("resourceVersion")
                    == (raw or {}).get("metadata", {}).get("resourceVersion")
                    and c.is_ready(name)
                ):
                    problems.append(
                        f"{name}: Ready=True for generation {obj['metadata']['generation']} but "
                        f"Secret {secret_name} does not connect: {why}"
                    )
                    return problems
            else:
                return problems
        time.sleep(0.3)
    return problems + [
        f"{name}: not Ready with a working Secret in time (Ready reason {c.condition(name).get('reason')})"
    ]


def test_secrets_that_collide(campaign: Campaign, seed: int):
    c = campaign
    tag = seed % 10000
    problems: list[str] = []
    keys = {case: c.new_key() for case in ("unrelated", "api-key", "shared", "rename")}
    for case, key in keys.items():
        c.credentials(f"collide-{case}-{tag}-key", key)

    # unrelated application Secret
    app_secret = f"app-config-{tag}"
    c.kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": app_secret, "namespace": NS, "labels": {"app": "orders"}},
            "stringData": {"password": "app-own-password-1", "host": "db.internal", "API_TOKEN": "tok"},
        }
    )
    c.produced.secrets.add("app-own-password-1")
    before_app = snapshot(c, app_secret)
    key_secret = f"collide-rename-{tag}-key"  # another resource's API-key Secret
    own_key = f"collide-api-key-{tag}-key"
    before_key, before_own = snapshot(c, key_secret), snapshot(c, own_key)

    unrelated, apikey = f"collide-unrelated-{tag}", f"collide-apikey-{tag}"
    first, second = f"collide-first-{tag}", f"collide-second-{tag}"
    rename = f"collide-rename-{tag}"
    shared = f"shared-conn-{tag}"
    c.apply(c.manifest(unrelated, f"collide-unrelated-{tag}-key", connectionSecret={"name": app_secret}))
    c.apply(c.manifest(apikey, own_key, connectionSecret={"name": key_secret}))
    self_named = f"collide-selfkey-{tag}"
    try:
        c.apply(c.manifest(self_named, own_key, connectionSecret={"name": own_key}))
        refused_by_crd = False
    except ApiError as e:
        refused_by_crd = e.code == 422
        if not refused_by_crd:
            problems.append(f"{self_named}: apply failed with {e.code}, not 422")
    c.apply(c.manifest(first, f"collide-shared-{tag}-key", connectionSecret={"name": shared}))
    c.apply(c.manifest(rename, f"collide-rename-{tag}-key", connectionSecret={"name": f"{rename}-a"}))

    problems += wait_conflict(c, unrelated)
    problems += wait_conflict(c, apikey)
    if not refused_by_crd:
        problems += wait_conflict(c, self_named)
    print(f"[collide] connectionSecret == credentialsRef: {'refused by the CRD' if refused_by_crd else 'applied'}")
    problems += c.wait_converged(first)
    c.apply(c.manifest(second, f"collide-shared-{tag}-key", connectionSecret={"name": shared}))
    problems += wait_conflict(c, second)
    problems += c.wait_converged(first)  # still Ready, its password works
    owners = [r.get("name") for r in (c.raw_secret(shared) or {}).get("metadata", {}).get("ownerReferences") or []]
    if owners != [first]:
        problems.append(f"{shared}: owners {owners}, expected [{first}]")

    after_app, after_key, after_own = snapshot(c, app_secret), snapshot(c, key_secret), snapshot(c, own_key)
    if after_app != before_app:
        problems.append(f"{app_secret} (unrelated) was modified: {changed(before_app, after_app)}")
    if after_key != before_key:
        problems.append(
            f"{key_secret} (API key) was modified (keys before {sorted(before_key['data'] or {})}, "
            f"after {sorted(after_key['data'] or {})})"
        )
    if after_own != before_own:
        problems.append(
            f"{own_key} (the resource's own API key) was modified (keys before "
            f"{sorted(before_own['data'] or {})}, after {sorted(after_own['data'] or {})})"
        )
    for name in (unrelated, apikey, second) + (() if refused_by_crd else (self_named,)):
        if c.services_tagged(c.uid(name), include_deleting=True):
            problems.append(f"{name}: a service was created although its Secret name is taken")

    # rename A -> B -> A
    current = {"name": f"{rename}-a"}
    problems += [f"[rename A] {p}" for p in c.wait_converged(rename, timeout=45)]
    for cycle in range(RENAMES):
        for target in (f"{rename}-b", f"{rename}-a"):
            current["name"] = target
            c.patch_spec(rename, connectionSecret={"name": target})
            found = ready_means_working(c, rename, lambda: current["name"], time.monotonic() + 45)
            problems += [f"[rename cycle {cycle} -> {target}] {p}" for p in found]
    problems += [f"[rename end] {p}" for p in c.wait_converged(rename, timeout=30)] if not problems else []

    # clean up: every deletion finishes, nothing orphaned
    uids = {n: c.uid(n) for n in (unrelated, apikey, first, second, rename) + (() if refused_by_crd else (self_named,))}
    for n in uids:
        c.delete(n)
    for n, uid in uids.items():
        problems += c.wait_gone(n, uid)
    c.remember_service_secrets()
    assert problems == [], f"seed {seed}:\n" + "\n".join(problems)
