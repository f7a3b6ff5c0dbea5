"""A local simulator of the ClickHouse Cloud API (Managed Postgres subset).

Usage::

    from mpg_operator.simulator import Simulator, SimulatorConfig, SimulatorThread

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
``mpg-operator simulator`` command line starts without loading aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from mpg_operator.simulator.config import SimulatorConfig
    from mpg_operator.simulator.faults import Faults
    from mpg_operator.simulator.server import (
        Exchange,
        RequestRecord,
        Simulator,
        SimulatorThread,
    )

__all__ = ["Exchange", "Faults", "RequestRecord", "Simulator", "SimulatorConfig", "SimulatorThread"]

_WHERE = {
    "SimulatorConfig": "mpg_operator.simulator.config",
    "Faults": "mpg_operator.simulator.faults",
    "Simulator": "mpg_operator.simulator.server",
    "SimulatorThread": "mpg_operator.simulator.server",
    "Exchange": "mpg_operator.simulator.server",
    "RequestRecord": "mpg_operator.simulator.server",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(name)
