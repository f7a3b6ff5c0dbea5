"""Client-side rate limiting, shared by everything that uses one API key.

ClickHouse Cloud allows 10 requests per 10 s *per API key* (fixed window on the server).
A :class:`RateLimiter` keeps a sliding log of send times and never lets more than
``limit`` requests start within ``window + margin`` seconds, which also keeps every fixed
server window under the limit. Waiters are served first come, first served. A 429 from the
server pauses the whole key (:meth:`RateLimiter.pause`) until its ``X-RateLimit-Reset``.

The limiter is loop-agnostic: it holds no asyncio primitive bound to a loop, only futures
created by the waiting coroutine's own loop, so a process-wide limiter survives test
suites (or tools) that run several event loops one after another. It is meant to be used
from one event loop at a time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_LIMIT = 10
DEFAULT_WINDOW = 10.0


@dataclass
class RateLimiterStats:
    """Counters of one limiter (shared by all clients using the key)."""

    acquired: int = 0
    waited: int = 0  # acquisitions that had to wait
    wait_seconds: float = 0.0
    pauses: int = 0  # 429-triggered pauses


class RateLimiter:
    """At most ``limit`` request starts in any ``window`` (+ ``margin``) seconds, FIFO."""

    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        window: float = DEFAULT_WINDOW,
        *,
        margin: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        # Client send time != server arrival time: keep a little slack so jitter in
        # transit never squeezes limit+1 arrivals into one server window.
        self.margin = max(0.1, 0.03 * window) if margin is None else margin
        self._clock = clock
        self._sent: deque[float] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._paused_until = 0.0
        self.stats = RateLimiterStats()

    def __repr__(self) -> str:
        return f"RateLimiter(limit={self.limit}, window={self.window}, margin={self.margin})"

    @property
    def paused_until(self) -> float:
        """Clock value (``time.monotonic``) until which the key is paused after a 429."""
        return self._paused_until

    def pause(self, seconds: float) -> None:
        """Hold every request on this key for ``seconds`` from now (after a 429)."""
        until = self._clock() + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until
            self.stats.pauses += 1

    def _delay(self, now: float) -> float:
        """Seconds until the next request may start (0 if it may start now)."""
        horizon = self.window + self.margin
        while self._sent and now - self._sent[0] >= horizon:
            self._sent.popleft()
        delay = self._paused_until - now
        if len(self._sent) >= self.limit:
            delay = max(delay, self._sent[-self.limit] + horizon - now)
        return max(0.0, delay)

    def _purge_dead_waiters(self) -> None:
        # Futures of a loop that was closed while waiting would block the queue forever.
        if any(f.get_loop().is_closed() for f in self._waiters):
            self._waiters = deque(f for f in self._waiters if not f.get_loop().is_closed())
            self._wake_head()

    def _wake_head(self) -> None:
        if self._waiters and not self._waiters[0].done():
            self._waiters[0].set_result(None)

    async def acquire(self) -> None:
        """Wait for a slot, then record a request start. FIFO among waiters."""
        loop = asyncio.get_running_loop()
        self._purge_dead_waiters()
        started = self._clock()
        ticket: asyncio.Future[None] = loop.create_future()
        self._waiters.append(ticket)
        waited = False
        try:
            if self._waiters[0] is not ticket:
                waited = True
                await ticket  # woken when we reach the head of the queue
            while (delay := self._delay(self._clock())) > 0:
                waited = True
                await asyncio.sleep(delay)
            self._sent.append(self._clock())
        finally:
            try:
                self._waiters.remove(ticket)
            except ValueError:  # purged (its loop was closed)
                pass
            # Whether we got the slot or were cancelled, the next in line takes over.
            self._wake_head()
        self.stats.acquired += 1
        if waited:
            self.stats.waited += 1
            self.stats.wait_seconds += self._clock() - started

    def in_window(self) -> int:
        """How many request starts the log holds for the current window (for tests/metrics)."""
        self._delay(self._clock())
        return len(self._sent)


class UnlimitedRateLimiter(RateLimiter):
    """No client-side limit and no 429 pause: for baselines and benchmarks only."""

    def __init__(self) -> None:
        super().__init__(limit=1, window=1.0, margin=0.0)

    async def acquire(self) -> None:
        self.stats.acquired += 1

    def pause(self, seconds: float) -> None:
        self.stats.pauses += 1


@dataclass
class _Registry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    limiters: dict[str, RateLimiter] = field(default_factory=dict)


_registry = _Registry()


def rate_limiter_for(
    key_id: str, limit: int = DEFAULT_LIMIT, window: float = DEFAULT_WINDOW
) -> RateLimiter:
    """The process-wide limiter of an API key; every client using the key shares it.

    The first call for a key fixes its limit and window; later calls with other values
    get the existing limiter (a key has one real limit, whoever asks).
    """
    with _registry.lock:
        limiter = _registry.limiters.get(key_id)
        if limiter is None:
            limiter = _registry.limiters[key_id] = RateLimiter(limit, window)
        return limiter


def clear_rate_limiters() -> None:
    """Forget every registered limiter (tests)."""
    with _registry.lock:
        _registry.limiters.clear()


__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_WINDOW",
    "RateLimiter",
    "RateLimiterStats",
    "UnlimitedRateLimiter",
    "clear_rate_limiters",
    "rate_limiter_for",
]
