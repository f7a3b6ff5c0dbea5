"""Point-in-time restore with PostgreSQL's own machinery: each service archives its WAL, a restore starts
from the source's base backup and replays the archive up to `restoreTarget` (`recovery_target_time`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg_helpers import connect

from clickhouse_cloud_simulator.postgres import Endpoint


async def _conn(api: Any, svc: dict[str, Any], password: str, tmp: Path) -> psycopg.AsyncConnection:
    ca = tmp / f"{svc['id']}.pem"
    ca.write_text(await api.ok("GET", f"/postgres/{svc['id']}/caCertificates"))
    return await connect(Endpoint(svc["hostname"], 5432), password, ca)


async def _rows(api: Any, svc: dict[str, Any], password: str, tmp: Path) -> list[str]:
    async with await _conn(api, svc, password, tmp) as conn:
        return [r[0] for r in await (await conn.execute("SELECT batch FROM items ORDER BY id")).fetchall()]


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def _restore(api: Any, source_id: str, name: str, at: datetime, **extra: Any) -> dict[str, Any]:
    body = {"name": name, "restoreTarget": _stamp(at), "tags": [{"key": "from", "value": "pitr"}], **extra}
    restored = await api.ok("POST", f"/postgres/{source_id}/restoredService", body)
    return await api.wait_state(restored["id"], "running", timeout=30)


async def test_restore_carries_the_data_and_password_as_of_the_target(
    pg_api: Any, simulator_pg: Any, tmp_path: Path
) -> None:
    source = await pg_api.create("source")
    first_password = source["password"]
    await pg_api.wait_state(source["id"], "running")
    async with await _conn(pg_api, source, first_password, tmp_path) as conn:
        await conn.execute("CREATE TABLE items (id serial PRIMARY KEY, batch text)")
        await conn.execute("INSERT INTO items (batch) SELECT 'A' FROM generate_series(1, 3)")
    await asyncio.sleep(simulator_pg.config.first_backup_seconds)
    target = datetime.now(UTC)
    await asyncio.sleep(0.05)
    second_password = "Rotated" + "4k" * 6
    await pg_api.ok("PATCH", f"/postgres/{source['id']}/password", {"password": second_password})
    async with await _conn(pg_api, source, second_password, tmp_path) as conn:
        await conn.execute("INSERT INTO items (batch) SELECT 'B' FROM generate_series(1, 2)")

    past = await _restore(pg_api, source["id"], "as of A", target, pgConfig={"work_mem": "16MB"})
    assert past["isPrimary"] is True and past["tags"] == [{"key": "from", "value": "pitr"}]
    assert past["name"] == "as of A" and past["hostname"] != source["hostname"]
    # the password of the target time, and the data of that time (A, not B)
    assert await _rows(pg_api, past, first_password, tmp_path) == ["A", "A", "A"]
    with pytest.raises(psycopg.OperationalError):
        await _conn(pg_api, past, second_password, tmp_path)
    async with await _conn(pg_api, past, first_password, tmp_path) as conn:
        assert (await (await conn.execute("SHOW work_mem")).fetchone()) == ("16MB",)
        assert (await (await conn.execute("SELECT pg_is_in_recovery()")).fetchone()) == (False,)
        await conn.execute("INSERT INTO items (batch) VALUES ('C')")  # an independent, writable primary
    assert await _rows(pg_api, source, second_password, tmp_path) == ["A", "A", "A", "B", "B"]  # source unchanged

    latest = await _restore(pg_api, source["id"], "latest", datetime.now(UTC))
    assert await _rows(pg_api, latest, second_password, tmp_path) == ["A", "A", "A", "B", "B"]

    # a restore of a restored service: its own base backup and archive (a later timeline)
    await asyncio.sleep(simulator_pg.config.first_backup_seconds)
    between = datetime.now(UTC)
    await asyncio.sleep(0.05)
    async with await _conn(pg_api, past, first_password, tmp_path) as conn:
        await conn.execute("INSERT INTO items (batch) VALUES ('D')")
    again = await _restore(pg_api, past["id"], "restore of a restore", between)
    assert await _rows(pg_api, again, first_password, tmp_path) == ["A", "A", "A", "C"]


async def test_restore_target_outside_the_window_is_400(pg_api: Any, simulator_pg: Any) -> None:
    fast = simulator_pg.config.first_backup_seconds
    simulator_pg.config.first_backup_seconds = 60  # a create may take longer than the fast setting under load
    try:
        young = await pg_api.create("young source")
        status, data, _ = await pg_api.call(
            "POST",
            f"/postgres/{young['id']}/restoredService",
            {"name": "r", "restoreTarget": _stamp(datetime.now(UTC))},
        )
    finally:
        simulator_pg.config.first_backup_seconds = fast
    assert (status, data.get("error")) == (400, "BAD_REQUEST: Source server has no backups, yet. Try again later.")
    source = await pg_api.create("source")
    await pg_api.wait_state(source["id"], "running")
    await asyncio.sleep(simulator_pg.config.first_backup_seconds)
    earliest = datetime.fromisoformat((await pg_api.ok("GET", f"/postgres/{source['id']}"))["earliestRestoreTime"])
    for at in (earliest - timedelta(seconds=5), datetime.now(UTC) + timedelta(minutes=5)):
        status, data, _ = await pg_api.call(
            "POST", f"/postgres/{source['id']}/restoredService", {"name": "r", "restoreTarget": _stamp(at)}
        )
        assert status == 400, data
        assert data["error"].startswith(
            "BAD_REQUEST: restoreTarget must be within the backup retention period: between "
        )
    # earliestRestoreTime itself is a valid target
    restored = await _restore(pg_api, source["id"], "earliest", earliest)
    assert restored["state"] == "running"
