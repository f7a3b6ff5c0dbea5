"""A resource's wake-up call: its reconcile loop sleeps between passes until a deadline or a call.

A thousand resources sleep at once, so a sleep costs one future and one timer, not the tasks that
``asyncio.wait`` over ``Event.wait()`` coroutines would create. Only public asyncio and kopf APIs
are used: kopf's ``DaemonStopped.wait()`` rings the bell once per loop, not once per sleep.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Wakeup:
    """Set by whoever knows the resource needs a pass now; awaited by its loop in :meth:`sleep`."""

    __slots__ = ("_rung", "_sleeper")

    def __init__(self) -> None:
        self._rung = False
        self._sleeper: asyncio.Future[None] | None = None

    def set(self) -> None:
        """End the current sleep, or the next one before it starts."""
        self._rung = True
        _resolve(self._sleeper)

    def clear(self) -> None:
        self._rung = False

    def is_set(self) -> bool:
        return self._rung

    async def sleep(self, delay: float) -> None:
        """Until ``delay`` seconds have passed or :meth:`set` is called (at once if it was)."""
        if self._rung:
            return
        loop = asyncio.get_running_loop()
        sleeper: asyncio.Future[None] = loop.create_future()
        self._sleeper = sleeper
        timer = loop.call_later(delay, _resolve, sleeper)
        try:
            await sleeper
        finally:
            timer.cancel()
            self._sleeper = None

    def ring_when_stopped(self, stopped: Any) -> asyncio.Future[Any]:
        """Set this wake-up when kopf stops the daemon (``stopped.wait()`` returns); the returned
        task is to be cancelled when the loop ends."""
        watcher = asyncio.ensure_future(stopped.wait())
        watcher.add_done_callback(lambda _: self.set())
        return watcher


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)
