"""The operator's own Prometheus metrics (kopf has none), served as text on ``/metrics``."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class OperatorMetrics:
    """Counters and gauges; cheap to update from anywhere in the event loop."""

    api_requests: Counter = field(default_factory=Counter)
    """(operation, status) -> count of ClickHouse Cloud API responses."""
    reconciles: Counter = field(default_factory=Counter)
    """result -> count of reconcile passes (ok, error)."""
    ready: dict[str, bool] = field(default_factory=dict)
    """resource uid -> Ready."""
    started_at: float = field(default_factory=time.time)
    observer: Any = None
    """The organizations' poller (:class:`~mpg_operator.controller.observer.Observer`), for its LIST counts."""

    def on_api_response(self, operation: str, status: str, seconds: float) -> None:
        self.api_requests[(operation, status)] += 1

    def render(self) -> str:
        lines = [
            "# HELP mpg_operator_api_requests_total ClickHouse Cloud API responses by operation and HTTP status.",
            "# TYPE mpg_operator_api_requests_total counter",
        ]
        for (op, status), n in sorted(self.api_requests.items()):
            lines.append(f'mpg_operator_api_requests_total{{operation="{op}",status="{status}"}} {n}')
        lines += [
            "# HELP mpg_operator_reconciles_total Reconcile passes by result.",
            "# TYPE mpg_operator_reconciles_total counter",
        ]
        for result, n in sorted(self.reconciles.items()):
            lines.append(f'mpg_operator_reconciles_total{{result="{result}"}} {n}')
        lines += [
            "# HELP mpg_operator_managedpostgres_ready ManagedPostgres resources by readiness.",
            "# TYPE mpg_operator_managedpostgres_ready gauge",
            f'mpg_operator_managedpostgres_ready{{ready="true"}} {sum(self.ready.values())}',
            f'mpg_operator_managedpostgres_ready{{ready="false"}} {len(self.ready) - sum(self.ready.values())}',
        ]
        if self.observer is not None:
            lines += [
                "# HELP mpg_operator_observer_lists_total LISTs sent by the organizations' poller (steady, fast while in flight, failed).",
                "# TYPE mpg_operator_observer_lists_total counter",
            ]
            for reason, n in sorted(self.observer.lists.items()):
                lines.append(f'mpg_operator_observer_lists_total{{reason="{reason}"}} {n}')
        lines += [
            "# HELP mpg_operator_start_time_seconds When the operator started.",
            "# TYPE mpg_operator_start_time_seconds gauge",
            f"mpg_operator_start_time_seconds {self.started_at:.0f}",
        ]
        return "\n".join(lines) + "\n"


async def serve_metrics(metrics: OperatorMetrics, host: str, port: int) -> web.AppRunner:
    """Start an HTTP server with ``/metrics``; the caller cleans up the returned runner."""

    async def handle(_: web.Request) -> web.Response:
        return web.Response(text=metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
