"""Request validation: 400 with a clear ``BAD_REQUEST: ...`` text, per the OpenAPI subset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

BASE = {"name": "svc", "provider": "aws", "region": "us-east-1", "size": "r8gd.large"}


def body(**changes):
    out = dict(BASE)
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (body(name=...), "Missing required property: name"),
        (body(name=""), "between 1 and 50"),
        (body(name="x" * 51), "between 1 and 50"),
        (body(name=5), "name must be a string"),
        (body(provider=...), "Missing required property: provider"),
        (body(provider="azure"), "Invalid provider 'azure'"),
        (body(region=...), "Missing required property: region"),
        (body(region="mars-north-1"), "Unsupported region 'mars-north-1'"),
        (body(size=...), "Missing required property: size"),
        (body(size="m7i.2xlarge"), "Invalid size 'm7i.2xlarge'"),
        (body(postgresVersion="16"), "Invalid postgresVersion '16'"),
        (body(postgresVersion=17), "postgresVersion must be a string"),
        (body(haType="triple"), "Invalid haType 'triple'"),
        (body(tags={"a": "b"}), "tags must be an array"),
        (body(tags=[{"key": f"k{i}", "value": "v"} for i in range(51)]), "Too many tags: 51"),
        (body(tags=[{"key": "bad key", "value": "v"}]), "tags[0].key"),
        (body(tags=[{"key": "k" * 129, "value": "v"}]), "tags[0].key"),
        (body(tags=[{"key": "ok", "value": "a/b"}]), "tags[0].value"),
        (body(tags=[{"key": "chc_internal", "value": "v"}]), "reserved"),
        (body(tags=["k=v"]), "tags[0] must be an object"),
        (body(pgConfig={}), "pgConfig must not be empty"),
        (body(pgBouncerConfig={}), "pgBouncerConfig must not be empty"),
        (body(pgConfig={"max_connections": 0}), "pgConfig.max_connections must be >= 1"),
        (body(pgConfig={"max_connections": True}), "pgConfig.max_connections: invalid value"),
        (body(pgConfig={"max_connections": "lots"}), "pgConfig.max_connections: invalid value 'lots'"),
        (body(pgConfig={"max_connections": 1.5}), "must be an integer"),
        (body(pgConfig={"default_transaction_isolation": 1}), "must be a string"),
        (body(pgConfig="max_connections=5"), "pgConfig must be an object"),
        (body(pgBouncerConfig={"default_pool_size": 16}), "pgBouncerConfig.default_pool_size must be a string"),
        (body(pgBouncerConfig={f"k{i}": "1" for i in range(65)}), "more than 64"),
        (body(password="Abcdefgh1234"), "password is not accepted on create"),
    ],
)
async def test_create_rejects(sim_api, payload, fragment) -> None:
    status, data, _ = await sim_api.call("POST", "/postgres", payload)
    assert status == 400, data
    assert data["error"].startswith("BAD_REQUEST: ")
    assert fragment in data["error"], data["error"]
    assert (await sim_api.ok("GET", "/postgres")) == []


async def test_create_accepts_and_normalises(sim_api) -> None:
    created = await sim_api.create(
        "Name with spaces (and dots.)",
        tags=[{"key": "env", "value": "prod"}, {"key": "keyonly"}],
        pgConfig={
            "max_connections": 200,
            "random_page_cost": 1.1,
            "work_mem": "8MB",
            "wal_compression": "lz4",
            "autovacuum_vacuum_cost_limit": "-1",
        },
        pgBouncerConfig={"default_pool_size": "16"},
    )
    assert created["postgresVersion"] == "17" and created["haType"] == "none"
    assert created["tags"] == [{"key": "env", "value": "prod"}, {"key": "keyonly"}]
    config = await sim_api.ok("GET", f"/postgres/{created['id']}/config")
    assert config["pgConfig"] == {
        "max_connections": "200",
        "random_page_cost": "1.1",
        "work_mem": "8MB",
        "wal_compression": "lz4",
        "autovacuum_vacuum_cost_limit": "-1",
    }
    assert config["pgBouncerConfig"] == {"default_pool_size": "16"}


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"tags": [{"key": "env"}]}, "tags[0].value is required"),
        ({"size": "huge"}, "Invalid size 'huge'"),
        ({"haType": "always"}, "Invalid haType"),
        ({"name": ""}, "between 1 and 50"),
        ({"region": "eu-west-1"}, "region cannot be changed"),
        ({"postgresVersion": "18"}, "postgresVersion cannot be changed"),
        ([], "must be a JSON object"),
    ],
)
async def test_patch_rejects(sim_api, payload, fragment) -> None:
    created = await sim_api.create()
    status, data, _ = await sim_api.call("PATCH", f"/postgres/{created['id']}", payload)
    assert status == 400 and fragment in data["error"], data


@pytest.mark.parametrize(
    ("password", "fragment"),
    [
        ("Short1a", "between 12 and 1024"),
        ("a" * 1025 + "A1", "between 12 and 1024"),
        ("alllowercase123", "uppercase"),
        ("ALLUPPERCASE123", "lowercase"),
        ("NoDigitsHereAtAll", "digit"),
        (123456789012, "must be a string"),
    ],
)
async def test_password_rules(sim_api, password, fragment) -> None:
    created = await sim_api.create()
    status, data, _ = await sim_api.call("PATCH", f"/postgres/{created['id']}/password", {"password": password})
    assert status == 400 and fragment in data["error"], data


async def test_config_endpoints_accept_empty_maps_but_need_both_on_post(sim_api) -> None:
    created = await sim_api.create(pgConfig={"max_connections": 50})
    path = f"/postgres/{created['id']}/config"
    status, data, _ = await sim_api.call("POST", path, {"pgConfig": {}})
    assert status == 400 and "Missing required property: pgBouncerConfig" in data["error"]
    status, data, _ = await sim_api.call("PATCH", path, {})
    assert status == 400 and "pgConfig and/or pgBouncerConfig" in data["error"]
    # a misspelled key is dropped with 200, as on the live API
    result = await sim_api.ok("PATCH", path, {"pgConfig": {"nope": "1"}})
    assert result["pgConfig"] == {"max_connections": "50"} and "message" not in result
    result = await sim_api.ok("POST", path, {"pgConfig": {}, "pgBouncerConfig": {}})
    assert result["pgConfig"] == {} and result["pgBouncerConfig"] == {}


DROPPED = {"shared_buffers": "1GB", "max_connections": None, "wal_compression": "brotli", "work_mem": "8MB"}


async def test_unknown_null_and_out_of_enum_pg_config_values_are_dropped(sim_api) -> None:
    """The live API drops them with a success response (clickhousectl PR #709); the rest is kept."""
    created = await sim_api.create(pgConfig=DROPPED)
    path = f"/postgres/{created['id']}/config"
    assert (await sim_api.ok("GET", path))["pgConfig"] == {"work_mem": "8MB"}
    result = await sim_api.ok("PATCH", path, {"pgConfig": {**DROPPED, "work_mem": "16MB"}, "pgBouncerConfig": {}})
    assert result["pgConfig"] == {"work_mem": "16MB"}
    result = await sim_api.ok("POST", path, {"pgConfig": {"ssl_min_protocol_version": "SSLv3"}, "pgBouncerConfig": {}})
    assert result["pgConfig"] == {}


async def test_strict_pg_config_refuses_what_the_live_api_drops(make_simulator) -> None:
    _sim, api = await make_simulator(strict_pg_config=True)
    for pg_config, fragment in (
        ({"shared_buffers": "1GB"}, "Unknown pgConfig parameter(s): shared_buffers"),
        ({"max_connections": None}, "invalid value null"),
        ({"wal_compression": "brotli"}, "pgConfig.wal_compression must be one of"),
    ):
        status, data, _ = await api.call("POST", "/postgres", body(pgConfig=pg_config))
        assert status == 400 and fragment in data["error"], data


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"name": "r"}, "Missing required property: restoreTarget"),
        ({"name": "r", "restoreTarget": "yesterday"}, "RFC 3339"),
        ({"name": "r", "restoreTarget": "2026-01-01T00:00:00"}, "RFC 3339"),  # no offset
        ({"name": "r", "restoreTarget": "2026-13-01T00:00:00Z"}, "not a valid date-time"),
        ({"restoreTarget": "2026-01-01T00:00:00Z"}, "Missing required property: name"),
        ({"name": "r", "restoreTarget": "2026-01-01T00:00:00Z", "pgConfig": {}}, "pgConfig must not be empty"),
    ],
)
async def test_restore_rejects_bad_bodies(sim_api, payload, fragment) -> None:
    created = await sim_api.create()
    status, data, _ = await sim_api.call("POST", f"/postgres/{created['id']}/restoredService", payload)
    assert status == 400 and fragment in data["error"], data


