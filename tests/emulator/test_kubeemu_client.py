"""The emulator driven by the real ``kubernetes`` client (sync), as a cluster would be."""

from __future__ import annotations

import base64
import json
import threading
import time

import kubernetes
import pytest
from kubeemu_testlib import GROUP, KIND, PLURAL, VERSION, widget
from kubernetes.client.exceptions import ApiException

from kubeemu import ApiCall, KubeEmulator

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def status_of(exc: pytest.ExceptionInfo[ApiException]) -> dict:
    return json.loads(exc.value.body)


def test_create_get_list_custom_objects(custom: kubernetes.client.CustomObjectsApi) -> None:
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1", tier="small"))
    meta = created["metadata"]
    assert created["kind"] == KIND and created["apiVersion"] == f"{GROUP}/{VERSION}"
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and int(meta["resourceVersion"]) > 0
    assert "status" not in created  # dropped on create: status is a subresource

    custom.create_namespaced_custom_object(GROUP, VERSION, "other", PLURAL, widget("w2", namespace="other"))
    fetched = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")
    assert fetched["metadata"]["uid"] == meta["uid"]

    everywhere = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    assert everywhere["kind"] == "WidgetList" and everywhere["apiVersion"] == f"{GROUP}/{VERSION}"
    assert int(everywhere["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])
    assert sorted(i["metadata"]["name"] for i in everywhere["items"]) == ["w1", "w2"]
    in_default = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    assert [i["metadata"]["name"] for i in in_default["items"]] == ["w1"]


def test_create_conflicts_and_missing_objects(custom: kubernetes.client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1"))
    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1"))
    body = status_of(exc)
    assert exc.value.status == 409
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["reason"] == "AlreadyExists"
    assert body["message"] == 'widgets.example.com "w1" already exists'

    with pytest.raises(ApiException) as exc:
        custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "nope")
    assert exc.value.status == 404 and status_of(exc)["reason"] == "NotFound"
    assert status_of(exc)["message"] == 'widgets.example.com "nope" not found'

    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object(GROUP, VERSION, "missing-ns", PLURAL, widget("w", "missing-ns"))
    assert exc.value.status == 404 and status_of(exc)["message"] == 'namespaces "missing-ns" not found'


def test_generate_name(core: kubernetes.client.CoreV1Api) -> None:
    created = core.create_namespaced_config_map("default", {"metadata": {"generateName": "cm-"}, "data": {"a": "b"}})
    assert created.metadata.name.startswith("cm-") and len(created.metadata.name) == len("cm-") + 5


def test_status_subresource_is_separate(custom: kubernetes.client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1", tier="small"))

    # Writes to the main resource ignore status...
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "w1", {"spec": {"tier": "large"}, "status": {"phase": "Hacked"}}
    )
    assert patched["spec"]["tier"] == "large" and "status" not in patched
    assert patched["metadata"]["generation"] == 2

    # ...and writes to /status change only status (and do not bump the generation).
    patched = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "w1", {"spec": {"tier": "small"}, "status": {"phase": "Ready"}}
    )
    assert patched["status"] == {"phase": "Ready"} and patched["spec"]["tier"] == "large"
    assert patched["metadata"]["generation"] == 2

    # Metadata-only changes neither bump the generation.
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "w1", {"metadata": {"labels": {"a": "b"}}}
    )
    assert patched["metadata"]["generation"] == 2 and patched["status"] == {"phase": "Ready"}

    status = custom.get_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "w1")
    assert status["status"] == {"phase": "Ready"}


def test_noop_patch_keeps_resource_version(custom: kubernetes.client.CustomObjectsApi) -> None:
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1", tier="small"))
    same = custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1", {"spec": {"tier": "small"}})
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_replace_and_optimistic_concurrency(custom: kubernetes.client.CustomObjectsApi) -> None:
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1", tier="small"))
    body = dict(created, spec={**created["spec"], "tier": "large"})
    replaced = custom.replace_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1", body)
    assert replaced["spec"]["tier"] == "large"
    assert int(replaced["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])

    # The same body again carries the now stale resourceVersion: 409 Conflict.
    with pytest.raises(ApiException) as exc:
        custom.replace_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1", body)
    assert exc.value.status == 409 and status_of(exc)["reason"] == "Conflict"
    assert "the object has been modified" in status_of(exc)["message"]

    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"tier": "small"}}
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1", stale)
    assert exc.value.status == 409

    # Custom resources cannot be replaced without a resourceVersion.
    unversioned = widget("w1", tier="small")
    with pytest.raises(ApiException) as exc:
        custom.replace_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1", unversioned)
    assert exc.value.status == 422


