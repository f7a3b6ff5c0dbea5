"""What real clients need on the wire: OpenAPI v3, Table, protobuf bodies, server-side apply and
managedFields, strict field validation, events.k8s.io over core events, the chart's built-ins.

Plain HTTP here (the real kubectl and helm are driven in tests/clients).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
import yaml
from kubeemu_testlib import GROUP, PLURAL, VERSION, widget

from kubeemu import KubeEmulator
from kubeemu.tables import human_duration, jsonpath_first

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
APPLY = "application/apply-patch+yaml"
WIDGETS = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"


def call(
    emu: KubeEmulator,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
    accept: str = "application/json",
    raw: bytes | None = None,
) -> tuple[int, Any]:
    data = (
        raw
        if raw is not None
        else (None if body is None else (body.encode() if isinstance(body, str) else json.dumps(body).encode()))
    )
    request = urllib.request.Request(
        emu.url + path,
        data=data,
        method=method,
        headers={"Content-Type": content_type, "Accept": accept, "User-Agent": "wire-test/1.0"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


# ---------------------------------------------------------------- OpenAPI v3


def test_openapi_v3_index_and_group_version_documents(emu: KubeEmulator) -> None:
    code, index = call(emu, "GET", "/openapi/v3")
    assert code == 200
    assert {"api/v1", "apis/apps/v1", f"apis/{GROUP}/{VERSION}"} <= set(index["paths"])
    url = index["paths"][f"apis/{GROUP}/{VERSION}"]["serverRelativeURL"]
    assert url.startswith(f"/openapi/v3/apis/{GROUP}/{VERSION}?hash=")
    code, doc = call(emu, "GET", url)
    assert code == 200 and doc["openapi"].startswith("3.")
    schema = next(
        s
        for s in doc["components"]["schemas"].values()
        if {"group": GROUP, "version": VERSION, "kind": "Widget"} in s.get("x-kubernetes-group-version-kind", [])
    )
    assert schema["properties"]["spec"]["properties"]["tier"]["enum"] == ["small", "large"]
    assert schema["properties"]["metadata"]["allOf"][0]["$ref"].endswith("meta.v1.ObjectMeta")
    patch = doc["paths"][f"{WIDGETS.replace('/default/', '/{namespace}/')}/{{name}}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "Widget"
    assert {p["name"] for p in patch["parameters"]} >= {"fieldValidation", "fieldManager", "force", "dryRun"}
    assert call(emu, "GET", "/openapi/v3/apis/nope/v1")[0] == 404


# ---------------------------------------------------------------- Table


def test_table_for_custom_resources_and_builtins(emu: KubeEmulator) -> None:
    crd = emu.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", f"{PLURAL}.{GROUP}")
    crd["spec"]["versions"][0]["additionalPrinterColumns"] = [
        {"name": "Region", "type": "string", "jsonPath": ".spec.region"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    emu.add_crd(crd)
    emu.apply(widget("w1", replicas=2))
    code, table = call(emu, "GET", WIDGETS, accept=TABLE)
    assert code == 200 and table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Region", "Replicas", "Ready", "Age"]
    cells = table["rows"][0]["cells"]
    assert cells[:4] == ["w1", "eu-west-1", 2, None] and cells[4].endswith("s")
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert table["rows"][0]["object"]["metadata"]["name"] == "w1"
    code, one = call(emu, "GET", f"{WIDGETS}/w1?includeObject=Object", accept=TABLE)
    assert one["rows"][0]["object"]["spec"]["replicas"] == 2

    emu.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default"},
            "stringData": {"a": "1", "b": "2"},
        }
    )
    code, table = call(emu, "GET", "/api/v1/namespaces/default/secrets", accept=TABLE)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Type", "Data", "Age"]
    assert table["rows"][0]["cells"][:3] == ["s", "Opaque", 2]
    code, plain = call(emu, "GET", "/api/v1/namespaces/default/secrets")
    assert plain["kind"] == "SecretList"  # without the Table Accept header: the list


def test_table_helpers() -> None:
    assert [human_duration(s) for s in (-5, 0, 59, 119, 125, 600, 3 * 3600 + 60, 30 * 3600, 50 * 3600)] == [
        "<invalid>",
        "0s",
        "59s",
        "119s",
        "2m5s",
        "10m",
        "3h1m",
        "30h",
        "2d2h",
    ]
    obj = {
        "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]},
        "spec": {"list": [1, 2]},
    }
    assert jsonpath_first(obj, '.status.conditions[?(@.type=="Ready")].status') == "True"
    assert jsonpath_first(obj, ".spec.list[1]") == 2
    assert jsonpath_first(obj, ".spec.missing") is None


# ---------------------------------------------------------------- protobuf


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _secret_protobuf(name: str, data: dict[str, bytes]) -> bytes:
    meta = _field(1, name.encode()) + _field(11, _field(1, b"app") + _field(2, b"web"))
    body = _field(1, meta) + b"".join(_field(2, _field(1, k.encode()) + _field(2, v)) for k, v in data.items())
    body += _field(3, b"Opaque")
    type_meta = _field(1, b"v1") + _field(2, b"Secret")
    return b"k8s\x00" + _field(1, type_meta) + _field(2, body)


def test_protobuf_bodies_of_builtins_are_decoded(emu: KubeEmulator) -> None:
    body = _secret_protobuf("pb", {"password": b"\x00\xffbinary"})
    code, created = call(
        emu, "POST", "/api/v1/namespaces/default/secrets", raw=body, content_type="application/vnd.kubernetes.protobuf"
    )
    assert code == 201
    assert created["metadata"]["labels"] == {"app": "web"}
    assert base64.b64decode(created["data"]["password"]) == b"\x00\xffbinary"
    assert created["type"] == "Opaque"
    unknown = b"k8s\x00" + _field(1, _field(1, b"apps/v1") + _field(2, b"Deployment")) + _field(2, b"")
    code, status = call(
        emu,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        raw=unknown,
        content_type="application/vnd.kubernetes.protobuf",
    )
    assert code == 415 and status["reason"] == "UnsupportedMediaType"
    assert "accepted media types include: application/json, application/yaml" in status["message"]
    code, status = call(emu, "POST", "/api/v1/namespaces/default/configmaps", raw=b"x", content_type="text/plain")
    assert code == 415 and "application/vnd.kubernetes.protobuf" in status["message"]
    assert "text/plain" not in status["message"]


# ---------------------------------------------------------------- server-side apply and managedFields


def _apply(emu: KubeEmulator, name: str, manager: str, force: bool = False, **spec: Any) -> tuple[int, Any]:
    body = yaml.safe_dump(
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": name}, "spec": spec}
    )
    query = f"?fieldManager={manager}" + ("&force=true" if force else "")
    return call(emu, "PATCH", f"{WIDGETS}/{name}{query}", body, content_type=APPLY)


def _owners(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["manager"]: e for e in obj["metadata"]["managedFields"]}


def test_server_side_apply_ownership_conflicts_force_and_removal(emu: KubeEmulator) -> None:
    code, created = _apply(emu, "ssa", "alice", region="eu-west-1", tier="small", replicas=1)
    assert code == 201 and created["spec"] == {"region": "eu-west-1", "tier": "small", "replicas": 1}
    assert _owners(created)["alice"]["operation"] == "Apply"
    assert set(_owners(created)["alice"]["fieldsV1"]["f:spec"]) == {"f:region", "f:tier", "f:replicas"}
    # Same values from a second manager: shared, no conflict.
    code, shared = _apply(emu, "ssa", "bob", region="eu-west-1", replicas=1)
    assert code == 200 and {"alice", "bob"} <= set(_owners(shared))
    # A different value for a field alice owns: 409 naming manager and field.
    code, status = _apply(emu, "ssa", "bob", region="eu-west-1", replicas=3, tier="large")
    assert code == 409 and status["reason"] == "Conflict"
    assert status["message"].startswith('Apply failed with 2 conflicts: conflicts with "alice" using example.com/v1:')
    assert {c["field"] for c in status["details"]["causes"]} == {".spec.replicas", ".spec.tier"}
    assert all(c["reason"] == "FieldManagerConflict" for c in status["details"]["causes"])
    assert emu.get(f"{GROUP}/{VERSION}", "Widget", "ssa")["spec"]["replicas"] == 1
    # force takes the fields over
    code, forced = _apply(emu, "ssa", "bob", force=True, region="eu-west-1", replicas=3, tier="large")
    assert code == 200 and forced["spec"]["replicas"] == 3
    assert set(_owners(forced)["alice"]["fieldsV1"]["f:spec"]) == {"f:region"}
    # alice stops applying tier: bob still owns it, it stays; bob drops it: removed.
    _apply(emu, "ssa", "alice", region="eu-west-1")
    assert emu.get(f"{GROUP}/{VERSION}", "Widget", "ssa")["spec"]["tier"] == "large"
    _apply(emu, "ssa", "bob", region="eu-west-1", replicas=3)
    assert "tier" not in emu.get(f"{GROUP}/{VERSION}", "Widget", "ssa")["spec"]
    # An update takes fields over without conflict.
    code, patched = call(
        emu,
        "PATCH",
        f"{WIDGETS}/ssa?fieldManager=carol",
        {"spec": {"replicas": 2}},
        content_type="application/merge-patch+json",
    )
    assert code == 200 and _owners(patched)["carol"]["operation"] == "Update"
    assert "f:replicas" not in _owners(patched)["bob"]["fieldsV1"]["f:spec"]
    # Missing fieldManager on apply: invalid.
    code, status = call(
        emu, "PATCH", f"{WIDGETS}/ssa", "apiVersion: example.com/v1\nkind: Widget\n", content_type=APPLY
    )
    assert code == 422 and "fieldManager: Required value" in status["message"]


def test_writes_default_their_field_manager_to_the_user_agent(emu: KubeEmulator) -> None:
    code, created = call(emu, "POST", WIDGETS, widget("ua"))
    assert code == 201
    assert [(e["manager"], e["operation"]) for e in created["metadata"]["managedFields"]] == [("wire-test", "Update")]


def test_strict_field_validation_of_custom_resources(emu: KubeEmulator) -> None:
    body = widget("strict", colour="red")
    code, status = call(emu, "POST", f"{WIDGETS}?fieldValidation=Strict", body)
    assert code == 400
    assert status["message"] == (
        'Widget in version "v1" cannot be handled as a Widget: strict decoding error: unknown field "spec.colour"'
    )
    code, created = call(emu, "POST", WIDGETS, body)  # Ignore (the API default): pruned
    assert code == 201 and "colour" not in created["spec"]


# ---------------------------------------------------------------- events.k8s.io/v1 over core/v1


def test_events_v1_and_core_events_share_storage(emu: KubeEmulator) -> None:
    core = {
        "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Widget", "name": "w1", "namespace": "default"},
        "reason": "Created",
        "message": "made it",
        "type": "Normal",
        "source": {"component": "op"},
        "count": 2,
        "firstTimestamp": "2026-01-01T00:00:00Z",
        "lastTimestamp": "2026-01-01T00:01:00Z",
    }
    assert call(emu, "POST", "/api/v1/namespaces/default/events", core)[0] == 201
    code, new = call(emu, "GET", "/apis/events.k8s.io/v1/namespaces/default/events/e1")
    assert code == 200 and new["apiVersion"] == "events.k8s.io/v1"
    assert new["regarding"]["name"] == "w1" and new["note"] == "made it" and new["deprecatedCount"] == 2
    assert new["deprecatedSource"] == {"component": "op"}
    assert "involvedObject" not in new and "message" not in new
    modern = {
        "metadata": {"name": "e2"},
        "regarding": {"kind": "Widget", "name": "w2"},
        "note": "hello",
        "reason": "Updated",
        "type": "Normal",
        "action": "Update",
        "reportingController": "op",
        "reportingInstance": "op-1",
        "eventTime": "2026-01-01T00:00:00.000000Z",
    }
    assert call(emu, "POST", "/apis/events.k8s.io/v1/namespaces/default/events", modern)[0] == 201
    code, old = call(emu, "GET", "/api/v1/namespaces/default/events/e2")
    assert old["involvedObject"]["name"] == "w2" and old["message"] == "hello"
    assert old["reportingComponent"] == "op"
    code, listing = call(emu, "GET", "/apis/events.k8s.io/v1/namespaces/default/events")
    assert listing["kind"] == "EventList" and {i["metadata"]["name"] for i in listing["items"]} == {"e1", "e2"}
    code, patched = call(
        emu,
        "PATCH",
        "/apis/events.k8s.io/v1/namespaces/default/events/e2",
        {"note": "bye"},
        content_type="application/merge-patch+json",
    )
    assert patched["note"] == "bye"
    assert emu.get("v1", "Event", "e2")["message"] == "bye"


# ---------------------------------------------------------------- built-ins a chart creates


@pytest.mark.parametrize(
    "api_version,kind,path,body",
    [
        (
            "apps/v1",
            "Deployment",
            "/apis/apps/v1/namespaces/default/deployments",
            {
                "spec": {
                    "selector": {"matchLabels": {"a": "b"}},
                    "template": {
                        "metadata": {"labels": {"a": "b"}},
                        "spec": {"containers": [{"name": "c", "image": "i"}]},
                    },
                }
            },
        ),
        ("v1", "Service", "/api/v1/namespaces/default/services", {"spec": {"ports": [{"port": 80}]}}),
        (
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            {"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]},
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": []},
        ),
        (
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicy",
            "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
            {"spec": {"failurePolicy": "Fail", "validations": [{"expression": "true"}]}},
        ),
        (
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicyBinding",
            "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
            {"spec": {"policyName": "p", "validationActions": ["Deny"]}},
        ),
    ],
)
def test_builtins_are_stored(emu: KubeEmulator, api_version: str, kind: str, path: str, body: dict) -> None:
    obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, **body}
    code, created = call(emu, "POST", path, obj)
    assert code == 201 and created["kind"] == kind and created["metadata"]["uid"]
    assert call(emu, "GET", f"{path}/x")[1]["metadata"]["uid"] == created["metadata"]["uid"]
    code, status = call(emu, "POST", path, obj)
    assert code == 409 and status["kind"] == "Status" and status["reason"] == "AlreadyExists"
    code, status = call(emu, "GET", f"{path}/missing")
    assert code == 404 and status["reason"] == "NotFound" and '"missing" not found' in status["message"]
    if kind == "Service":
        assert created["spec"]["clusterIP"].startswith("10.96.") and created["spec"]["type"] == "ClusterIP"
    if kind == "Deployment":
        code, patched = call(
            emu, "PATCH", f"{path}/x", {"spec": {"replicas": 3}}, content_type="application/strategic-merge-patch+json"
        )
        assert patched["metadata"]["generation"] == 2
