"""The HTTP side of the emulator: a kmock request handler speaking the Kubernetes REST API.

Built on ``kmock.RawHandler``: requests are recorded as kmock ``Request`` objects and any reaction
a test adds through kmock's DSL (``emu.kmock['get /api/v1/secrets'] << 500``) is served first,
so faults can be injected. Everything else falls through to the emulation below.

Replaced from kmock 0.8 (and why): kmock's path parser (it raises on ``/api/v1/namespaces[/NAME]``),
its ``KubernetesScaffold`` discovery (no ``<plural>/status`` verbs, no CRD-driven groups), and
its ``KubernetesEmulator`` state machine (no resourceVersion/uid/generation, 200 on create,
500 on a failed JSON-patch ``test``, no status subresource, no selectors, no PUT) — the state now
lives in :mod:`kubeemu.store`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import enums, rendering

from kubeemu import openapi, protobuf, tables
from kubeemu.errors import ApiError
from kubeemu.fields import WriteOptions, manager_from_user_agent
from kubeemu.protobuf import PROTOBUF
from kubeemu.resources import ResourceType

if TYPE_CHECKING:
    from kubeemu.store import Store

log = logging.getLogger("kubeemu")

SERVER_VERSION = {
    "major": "1",
    "minor": "34",
    "gitVersion": "v1.34.0+kubeemu",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2025-08-27T00:00:00Z",
    "goVersion": "go1.24.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class ApiCall:
    """One served resource request, in RBAC terms (``verb`` is a Kubernetes RBAC verb)."""

    verb: str
    api_group: str
    version: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None


@dataclass(frozen=True)
class ParsedPath:
    group: str
    version: str
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_path(path: str) -> ParsedPath | None:
    """Split an API path into group/version/namespace/plural/name/subresource (None: not a resource path)."""
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return ParsedPath(group, version)
    namespace = None
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and not (group == "" and rest[2] in ("status", "finalize") and len(rest) == 3)
    ):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = "/".join(rest[2:]) or None
    return ParsedPath(group, version, plural, namespace, name, sub)


def rbac_verb(method: str, named: bool, params: dict[str, str]) -> str:
    """The RBAC verb of a request."""
    if method == "GET":
        if params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if named else "list"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if named else "deletecollection",
    }.get(method, method.lower())


BODY_TYPES = ["application/json", "application/yaml", PROTOBUF]
PATCH_TYPES = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
]


def unsupported_media_type(accepted: list[str]) -> ApiError:
    """415 naming the media types the server does accept (as the real server words it)."""
    return ApiError(
        415,
        "the body of the request was in an unknown format - accepted media types include: " + ", ".join(accepted),
        "UnsupportedMediaType",
    )


def decode_body(method: str, content_type: str, body: bytes) -> tuple[Any, ApiError | None]:
    """A request body as JSON-like data, by its Content-Type (JSON, YAML, apply YAML, protobuf)."""
    media = content_type.split(";")[0].strip().lower()
    writes = method in ("POST", "PUT", "PATCH")
    if media == PROTOBUF:
        try:
            return protobuf.decode(body), None
        except (protobuf.ProtobufError, UnicodeDecodeError, ValueError) as e:
            return None, (
                ApiError(
                    415,
                    f"the body of the request was in an unknown format - accepted media "
                    f"types include: application/json, application/yaml ({e}; protobuf "
                    f"is understood for {', '.join(protobuf.supported_kinds())})",
                    "UnsupportedMediaType",
                )
                if writes or method == "DELETE"
                else None
            )
    if media in ("application/apply-patch+yaml", "application/yaml"):
        try:
            return yaml.safe_load(body), None
        except yaml.YAMLError as e:
            return None, ApiError(400, f"error decoding YAML: {e}", "BadRequest")
    try:
        return json.loads(body), None
    except ValueError:
        if not writes:
            return None, None
        if media and "json" not in media:
            return None, unsupported_media_type(PATCH_TYPES if method == "PATCH" else BODY_TYPES)
        return None, ApiError(400, "the body of the request was in an unknown format: invalid JSON", "BadRequest")


def _json(body: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(text=json.dumps(body), status=status, content_type="application/json")


def _status_event(error: ApiError) -> dict[str, Any]:
    return {"type": "ERROR", "object": error.status()}


@attrs.define(kw_only=True)
class EmulatorHandler(kmock.RawHandler):
    """kmock handler serving the store over the Kubernetes REST conventions."""

    store: Store = attrs.field()
    calls: list[ApiCall] = attrs.field(factory=list)
    server_errors: list[BaseException] = attrs.field(factory=list)
    bookmark_interval: float = 10.0
    watch_timeout: float = 1800.0
    address: str = "127.0.0.1:0"
    max_recorded: int = 100_000  # requests and calls kept; the older half is dropped beyond this
    _stopping: asyncio.Event | None = attrs.field(default=None)
    _watch_wakers: set[asyncio.Event] = attrs.field(factory=set)
    _openapi_cache: tuple[Any, dict[str, str]] | None = attrs.field(default=None)

    # ---------------------------------------------------------------- entry point

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Parse, record, and serve one request (user reactions first, then the emulation)."""
        body = await raw.read()
        try:
            parsed = parse_path(raw.path)
            params = dict(raw.query)
            data: Any = None
            error: ApiError | None = None
            if body:
                data, error = decode_body(raw.method, raw.headers.get("Content-Type", ""), body)
            request = self._record(raw, parsed, params, body, data)
            if error is not None:
                raise error
            if self._payloads:
                try:
                    return await super()._handle(request)
                except NotImplementedError:
                    pass  # no user-defined reaction matched: emulate
            return await self._serve(raw, parsed, params, data)
        except ApiError as e:
            return _json(e.status(), e.code)
        except rendering.StreamingError as e:  # a user-defined stream failed mid-way
            self.server_errors.append(e.__cause__ or e)
            return e.args[0]
        except Exception as e:  # noqa: BLE001 -- answered as a 500 Status, kept for test assertions
            self.server_errors.append(e)
            log.error("kubeemu: internal error serving %s %s: %s", raw.method, raw.path, traceback.format_exc())
            return _json(ApiError(500, f"kubeemu internal error: {e!r}").status(), 500)

    def _record(
        self, raw: aiohttp.web.BaseRequest, parsed: ParsedPath | None, params: dict[str, str], body: bytes, data: Any
    ) -> rendering.Request:
        action = None
        resource = None
        if parsed is not None and parsed.plural:
            verb = rbac_verb(raw.method, parsed.name is not None, params)
            self.calls.append(
                ApiCall(
                    verb, parsed.group, parsed.version, parsed.plural, parsed.subresource, parsed.namespace, parsed.name
                )
            )
            action = {
                "watch": enums.action.WATCH,
                "get": enums.action.FETCH,
                "list": enums.action.LIST,
                "create": enums.action.CREATE,
                "update": enums.action.UPDATE,
                "patch": enums.action.UPDATE,
                "delete": enums.action.DELETE,
            }.get(verb)
            resource = kmock.resource(group=parsed.group, version=parsed.version, plural=parsed.plural)
        request = rendering.Request(
            id=len(self._requests),
            raw_request=raw,
            url=raw.url,
            method=raw.method,
            params=params,
            headers=dict(raw.headers),
            cookies=dict(raw.cookies),
            body=body,
            text=body.decode("utf-8", "replace"),
            data=data,
            action=action,
            resource=resource,
            namespace=parsed.namespace if parsed else None,
            name=parsed.name if parsed else None,
            subresource=parsed.subresource if parsed else None,
        )
        self._requests.append(request)
        if len(self._requests) > self.max_recorded:  # bounded memory for long demo runs
            del self._requests[: self.max_recorded // 2]
        if len(self.calls) > self.max_recorded:
            del self.calls[: self.max_recorded // 2]
        return request

    # ---------------------------------------------------------------- routing

    async def _serve(
        self, raw: aiohttp.web.BaseRequest, parsed: ParsedPath | None, params: dict[str, str], data: Any
    ) -> aiohttp.web.StreamResponse:
        if parsed is None or parsed.plural is None:
            if raw.method != "GET":
                raise ApiError(
                    405, "the server does not allow this method on the requested resource", "MethodNotAllowed"
                )
            return self._discovery(raw.path, parsed)
        store = self.store
        rt = store.resolve(parsed.group, parsed.version, parsed.plural)
        ns, name, sub = parsed.namespace, parsed.name, parsed.subresource
        dry_run = params.get("dryRun") == "All"
        method = raw.method
        options = WriteOptions(
            manager=params.get("fieldManager")
            or (
                None
                if raw.headers.get("Content-Type", "").startswith("application/apply-patch")
                else manager_from_user_agent(raw.headers.get("User-Agent", ""))
            ),
            field_validation=params.get("fieldValidation"),
            force=params.get("force") in ("true", "1"),
            subresource=sub,
        )
        if sub is not None and sub != "status":
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if sub == "status" and not rt.status_subresource:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if method == "GET" and params.get("watch") in ("true", "1"):
            field_selector = params.get("fieldSelector")
            if name:
                field_selector = ",".join(filter(None, [field_selector, f"metadata.name={name}"]))
            return await self._watch(raw, rt, ns, params, field_selector)
        as_table = tables.wants_table(raw.headers.get("Accept", ""))
        if method == "GET" and name:
            obj = store.get(rt, ns, name)
            if as_table:
                return _json(self._table(rt, [obj], params, obj["metadata"].get("resourceVersion", "")))
            return _json(obj)
        if method == "GET":
            limit = int(params["limit"]) if params.get("limit", "").isdigit() else None
            listing = store.list(
                rt, ns, params.get("labelSelector"), params.get("fieldSelector"), limit, params.get("continue")
            )
            if as_table:
                items = [{"apiVersion": rt.api_version, "kind": rt.kind, **item} for item in listing["items"]]
                return _json(
                    self._table(
                        rt, items, params, listing["metadata"]["resourceVersion"], listing["metadata"].get("continue")
                    )
                )
            return _json(listing)
        if method == "POST" and not name:
            return _json(store.create(rt, ns, data, dry_run, options), 201)
        if method == "PUT" and name:
            return _json(store.replace(rt, ns, name, data, sub, dry_run, options))
        if method == "PATCH" and name:
            content_type = raw.headers.get("Content-Type", "")
            existed = store.exists(rt, ns, name)
            result = store.patch(rt, ns, name, content_type, data, sub, dry_run, options)
            return _json(result, 200 if existed else 201)
        if method == "DELETE" and name:
            delete_options = dict(data) if isinstance(data, dict) else {}
            if params.get("propagationPolicy"):
                delete_options["propagationPolicy"] = params["propagationPolicy"]
            return _json(store.delete(rt, ns, name, delete_options, dry_run))
        if method == "DELETE":
            return _json(store.delete_collection(rt, ns, params.get("labelSelector"), params.get("fieldSelector")))
        raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")

    def _table(
        self,
        rt: ResourceType,
        objects: list[dict[str, Any]],
        params: dict[str, str],
        resource_version: str,
        continue_: str | None = None,
        columns: bool = True,
    ) -> dict[str, Any]:
        crd = self.store.crds().get(rt.storage_key) if rt.custom else None
        return tables.table(
            rt, objects, crd, params.get("includeObject", "Metadata"), resource_version, continue_, columns
        )

    # ---------------------------------------------------------------- discovery

    def _discovery(self, path: str, parsed: ParsedPath | None) -> aiohttp.web.StreamResponse:
        types = self.store.types()
        groups: dict[str, list[str]] = {}
        for rt in types:
            if rt.group and rt.version not in groups.setdefault(rt.group, []):
                groups[rt.group].append(rt.version)
        path = "/" + path.strip("/")
        if path in ("/healthz", "/livez", "/readyz"):
            return aiohttp.web.Response(text="ok")
        if path == "/version":
            return _json(SERVER_VERSION)
        if path == "/openapi/v3" or path.startswith("/openapi/v3/"):
            docs = self._openapi_documents(types)
            key = "" if path == "/openapi/v3" else path.removeprefix("/openapi/v3/")
            if key not in docs:
                raise ApiError(404, "the server could not find the requested resource", "NotFound")
            return aiohttp.web.Response(text=docs[key], content_type="application/json")
        if path == "/":
            paths = {"/api", "/api/v1", "/apis", "/version", "/healthz", "/livez", "/readyz"}
            for group, versions in groups.items():
                paths.add(f"/apis/{group}")
                paths.update(f"/apis/{group}/{v}" for v in versions)
            return _json({"paths": sorted(paths)})
        if path == "/api":
            return _json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.address}],
                }
            )
        if path == "/apis":
            return _json(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [self._group_doc(g, vs) for g, vs in sorted(groups.items())],
                }
            )
        if path.startswith("/apis/") and parsed is None and path.count("/") == 2:
            group = path.split("/")[2]
            if group not in groups:
                raise ApiError(404, "the server could not find the requested resource", "NotFound")
            return _json({"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(group, groups[group])})
        if parsed is not None and parsed.plural is None:
            served = [rt for rt in types if rt.group == parsed.group and rt.version == parsed.version]
            if not served:
                raise ApiError(404, "the server could not find the requested resource", "NotFound")
            return _json(
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": served[0].api_version,
                    "resources": [entry for rt in sorted(served, key=lambda t: t.plural) for entry in rt.discovery()],
                }
            )
        raise ApiError(404, "the server could not find the requested resource", "NotFound")

    def _openapi_documents(self, types: list[ResourceType]) -> dict[str, str]:
        """The OpenAPI v3 documents as JSON text (index under ``""``), rebuilt when types or CRDs change."""
        crds = self.store.crds()
        key = (
            tuple(sorted((t.group, t.version, t.plural) for t in types)),
            tuple(sorted((k, c["metadata"].get("resourceVersion")) for k, c in crds.items())),
        )
        if self._openapi_cache is None or self._openapi_cache[0] != key:
            docs = openapi.group_version_documents(types, crds)
            rendered = {path: json.dumps(doc) for path, doc in docs.items()}
            rendered[""] = json.dumps(openapi.index(docs))
            self._openapi_cache = (key, rendered)
        return self._openapi_cache[1]

    @staticmethod
    def _group_doc(group: str, versions: list[str]) -> dict[str, Any]:
        docs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": docs, "preferredVersion": docs[0]}

    # ---------------------------------------------------------------- watch

    async def _watch(
        self,
        raw: aiohttp.web.BaseRequest,
        rt: ResourceType,
        namespace: str | None,
        params: dict[str, str],
        field_selector: str | None,
    ) -> aiohttp.web.StreamResponse:
        store = self.store
        match = store.matcher(rt, params.get("labelSelector"), field_selector)  # 400 before streaming
        if not rt.namespaced and namespace is not None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else self.watch_timeout
        deadline = time.monotonic() + timeout
        bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
        send_initial = params.get("sendInitialEvents") == "true"
        since = params.get("resourceVersion") or ""

        loop = asyncio.get_running_loop()
        waker = asyncio.Event()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(waker.set)
            except RuntimeError:  # the loop is closed: the server is gone
                pass

        with store.lock:
            initial: list[dict[str, Any]] = []
            if since in ("", "0") or send_initial:
                listing = store.list(rt, namespace)
                initial = [store.present(item, rt) for item in listing["items"] if match(item)]
                last = store.resource_version
            else:
                try:
                    last = int(since)
                except ValueError:
                    raise ApiError(400, f"Invalid value for resourceVersion: {since!r}") from None
            store.add_listener(wake)
        self._watch_wakers.add(waker)
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        try:
            await response.prepare(raw)

            as_table = tables.wants_table(raw.headers.get("Accept", ""))
            first = [True]

            async def send(event: dict[str, Any]) -> None:
                if as_table and event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    obj = event["object"]
                    event = {
                        "type": event["type"],
                        "object": self._table(
                            rt, [obj], params, obj["metadata"].get("resourceVersion", ""), columns=first[0]
                        ),
                    }
                    first[0] = False
                await response.write(json.dumps(event).encode() + b"\n")

            for obj in initial:
                await send({"type": "ADDED", "object": obj})
            if send_initial:
                await send(self._bookmark(rt, last, initial_end=True))
            last_bookmark = time.monotonic()
            while True:
                events = store.events_since(last)
                if events is None:
                    await send(
                        _status_event(
                            ApiError(410, f"too old resource version: {last} ({store.resource_version})", "Expired")
                        )
                    )
                    break
                for event in events:
                    last = event.rv
                    if event.storage_key != rt.storage_key:
                        continue
                    if namespace is not None and event.namespace != namespace:
                        continue
                    event_type = event.type
                    if not match(event.object):
                        # An object leaving the selection is DELETED for this watcher, as on a real server.
                        if event_type != "MODIFIED" or event.previous is None or not match(event.previous):
                            continue
                        event_type = "DELETED"
                    elif event_type == "MODIFIED" and event.previous is not None and not match(event.previous):
                        event_type = "ADDED"  # ...and one entering it is ADDED
                    await send({"type": event_type, "object": store.present(event.object, rt)})
                now = time.monotonic()
                if now >= deadline or (self._stopping is not None and self._stopping.is_set()):
                    break
                if raw.transport is None or raw.transport.is_closing():
                    break
                if bookmarks and now - last_bookmark >= self.bookmark_interval:
                    await send(self._bookmark(rt, last))
                    last_bookmark = now
                wait = min(deadline - now, 1.0, self.bookmark_interval if bookmarks else 1.0)
                try:
                    await asyncio.wait_for(waker.wait(), timeout=max(wait, 0.01))
                except TimeoutError:
                    pass
                waker.clear()
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            store.remove_listener(wake)
            self._watch_wakers.discard(waker)
        return response

    @staticmethod
    def _bookmark(rt: ResourceType, rv: int, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}}

    def stop_watches(self) -> None:
        """End all watch streams (on shutdown)."""
        if self._stopping is not None:
            self._stopping.set()
        for waker in list(self._watch_wakers):
            waker.set()