def test_json_patch_with_test_operation(custom: kubernetes.client.CustomObjectsApi) -> None:
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1"))
    rv = created["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/cleanup"]},
    ]
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "w1", ops, _content_type=JSON_PATCH
    )
    assert patched["metadata"]["finalizers"] == ["example.com/cleanup"]

    # The same test against the old resourceVersion fails with 422, as kopf expects.
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1", ops, _content_type=JSON_PATCH)
    assert exc.value.status == 422 and status_of(exc)["reason"] == "Invalid"

    # Strategic merge patch is not supported for custom resources (415), as on a real server.
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            "w1",
            {"spec": {}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert exc.value.status == 415


def test_secrets_string_data(core: kubernetes.client.CoreV1Api) -> None:
    body = {
        "metadata": {"name": "s1"},
        "data": {"keep": base64.b64encode(b"old").decode(), "user": base64.b64encode(b"x").decode()},
        "stringData": {"user": "alice"},
    }
    created = core.create_namespaced_secret("default", body)
    assert created.type == "Opaque"
    assert created.string_data is None
    assert base64.b64decode(created.data["user"]) == b"alice"  # stringData wins
    assert base64.b64decode(created.data["keep"]) == b"old"

    patched = core.patch_namespaced_secret("s1", "default", {"stringData": {"extra": "v"}}, _content_type=MERGE)
    assert base64.b64decode(patched.data["extra"]) == b"v" and "keep" in patched.data

    replaced = core.replace_namespaced_secret(
        "s1", "default", {"metadata": {"name": "s1"}, "stringData": {"only": "1"}}
    )
    assert set(replaced.data) == {"only"}

    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_secret("s1", "default", {"type": "kubernetes.io/tls"}, _content_type=MERGE)
    assert exc.value.status == 422


def test_label_and_field_selectors(core: kubernetes.client.CoreV1Api) -> None:
    for name, labels in [("a", {"app": "db", "tier": "x"}), ("b", {"app": "db"}), ("c", {"app": "web"})]:
        core.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": labels}})
    core.create_namespaced_config_map("other", {"metadata": {"name": "a", "labels": {"app": "db"}}})

    def names(**kw: str) -> list[str]:
        return sorted(
            f"{i.metadata.namespace}/{i.metadata.name}" for i in core.list_config_map_for_all_namespaces(**kw).items
        )

    assert names(label_selector="app=db") == ["default/a", "default/b", "other/a"]
    assert names(label_selector="app=db,tier!=x") == ["default/b", "other/a"]
    assert names(label_selector="app in (web, db),tier") == ["default/a"]
    assert names(label_selector="!tier,app notin (web)") == ["default/b", "other/a"]
    assert names(field_selector="metadata.name=a") == ["default/a", "other/a"]
    assert names(field_selector="metadata.namespace=other") == ["other/a"]
    assert names(field_selector="metadata.name=a,metadata.namespace!=other") == ["default/a"]
    with pytest.raises(ApiException) as exc:
        names(field_selector="spec.nothing=1")
    assert exc.value.status == 400


def test_list_pagination(core: kubernetes.client.CoreV1Api) -> None:
    for i in range(5):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"cm{i}"}})
    first = core.list_namespaced_config_map("default", limit=2)
    assert [i.metadata.name for i in first.items] == ["cm0", "cm1"] and first.metadata.var_continue
    second = core.list_namespaced_config_map("default", limit=10, _continue=first.metadata.var_continue)
    assert [i.metadata.name for i in second.items] == ["cm2", "cm3", "cm4"]
    assert not second.metadata.var_continue


