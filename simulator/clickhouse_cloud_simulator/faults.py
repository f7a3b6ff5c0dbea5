"""Fault injection for the simulator: mutable at run time (tests flip these while it serves).

Every rule can be narrowed to a method and/or a path (a regular expression searched in the
request path). Example::

    sim.faults.force(503, count=2, method="GET")          # next two GETs answer 503
    sim.faults.drop(count=1, when="after", method="POST", path=r"/postgres$")  # ambiguous create
    sim.faults.error_rate = 0.2                            # 20 % of requests answer 500
    sim.faults.latency = 0.5                               # every request waits 0.5 s
    sim.faults.stuck_creating = True                       # new services never leave "creating"
    sim.faults.flip_back = True                            # resizes show the new value, revert, then land
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field


@dataclass
class _Rule:
    count: int
    method: str | None
    path: str | None

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return not self.path or re.search(self.path, path) is not None


@dataclass
class ForcedStatus(_Rule):
    status: int = 500


@dataclass
class Drop(_Rule):
    when: str = "before"  # "before": nothing applied; "after": request applied, response lost


@dataclass
class Faults:
    """Runtime-mutable fault settings (see the module docstring)."""

    error_rate: float = 0.0
    error_status: int = 500
    latency: float = 0.0
    latency_method: str | None = None
    latency_path: str | None = None
    stuck_creating: bool = False
    flip_back: bool = False  # size/haType changes show briefly, flip back, then land ("transient inversion")
    forced_reset_seconds: float = 1.0  # X-RateLimit-Reset sent with a forced 429
    seed: int | None = None
    forced: list[ForcedStatus] = field(default_factory=list)
    drops: list[Drop] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    # -- set-up helpers ------------------------------------------------------------------
    def force(self, status: int, count: int = 1, *, method: str | None = None, path: str | None = None) -> None:
        """Answer the next ``count`` matching requests with ``status`` (error envelope)."""
        with self._lock:
            self.forced.append(ForcedStatus(count=count, method=method, path=path, status=status))

    def drop(self, count: int = 1, *, when: str = "before", method: str | None = None, path: str | None = None) -> None:
        """Close the connection of the next ``count`` matching requests without a response."""
        if when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        with self._lock:
            self.drops.append(Drop(count=count, method=method, path=path, when=when))

    def reset(self) -> None:
        """Switch every fault off."""
        with self._lock:
            self.error_rate = 0.0
            self.latency = 0.0
            self.latency_method = self.latency_path = None
            self.stuck_creating = False
            self.flip_back = False
            self.forced.clear()
            self.drops.clear()

    # -- used by the server ----------------------------------------------------------------
    def delay_for(self, method: str, path: str) -> float:
        if self.latency <= 0:
            return 0.0
        rule = _Rule(0, self.latency_method, self.latency_path)
        return self.latency if rule.matches(method, path) else 0.0

    def take_forced(self, method: str, path: str) -> int | None:
        with self._lock:
            for rule in self.forced:
                if rule.count > 0 and rule.matches(method, path):
                    rule.count -= 1
                    status = rule.status
                    self.forced = [r for r in self.forced if r.count > 0]
                    return status
        if self.error_rate > 0 and self._rng.random() < self.error_rate:
            return self.error_status
        return None

    def take_drop(self, method: str, path: str) -> str | None:
        with self._lock:
            for rule in self.drops:
                if rule.count > 0 and rule.matches(method, path):
                    rule.count -= 1
                    when = rule.when
                    self.drops = [r for r in self.drops if r.count > 0]
                    return when
        return None
