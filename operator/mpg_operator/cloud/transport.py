"""One API call on the wire: rate limit, retries with backoff, error mapping, counters.

Retry rules (see :meth:`Transport.request`):

* every attempt first waits for the key's :class:`~mpg_operator.cloud.ratelimit.RateLimiter`
  and holds its slot until the response is in (the limiter counts it a window from then);
* 429: pause the whole key until ``X-RateLimit-Reset``, then retry (any request: the server
  rejects it before processing, so even a create is safe to resend);
* connection not established (``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``): retry
  with backoff (the request never reached the server);
* 5xx, read/write timeouts, dropped connections: retry with exponential backoff and full
  jitter for idempotent calls; for non-idempotent calls raise
  :class:`~mpg_operator.cloud.errors.AmbiguousCreateError` at once;
* other 4xx: raise the mapped error at once.

Only method, path, status, timing and the API's request id are logged: never bodies or
headers, so credentials cannot leak through logs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from mpg_operator.cloud.errors import (
    AmbiguousCreateError,
    AuthError,
    CloudError,
    ConflictError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    ServerError,
)
from mpg_operator.cloud.ratelimit import RateLimiter

log = logging.getLogger("mpg_operator.cloud")

ResponseHook = Callable[[str, str, float], None]
"""``on_response(operation, status, seconds)``; status is ``"200"``, ``"429"``, ... or ``"network"``."""

NETWORK_STATUS = "network"
RATE_LIMIT_RESET_HEADER = "X-RateLimit-Reset"
PAUSE_SLACK = 0.1  # seconds added to X-RateLimit-Reset: clocks and transit differ a little

# The request provably did not reach the server: safe to resend even a create.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
_CODE_RE = re.compile(r"^\s*([A-Z][A-Z0-9_]+)\s*(?::\s*(.*))?$", re.DOTALL)
_MAX_DETAIL = 300


def parse_error_text(text: str | None) -> tuple[str | None, str]:
    """Split the API's ``"CODE: detail"`` (or bare ``"CODE"``) into ``(code, detail)``."""
    text = (text or "").strip()
    m = _CODE_RE.match(text)
    if not m:
        return None, text
    code, detail = m.group(1), (m.group(2) or "").strip()
    return code, detail or code


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of a secret in ``text`` (error texts may echo input)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "**********")
    return text


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**(n-1)))``."""

    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    def delay(self, retry: int) -> float:
        """Sleep before retry number ``retry`` (1-based)."""
        return random.uniform(0.0, min(self.backoff_cap, self.backoff_base * 2 ** (retry - 1)))


@dataclass
class ClientStats:
    """In-process counters for export as metrics: one entry per HTTP attempt."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    retries: Counter[str] = field(default_factory=Counter)

    def total(self, status: str | None = None) -> int:
        """Number of attempts, optionally only those with ``status``."""
        return sum(n for (_, s), n in self.requests.items() if status is None or s == status)


def _retry_after(response: httpx.Response, default: float) -> float:
    raw = response.headers.get(RATE_LIMIT_RESET_HEADER)
    try:
        value = float(raw) if raw is not None else default
    except ValueError:
        value = default
    return value if 0 <= value < 3600 else default


