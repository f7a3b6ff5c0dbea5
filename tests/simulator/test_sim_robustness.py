"""Hostile input never crashes the simulator: every answer is a 2xx/4xx with the proper envelope."""

from __future__ import annotations

import json
import random
import uuid

import pytest

VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**70,
    1.5,
    "",
    "x",
    "ü" * 60,
    "a" * 5000,
    [],
    [1, {"a": None}],
    {},
    {"k": "v"},
    {"key": "ok"},
    [{"key": "ok", "value": "ok"}],
    [{"key": None}],
    "2026-01-01T00:00:00Z",
    "not-a-date",
    {"max_connections": "10"},
    {"max_connections": [1]},
    {"default_pool_size": {"x": 1}},
]
FIELDS = [
    "name",
    "provider",
    "region",
    "size",
    "postgresVersion",
    "haType",
    "tags",
    "pgConfig",
    "pgBouncerConfig",
    "password",
    "command",
    "restoreTarget",
    "unknownField",
]
RAW_BODIES = [
    b"",
    b" ",
    b"{",
    b"[]",
    b"NaN",
    b'{"pgConfig": {"random_page_cost": NaN}}',
    b'{"pgConfig": {"random_page_cost": 1e999}}',
    b"[" * 5000 + b"]" * 5000,
    b"\x00\x01\x02",
    b'{"name": "\\ud800"}',
    '{"name": "\u2028"}'.encode(),
]


async def test_random_bodies_on_every_writing_endpoint(sim_api) -> None:
    rng = random.Random(1234)
    created = await sim_api.create("target")
    sid = created["id"]
    endpoints = [
        ("POST", "/postgres"),
        ("PATCH", f"/postgres/{sid}"),
        ("POST", f"/postgres/{sid}/config"),
        ("PATCH", f"/postgres/{sid}/config"),
        ("PATCH", f"/postgres/{sid}/password"),
        ("PATCH", f"/postgres/{sid}/state"),
        ("POST", f"/postgres/{sid}/readReplica"),
        ("POST", f"/postgres/{sid}/restoredService"),
    ]
    statuses = []
    for _ in range(320):
        method, path = rng.choice(endpoints)
        if rng.random() < 0.15:
            raw = rng.choice(RAW_BODIES)
            status, body, _ = await sim_api.call(method, path, raw=raw, headers={"Content-Type": "application/json"})
        else:
            payload = {f: rng.choice(VALUES) for f in rng.sample(FIELDS, rng.randint(0, 5))}
            if rng.random() < 0.3 and method == "POST" and path == "/postgres":
                payload = {"name": "n", "provider": "aws", "region": "us-east-1", "size": "r8gd.large", **payload}
            status, body, _ = await sim_api.call(method, path, payload)
        statuses.append(status)
        assert status < 500, (method, path, status, body)
        if status >= 400:
            assert isinstance(body, dict) and body["status"] == status and body["error"].split(":")[0].isupper()
    assert 400 in statuses and 200 in statuses


@pytest.mark.parametrize(
    "path",
    [
        "/postgres/%00",
        "/postgres/" + "a" * 3000,
        f"/postgres/{uuid.uuid4()}/caCertificates/extra",
        "/postgres/../organizations",
        "/organizations/%2e%2e/postgres",
        "/postgres/prometheus/x",
        f"/postgres/{uuid.uuid4()}/metrics?from_date=%ff&to_date=x",
        "/postgres?limit=-1&offset=abc",
        "//v1//organizations",
    ],
)
async def test_odd_paths(sim_api, path: str) -> None:
    status, body, _ = await sim_api.call("GET", path)
    assert status < 500 and (status == 200 or body["error"])


async def test_odd_query_values(sim_api) -> None:
    created = await sim_api.create()
    base = f"/postgres/{created['id']}"
    for query in (
        "from_date=2026-01-01T00:00:00Z&to_date=2026-01-02T00:00:00Z&bucket_size_seconds=abc",
        "from_date=2026-01-01T00:00:00Z&to_date=2026-01-02T00:00:00Z&bucket_size_seconds=99999999999999999999",
        "from_date=0001-01-01T00:00:00Z&to_date=9999-12-31T23:59:59Z",
        "from_date=2026-01-01T00:00:00+14:00&to_date=2026-01-01T00:00:00-12:00",
    ):
        status, body, _ = await sim_api.call("GET", f"{base}/metrics?{query}")
        assert status < 500, (query, body)
    status, body, _ = await sim_api.call(
        "GET", f"{base}/slowQueryPatterns?from_date=2026-01-01T00:00:00Z&to_date=2026-01-02T00:00:00Z&limit=1e3"
    )
    assert status == 400
    assert json.dumps(body)
