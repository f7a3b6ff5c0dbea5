"""Store semantics, selectors and patches, exercised directly (no HTTP)."""

from __future__ import annotations

import json
import urllib.request

import pytest
from kubeemu_testlib import WIDGET_CRD, widget

from kubeemu import ApiError, KubeEmulator
from kubeemu.patching import json_patch, merge_patch
from kubeemu.selectors import parse_field_selector, parse_label_selector
from kubeemu.store import Store


@pytest.fixture
def store() -> Store:
    s = Store(history_limit=10)
    s.add_crd(WIDGET_CRD)
    s.create(s.resolve("", "v1", "namespaces"), None, {"metadata": {"name": "default"}})
    return s


def labelled(**labels: str) -> dict:
    return {"metadata": {"labels": labels}}


def test_label_selector_grammar() -> None:
    match = parse_label_selector("a=b,c!=d,e in (x, y),f,!g,h notin (z)")
    assert match(labelled(a="b", e="x", f="1"))
    assert not match(labelled(a="b", e="x", f="1", g="1"))
    assert not match(labelled(a="b", c="d", e="x", f="1"))
    assert not match(labelled(a="b", e="q", f="1"))
    assert not match(labelled(a="b", e="x", f="1", h="z"))
    assert parse_label_selector("a==b")(labelled(a="b"))
    with pytest.raises(ApiError) as exc:
        parse_label_selector("a in x")
    assert exc.value.code == 400


def test_field_selector() -> None:
    match = parse_field_selector(
        "metadata.name=x,metadata.namespace!=y", frozenset({"metadata.name", "metadata.namespace"})
    )
    assert match({"metadata": {"name": "x", "namespace": "z"}})
    assert not match({"metadata": {"name": "x", "namespace": "y"}})


def test_merge_patch_rfc7386() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None, "d": 3}, "l": [2]}) == {
        "a": {"c": 2, "d": 3},
        "l": [2],
    }


def test_json_patch_rfc6902() -> None:
    doc = {"a": [1, 2], "b": {"c": 1}}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "remove", "path": "/b/c"},
            {"op": "replace", "path": "/a/0", "value": 0},
            {"op": "copy", "from": "/a", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/b/e"},
            {"op": "test", "path": "/a/1", "value": 2},
        ],
    )
    assert out == {"a": [0, 2, 3], "b": {"e": [0, 2, 3]}}
    assert doc == {"a": [1, 2], "b": {"c": 1}}  # not mutated
    with pytest.raises(ApiError) as exc:
        json_patch(doc, [{"op": "test", "path": "/b/c", "value": 2}])
    assert exc.value.code == 422
    with pytest.raises(ApiError) as exc:
        json_patch(doc, [{"op": "remove", "path": "/nope"}])
    assert exc.value.code == 422
    with pytest.raises(ApiError) as exc:
        json_patch(doc, {"op": "add"})
    assert exc.value.code == 400


