"""A local simulator of the ClickHouse Cloud API (Managed Postgres subset).

``Simulator`` / ``SimulatorThread`` / ``SimulatorConfig`` are imported lazily so that the
``mpg-operator simulator`` command line starts without loading aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from mpg_operator.simulator.config import SimulatorConfig
    from mpg_operator.simulator.faults import Faults
    from mpg_operator.simulator.server import Exchange, RequestRecord, Simulator, SimulatorThread

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
