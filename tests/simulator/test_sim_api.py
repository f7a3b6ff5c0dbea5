"""Transport of the simulator: auth, envelopes, routing, content types, redaction, bad input."""

from __future__ import annotations

import re
import uuid

import pytest

from clickhouse_cloud_simulator import Simulator

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def test_organizations_lists_the_keys_org(sim_api, simulator: Simulator) -> None:
    status, body, _ = await sim_api.call("GET", "/organizations")
    assert status == 200
    assert list(body) == ["result", "requestId", "status"]
    assert body["status"] == 200 and UUID.match(body["requestId"])
    assert [o["id"] for o in body["result"]] == [simulator.org_id]


@pytest.mark.parametrize("auth", [("", ""), ("nobody", "x"), (None, "wrong-secret")])
async def test_bad_credentials_are_401_with_envelope(sim_api, simulator: Simulator, auth) -> None:
    key = (simulator.key_id if auth[0] is None else auth[0], auth[1])
    status, body, headers = await sim_api.call("GET", "/postgres", auth=key)
    assert status == 401
    assert body["status"] == 401 and body["error"].startswith("UNAUTHORIZED")
    assert UUID.match(body["requestId"])
    assert headers["WWW-Authenticate"].startswith("Basic")


async def test_malformed_authorization_header(sim_api) -> None:
    status, body, _ = await sim_api.call("GET", "/postgres", auth=("", ""), headers={"Authorization": "Basic !!!"})
    assert status == 401 and "basic auth" in body["error"]


async def test_extra_key_sees_only_its_org(sim_api, simulator: Simulator) -> None:
    mine = await sim_api.create("mine")
    key_id, secret, other_org = simulator.add_key()
    assert other_org != simulator.org_id
    # the other key on our org: 404
    status, body, _ = await sim_api.call("GET", "/postgres", auth=(key_id, secret))
    assert status == 404 and body["error"].startswith("NOT_FOUND")
    status, body, _ = await sim_api.call("GET", f"/organizations/{other_org}/postgres", auth=(key_id, secret))
    assert status == 200 and body["result"] == []
    status, _, _ = await sim_api.call("GET", f"/organizations/{other_org}/postgres/{mine['id']}", auth=(key_id, secret))
    assert status == 404
    # a second key on the same org sees the same services
    k2, s2, org2 = simulator.add_key(org_id=simulator.org_id)
    assert org2 == simulator.org_id
    status, body, _ = await sim_api.call("GET", "/postgres", auth=(k2, s2))
    assert [s["id"] for s in body["result"]] == [mine["id"]]


async def test_create_returns_credentials_once(sim_api) -> None:
    created = await sim_api.create("my postgres", postgresVersion="18")
    assert created["state"] == "creating"
    assert created["username"] == "postgres"
    pw = created["password"]
    # comparisons are evaluated first so that a failure never prints a credential
    well_formed = re.fullmatch(r"[A-Za-z0-9_-]{20}", pw) is not None
    assert well_formed, "generated password is not 20 characters of [A-Za-z0-9_-]"
    expected = f"postgres://postgres:{pw}@{created['hostname']}:5432/postgres?channel_binding=require"
    same = created["connectionString"] == expected
    assert same, "connectionString does not have the documented format"
    assert re.fullmatch(
        r"my-postgres-[0-9a-f]{8}\.[0-9a-z]{26}\.c0\.us-east-1\.aws\.pg\.clickhouse\.cloud", created["hostname"]
    )
    got = await sim_api.ok("GET", f"/postgres/{created['id']}")
    assert "password" not in got and "connectionString" not in got
    assert got["hostname"] == created["hostname"] and got["username"] == "postgres"
    listed = await sim_api.ok("GET", "/postgres")
    assert set(listed[0]) == {
        "id",
        "name",
        "provider",
        "region",
        "postgresVersion",
        "size",
        "haType",
        "tags",
        "state",
        "createdAt",
        "isPrimary",
    }
    patched = await sim_api.ok("PATCH", f"/postgres/{created['id']}", {"tags": []})
    assert "password" not in patched and "connectionString" not in patched


