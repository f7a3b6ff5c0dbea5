"""Spec changes that need no password (issue 16, class 3): a seeded walk of changes to a Ready
resource, none of which asks for a new password, each checked against the promise that the password
the API accepted is the one the Secret holds, under the layout the spec asks for now:

* the connection Secret's layout: ``keyPrefix`` ('' / ``DB_`` / ``PG_`` / ``APP.db-``), its ``labels``
  and ``annotations``, its ``name`` (A <-> B);
* the service: ``tags``, ``serviceName``, ``size``, ``deletionPolicy``, ``deletionProtection``;
* the API key: ``credentialsRef`` switched to another key of the same organization (a key rotation);
* the operator killed (SIGKILL) a seeded 0-0.6 s after some changes, and started again;
* before some changes, the Secret made to look as an older version wrote it (no record of its layout):
  its keys are still found and moved; labels and annotations of specs before that cannot be told from
  an application's, and stay.

An application's own key and label sit in Secret A beside the operator's. After every change the
resource must converge (Ready, Synced, the generation observed) and then: the Secret it names holds the
first password under the current prefix and its URIs connect; no key of the operator's stays under an
earlier prefix; labels and annotations the spec dropped are gone, the application's stay; and, over the
whole walk, no PATCH /password reached the API. Reduced: 6 changes, 2 kills, 2 older Secrets; full: 24 changes, 8 kills, 6 older Secrets.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
from campaign_harness import FULL, NS, TIMEOUT, Campaign
from support import e2e

from kubeemu.store import MERGE
from mpg_operator.reconcile.connection import ANN_LAYOUT, REQUIRED_KEYS

pytestmark = [pytest.mark.campaign, pytest.mark.no_conformance, pytest.mark.timeout(TIMEOUT)]

CHANGES = 24 if FULL else 6
KILL_EVERY = 3
LEGACY_EVERY = 4
PREFIXES = ("", "DB_", "PG_", "APP.db-")
USER_KEY, USER_LABEL = "app.note", "app.example/own"


def next_spec(rng: random.Random, spec: dict[str, Any], i: int, names: tuple[str, str], keys: tuple[str, str]) -> str:
    """Change 1-3 things of ``spec`` in place; returns what was changed (for the log)."""
    secret = dict(spec.get("connectionSecret") or {})
    done = []
    kinds = ["prefix", "labels", "annotations", "rename", "tags", "name", "size", "policy", "protection", "key"]
    for what in rng.sample(kinds, k=3)[: rng.randint(1, 3)]:
        if what == "prefix":
            secret["keyPrefix"] = rng.choice([p for p in PREFIXES if p != secret.get("keyPrefix", "")])
        elif what == "labels":
            secret["labels"] = {k: f"v{i}" for k in rng.sample(["team", "tier", "app.example/db"], k=rng.randint(0, 2))}
        elif what == "annotations":
            secret["annotations"] = {k: f"n{i}" for k in rng.sample(["note", "reloader/match"], k=rng.randint(0, 2))}
        elif what == "rename":
            secret["name"] = names[1] if secret["name"] == names[0] else names[0]
        elif what == "tags":
            spec["tags"] = {"step": str(i)}
        elif what == "name":
            spec["serviceName"] = f"{names[0]} {i}"
        elif what == "size":
            spec["size"] = "r8gd.xlarge" if spec.get("size", "r8gd.large") == "r8gd.large" else "r8gd.large"
        elif what == "protection":
            spec["deletionProtection"] = not spec.get("deletionProtection", False)
        elif what == "policy":
            spec["deletionPolicy"] = "Orphan" if spec.get("deletionPolicy", "Delete") == "Delete" else "Delete"
        elif what == "key":
            spec["credentialsRef"] = {"name": keys[1] if spec["credentialsRef"]["name"] == keys[0] else keys[0]}
        done.append(what)
    spec["connectionSecret"] = {k: v for k, v in secret.items() if v not in ({}, "")}
    return "+".join(done)


def check_secret(c: Campaign, spec: dict[str, Any], password: str, names: tuple[str, str], seen: dict) -> list[str]:
    shape = spec["connectionSecret"]
    name, prefix = shape["name"], shape.get("keyPrefix", "")
    raw = c.raw_secret(name) or {}
    data = c.secret(name) or {}
    meta = raw.get("metadata") or {}
    problems = []
    try:
        e2e.assert_same_secret(data.get(prefix + "password"), password, f"{name}: {prefix}password")
        e2e.assert_connects(data.get(prefix + "uri"), f"{name}: {prefix}uri")
        e2e.assert_connects(data.get(prefix + "poolerUri"), f"{name}: {prefix}poolerUri")
    except AssertionError as e:
        problems.append(str(e))
    operator_keys = set(data) - {USER_KEY}
    expected = {prefix + k for k in REQUIRED_KEYS}
    if operator_keys != expected:
        problems.append(
            f"{name}: keys left over {sorted(operator_keys - expected)}, missing {sorted(expected - operator_keys)}"
        )
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    for key, value in (shape.get("labels") or {}).items():
        if labels.get(key) != value:
            problems.append(f"{name}: label {key} not as the spec asks")
    for key, value in (shape.get("annotations") or {}).items():
        if annotations.get(key) != value:
            problems.append(f"{name}: annotation {key} not as the spec asks")
    dropped_labels = seen["labels"] - set(shape.get("labels") or {}) - seen["unknowable"]
    dropped_annotations = seen["annotations"] - set(shape.get("annotations") or {}) - seen["unknowable"]
    if dropped_labels & set(labels) or dropped_annotations & set(annotations):
        problems.append(
            f"{name}: the spec dropped {sorted(dropped_labels & set(labels))} (labels) and "
            f"{sorted(dropped_annotations & set(annotations))} (annotations), the Secret still has them"
        )
    if name == names[0] and (data.get(USER_KEY) != "kept" or labels.get(USER_LABEL) != "yes"):
        problems.append(f"{name}: the application's own key or label is gone")
    return problems


def wait_applied(c: Campaign, name: str, timeout: float = 90) -> list[str]:
    """Ready and Synced for the current generation (the Secret is checked by the caller)."""

    def applied() -> bool:
        obj = c.get(name) or {}
        status = obj.get("status") or {}
        synced = c.condition(name, "Synced").get("status") == "True"
        return c.is_ready(name) and synced and status.get("observedGeneration") == obj["metadata"]["generation"]

    try:
        c.wait_for(applied, timeout=timeout, what=f"{name} applied", interval=0.3)
    except TimeoutError as e:
        cond = c.condition(name, "Synced")
        return [f"{e}; Synced reason {cond.get('reason')}: {cond.get('message')}"]
    return c.check_one_service(name)


def as_an_older_version_wrote_it(c: Campaign, name: str) -> set[str]:
    """Drop the operator's record of the Secret's layout; returns the labels and annotations that
    become indistinguishable from an application's."""
    annotations = ((c.raw_secret(name) or {}).get("metadata") or {}).get("annotations") or {}
    recorded = json.loads(annotations.get(ANN_LAYOUT) or "{}")
    store = c.kube.store
    store.patch(store.find_type("v1", "Secret"), NS, name, MERGE, {"metadata": {"annotations": {ANN_LAYOUT: None}}})
    return set(recorded.get("labels") or ()) | set(recorded.get("annotations") or ())