def test_namespaces(core: kubernetes.client.CoreV1Api, emu: KubeEmulator) -> None:
    assert {"default", "other"} <= {n.metadata.name for n in core.list_namespace().items}
    assert core.read_namespace("default").status.phase == "Active"
    core.create_namespace({"metadata": {"name": "scratch"}})
    core.create_namespaced_config_map("scratch", {"metadata": {"name": "inside"}})
    core.delete_namespace("scratch")
    emu.wait_for(lambda: emu.get("v1", "Namespace", "scratch") is None)
    assert emu.get("v1", "ConfigMap", "inside", "scratch") is None


def test_delete_with_finalizers(custom: kubernetes.client.CustomObjectsApi, emu: KubeEmulator) -> None:
    body = widget("w1")
    body["metadata"]["finalizers"] = ["example.com/cleanup"]
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)

    deleting = custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")
    assert deleting["metadata"]["deletionTimestamp"]
    still = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")
    assert still["metadata"]["deletionTimestamp"] == deleting["metadata"]["deletionTimestamp"]

    # No new finalizers on an object being deleted.
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, "w1", {"metadata": {"finalizers": ["example.com/cleanup", "x.io/y"]}}
        )
    assert exc.value.status == 422

    custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as exc:
        custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")
    assert exc.value.status == 404


def test_owner_references_garbage_collection(
    custom: kubernetes.client.CustomObjectsApi, core: kubernetes.client.CoreV1Api, emu: KubeEmulator
) -> None:
    owner = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1"))
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": KIND,
        "name": "w1",
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    core.create_namespaced_secret(
        "default", {"metadata": {"name": "owned", "ownerReferences": [ref]}, "stringData": {"k": "v"}}
    )
    core.create_namespaced_secret("default", {"metadata": {"name": "unrelated"}, "stringData": {"k": "v"}})

    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")
    emu.wait_for(lambda: emu.get("v1", "Secret", "owned") is None)
    assert emu.get("v1", "Secret", "unrelated") is not None


def test_watch_streams_events(custom: kubernetes.client.CustomObjectsApi, emu: KubeEmulator) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("before"))
    listing = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    since = listing["metadata"]["resourceVersion"]

    def change() -> None:
        time.sleep(0.2)
        emu.apply(widget("w1", tier="small"))
        emu.apply(widget("w1", tier="large"))
        emu.apply(widget("elsewhere", namespace="other"))
        emu.delete(f"{GROUP}/{VERSION}", KIND, "w1")

    thread = threading.Thread(target=change)
    thread.start()
    seen = []
    watch = kubernetes.watch.Watch()
    for event in watch.stream(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        PLURAL,
        resource_version=since,
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    ):
        if event["type"] == "BOOKMARK":
            continue
        seen.append((event["type"], event["object"]["metadata"]["name"]))
        if event["type"] == "DELETED":
            watch.stop()
    thread.join()
    assert seen == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]


def test_watch_without_resource_version_lists_first_and_bookmarks(emu: KubeEmulator) -> None:
    import urllib.request

    emu.apply(widget("w1"))
    emu.apply(widget("w2"))
    url = (
        f"{emu.url}/apis/{GROUP}/{VERSION}/{PLURAL}?watch=true&allowWatchBookmarks=true&timeoutSeconds=1&labelSelector="
    )
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=10) as response:
        lines = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    assert time.monotonic() - started < 5  # timeoutSeconds ends the stream
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines[:2]] == [("ADDED", "w1"), ("ADDED", "w2")]
    bookmarks = [e for e in lines if e["type"] == "BOOKMARK"]
    assert bookmarks and bookmarks[0]["object"]["kind"] == KIND
    assert int(bookmarks[-1]["object"]["metadata"]["resourceVersion"]) >= 1


def test_discovery(api_client: kubernetes.client.ApiClient) -> None:
    resources = kubernetes.client.CustomObjectsApi(api_client).get_api_resources(GROUP, VERSION)
    by_name = {r.name: r for r in resources.resources}
    assert by_name["widgets"].namespaced and by_name["widgets"].kind == KIND
    assert by_name["widgets"].short_names == ["wd"] and "watch" in by_name["widgets"].verbs
    assert set(by_name["widgets/status"].verbs) == {"get", "patch", "update"}
    groups = kubernetes.client.ApisApi(api_client).get_api_versions()
    assert GROUP in {g.name for g in groups.groups}
    assert kubernetes.client.VersionApi(api_client).get_code().major == "1"