def _error_text(response: httpx.Response) -> tuple[str | None, str | None]:
    """``(error text, request id)`` from an error response (envelope or plain text)."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return (text[:_MAX_DETAIL] or response.reason_phrase), None
    if isinstance(body, dict):
        err = body.get("error") or body.get("message")
        rid = body.get("requestId")
        return (str(err) if err is not None else response.reason_phrase), (str(rid) if rid is not None else None)
    return response.reason_phrase, None


def error_for_response(response: httpx.Response, operation: str, secrets: Iterable[str] = ()) -> CloudError:
    """Map an HTTP error response to the :mod:`~mpg_operator.cloud.errors` taxonomy."""
    status = response.status_code
    text, request_id = _error_text(response)
    code, detail = parse_error_text(scrub(text or "", secrets))
    detail = detail[:_MAX_DETAIL] or f"HTTP {status}"
    kw: dict[str, Any] = dict(status=status, code=code, operation=operation, request_id=request_id)
    if status == 429:
        return RateLimitedError(detail, retry_after=_retry_after(response, 0.0), **kw)
    if status in (400, 422):
        return InvalidRequestError(detail, **kw)
    if status in (401, 403):
        return AuthError(detail, **kw)
    if status == 404:
        return NotFoundError(detail, **kw)
    if status == 409:
        return ConflictError(detail, **kw)
    if status >= 500:
        return ServerError(detail, **kw)
    return InvalidRequestError(detail, **kw)  # other 4xx: the request is wrong


class Transport:
    """Sends one logical API call, with the rate limiter and retry policy applied."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        limiter: RateLimiter,
        policy: RetryPolicy,
        *,
        stats: ClientStats | None = None,
        on_response: ResponseHook | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.http = http
        self.limiter = limiter
        self.policy = policy
        self.stats = stats or ClientStats()
        self.on_response = on_response
        self._secrets = tuple(secrets)

    def _record(self, operation: str, status: str, started: float) -> float:
        seconds = time.monotonic() - started
        self.stats.requests[(operation, status)] += 1
        self.stats.seconds[operation] += seconds
        if self.on_response is not None:
            try:
                self.on_response(operation, status, seconds)
            except Exception:  # a metrics hook must never break an API call
                log.exception("on_response hook failed")
        return seconds

    async def request(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotent: bool = True,
        secrets: Iterable[str] = (),
        max_retries: int | None = None,
    ) -> httpx.Response:
        """Send the call; return the 2xx response or raise a :class:`CloudError`.

        ``secrets`` are values in ``json`` that must not appear in error messages;
        ``max_retries`` overrides the policy's for this call.
        """
        all_secrets = (*self._secrets, *secrets)
        retry = 0
        while True:
            started = time.monotonic()
            error: CloudError
            try:
                # The slot counts until the response is in: the server saw the request before.
                async with self.limiter.slot():
                    started = time.monotonic()
                    response = await self.http.request(method, path, json=json, params=params)
            except _NOT_SENT as exc:
                self._record(operation, NETWORK_STATUS, started)
                error = NetworkError(f"connection failed ({type(exc).__name__})", operation=operation)
            except httpx.TransportError as exc:
                seconds = self._record(operation, NETWORK_STATUS, started)
                if not idempotent:
                    log.warning(
                        "%s %s %s: %s after %.2fs; outcome unknown, not retried",
                        operation,
                        method,
                        path,
                        type(exc).__name__,
                        seconds,
                    )
                    raise AmbiguousCreateError(
                        f"no response ({type(exc).__name__}); the request may have taken effect",
                        operation=operation,
                    ) from exc
                error = NetworkError(f"no response ({type(exc).__name__})", operation=operation)
            else:
                status = response.status_code
                seconds = self._record(operation, str(status), started)
                log.debug("%s %s %s -> %d in %.3fs", operation, method, path, status, seconds)
                if status < 300:
                    return response
                error = error_for_response(response, operation, all_secrets)
                if status == 429:
                    pause = _retry_after(response, self.limiter.window) + PAUSE_SLACK
                    self.limiter.pause(pause)
                    assert isinstance(error, RateLimitedError)
                    error.retry_after = pause
                    log.info("%s: rate limited (429), pausing the API key for %.2fs", operation, pause)
                elif status >= 500:
                    if not idempotent:
                        raise AmbiguousCreateError(
                            f"{error.detail}; the request may have taken effect",
                            status=status,
                            code=error.code,
                            operation=operation,
                            request_id=error.request_id,
                        )
                else:
                    raise error
            if retry >= (self.policy.max_retries if max_retries is None else max_retries):
                raise error
            retry += 1
            self.stats.retries[operation] += 1
            if isinstance(error, RateLimitedError):
                continue  # the limiter holds us until the reset has passed
            delay = self.policy.delay(retry)
            log.warning("%s: %s; retry %d/%d in %.2fs", operation, error, retry, self.policy.max_retries, delay)
            await asyncio.sleep(delay)


__all__ = [
    "NETWORK_STATUS",
    "ClientStats",
    "ResponseHook",
    "RetryPolicy",
    "Transport",
    "error_for_response",
    "parse_error_text",
    "scrub",
]
