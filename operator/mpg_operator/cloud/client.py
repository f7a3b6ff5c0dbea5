"""Async client of the ClickHouse Cloud OpenAPI for Managed Postgres services.

Every Postgres operation of the vendored OpenAPI subset, typed with :mod:`.models`::

    async with CloudClient(key_id=..., key_secret=..., organization_id=...) as cloud:
        svc = await cloud.create_service(PostgresServiceCreateRequest(...))
        svc = await cloud.wait_for_state(svc.id, ServiceState.RUNNING)

Behaviour worth knowing:

* All clients with the same API key share one rate limiter (:func:`rate_limiter_for`).
* ``create_service``, ``create_read_replica``, ``restore_service`` and
  ``set_password(password=None)`` are not idempotent: they are retried only when the
  request provably never reached the server (connect errors, 429); otherwise an unknown
  outcome raises :class:`AmbiguousCreateError`.
* ``delete_service`` returns ``False`` on 404 (already gone) instead of raising.
* ``stats`` counts HTTP attempts by ``(operationId, status)``; ``on_response`` gets each one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError

from mpg_operator import __version__
from mpg_operator.cloud.config import ClientSettings, default_base_url
from mpg_operator.cloud.errors import (
    AmbiguousCreateError,
    InvalidRequestError,
    NotFoundError,
    ServerError,
)
from mpg_operator.cloud.ids import canonical_id
from mpg_operator.cloud.models import (
    Organization,
    PostgresConfig,
    PostgresConfigUpdateResult,
    PostgresMetrics,
    PostgresPasswordResult,
    PostgresReadReplicaRequest,
    PostgresRestoreRequest,
    PostgresService,
    PostgresServiceCreateRequest,
    PostgresServiceListItem,
    PostgresServicePatchRequest,
    PostgresSetPasswordRequest,
    PostgresSetStateRequest,
    SlowQueryPattern,
    SlowQueryPatternDetail,
    WireModel,
)
from mpg_operator.cloud.ratelimit import RateLimiter, rate_limiter_for
from mpg_operator.cloud.transport import ClientStats, ResponseHook, RetryPolicy, Transport

M = TypeVar("M", bound=BaseModel)
DateLike = datetime | str


def _rfc3339(value: DateLike) -> str:
    """``datetime`` (naive = UTC) or string -> RFC 3339 UTC text."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _seg(value: str) -> str:
    """A path segment, escaped so an id can never change the path."""
    if not value:
        raise ValueError("empty id in API path")
    return quote(str(value), safe="")


def replica_not_ready(error: BaseException) -> bool:
    """True for the 400 a read-replica create gets until the primary's first backup exists
    ("Parent server is not ready for read replicas. There are no backups, yet."): retry later."""
    return isinstance(error, InvalidRequestError) and "not ready for read replicas" in error.detail


