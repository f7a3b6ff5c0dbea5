"""A local simulator of the ClickHouse Cloud API (Managed Postgres subset).

Usage::

    from clickhouse_cloud_simulator import Simulator, SimulatorConfig, SimulatorThread

    cfg = SimulatorConfig(port=0, create_seconds=0.2, rate_limit=None, real_postgres=False)
    async with Simulator(cfg) as sim:
        sim.url, sim.org_id, sim.key_id, sim.key_secret   # base URL ends in /v1
        sim.faults.force(503, count=2)                     # fault injection (see faults.py)
        sim.requests                                       # served requests (method, path, status, key_id, timestamp)
        sim.services                                       # id -> Service (live objects)
        sim.store.patch_out_of_band(service_id, size="r8gd.xlarge", tags=[])  # drift behind the API
        sim.add_key(org_id=None)                           # another key (and org): (key id, secret, org id)

    with SimulatorThread(cfg) as sim:                      # same attributes, own thread and loop
        ...

``real_postgres=None`` (the default) puts a real PostgreSQL server behind every service when the
fleet (``postgres.py``) can run here. Everything is imported lazily so that the
``clickhouse-cloud-simulator`` command line starts without loading aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from clickhouse_cloud_simulator.config import SimulatorConfig
    from clickhouse_cloud_simulator.faults import Faults
    from clickhouse_cloud_simulator.server import (
        Exchange,
        RequestRecord,
        Simulator,
        SimulatorThread,
    )

__all__ = ["Exchange", "Faults", "RequestRecord", "Simulator", "SimulatorConfig", "SimulatorThread"]

_WHERE = {
    "SimulatorConfig": "clickhouse_cloud_simulator.config",
    "Faults": "clickhouse_cloud_simulator.faults",
    "Simulator": "clickhouse_cloud_simulator.server",
    "SimulatorThread": "clickhouse_cloud_simulator.server",
    "Exchange": "clickhouse_cloud_simulator.server",
    "RequestRecord": "clickhouse_cloud_simulator.server",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(name)