def test_crd_objects_register_resources(
    api_client: kubernetes.client.ApiClient, custom: kubernetes.client.CustomObjectsApi
) -> None:
    ext = kubernetes.client.ApiextensionsV1Api(api_client)
    assert "widgets.example.com" in {c.metadata.name for c in ext.list_custom_resource_definition().items}
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.org"},
        "spec": {
            "group": "example.org",
            "scope": "Cluster",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }
    ext.create_custom_resource_definition(crd)
    created = custom.create_cluster_custom_object(
        "example.org",
        "v1alpha1",
        "gadgets",
        {"apiVersion": "example.org/v1alpha1", "kind": "Gadget", "metadata": {"name": "g1"}, "spec": {"any": 1}},
    )
    assert created["spec"] == {"any": 1}
    ext.delete_custom_resource_definition("gadgets.example.org")
    with pytest.raises(ApiException) as exc:
        custom.list_cluster_custom_object("example.org", "v1alpha1", "gadgets")
    assert exc.value.status == 404


def test_calls_are_recorded_as_rbac_requests(
    custom: kubernetes.client.CustomObjectsApi, core: kubernetes.client.CoreV1Api, emu: KubeEmulator
) -> None:
    emu.calls.clear()
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1"))
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "w1", {"status": {"a": 1}})
    core.list_secret_for_all_namespaces()
    core.delete_collection_namespaced_config_map("default")
    assert emu.calls == [
        ApiCall("create", GROUP, VERSION, PLURAL, None, "default", None),
        ApiCall("patch", GROUP, VERSION, PLURAL, "status", "default", "w1"),
        ApiCall("list", "", "v1", "secrets", None, None, None),
        ApiCall("deletecollection", "", "v1", "configmaps", None, "default", None),
    ]


def test_fault_injection_through_kmock(core: kubernetes.client.CoreV1Api, emu: KubeEmulator) -> None:
    emu.kmock["get /api/v1/namespaces/default/secrets/s1"][:1] << 503 << {"kind": "Status", "code": 503}
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_secret("s1", "default")
    assert exc.value.status == 503
    with pytest.raises(ApiException) as exc:  # the reaction is used up: back to the emulation
        core.read_namespaced_secret("s1", "default")
    assert exc.value.status == 404


def test_watch_with_initial_events_ends_with_annotated_bookmark(emu: KubeEmulator) -> None:
    import urllib.request

    emu.apply(widget("w1"))
    url = (
        f"{emu.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}?watch=true&sendInitialEvents=true"
        "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1"
    )
    with urllib.request.urlopen(url, timeout=10) as response:
        events = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "w1"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_watch_with_label_selector_sees_objects_enter_and_leave(emu: KubeEmulator) -> None:
    import urllib.request

    rv = emu.store.resource_version

    def cm(labels: dict) -> dict:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": labels}}

    emu.apply(cm({"app": "other"}))
    emu.apply(cm({"app": "db"}))
    emu.apply(cm({"app": "db", "x": "1"}))
    emu.apply(cm({"app": "other"}))
    url = (
        f"{emu.url}/api/v1/namespaces/default/configmaps?watch=true&labelSelector=app%3Ddb&resourceVersion={rv}"
        "&timeoutSeconds=1"
    )
    with urllib.request.urlopen(url, timeout=10) as response:
        events = [json.loads(line)["type"] for line in response.read().splitlines() if line.strip()]
    assert events == ["ADDED", "MODIFIED", "DELETED"]


def test_restart_keeps_objects_and_a_busy_port_fails_cleanly() -> None:
    import socket
    import urllib.request

    emu = KubeEmulator()
    with emu:
        emu.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"}})
    assert emu.calls == []  # the helpers do not go through HTTP
    with emu:
        with urllib.request.urlopen(f"{emu.url}/api/v1/namespaces/default/configmaps/kept", timeout=5) as r:
            assert json.loads(r.read())["metadata"]["name"] == "kept"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(RuntimeError, match="failed to start"):
            KubeEmulator(port=busy.getsockname()[1]).start()
