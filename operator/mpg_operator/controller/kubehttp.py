"""The operator's HTTP connection to the Kubernetes API: one aiohttp session, public kopf login only.

Credentials come from kopf's public login functions (``kopf.login_with_service_account``, then
``kopf.login_with_kubeconfig``), the same the operator's ``@kopf.on.login`` handler gives kopf, as
a public :class:`kopf.ConnectionInfo`. :class:`KubeSession` turns it into TLS settings (a CA from a
path or inline data, or no verification when ``insecure``; a client certificate) and an
``Authorization`` header (basic auth, or a bearer token). It logs in again on a 401 (ServiceAccount
tokens rotate) and retries the request once, and before ``expiration`` when one is given.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import inspect
import json
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import kopf

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)
REFRESH_BEFORE_EXPIRY = datetime.timedelta(seconds=60)
"""Credentials with an ``expiration`` are renewed this long before it."""

Login = Callable[[], kopf.ConnectionInfo | None | Awaitable[kopf.ConnectionInfo | None]]
"""Returns the credentials to use now (a plain or an async function)."""


class KubeApiError(Exception):
    """Kubernetes answered with an error status.

    ``status`` is the HTTP status; ``message`` and ``reason`` come from the API's ``Status`` answer
    only (``None`` otherwise), so an error never carries an object the server echoed back.
    """

    def __init__(self, status: int, message: str | None = None, reason: str | None = None) -> None:
        self.status = status
        self.message = message
        self.reason = reason
        super().__init__(f"Kubernetes API: HTTP {status}" + (f": {message}" if message else ""))


class KubeLoginError(Exception):
    """No credentials for the Kubernetes API (no ServiceAccount token, no kubeconfig)."""


def login_as_operator(settings: kopf.OperatorSettings | None = None, **_: Any) -> kopf.ConnectionInfo | None:
    """In a pod its ServiceAccount, elsewhere the kubeconfig (``KUBECONFIG`` or ``~/.kube/config``);
    ``None`` when there is neither. Also the operator's ``@kopf.on.login`` handler."""
    settings = settings or kopf.OperatorSettings()
    return kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)


def _pem(data: str | bytes) -> str:
    """PEM text from PEM or base64-encoded PEM (kubeconfig's ``*-data`` fields)."""
    text = data.decode("ascii") if isinstance(data, bytes) else data
    return text if text.lstrip().startswith("-----BEGIN ") else base64.b64decode(text).decode("ascii")


