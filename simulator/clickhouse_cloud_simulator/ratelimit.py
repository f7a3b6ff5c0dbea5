"""Per-API-key fixed-window rate limiter with the real API's ``X-RateLimit-*`` headers."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class _Window:
    start: float
    count: int


class RateLimiter:
    """``limit`` requests per ``window`` seconds per key; the window starts at a key's first request."""

    def __init__(self, limit: int, window: float, clock=time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def hit(self, key: str) -> tuple[bool, dict[str, str]]:
        """Count one request; returns (allowed, headers)."""
        now = self._clock()
        win = self._windows.get(key)
        if win is None or now - win.start >= self.window:
            win = self._windows[key] = _Window(start=now, count=0)
        allowed = win.count < self.limit
        if allowed:
            win.count += 1
        reset = max(0.0, win.start + self.window - now)
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.limit - win.count)),
            "X-RateLimit-Reset": f"{reset:.3f}".rstrip("0").rstrip(".") or "0",
            "X-RateLimit-Policy": f'{self.limit};w={self.window:g};comment="fixed window"',
        }
        return allowed, headers
