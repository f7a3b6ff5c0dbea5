"""A scripted stand-in of the ClickHouse Cloud API over real HTTP, for client edge cases.

The full behaviour is tested against the simulator (``test_cloud_simulator.py``); this
server only replays what a test scripts, so rare wire situations (429 with a reset header,
5xx, dropped connections, slow responses, odd bodies) are exact and deterministic.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ORG = "11111111-2222-3333-4444-555555555555"
SID = "67b4bc12-8582-45d0-8806-fe9b2e5a54e6"
KEY_SECRET = "kS3cr3t-key-value-0123456789"


@dataclass
class Reply:
    """One scripted answer: JSON body (or raw text), status, headers; or a fault."""

    status: int = 200
    json: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    drop: bool = False  # close the connection without answering
    delay: float = 0.0  # answer late (read timeouts)


def ok(result: Any = None, *, status: int = 200) -> Reply:
    body: dict[str, Any] = {"status": status, "requestId": str(uuid.uuid4())}
    if result is not None:
        body["result"] = result
    return Reply(status=status, json=body)


def err(status: int, error: str, **headers: str) -> Reply:
    return Reply(
        status=status, json={"status": status, "error": error, "requestId": str(uuid.uuid4())}, headers=headers
    )


@dataclass
class Seen:
    at: float  # time.monotonic() when the server received the request
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


Handler = Callable[[web.Request], Awaitable[Reply]]


class FakeApi:
    """Routes ``(METHOD, path regex)`` to queued replies; the last reply repeats."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], list[Reply | Handler]]] = []
        self.seen: list[Seen] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    def on(self, method: str, path: str, *replies: Reply | Handler) -> None:
        """Script replies for ``method`` and a path regex (relative to ``/v1``, full match)."""
        self.routes.insert(0, (method, re.compile(path), list(replies)))

    def requests(self, method: str | None = None) -> list[Seen]:
        return [s for s in self.seen if method is None or s.method == method]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.rel_url.raw_path.removeprefix("/v1")  # still %-encoded
        self.seen.append(Seen(time.monotonic(), request.method, path, dict(request.query), dict(request.headers), body))
        for method, pattern, replies in self.routes:
            if method == request.method and pattern.fullmatch(path):
                item = replies.pop(0) if len(replies) > 1 else replies[0]
                reply = item if isinstance(item, Reply) else await item(request)
                break
        else:
            reply = err(404, "NOT_FOUND")
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.drop:
            assert request.transport is not None
            request.transport.close()
            await asyncio.sleep(0.05)
            return web.Response()
        if reply.text is not None:
            return web.Response(
                status=reply.status,
                text=reply.text,
                headers=reply.headers,
                content_type=reply.content_type or "text/plain",
            )
        return web.json_response(reply.json, status=reply.status, headers=reply.headers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