async def test_restore_target_outside_retention(sim_api) -> None:
    created = await sim_api.create()
    await sim_api.wait_state(created["id"], "running")
    import asyncio

    await asyncio.sleep(0.7)  # past the first backup (FAST: 0.6 s)
    for target in (datetime.now(UTC) + timedelta(hours=1), datetime.now(UTC) - timedelta(days=8)):
        status, data, _ = await sim_api.call(
            "POST",
            f"/postgres/{created['id']}/restoredService",
            {"name": "r", "restoreTarget": target.strftime("%Y-%m-%dT%H:%M:%SZ")},
        )
        assert status == 400 and "within the backup retention period" in data["error"], data


async def test_state_command_validation(sim_api) -> None:
    created = await sim_api.create()
    for payload, fragment in (
        ({}, "Missing required property: command"),
        ({"command": "stop"}, "Invalid command 'stop'"),
    ):
        status, data, _ = await sim_api.call("PATCH", f"/postgres/{created['id']}/state", payload)
        assert status == 400 and fragment in data["error"]


async def test_observability_query_validation(sim_api) -> None:
    created = await sim_api.create()
    base = f"/postgres/{created['id']}"
    cases = [
        (f"{base}/metrics", "Missing required query parameter: from_date"),
        (f"{base}/metrics?from_date=2026-01-02T00:00:00Z&to_date=2026-01-01T00:00:00Z", "to_date must be after"),
        (
            f"{base}/metrics?from_date=2026-01-01T00:00:00Z&to_date=2026-01-02T00:00:00Z&bucket_size_seconds=1",
            "capped at 250 data points",
        ),
        (f"{base}/metrics?from_date=2026-01-01T00:00:00Z&to_date=2026-01-02T00:00:00Z&bucket_size_seconds=0", ">= 1"),
        (f"{base}/slowQueryPatterns?from_date=2026-01-01T00:00:00Z&to_date=2026-01-02T00:00:00Z&limit=501", "<= 500"),
        (f"{base}/slowQueryPatterns?from_date=2026-01-01T00:00:00Z&to_date=2026-01-02T00:00:00Z&sort_by=x", "sort_by"),
        (f"{base}/slowQueryPatterns/123", "Missing required query parameter: db_name"),
    ]
    for path, fragment in cases:
        status, data, _ = await sim_api.call("GET", path)
        assert status == 400 and fragment in data["error"], (path, data)


async def test_quota_is_409(make_simulator) -> None:
    _, api = await make_simulator(service_quota=2)
    await api.create("a")
    await api.create("b")
    status, data, _ = await api.call("POST", "/postgres", body(name="c"))
    assert status == 409 and data["error"].startswith("CONFLICT: ") and "limit" in data["error"]


async def test_configurable_regions_and_sizes(make_simulator) -> None:
    _, api = await make_simulator(regions=("eu-north-1",), sizes=("tiny.1",))
    status, data, _ = await api.call("POST", "/postgres", body())
    assert status == 400 and "Unsupported region 'us-east-1'; supported regions: eu-north-1" in data["error"]
    status, data, _ = await api.call("POST", "/postgres", body(region="eu-north-1"))
    assert status == 400 and "Invalid size 'r8gd.large'; expected tiny.1" in data["error"]
