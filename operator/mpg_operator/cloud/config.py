"""Client settings, from arguments or the environment.

Environment variables (all optional):

=========================== ========================================== =================
``CLICKHOUSE_CLOUD_API_URL`` base URL including ``/v1``               ``https://api.clickhouse.cloud/v1``
``MPG_API_TIMEOUT``          seconds per HTTP request                  ``30``
``MPG_API_MAX_RETRIES``      retries after the first attempt           ``5``
``MPG_API_RATE_LIMIT``       requests per window per API key           ``10``
``MPG_API_RATE_WINDOW``      window length in seconds                  ``10``
=========================== ========================================== =================
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.clickhouse.cloud/v1"
ENV_BASE_URL = "CLICKHOUSE_CLOUD_API_URL"


def _get(env: Mapping[str, str], name: str, cast: Callable[[str], T], default: T) -> T:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return cast(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid number") from None


@dataclass(frozen=True)
class ClientSettings:
    """Tunables of :class:`~mpg_operator.cloud.client.CloudClient` (no credentials)."""

    base_url: str = DEFAULT_BASE_URL
    timeout: float = 30.0
    max_retries: int = 5
    rate_limit: int = 10
    rate_window: float = 10.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.max_retries < 0:
            raise ValueError("timeout must be > 0 and max_retries >= 0")
        if self.rate_limit < 1 or self.rate_window <= 0:
            raise ValueError("rate limit must be >= 1 request per window > 0 s")
        if self.backoff_base < 0 or self.backoff_cap < self.backoff_base:
            raise ValueError("backoff must satisfy 0 <= base <= cap")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSettings:
        """Settings from environment variables (defaults for the unset ones)."""
        env = os.environ if env is None else env
        d = cls()
        return cls(
            base_url=default_base_url(env),
            timeout=_get(env, "MPG_API_TIMEOUT", float, d.timeout),
            max_retries=_get(env, "MPG_API_MAX_RETRIES", int, d.max_retries),
            rate_limit=_get(env, "MPG_API_RATE_LIMIT", int, d.rate_limit),
            rate_window=_get(env, "MPG_API_RATE_WINDOW", float, d.rate_window),
        )


def default_base_url(env: Mapping[str, str] | None = None) -> str:
    """``CLICKHOUSE_CLOUD_API_URL`` or the public API."""
    env = os.environ if env is None else env
    return (env.get(ENV_BASE_URL, "").strip() or DEFAULT_BASE_URL).rstrip("/")


__all__ = ["DEFAULT_BASE_URL", "ENV_BASE_URL", "ClientSettings", "default_base_url"]
