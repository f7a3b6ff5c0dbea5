"""Observation that is cheap and fast: one poller for every organization the operator serves.

* **Steady state.** While an organization (seen through one API key) has resources, it is LISTed
  every ``MPG_LIST_MAX_AGE`` seconds (30): 2 requests a minute per organization, whatever the
  number of resources. :class:`~mpg_operator.controller.cloudaccess.ServiceSnapshots` compares
  each LIST with the previous one and the handlers wake exactly the resources whose service
  changed or vanished, so drift made elsewhere is seen within about 30 s while each resource's
  own steady pass stays rare (``MPG_POLL_INTERVAL``, 300 s) and, reading the shared snapshot,
  costs no API request.
* **While something is in flight** (a resource of the organization is creating or updating) the
  poller LISTs every ``MPG_LIST_FAST_INTERVAL`` seconds (2.5) instead, but only when the key's
  rate limiter has idle capacity (nobody waiting, more than half the window's requests free), so
  a resource turns Ready a few seconds after its service turns ``running`` and no queued request
  (a create, an update, a password) ever waits for an opportunistic LIST.
* An organization nobody has asked about for a while (its resources are gone) is forgotten;
  a failing LIST (a wrong key) is retried with backoff, and only by the poller.

Every LIST goes through :meth:`ServiceSnapshots.refresh`, so a reconcile pass that needs a
fresher snapshot than the poller keeps (``max_age``) still gets one, and a pass never decides
from a snapshot older than its own last mutating action (the reconciler checks that).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from mpg_operator.cloud.errors import CloudError
from mpg_operator.controller.cloudaccess import ServiceSnapshots, SnapshotEntry

log = logging.getLogger(__name__)

TICK = 0.5
"""Seconds between two looks at the entries."""


class Observer:
    """Keeps every organization's snapshot fresh; see the module docstring."""

    def __init__(
        self,
        snapshots: ServiceSnapshots,
        *,
        interval: float,
        fast_interval: float,
        forget_after: float,
        in_flight: Callable[[str], bool],
        tick: float = TICK,
    ) -> None:
        self.snapshots = snapshots
        self.interval = interval
        self.fast_interval = fast_interval
        self.forget_after = forget_after
        self.in_flight = in_flight
        self.tick = tick
        self.lists = {"steady": 0, "fast": 0, "failed": 0}
        self._busy: set[SnapshotEntry] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def due(self, entry: SnapshotEntry, now_mono: float, now: float) -> str | None:
        """Why ``entry`` should be LISTed now (``"steady"``/``"fast"``), or None."""
        snap = entry.snapshot
        if snap is None or entry in self._busy or entry.lock.locked():
            return None  # the first LIST comes from a resource's pass; or one is under way
        if entry.error is not None:
            backoff = min(self.forget_after, self.interval * 2 ** max(0, entry.failures - 1))
            return "steady" if now - entry.error_at >= backoff else None
        age = now - snap.fetched_at
        if age >= self.interval - self.tick:
            return "steady"
        if age >= self.fast_interval and any(self.in_flight(uid) for uid in entry.users):
            limiter = entry.client.rate_limiter
            if limiter.idle(reserve=limiter.limit // 2):
                return "fast"
        return None

    def sweep(self) -> None:
        """One look at every entry: forget the unused, start the LISTs that are due."""
        now_mono, now = time.monotonic(), time.time()
        for entry in self.snapshots.entries():
            for uid, seen in list(entry.users.items()):
                if now_mono - seen > self.forget_after:
                    del entry.users[uid]
            if not entry.users and not entry.lock.locked():
                self.snapshots.forget(entry)
                continue
            why = self.due(entry, now_mono, now)
            if why is not None:
                self._busy.add(entry)
                task = asyncio.ensure_future(self._refresh(entry, why))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _refresh(self, entry: SnapshotEntry, why: str) -> None:
        try:
            max_age = self.fast_interval if why == "fast" else self.interval - self.tick
            await self.snapshots.refresh(entry, max_age=max_age)
            self.lists[why] += 1
        except CloudError as e:
            self.lists["failed"] += 1
            log.debug("Observer: LIST of organization %s failed: %s", entry.client.organization_id, e)
        finally:
            self._busy.discard(entry)

    async def run(self) -> None:
        """Sweep until cancelled."""
        try:
            while True:
                try:
                    self.sweep()
                except Exception:  # noqa: BLE001 -- a bug here must not stop observation for good
                    log.exception("Observer sweep failed")
                await asyncio.sleep(self.tick)
        finally:
            for task in list(self._tasks):
                task.cancel()
