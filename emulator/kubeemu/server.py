"""``KubeEmulator``: the API server emulator running in its own thread and event loop.

The HTTP server is aiohttp's low-level ``web.Server`` driving the kmock handler directly, instead
of ``kmock.Server``: the latter also opens a client session and patches aiohttp's DNS resolution
process-wide (which other threads, e.g. a kopf operator, would see), neither of which is wanted here.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web

from kubeemu.errors import ApiError
from kubeemu.handler import ApiCall, EmulatorHandler
from kubeemu.kubeconfig import write_kubeconfig
from kubeemu.store import MERGE, Store

T = TypeVar("T")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def three_way_patch(last: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch setting everything in ``new`` and removing what ``last`` had but ``new`` lacks."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(last.get(key), dict):
            patch[key] = three_way_patch(last[key], value)
        else:
            patch[key] = value
    for key in last:
        if key not in new:
            patch[key] = None
    return patch


class KubeEmulator:
    """A local Kubernetes API server stand-in on ``127.0.0.1`` (tests and demos; never production).

    ``with KubeEmulator(crds=[crd], namespaces=["default"]) as emu: ...`` starts it on a free port;
    ``emu.url`` is its base URL and ``emu.write_kubeconfig(path)`` points clients at it.
    ``emu.calls`` lists every resource request as an :class:`ApiCall` (RBAC verb and resource).
    """

    def __init__(
        self,
        crds: Iterable[dict[str, Any]] = (),
        namespaces: Iterable[str] = ("default",),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bookmark_interval: float = 10.0,
        watch_timeout: float = 1800.0,
    ) -> None:
        self.store = Store()
        self._host, self._port, self._requested_port = host, port, port
        self._bookmark_interval, self._watch_timeout = bookmark_interval, watch_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.handler: EmulatorHandler | None = None
        for crd in crds:
            self.add_crd(crd)
        for namespace in namespaces:
            self.create_namespace(namespace)

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:43123``."""
        if self.handler is None or not self._port:
            raise RuntimeError("the emulator is not running")
        return f"http://{self._host}:{self._port}"

    @property
    def calls(self) -> list[ApiCall]:
        """All resource requests served so far (a live list)."""
        return self.handler.calls if self.handler is not None else []

    @property
    def server_errors(self) -> list[BaseException]:
        """Unexpected exceptions (answered with 500); tests should expect none."""
        return self.handler.server_errors if self.handler is not None else []

    @property
    def kmock(self) -> EmulatorHandler:
        """The kmock handler: add reactions (fault injection) or inspect the raw requests."""
        if self.handler is None:
            raise RuntimeError("the emulator is not running")
        return self.handler

    def start(self) -> KubeEmulator:
        """Start serving in a background thread; returns when the port is bound."""
        if self._thread is not None:
            raise RuntimeError("the emulator is already running")
        self._ready.clear()
        self._startup_error = None
        self._port = self._requested_port
        self._thread = threading.Thread(target=self._run, name="kubeemu", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._startup_error is not None or not self._ready.is_set():
            self._thread.join(timeout=5)
            self._thread = None
            raise RuntimeError("the Kubernetes emulator failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        """Stop serving (ends watch streams, closes the port) and join the thread."""
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass
        self._thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> KubeEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # noqa: BLE001 -- reported to start()
            self._startup_error = e
            self._ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        handler = EmulatorHandler(
            store=self.store,
            bookmark_interval=self._bookmark_interval,
            watch_timeout=self._watch_timeout,
            stopping=asyncio.Event(),
        )
        async with handler:
            runner = aiohttp.web.ServerRunner(aiohttp.web.Server(handler), shutdown_timeout=1.0, handle_signals=False)
            await runner.setup()
            site = aiohttp.web.TCPSite(runner, self._host, self._port, reuse_address=True)
            await site.start()
            self._port = runner.addresses[0][1]
            handler.address = f"{self._host}:{self._port}"
            self.handler = handler
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                handler.stop_watches()
                await runner.cleanup()

    # ---------------------------------------------------------------- kubeconfig

    def write_kubeconfig(self, path: str | os.PathLike[str], namespace: str = "default") -> Path:
        """Write a kubeconfig (cluster/user/context ``kubeemu``, no auth) pointing at :attr:`url`."""
        return write_kubeconfig(path, self.url, namespace)

    # ---------------------------------------------------------------- sync helpers (no HTTP, not recorded)

    def add_crd(self, crd: dict[str, Any]) -> None:
        """Create or update a CustomResourceDefinition; its resources are served at once."""
        self.store.add_crd(copy.deepcopy(crd))

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        """Create a namespace (no error if it exists)."""
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        rt = self.store.resolve("", "v1", "namespaces")
        try:
            return self.store.create(rt, None, body)
        except ApiError as e:
            if e.code != 409:
                raise
            return self.store.get(rt, None, name)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or update an object like client-side ``kubectl apply`` (validated).

        Fields set by others (finalizers, annotations, status) are kept; fields dropped from the
        manifest since the last apply are removed (three-way merge via the
        ``kubectl.kubernetes.io/last-applied-configuration`` annotation).
        """
        if obj.get("kind") == "CustomResourceDefinition":
            self.add_crd(obj)
            return self.get(obj["apiVersion"], obj["kind"], obj["metadata"]["name"])  # type: ignore[return-value]
        rt = self.store.find_type(obj["apiVersion"], obj["kind"])
        name = obj["metadata"]["name"]
        namespace = (obj["metadata"].get("namespace") or "default") if rt.namespaced else None
        manifest = copy.deepcopy(obj)
        manifest.get("metadata", {}).get("annotations", {}).pop(LAST_APPLIED, None)
        body = copy.deepcopy(manifest)
        last_applied = json.dumps(manifest, separators=(",", ":"), sort_keys=True) + "\n"
        body["metadata"].setdefault("annotations", {})[LAST_APPLIED] = last_applied
        with self.store.lock:
            try:
                current = self.store.get(rt, namespace, name)
            except ApiError as e:
                if e.code != 404:
                    raise
                return self.store.create(rt, namespace, body)
            annotations = current["metadata"].get("annotations") or {}
            last = json.loads(annotations.get(LAST_APPLIED, "{}"))
            return self.store.patch(rt, namespace, name, MERGE, three_way_patch(last, body))

    def patch_status(
        self, api_version: str, kind: str, name: str, namespace: str | None, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch an object's status subresource (``None`` removes a field), as a controller would."""
        rt = self.store.find_type(api_version, kind)
        ns = (namespace or "default") if rt.namespaced else None
        return self.store.patch(rt, ns, name, MERGE, {"status": status}, subresource="status")

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or ``None`` if it does not exist."""
        rt = self.store.find_type(api_version, kind)
        try:
            return self.store.get(rt, (namespace or "default") if rt.namespaced else None, name)
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects of a kind (all namespaces when ``namespace`` is None)."""
        rt = self.store.find_type(api_version, kind)
        items = self.store.list(rt, namespace if rt.namespaced else None, label_selector)["items"]
        return [self.store.present(item, rt) for item in items]

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete like the API would (finalizers respected); ``False`` if it did not exist."""
        rt = self.store.find_type(api_version, kind)
        try:
            self.store.delete(rt, (namespace or "default") if rt.namespaced else None, name)
        except ApiError as e:
            if e.code == 404:
                return False
            raise
        return True

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
        """Poll ``predicate`` until it returns something truthy; ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            time.sleep(interval)