def test_resource_versions_increase_cluster_wide(store: Store) -> None:
    rt = store.resolve("example.com", "v1", "widgets")
    cm = store.resolve("", "v1", "configmaps")
    a = store.create(rt, "default", widget("a"))
    b = store.create(cm, "default", {"metadata": {"name": "b"}})
    c = store.patch(rt, "default", "a", "application/merge-patch+json", {"metadata": {"labels": {"x": "y"}}})
    rvs = [int(o["metadata"]["resourceVersion"]) for o in (a, b, c)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    assert "generation" not in b["metadata"]  # built-ins like ConfigMap have no generation


def test_watch_history_expiry(store: Store) -> None:
    cm = store.resolve("", "v1", "configmaps")
    first = store.resource_version
    for i in range(30):
        store.create(cm, "default", {"metadata": {"name": f"cm{i}"}})
    assert store.events_since(first) is None  # too old: 410 Gone
    recent = store.events_since(store.resource_version - 2)
    assert recent is not None and [e.type for e in recent] == ["ADDED", "ADDED"]


def test_watch_gone_is_streamed_as_410() -> None:
    with KubeEmulator() as emu:
        emu.store._history_limit = 4
        for i in range(10):
            emu.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm{i}"}})
        url = f"{emu.url}/api/v1/configmaps?watch=true&resourceVersion=1&timeoutSeconds=2"
        with urllib.request.urlopen(url, timeout=10) as response:
            events = [json.loads(line) for line in response.read().splitlines() if line.strip()]
        assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410
        assert events[0]["object"]["reason"] == "Expired"


def test_gc_waits_for_all_owners_and_orphan_policy(store: Store) -> None:
    rt = store.resolve("example.com", "v1", "widgets")
    cm = store.resolve("", "v1", "configmaps")
    o1 = store.create(rt, "default", widget("o1"))
    o2 = store.create(rt, "default", widget("o2"))
    refs = [
        {"apiVersion": "example.com/v1", "kind": "Widget", "name": o["metadata"]["name"], "uid": o["metadata"]["uid"]}
        for o in (o1, o2)
    ]
    store.create(cm, "default", {"metadata": {"name": "both", "ownerReferences": refs}})
    store.create(cm, "default", {"metadata": {"name": "orphan", "ownerReferences": refs[:1]}})

    store.delete(rt, "default", "o1", {"propagationPolicy": "Orphan"})
    orphan = store.get(cm, "default", "orphan")
    assert "ownerReferences" not in orphan["metadata"]
    assert store.get(cm, "default", "both")  # o2 still owns it
    store.delete(rt, "default", "o2")
    with pytest.raises(ApiError):
        store.get(cm, "default", "both")


def test_namespace_termination_waits_for_finalizers(store: Store) -> None:
    ns = store.resolve("", "v1", "namespaces")
    rt = store.resolve("example.com", "v1", "widgets")
    store.create(ns, None, {"metadata": {"name": "team"}})
    body = widget("held", namespace="team")
    body["metadata"]["finalizers"] = ["x.io/hold"]
    store.create(rt, "team", body)
    store.delete(ns, None, "team")
    assert store.get(ns, None, "team")["status"]["phase"] == "Terminating"
    assert store.get(rt, "team", "held")["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiError) as exc:
        store.create(rt, "team", widget("new", namespace="team"))
    assert exc.value.code == 403
    store.patch(rt, "team", "held", "application/merge-patch+json", {"metadata": {"finalizers": []}})
    with pytest.raises(ApiError) as exc:
        store.get(ns, None, "team")
    assert exc.value.code == 404


def test_dry_run_and_delete_collection(store: Store) -> None:
    cm = store.resolve("", "v1", "configmaps")
    store.create(cm, "default", {"metadata": {"name": "ghost"}}, dry_run=True)
    with pytest.raises(ApiError):
        store.get(cm, "default", "ghost")
    for name, app in [("a", "x"), ("b", "x"), ("c", "y")]:
        store.create(cm, "default", {"metadata": {"name": name, "labels": {"app": app}}})
    store.delete_collection(cm, "default", "app=x", None)
    assert [i["metadata"]["name"] for i in store.list(cm, "default")["items"]] == ["c"]


def test_invalid_names_and_namespace_mismatch(store: Store) -> None:
    cm = store.resolve("", "v1", "configmaps")
    with pytest.raises(ApiError) as exc:
        store.create(cm, "default", {"metadata": {"name": "Bad_Name"}})
    assert exc.value.code == 422 and "RFC 1123" in exc.value.message
    with pytest.raises(ApiError) as exc:
        store.create(cm, "default", {"metadata": {"name": "x", "namespace": "elsewhere"}})
    assert exc.value.code == 400


def test_labels_and_owner_references_are_validated(store: Store) -> None:
    cm = store.resolve("", "v1", "configmaps")
    store.create(cm, "default", {"metadata": {"name": "ok", "labels": {"example.com/app": "db-1", "empty": ""}}})
    with pytest.raises(ApiError) as exc:
        store.create(cm, "default", {"metadata": {"name": "bad", "labels": {"app": "has space"}}})
    assert exc.value.code == 422 and 'metadata.labels: Invalid value: "has space"' in exc.value.message
    with pytest.raises(ApiError) as exc:
        store.patch(cm, "default", "ok", "application/merge-patch+json", {"metadata": {"labels": {"x": "y" * 64}}})
    assert exc.value.code == 422
    with pytest.raises(ApiError) as exc:
        store.create(cm, "default", {"metadata": {"name": "orphan", "ownerReferences": [{"kind": "Widget"}]}})
    assert exc.value.code == 422 and "metadata.ownerReferences[0].apiVersion: Required value" in exc.value.message


def test_foreground_deletion_waits_for_blocking_dependents(store: Store) -> None:
    rt = store.resolve("example.com", "v1", "widgets")
    cm = store.resolve("", "v1", "configmaps")
    owner = store.create(rt, "default", widget("o"))
    ref = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "name": "o",
        "uid": owner["metadata"]["uid"],
        "blockOwnerDeletion": True,
    }
    store.create(cm, "default", {"metadata": {"name": "dep", "ownerReferences": [ref], "finalizers": ["x.io/hold"]}})

    store.delete(rt, "default", "o", {"propagationPolicy": "Foreground"})
    deleting = store.get(rt, "default", "o")
    assert deleting["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert store.get(cm, "default", "dep")["metadata"]["deletionTimestamp"]

    store.patch(cm, "default", "dep", "application/merge-patch+json", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiError):
        store.get(rt, "default", "o")  # the last blocking dependent went, so did the owner


def test_strategic_merge_patch_merges_metadata_lists(store: Store) -> None:
    cm = store.resolve("", "v1", "configmaps")
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u1"}
    store.create(
        cm,
        "default",
        {"metadata": {"name": "c", "finalizers": ["a.io/x"], "ownerReferences": [ref]}, "data": {"k": "v"}},
    )
    smp = "application/strategic-merge-patch+json"
    out = store.patch(
        cm,
        "default",
        "c",
        smp,
        {
            "metadata": {"finalizers": ["b.io/y"], "ownerReferences": [{**ref, "uid": "u2", "name": "p"}]},
            "data": {"k2": "v2"},
        },
    )
    assert out["metadata"]["finalizers"] == ["a.io/x", "b.io/y"]
    assert [r["uid"] for r in out["metadata"]["ownerReferences"]] == ["u1", "u2"]
    assert out["data"] == {"k": "v", "k2": "v2"}
    out = store.patch(cm, "default", "c", smp, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.io/x"]}})
    assert out["metadata"]["finalizers"] == ["b.io/y"]
