"""Client-side rate limiting, shared by everything that uses one API key.

ClickHouse Cloud allows 10 requests per 10 s *per API key*, counted by the server in fixed
windows of *arrival* times. The client cannot see arrival times, only that a request arrives
after the limiter let it go and before its response comes back. A :class:`RateLimiter` therefore
counts a request from the moment it is let go until ``window + margin`` seconds after its
response (or for ever while it is in flight), and lets a new request go only while fewer than
``limit`` requests are counted. Whatever the transit time (event-loop lag, a busy server, slow
networks), two requests the server may put in one window are then never more than ``limit``:
of any ``limit + 1`` such requests, the last one let go would have counted the others.

(Counting send times with a small margin, as earlier versions did, is only safe while transit
times vary by less than the margin; at 1,000 resources on two busy cores they varied by more,
and the server answered 429.)

Waiters are served first come, first served. A 429 from the server pauses the whole key
(:meth:`RateLimiter.pause`) until its ``X-RateLimit-Reset``. :meth:`RateLimiter.free_now` and
:meth:`RateLimiter.idle` tell opportunistic callers (a faster LIST while something is in
flight) whether the key has spare capacity now, so they never delay queued requests.

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
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
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
    """At most ``limit`` requests counted per ``window`` (+ ``margin``) seconds, FIFO.

    A request counts from when it is let go until ``window + margin`` after it is done: use
    ``async with limiter.slot(): send()``. :meth:`acquire` alone counts the request as done at
    once (for callers that cannot say when the response came back).
    """

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
        # Timer resolution and clock-rate differences between client and server.
        self.margin = max(0.1, 0.01 * window) if margin is None else margin
        self._clock = clock
        self._done: deque[float] = deque()  # end times of counted requests, oldest first
        self._inflight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._released: asyncio.Future[None] | None = None  # the head waiter's "a slot ended"
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

    def _used(self, now: float) -> int:
        horizon = self.window + self.margin
        while self._done and now - self._done[0] >= horizon:
            self._done.popleft()
        return self._inflight + len(self._done)

    def _delay(self, now: float) -> float | None:
        """Seconds until the next request may go (0: now; None: when an in-flight one ends)."""
        used = self._used(now)
        delay = self._paused_until - now
        if used >= self.limit:
            expiring = used - self.limit + 1  # counted requests that must age out first
            if expiring > len(self._done):
                return None
            delay = max(delay, self._done[expiring - 1] + self.window + self.margin - now)
        return max(0.0, delay)

    def free_now(self) -> int:
        """Requests that could go right now without waiting (0 while paused)."""
        now = self._clock()
        if self._paused_until > now:
            return 0
        return max(0, self.limit - self._used(now))

    def idle(self, reserve: int = 0) -> bool:
        """True when nobody waits and more than ``reserve`` requests could go now: an
        opportunistic request taken now delays no queued one."""
        return not self._waiters and self.free_now() > reserve

    def _purge_dead_waiters(self) -> None:
        # Futures of a loop that was closed while waiting would block the queue forever.
        if any(f.get_loop().is_closed() for f in self._waiters):
            self._waiters = deque(f for f in self._waiters if not f.get_loop().is_closed())
            self._wake_head()
        if self._released is not None and self._released.get_loop().is_closed():
            self._released = None

    def _wake_head(self) -> None:
        if self._waiters and not self._waiters[0].done():
            self._waiters[0].set_result(None)

    def _release(self) -> None:
        self._inflight -= 1
        self._done.append(self._clock())
        released, self._released = self._released, None
        if released is not None and not released.done() and not released.get_loop().is_closed():
            released.set_result(None)

    async def _acquire(self) -> None:
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
            while (delay := self._delay(self._clock())) != 0:
                waited = True
                if delay is None:  # every counted request is still in flight: wait for one
                    self._released = released = loop.create_future()
                    try:
                        await asyncio.wait_for(asyncio.shield(released), timeout=self.window)
                    except TimeoutError:
                        pass
                    finally:
                        if self._released is released:
                            self._released = None
                else:
                    await asyncio.sleep(delay)
            self._inflight += 1
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

    async def acquire(self) -> None:
        """Wait for a slot and count a request that is done at once. FIFO among waiters."""
        await self._acquire()
        self._release()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a slot; the request counts until ``window + margin`` after the block ends.

        Send the request inside the block and leave it once the response (or error) is in."""
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    def in_window(self) -> int:
        """How many requests the limiter counts now (for tests/metrics)."""
        return self._used(self._clock())


class UnlimitedRateLimiter(RateLimiter):
    """No client-side limit and no 429 pause: for baselines and benchmarks only."""

    def __init__(self) -> None:
        super().__init__(limit=1, window=1.0, margin=0.0)

    async def _acquire(self) -> None:
        self.stats.acquired += 1
        self._inflight += 1

    def _release(self) -> None:
        self._inflight -= 1

    def free_now(self) -> int:
        return 1_000_000

    def pause(self, seconds: float) -> None:
        self.stats.pauses += 1


@dataclass
class _Registry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    limiters: dict[str, RateLimiter] = field(default_factory=dict)


_registry = _Registry()


def rate_limiter_for(key_id: str, limit: int = DEFAULT_LIMIT, window: float = DEFAULT_WINDOW) -> RateLimiter:
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
