"""Client for the ClickHouse Cloud OpenAPI (Managed Postgres). Knows nothing of Kubernetes."""

import sys as _sys

if "httpx" not in _sys.modules:
    # httpx imports its command-line client whenever rich, pygments and click happen to be
    # installed: 4 MiB of resident memory in every process that only wants the library.
    _sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from mpg_operator.cloud import errors as _errors
from mpg_operator.cloud import models as _models
from mpg_operator.cloud.client import CloudClient, replica_not_ready
from mpg_operator.cloud.config import DEFAULT_BASE_URL, ClientSettings
from mpg_operator.cloud.errors import *  # noqa: F401,F403
from mpg_operator.cloud.models import *  # noqa: F401,F403
from mpg_operator.cloud.ratelimit import (
    RateLimiter,
    UnlimitedRateLimiter,
    clear_rate_limiters,
    rate_limiter_for,
)
from mpg_operator.cloud.transport import ClientStats, RetryPolicy, parse_error_text

__all__ = [
    "DEFAULT_BASE_URL",
    "ClientSettings",
    "ClientStats",
    "CloudClient",
    "RateLimiter",
    "RetryPolicy",
    "UnlimitedRateLimiter",
    "clear_rate_limiters",
    "parse_error_text",
    "rate_limiter_for",
    "replica_not_ready",
    *_errors.__all__,
    *_models.__all__,
]