async def test_redaction_can_be_switched_off(make_simulator) -> None:
    _, api = await make_simulator(redact=False)
    created = await api.create("plain")
    got = await api.ok("GET", f"/postgres/{created['id']}")
    same = (got["password"], got["connectionString"]) == (created["password"], created["connectionString"])
    assert same, "GET without redaction must return the credentials"


async def test_delete_envelope_has_no_result(sim_api) -> None:
    created = await sim_api.create()
    status, body, _ = await sim_api.call("DELETE", f"/postgres/{created['id']}")
    assert status == 200 and set(body) == {"requestId", "status"}


async def test_ca_certificate_is_raw_pem(sim_api) -> None:
    created = await sim_api.create()
    status, pem, headers = await sim_api.call("GET", f"/postgres/{created['id']}/caCertificates")
    assert status == 200
    assert headers["Content-Type"] == "application/x-pem-file"
    assert "postgres-ca-certificate.pem" in headers["Content-Disposition"]
    assert pem.startswith("-----BEGIN CERTIFICATE-----") and pem.rstrip().endswith("-----END CERTIFICATE-----")


async def test_org_prometheus_is_routed_before_service_id(sim_api) -> None:
    status, text, headers = await sim_api.call("GET", "/postgres/prometheus")
    assert status == 200 and headers["Content-Type"] == "text/plain; charset=UTF-8"
    assert "# TYPE PostgresServiceInfo gauge" in text


@pytest.mark.parametrize(
    ("method", "path", "status", "fragment"),
    [
        ("GET", "/nowhere", 404, "NOT_FOUND: Unknown path"),
        ("GET", "/postgres/x/y/z/w", 404, "NOT_FOUND"),
        ("PUT", "/postgres", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/postgres/not-a-uuid", 400, "BAD_REQUEST: Invalid service id not-a-uuid"),
        ("GET", "/organizations/not-a-uuid/postgres", 400, "BAD_REQUEST: Invalid organization id"),
        ("GET", f"/postgres/{uuid.uuid4()}", 404, "NOT_FOUND: Postgres service"),
        ("DELETE", f"/postgres/{uuid.uuid4()}", 404, "NOT_FOUND"),
        ("GET", f"/organizations/{uuid.uuid4()}/postgres", 404, "NOT_FOUND: Organization"),
    ],
)
async def test_unknown_paths_and_ids(sim_api, method, path, status, fragment) -> None:
    got, body, _ = await sim_api.call(method, path)
    assert got == status
    assert body["status"] == status and fragment in body["error"]


@pytest.mark.parametrize(
    ("raw", "ctype", "fragment"),
    [
        (b"{not json", "application/json", "Malformed JSON"),
        (b"\xff\xfe", "application/json", "Malformed JSON"),
        (b'{"name": "x"}', "text/plain", "Content-Type must be application/json"),
        (b"[1, 2]", "application/json", "must be a JSON object"),
        (b'"just a string"', "application/json", "must be a JSON object"),
        (b"null", "application/json", "must be a JSON object"),
    ],
)
async def test_bad_bodies_are_400(sim_api, raw, ctype, fragment) -> None:
    status, body, _ = await sim_api.call("POST", "/postgres", raw=raw, headers={"Content-Type": ctype})
    assert status == 400 and fragment in body["error"], body
    assert body["error"].startswith("BAD_REQUEST: ")


async def test_body_too_large_is_413_envelope(sim_api) -> None:
    status, body, _ = await sim_api.call(
        "POST", "/postgres", raw=b"x" * (1024**2 + 10), headers={"Content-Type": "application/json"}
    )
    assert status == 413 and body["error"].startswith("PAYLOAD_TOO_LARGE")


async def test_requests_are_recorded(sim_api, simulator: Simulator) -> None:
    await sim_api.call("GET", "/postgres")
    await sim_api.call("GET", "/postgres", auth=("bad", "bad"))
    tail = simulator.requests[-2:]
    assert [(r.method, r.status, r.key_id) for r in tail] == [("GET", 200, simulator.key_id), ("GET", 401, None)]
    assert tail[0].path == f"/v1/organizations/{simulator.org_id}/postgres"