@contextlib.contextmanager
def _pem_file(data: str | bytes) -> Iterator[str]:
    """A private temporary file holding ``data`` as PEM, removed on exit (``ssl`` reads keys from files only)."""
    fd, path = tempfile.mkstemp(prefix="mpg-kube-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(_pem(data))
        yield path
    finally:
        os.unlink(path)


def ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext:
    """TLS for ``info``: its CA (path or data; the system's CAs if neither), no verification when
    ``insecure``, its client certificate and key (paths or data) when given."""
    cadata = _pem(info.ca_data) if info.ca_data else None
    context = ssl.create_default_context(cafile=info.ca_path or None, cadata=cadata)
    if info.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    certificate = info.certificate_path or info.certificate_data
    key = info.private_key_path or info.private_key_data
    if certificate and key:
        with contextlib.ExitStack() as files:
            cert_path = info.certificate_path or files.enter_context(_pem_file(info.certificate_data or ""))
            key_path = info.private_key_path or files.enter_context(_pem_file(info.private_key_data or ""))
            context.load_cert_chain(certfile=cert_path, keyfile=key_path)
    return context


def auth_headers(info: kopf.ConnectionInfo) -> dict[str, str]:
    """The ``Authorization`` header for ``info``: basic auth if a username and password are given,
    else its token (``Bearer`` unless it names a scheme); none for a client certificate alone."""
    if info.username and info.password:
        return {"Authorization": aiohttp.BasicAuth(info.username, info.password).encode()}
    if info.token:
        return {"Authorization": f"{info.scheme or 'Bearer'} {info.token}"}
    return {}


def _tls_settings(info: kopf.ConnectionInfo) -> tuple[Any, ...]:
    """What the session's connector depends on: a change needs a new session."""
    return (
        info.ca_path,
        info.ca_data,
        info.insecure,
        info.certificate_path,
        info.certificate_data,
        info.private_key_path,
        info.private_key_data,
        info.trust_env,
    )


def _expires_soon(info: kopf.ConnectionInfo) -> bool:
    if info.expiration is None:
        return False
    expiration = info.expiration
    if expiration.tzinfo is None:  # naive means UTC (as in kopf)
        expiration = expiration.replace(tzinfo=datetime.UTC)
    return datetime.datetime.now(datetime.UTC) >= expiration - REFRESH_BEFORE_EXPIRY


async def _api_error(resp: aiohttp.ClientResponse) -> KubeApiError:
    """The error for an answer >= 400, keeping only a ``Status`` answer's message and reason."""
    try:
        payload = await resp.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        payload = None
    if not isinstance(payload, dict) or payload.get("kind") != "Status":
        return KubeApiError(resp.status)
    message, reason = payload.get("message"), payload.get("reason")
    return KubeApiError(
        resp.status, message if isinstance(message, str) else None, reason if isinstance(reason, str) else None
    )


class KubeSession:
    """One aiohttp session to the Kubernetes API with the credentials ``login`` returns.

    Created lazily inside the running event loop (a new loop gets a new session and a new login);
    :meth:`aclose` closes it. A 401 logs in again (once for a burst of failed requests) and retries
    the request once; credentials with an ``expiration`` are renewed shortly before it.
    """

    def __init__(self, login: Login = login_as_operator, *, timeout: aiohttp.ClientTimeout = REQUEST_TIMEOUT) -> None:
        self._login = login
        self._timeout = timeout
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._login_lock: asyncio.Lock | None = None
        self._users: dict[aiohttp.ClientSession, int] = {}
        self._retired: set[aiohttp.ClientSession] = set()
        self.logins = 0
        """How many times it logged in (for tests and diagnostics)."""

    @property
    def server(self) -> str | None:
        """The API server's URL, once logged in."""
        return None if self._info is None else self._info.server

    async def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json") -> Any:
        """Send one request (``path`` below the server's URL); the decoded JSON answer, or :class:`KubeApiError`."""
        info = await self._credentials()
        try:
            return await self._send(info, method, path, body, content_type)
        except KubeApiError as e:
            if e.status != 401:
                raise
        info = await self._credentials(rejected=info)
        return await self._send(info, method, path, body, content_type)

    async def aclose(self) -> None:
        """Close the session (and any it replaced); the next request opens a new one and logs in again."""
        sessions = {*self._retired, *([self._session] if self._session is not None else [])}
        self._session, self._info, self._loop, self._login_lock = None, None, None, None
        self._retired.clear()
        self._users.clear()
        for session in sessions:
            await session.close()

    async def _credentials(self, rejected: kopf.ConnectionInfo | None = None) -> kopf.ConnectionInfo:
        """The current credentials; new ones when there are none, when ``rejected`` (a 401) are still
        current, or when they expire soon."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop: nothing of the old one is usable
            self._session, self._info, self._loop, self._login_lock = None, None, loop, asyncio.Lock()
            self._users.clear()
            self._retired.clear()
        assert self._login_lock is not None
        async with self._login_lock:
            info = self._info
            if info is None or info is rejected or _expires_soon(info):
                info = await self._log_in()
            return info

    async def _log_in(self) -> kopf.ConnectionInfo:
        answer = self._login()
        info = await answer if inspect.isawaitable(answer) else answer
        if info is None:
            raise KubeLoginError("no credentials for the Kubernetes API: no ServiceAccount token and no kubeconfig")
        self.logins += 1
        previous, self._info = self._info, info
        if self._session is not None and (previous is None or _tls_settings(previous) != _tls_settings(info)):
            session, self._session = self._session, None
            await self._retire(session)
        return info

    async def _retire(self, session: aiohttp.ClientSession) -> None:
        """Close ``session`` now, or once its requests in flight are done."""
        if self._users.get(session):
            self._retired.add(session)
        else:
            await session.close()

    def _session_for(self, info: kopf.ConnectionInfo) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            tls = ssl_context(info) if info.server.startswith("https:") else True  # no TLS to set up for http:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=tls),
                trust_env=info.trust_env,
                headers={"User-Agent": "mpg-operator"},
            )
        return self._session

    async def _send(self, info: kopf.ConnectionInfo, method: str, path: str, body: Any, content_type: str) -> Any:
        session = self._session_for(info)
        headers = auth_headers(info)
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = content_type
        url = info.server.rstrip("/") + path
        self._users[session] = self._users.get(session, 0) + 1
        try:
            async with session.request(
                method, url, data=data, headers=headers, timeout=self._timeout, proxy=info.proxy_url
            ) as resp:
                if resp.status >= 400:
                    raise await _api_error(resp)
                return await resp.json()
        finally:
            self._users[session] -= 1
            if not self._users[session]:
                del self._users[session]
                if session in self._retired:
                    self._retired.discard(session)
                    await session.close()