def password_patches(c: Campaign, service_id: str) -> int:
    path = f"/postgres/{service_id}/password"
    return sum(1 for r in c.sim.requests if r.method == "PATCH" and r.path.endswith(path) and 200 <= r.status < 300)


def test_spec_changes_that_need_no_password_keep_it(campaign: Campaign, seed: int):
    c = campaign
    rng = random.Random(seed)
    tag = seed % 10000
    key = c.new_key()
    other_key = c.new_key(org_id=key[2])  # a rotation: another key of the same organization
    keys = (f"layout-{tag}-key", f"layout-{tag}-key2")
    c.credentials(keys[0], key)
    c.credentials(keys[1], other_key)
    name = f"layout-{tag}"
    names = (f"{name}-a", f"{name}-b")
    spec: dict[str, Any] = {"connectionSecret": {"name": names[0]}, "serviceName": names[0]}
    uid = c.apply(c.manifest(name, keys[0], **spec))["metadata"]["uid"]
    problems = c.wait_converged(name, timeout=120)
    assert problems == [], problems
    service_id = c.get(name)["status"]["serviceId"]  # type: ignore[index]
    password = (c.secret(names[0]) or {})["password"]
    before = password_patches(c, service_id)
    c.kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": names[0], "namespace": NS, "labels": {USER_LABEL: "yes"}},
            "stringData": {USER_KEY: "kept"},
        }
    )
    spec["credentialsRef"] = {"name": keys[0]}
    seen: dict[str, set[str]] = {"labels": set(), "annotations": set(), "unknowable": set()}
    walk = []
    for i in range(CHANGES):
        legacy = i % LEGACY_EVERY == 1
        if legacy:
            seen["unknowable"] |= as_an_older_version_wrote_it(c, spec["connectionSecret"]["name"])
        what = next_spec(rng, spec, i, names, keys)
        killed = (i + 1) % KILL_EVERY == 0
        walk.append(what + (" (killed)" if killed else "") + (" (older Secret)" if legacy else ""))
        seen["labels"] |= set(spec["connectionSecret"].get("labels") or {})
        seen["annotations"] |= set(spec["connectionSecret"].get("annotations") or {})
        c.patch_spec(name, **spec)
        if killed:
            time.sleep(rng.uniform(0, 0.6))
            c.restart_operator()
        found = wait_applied(c, name)
        if not found:
            found = check_secret(c, spec, password, names, seen)
        problems += [f"change {i} ({walk[-1]}): {p}" for p in found]
        if found:
            break  # the next changes would only repeat it
    print(f"[layout] seed {seed}: " + ", ".join(walk))
    after = password_patches(c, service_id)
    if after != before:
        problems.append(f"{after - before} PATCH /password sent over changes that need no password")
    spec["deletionPolicy"], spec["deletionProtection"] = "Delete", False
    c.patch_spec(name, **spec)
    problems += wait_applied(c, name, timeout=60)
    c.delete(name)
    problems += c.wait_gone(name, uid)
    c.remember_service_secrets()
    assert problems == [], f"seed {seed}:\n" + "\n".join(problems)
