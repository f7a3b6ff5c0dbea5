"""The simulator's aiohttp application, its runner (:class:`Simulator`) and a threaded variant."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Self

from aiohttp import BasicAuth, hdrs, web

from clickhouse_cloud_simulator.certs import CertificateCache
from clickhouse_cloud_simulator.config import SimulatorConfig
from clickhouse_cloud_simulator.faults import Faults
from clickhouse_cloud_simulator.handlers import ORG_ID, RAW_BODY, REQUEST_ID, Api
from clickhouse_cloud_simulator.ratelimit import RateLimiter
from clickhouse_cloud_simulator.store import Service, Store
from clickhouse_cloud_simulator.validation import ApiError

log = logging.getLogger("clickhouse_cloud_simulator")


class RequestRecord(NamedTuple):
    """One served request (status 0 = connection dropped by fault injection)."""

    method: str
    path: str
    status: int
    key_id: str | None
    timestamp: float


@dataclass
class Exchange:
    """A full request/response pair, handed to observers (e.g. the OpenAPI conformance check)."""

    method: str
    path: str
    query: dict[str, str]
    request_headers: dict[str, str]
    request_body: bytes
    status: int
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    dropped: bool = False


class _Dropped(Exception):
    """Raised to close a connection without any response."""


def error_response(request_id: str, err: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    body = {"status": err.status, "error": err.text, "requestId": request_id}
    return web.Response(
        status=err.status, body=json.dumps(body).encode(), content_type="application/json", headers=headers
    )


def _load_fleet(config: SimulatorConfig) -> Any:
    if config.real_postgres is False:
        return None
    try:
        from clickhouse_cloud_simulator.postgres import PostgresFleet

        available = PostgresFleet.available()
    except ImportError:
        available = False
    if not available:
        if config.real_postgres:
            raise RuntimeError("real PostgreSQL was requested but the PostgreSQL fleet is not available")
        return None
    return PostgresFleet(config.postgres_base_dir)


class Simulator:
    """A running ClickHouse Cloud API simulator (``async with Simulator(cfg) as sim``)."""

    def __init__(self, config: SimulatorConfig | None = None, **overrides: Any) -> None:
        config = replace(config or SimulatorConfig(), **overrides)
        self.config = config
        self.faults = Faults(seed=config.seed)
        self.requests: list[RequestRecord] = []
        self.certs = CertificateCache()
        self.fleet: Any = None
        self.store = Store(config, self.faults)
        key_id, key_secret, org_id = self.store.add_key(config.key_id, config.key_secret, config.org_id)
        self.key_id, self.key_secret, self.org_id = key_id, key_secret, org_id
        self._limiter = RateLimiter(config.rate_limit or 0, config.rate_window) if config.rate_limited else None
        self._observers: list[Callable[[Exchange], None]] = []
        self._runner: web.AppRunner | None = None
        self._reaper: asyncio.Task | None = None
        self.port: int = config.port
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- public helpers ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL including ``/v1`` (what clients take as the API URL)."""
        return f"http://{self.config.host}:{self.port}/v1"

    @property
    def services(self) -> dict[str, Service]:
        """All current services by id (read access; see ``store`` for out-of-band changes)."""
        return self.store.services

    @property
    def real_postgres(self) -> bool:
        return self.fleet is not None

    def add_key(
        self, key_id: str | None = None, key_secret: str | None = None, org_id: str | None = None
    ) -> tuple[str, str, str]:
        """Add an API key (for a new org unless ``org_id`` is given): (key id, secret, org id)."""
        return self.store.add_key(key_id, key_secret, org_id)

    def add_observer(self, fn: Callable[[Exchange], None]) -> None:
        """Call ``fn`` with every request/response :class:`Exchange` (after it is served)."""
        self._observers.append(fn)

    def state_of(self, service_id: str) -> str:
        return self.store.state_of(self.store.services[service_id])

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> Self:
        self.loop = asyncio.get_running_loop()
        self.fleet = _load_fleet(self.config)
        self.store.fleet = self.fleet
        self.store.loop = self.loop
        app = web.Application(middlewares=[self._middleware], client_max_size=1024**2)
        app.add_routes(Api(self).routes())
        self._runner = web.AppRunner(app, access_log=log if self.config.access_log else None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, shutdown_timeout=0.5)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self._reaper = self.loop.create_task(self._reap())
        return self

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.store.close()
        if self.fleet is not None:
            await self.fleet.close()
            self.fleet = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _reap(self) -> None:
        """Finish deletions (and destroy their servers) even when nobody polls."""
        while True:
            await asyncio.sleep(0.2)
            try:
                self.store.refresh()
            except Exception:
                log.exception("refresh failed")

    # -- request pipeline -----------------------------------------------------------------------
    def _authenticate(self, request: web.Request) -> tuple[str, str]:
        header = request.headers.get(hdrs.AUTHORIZATION)
        if not header:
            raise ApiError(401, "Missing credentials: use HTTP basic auth with the API key id and secret")
        try:
            auth = BasicAuth.decode(header)
        except ValueError:
            raise ApiError(
                401, "Invalid authorization header: use HTTP basic auth with the API key id and secret"
            ) from None
        org_id = self.store.authenticate(auth.login, auth.password)
        if org_id is None:
            raise ApiError(401, "Invalid API key id or secret")
        return auth.login, org_id

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]
    ) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        request[REQUEST_ID] = request_id
        method, path = request.method, request.path
        key_id: str | None = None
        extra_headers: dict[str, str] = {}
        drop = self.faults.take_drop(method, path)
        try:
            request[RAW_BODY] = await request.read()
            if drop == "before":
                raise _Dropped
            delay = self.faults.delay_for(method, path)
            if delay:
                await asyncio.sleep(delay)
            forced = self.faults.take_forced(method, path)
            if forced is not None:
                if forced == 429:
                    extra_headers["X-RateLimit-Reset"] = f"{self.faults.forced_reset_seconds:g}"
                raise ApiError(forced, "Injected fault" if forced != 429 else "Too many requests, please retry later")
            key_id, request[ORG_ID] = self._authenticate(request)
            if self._limiter is not None:
                allowed, extra_headers = self._limiter.hit(key_id)
                if not allowed:
                    raise ApiError(
                        429,
                        f"Rate limit exceeded: {self._limiter.limit} requests per {self._limiter.window:g} seconds per API key",
                    )
            response = await handler(request)
        except _Dropped:
            return self._drop(request, key_id)
        except ApiError as err:
            response = error_response(request_id, err)
        except web.HTTPException as exc:
            if exc.status == 404:
                err = ApiError(404, f"Unknown path {path}")
            elif exc.status == 405:
                err = ApiError(405, f"Method {method} is not allowed on {path}")
            elif exc.status == 413:
                err = ApiError(413, "Request body too large")
            else:
                err = ApiError(max(exc.status, 400), exc.reason)
            response = error_response(request_id, err)
        except Exception:
            log.exception("unexpected error on %s %s", method, path)
            response = error_response(request_id, ApiError(500, "An internal server error has occurred"))
        if response.status == 401:
            response.headers["WWW-Authenticate"] = 'Basic realm="ClickHouse Cloud API"'
        for name, value in extra_headers.items():
            response.headers[name] = value
        if drop == "after":
            return self._drop(request, key_id)
        self._record(request, key_id, response)
        return response

    def _drop(self, request: web.Request, key_id: str | None) -> web.StreamResponse:
        self.requests.append(RequestRecord(request.method, request.path, 0, key_id, time.time()))
        self._notify(
            Exchange(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                request.get(RAW_BODY, b""),
                0,
                dropped=True,
            )
        )
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=599)  # never written: the socket is gone

    def _record(self, request: web.Request, key_id: str | None, response: web.StreamResponse) -> None:
        self.requests.append(RequestRecord(request.method, request.path, response.status, key_id, time.time()))
        if self._observers:
            body = response.body if isinstance(response, web.Response) and isinstance(response.body, bytes) else b""
            self._notify(
                Exchange(
                    request.method,
                    request.path,
                    dict(request.query),
                    dict(request.headers),
                    request.get(RAW_BODY, b""),
                    response.status,
                    dict(response.headers),
                    body,
                )
            )

    def _notify(self, exchange: Exchange) -> None:
        for fn in self._observers:
            try:
                fn(exchange)
            except Exception:
                log.exception("simulator observer failed")


class SimulatorThread:
    """A :class:`Simulator` served from its own thread and event loop (for synchronous code)."""

    def __init__(self, config: SimulatorConfig | None = None, **overrides: Any) -> None:
        self.sim = Simulator(config, **overrides)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def __getattr__(self, name: str) -> Any:  # url, org_id, key_id, key_secret, faults, requests, store, add_key, ...
        if name in ("sim", "_thread", "_loop", "_started", "_error"):
            raise AttributeError(name)
        return getattr(self.sim, name)

    @property
    def services(self) -> dict[str, Service]:
        return self.call(self._services)

    async def _services(self) -> dict[str, Service]:
        return self.sim.services

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="mpg-simulator", daemon=True)
        self._thread.start()
        self._started.wait(120)
        if self._error is not None:
            raise RuntimeError("simulator failed to start") from self._error
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.sim.start())
        except BaseException as exc:  # noqa: BLE001
            self._error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        loop.run_forever()
        loop.run_until_complete(self.sim.stop())
        loop.close()

    def call(self, fn: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 60) -> Any:
        """Run ``fn()`` (a coroutine function) on the simulator's loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(timeout)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(60)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
