"""Errors of the ClickHouse Cloud API client, as a taxonomy the reconciler can act on.

::

    CloudError
    ├── PermanentCloudError          retrying the same request cannot help
    │   ├── InvalidRequestError      400 / 422: the request is wrong (message from the API)
    │   ├── AuthError                401 / 403: key id/secret wrong, or missing permission
    │   ├── NotFoundError            404: no such service (or organization)
    │   └── ConflictError            409: quota reached, replica attached, ...
    ├── TemporaryCloudError          retry later, with backoff
    │   ├── RateLimitedError         429 (``retry_after`` from ``X-RateLimit-Reset``)
    │   ├── ServerError              5xx
    │   └── NetworkError             connection refused/reset, timeout
    └── AmbiguousCreateError         a non-idempotent POST whose outcome is unknown

Messages carry the operation, the HTTP status and the API's error text, never a
request body, so they are safe to put in logs, events and conditions.
"""

from __future__ import annotations


class CloudError(Exception):
    """Base of every error raised by :mod:`mpg_operator.cloud`."""

    status: int | None
    code: str | None
    detail: str
    operation: str | None
    request_id: str | None

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        operation: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.detail = detail
        self.status = status
        self.code = code
        self.operation = operation
        self.request_id = request_id
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.operation}: " if self.operation else ""
        status = f"HTTP {self.status}: " if self.status is not None else ""
        return f"{where}{status}{self.detail}"

    @property
    def temporary(self) -> bool:
        """True when the same request may succeed later."""
        return isinstance(self, TemporaryCloudError)


class PermanentCloudError(CloudError):
    """The request cannot succeed as it is."""


class InvalidRequestError(PermanentCloudError):
    """400/422: the API rejected the request (bad size, region, name, tags, ...)."""


class AuthError(PermanentCloudError):
    """401/403: wrong key id/secret, or the key lacks a permission."""


class NotFoundError(PermanentCloudError):
    """404: the service (or organization) does not exist."""


class ConflictError(PermanentCloudError):
    """409: e.g. the organization's service quota is reached, or a replica is attached."""


class TemporaryCloudError(CloudError):
    """The request may succeed later."""

    retry_after: float | None = None


class RateLimitedError(TemporaryCloudError):
    """429: the key's rate limit is exhausted; ``retry_after`` seconds until the window resets."""

    def __init__(self, detail: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        self.retry_after = retry_after
        super().__init__(detail, **kwargs)  # type: ignore[arg-type]


class ServerError(TemporaryCloudError):
    """5xx from the API."""


class NetworkError(TemporaryCloudError):
    """No HTTP response: connection refused or reset, timeout, protocol error."""


class AmbiguousCreateError(CloudError):
    """A POST that creates something may or may not have taken effect.

    Create has no idempotency key, so this is never retried blindly: the caller must look
    for the resource (by its owner tag) before trying again.
    """


__all__ = [
    "AmbiguousCreateError",
    "AuthError",
    "CloudError",
    "ConflictError",
    "InvalidRequestError",
    "NetworkError",
    "NotFoundError",
    "PermanentCloudError",
    "RateLimitedError",
    "ServerError",
    "TemporaryCloudError",
]