class CloudClient:
    """Typed async client for one organization and API key. Use as ``async with``."""

    def __init__(
        self,
        *,
        key_id: str,
        key_secret: str | SecretStr,
        organization_id: str,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = 30.0,
        rate_limiter: RateLimiter | None = None,
        max_retries: int = 5,
        user_agent: str | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        rate_limit: int = 10,
        rate_window: float = 10.0,
        on_response: ResponseHook | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``rate_limiter`` defaults to the process-wide limiter of ``key_id``
        (created with ``rate_limit``/``rate_window`` on first use). ``transport`` is for tests.
        """
        if not key_id or not organization_id:
            raise ValueError("key_id and organization_id are required")
        secret = key_secret if isinstance(key_secret, SecretStr) else SecretStr(key_secret)
        self.key_id = key_id
        self.organization_id = canonical_id(organization_id)
        self.base_url = (base_url or default_base_url()).rstrip("/")
        self.rate_limiter = rate_limiter or rate_limiter_for(key_id, rate_limit, rate_window)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=httpx.BasicAuth(key_id, secret.get_secret_value()),
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            headers={"User-Agent": user_agent or f"mpg-operator/{__version__}"},
            transport=transport,
            follow_redirects=False,
        )
        self._transport = Transport(
            self._http,
            self.rate_limiter,
            RetryPolicy(max_retries, backoff_base, backoff_cap),
            on_response=on_response,
            secrets=(secret.get_secret_value(),),
        )
        self._org = f"/organizations/{_seg(self.organization_id)}/postgres"

    @classmethod
    def from_settings(
        cls,
        settings: ClientSettings,
        *,
        key_id: str,
        key_secret: str | SecretStr,
        organization_id: str,
        **kwargs: Any,
    ) -> CloudClient:
        """A client configured from :class:`ClientSettings` (e.g. ``ClientSettings.from_env()``)."""
        return cls(
            key_id=key_id,
            key_secret=key_secret,
            organization_id=organization_id,
            base_url=settings.base_url,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            backoff_base=settings.backoff_base,
            backoff_cap=settings.backoff_cap,
            rate_limit=settings.rate_limit,
            rate_window=settings.rate_window,
            **kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"CloudClient(base_url={self.base_url!r}, organization_id={self.organization_id!r}, key_id={self.key_id!r})"
        )

    @property
    def stats(self) -> ClientStats:
        """Counters of this client's HTTP attempts."""
        return self._transport.stats

    async def __aenter__(self) -> CloudClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # --- plumbing ------------------------------------------------------------------

    def _path(self, service_id: str | None = None, sub: str = "") -> str:
        path = self._org if service_id is None else f"{self._org}/{_seg(service_id)}"
        return f"{path}/{sub}" if sub else path

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        body: WireModel | None = None,
        params: dict[str, Any] | None = None,
        idempotent: bool = True,
        secrets: Iterable[str] = (),
        max_retries: int | None = None,
    ) -> httpx.Response:
        json = body.to_wire() if body is not None else None
        if params:
            params = {k: v for k, v in params.items() if v is not None}
        return await self._transport.request(
            operation,
            method,
            path,
            json=json,
            params=params or None,
            idempotent=idempotent,
            secrets=secrets,
            max_retries=max_retries,
        )

    def _result(self, response: httpx.Response, operation: str, idempotent: bool = True) -> Any:
        """The ``result`` of a JSON envelope."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "result" not in body:
            raise self._bad_response(operation, "response is not a result envelope", idempotent)
        return body["result"]

    @staticmethod
    def _bad_response(operation: str, detail: str, idempotent: bool) -> Exception:
        if idempotent:
            return ServerError(detail, operation=operation)
        return AmbiguousCreateError(f"{detail}; the request may have taken effect", operation=operation)

    def _parse(self, response: httpx.Response, operation: str, model: type[M], idempotent: bool = True) -> M:
        result = self._result(response, operation, idempotent)
        try:
            return model.model_validate(result)
        except ValidationError as exc:  # inputs are hidden: safe to mention
            raise self._bad_response(
                operation, f"unexpected {model.__name__} shape ({exc.error_count()} errors)", idempotent
            ) from None

    def _parse_list(self, response: httpx.Response, operation: str, model: type[M]) -> list[M]:
        result = self._result(response, operation)
        try:
            return TypeAdapter(list[model]).validate_python(result)  # type: ignore[valid-type]
        except ValidationError as exc:
            raise ServerError(
                f"unexpected list of {model.__name__} ({exc.error_count()} errors)", operation=operation
            ) from None

    # --- organizations ---------------------------------------------------------------

    async def list_organizations(self) -> list[Organization]:
        """``GET /v1/organizations``: the organization(s) of the API key."""
        op = "organizationGetList"
        return self._parse_list(await self._call(op, "GET", "/organizations"), op, Organization)

    # --- services --------------------------------------------------------------------

    async def list_services(self) -> list[PostgresServiceListItem]:
        """All Postgres services of the organization (replicas included; no credentials)."""
        op = "postgresServiceGetList"
        return self._parse_list(await self._call(op, "GET", self._path()), op, PostgresServiceListItem)

    async def create_service(self, request: PostgresServiceCreateRequest) -> PostgresService:
        """Create a service. The response holds the only copy of the generated password.

        Raises :class:`AmbiguousCreateError` when the outcome is unknown: look the service up
        (by owner tag) before creating again.
        """
        op = "postgresServiceCreate"
        response = await self._call(op, "POST", self._path(), body=request, idempotent=False)
        return self._parse(response, op, PostgresService, idempotent=False)

    async def get_service(self, service_id: str) -> PostgresService:
        """One service (no credentials). :class:`NotFoundError` once it is gone."""
        op = "postgresServiceGet"
        return self._parse(await self._call(op, "GET", self._path(service_id)), op, PostgresService)

    async def update_service(self, service_id: str, request: PostgresServicePatchRequest) -> PostgresService:
        """PATCH name/size/haType/tags. Omitting ``tags`` clears them: always send the full set."""
        op = "postgresServicePatch"
        response = await self._call(op, "PATCH", self._path(service_id), body=request)
        return self._parse(response, op, PostgresService)

    async def delete_service(self, service_id: str) -> bool:
        """Start deleting a service. ``False`` if it was already gone (404), ``True`` otherwise.

        Deletion is asynchronous: GET keeps answering (``deleting``) until it returns 404.
        """
        try:
            await self._call("postgresServiceDelete", "DELETE", self._path(service_id))
        except NotFoundError:
            return False
        return True

    async def get_ca_certificates(self, service_id: str) -> str:
        """The service's CA bundle (PEM text)."""
        response = await self._call("postgresServiceCertsGet", "GET", self._path(service_id, "caCertificates"))
        return response.text

    # --- configuration ---------------------------------------------------------------

    async def get_config(self, service_id: str) -> PostgresConfig:
        """``pgConfig`` and ``pgBouncerConfig`` (values as strings)."""
        op = "postgresInstanceConfigGet"
        return self._parse(await self._call(op, "GET", self._path(service_id, "config")), op, PostgresConfig)

    async def replace_config(self, service_id: str, config: PostgresConfig) -> PostgresConfigUpdateResult:
        """POST: replace both maps (keys absent are removed). ``message`` tells about restarts."""
        op = "postgresInstanceConfigPost"
        response = await self._call(op, "POST", self._path(service_id, "config"), body=config)
        return self._parse(response, op, PostgresConfigUpdateResult)

    async def patch_config(self, service_id: str, config: PostgresConfig) -> PostgresConfigUpdateResult:
        """PATCH: merge the given keys into the current configuration."""
        op = "postgresInstanceConfigPatch"
        response = await self._call(op, "PATCH", self._path(service_id, "config"), body=config)
        return self._parse(response, op, PostgresConfigUpdateResult)

    # --- actions ---------------------------------------------------------------------

    async def set_password(
        self,
        service_id: str,
        password: str | SecretStr | PostgresSetPasswordRequest | None = None,
    ) -> PostgresPasswordResult:
        """Set the superuser password, or (``None``) have the server generate one.

        A generated password is returned once, in the result; that call is therefore not
        retried when its outcome is unknown (:class:`AmbiguousCreateError`).
        """
        request = (
            password
            if isinstance(password, PostgresSetPasswordRequest)
            else PostgresSetPasswordRequest(password=password)  # type: ignore[arg-type]
        )
        given = request.password.get_secret_value() if request.password is not None else None
        op = "postgresServiceSetPassword"
        response = await self._call(
            op,
            "PATCH",
            self._path(service_id, "password"),
            body=request,
            idempotent=given is not None,
            secrets=(given,) if given else (),
        )
        return self._parse(response, op, PostgresPasswordResult, idempotent=given is not None)

    async def set_state(self, service_id: str, command: str) -> PostgresService:
        """``restart`` / ``promote`` / ``switchover``; the response is only an acknowledgement.

        Not idempotent (a repeated restart restarts again): an unknown outcome raises
        :class:`AmbiguousCreateError` instead of being retried."""
        op = "postgresServicePatchState"
        response = await self._call(
            op,
            "PATCH",
            self._path(service_id, "state"),
            body=PostgresSetStateRequest(command=str(command)),
            idempotent=False,
        )
        return self._parse(response, op, PostgresService, idempotent=False)

    async def create_read_replica(self, service_id: str, request: PostgresReadReplicaRequest) -> PostgresService:
        """Create a read replica of ``service_id`` (a new service; not idempotent).

        Expect :class:`InvalidRequestError` "not ready for read replicas" until the primary's
        first backup exists.
        """
        op = "postgresInstanceCreateReadReplica"
        response = await self._call(op, "POST", self._path(service_id, "readReplica"), body=request, idempotent=False)
        return self._parse(response, op, PostgresService, idempotent=False)

    async def restore_service(self, service_id: str, request: PostgresRestoreRequest) -> PostgresService:
        """Point-in-time restore of ``service_id`` into a new service (not idempotent)."""
        op = "postgresInstanceRestore"
        response = await self._call(
            op, "POST", self._path(service_id, "restoredService"), body=request, idempotent=False
        )
        return self._parse(response, op, PostgresService, idempotent=False)

    # --- observability ---------------------------------------------------------------

    async def get_metrics(
        self,
        service_id: str,
        from_date: DateLike,
        to_date: DateLike,
        bucket_size_seconds: int | None = None,
    ) -> PostgresMetrics:
        """Time series for ``[from_date, to_date)`` (at most 250 points per series)."""
        op = "postgresInstanceMetricsGet"
        params = {
            "from_date": _rfc3339(from_date),
            "to_date": _rfc3339(to_date),
            "bucket_size_seconds": bucket_size_seconds,
        }
        response = await self._call(op, "GET", self._path(service_id, "metrics"), params=params)
        return self._parse(response, op, PostgresMetrics)

    async def list_slow_query_patterns(
        self,
        service_id: str,
        from_date: DateLike,
        to_date: DateLike,
        *,
        db_name: str | None = None,
        db_user: str | None = None,
        db_operation: str | None = None,
        app: str | None = None,
        sort_by: str | None = None,
        sort_order: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[SlowQueryPattern]:
        """Slow query patterns in ``[from_date, to_date)``, paginated with ``limit``/``offset``."""
        op = "slowQueryPatternsGetList"
        params = {
            "from_date": _rfc3339(from_date),
            "to_date": _rfc3339(to_date),
            "db_name": db_name,
            "db_user": db_user,
            "db_operation": db_operation,
            "app": app,
            "sort_by": sort_by,
            "sort_order": sort_order,
            "limit": limit,
            "offset": offset,
        }
        response = await self._call(op, "GET", self._path(service_id, "slowQueryPatterns"), params=params)
        return self._parse_list(response, op, SlowQueryPattern)

    async def get_slow_query_pattern(
        self,
        service_id: str,
        query_id: str,
        *,
        db_name: str,
        db_user: str,
        db_operation: str,
        app: str | None = None,
        timestamp: DateLike | None = None,
    ) -> SlowQueryPatternDetail:
        """One slow query pattern with its recent executions."""
        op = "slowQueryPatternGet"
        params = {
            "db_name": db_name,
            "db_user": db_user,
            "db_operation": db_operation,
            "app": app,
            "timestamp": _rfc3339(timestamp) if timestamp is not None else None,
        }
        path = self._path(service_id, f"slowQueryPatterns/{_seg(query_id)}")
        return self._parse(await self._call(op, "GET", path, params=params), op, SlowQueryPatternDetail)

    async def get_org_prometheus(self, *, max_retries: int | None = None) -> str:
        """Prometheus exposition text for every service of the organization (up to 100).

        ``max_retries`` overrides the client's retries (a metrics relay may rather wait for its next turn)."""
        op = "postgresOrgPrometheusGet"
        response = await self._call(op, "GET", self._path(None, "prometheus"), max_retries=max_retries)
        return response.text

    async def get_service_prometheus(self, service_id: str, *, max_retries: int | None = None) -> str:
        """Prometheus exposition text for one service."""
        op = "postgresInstancePrometheusGet"
        response = await self._call(op, "GET", self._path(service_id, "prometheus"), max_retries=max_retries)
        return response.text

    # --- waiting (each poll is one rate-limited GET) ---------------------------------

    async def wait_for_state(
        self,
        service_id: str,
        states: str | Iterable[str] = "running",
        *,
        timeout: float = 1800.0,
        interval: float = 5.0,
    ) -> PostgresService:
        """Poll GET until ``state`` is one of ``states``; :class:`TimeoutError` otherwise."""
        wanted = {states} if isinstance(states, str) else {str(s) for s in states}
        deadline = time.monotonic() + timeout
        while True:
            service = await self.get_service(service_id)
            if service.state in wanted:
                return service
            if time.monotonic() + interval > deadline:
                raise TimeoutError(
                    f"postgres {service_id} did not reach {sorted(wanted)} within {timeout:g}s "
                    f"(last seen state: {service.state})"
                )
            await asyncio.sleep(interval)

    async def wait_for_deleted(self, service_id: str, *, timeout: float = 1800.0, interval: float = 5.0) -> None:
        """Poll GET until it answers 404; :class:`TimeoutError` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                service = await self.get_service(service_id)
            except NotFoundError:
                return
            if time.monotonic() + interval > deadline:
                raise TimeoutError(
                    f"postgres {service_id} still exists after {timeout:g}s (last seen state: {service.state})"
                )
            await asyncio.sleep(interval)


__all__ = ["CloudClient", "replica_not_ready"]
