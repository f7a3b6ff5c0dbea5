"""What the end-to-end modules share: the real API server as a Sandbox's Kubernetes side, a
ManagedPostgres manifest, and a log of the mutating requests the simulator served."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mpg_operator.cloud.client import CloudClient
from mpg_operator.cloud.ratelimit import UnlimitedRateLimiter
from mpg_operator.reconcile.desired import TAG_UID
from mpg_operator.sandbox import KubeFactory, Sandbox


def on_real_server(admin_kubeconfig: Path) -> KubeFactory:
    """A Sandbox's Kubernetes side on the real API server of ``admin_kubeconfig`` (the session's
    control plane): its own namespaces, the operator with the chart's ServiceAccount and RBAC."""
    from support.realkube import RealKube

    def make(crds: list[dict[str, Any]], namespaces: tuple[str, ...], workdir: Path) -> RealKube:
        return RealKube(admin_kubeconfig, crds, namespaces, workdir)

    return make


def manifest(name: str, namespace: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A ManagedPostgres with the usual provider, region, size and credentials, and ``spec`` on top."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations is not None:
        meta["annotations"] = annotations
    return {
        "apiVersion": "clickhouse.cloud/v1alpha1",
        "kind": "ManagedPostgres",
        "metadata": meta,
        "spec": {
            "provider": "aws",
            "region": "us-west-2",
            "size": "r8gd.large",
            "credentialsRef": {"name": "clickhouse-cloud"},
            **spec,
        },
    }


def as_someone_else(api_url: str, key: tuple[str, str, str], fn: Callable[[CloudClient], Awaitable[Any]]) -> Any:
    """Run ``fn`` with a client of another API key (the console, Terraform, clickhousectl):
    ``key`` is (key id, key secret, organization id)."""
    key_id, key_secret, org_id = key

    async def go() -> Any:
        async with CloudClient(
            key_id=key_id,
            key_secret=key_secret,
            organization_id=org_id,
            base_url=api_url,
            rate_limiter=UnlimitedRateLimiter(),
        ) as client:
            return await fn(client)

    return asyncio.run(go())


class MutationLog:
    """Mutating requests the simulator served: creates by the owner uid they carry, the rest by
    service id (``["DELETE", "PATCH /password", ...]``). ``accepted_only``: leave out requests
    the simulator refused (4xx/5xx)."""

    def __init__(self, *, accepted_only: bool = False) -> None:
        self._lock = threading.Lock()
        self._accepted_only = accepted_only
        self.creates: dict[str, int] = defaultdict(int)  # owner uid -> POSTs of a service
        self.created: dict[str, list[str]] = defaultdict(list)  # owner uid -> ids of the services created
        self.by_service: dict[str, list[str]] = defaultdict(list)

    def __call__(self, exchange: Any) -> None:
        if exchange.method not in ("POST", "PATCH", "DELETE"):
            return
        if self._accepted_only and exchange.status >= 400:
            return
        with self._lock:
            if exchange.method == "POST" and exchange.path.endswith("/postgres"):
                uid = _tags(exchange.request_body).get(TAG_UID, "?")
                self.creates[uid] += 1
                service_id = _result(exchange.response_body).get("id")
                if service_id:
                    self.created[uid].append(service_id)
                return
            parts = exchange.path.split("/postgres/", 1)
            if len(parts) == 2:
                service_id, _, rest = parts[1].partition("/")
                self.by_service[service_id].append(f"{exchange.method} /{rest}" if rest else exchange.method)


def _tags(body: bytes | None) -> dict[str, Any]:
    try:
        return {t["key"]: t.get("value") for t in json.loads(body or b"{}").get("tags") or []}
    except (ValueError, AttributeError, TypeError, KeyError):
        return {}


def _result(body: bytes | None) -> dict[str, Any]:
    try:
        result = json.loads(body or b"{}").get("result")
    except (ValueError, AttributeError):
        return {}
    return result if isinstance(result, dict) else {}


def assert_same_secret(actual: str | None, expected: str | None, what: str) -> None:
    """``actual == expected`` for a password, failing with ``what`` only: never the values (pytest's
    assertion rewriting would print them; this module is not rewritten)."""
    if actual is None or expected is None or actual != expected:
        raise AssertionError(f"{what}: not the same password" if actual else f"{what}: no password")


def assert_connects(uri: str | None, what: str, sql: str = "select 1") -> None:
    """A real connection with ``uri`` (which holds a password) runs ``sql``; a failure says ``what``
    and the driver's error class only, never the URI."""
    import psycopg

    if not uri:
        raise AssertionError(f"{what}: no URI")
    try:
        with psycopg.connect(uri, connect_timeout=10) as conn:
            conn.execute(sql).fetchone()
    except psycopg.Error as e:
        raise AssertionError(f"{what}: cannot connect ({type(e).__name__})") from None


@contextmanager
def sandbox_with_console(
    namespace: str, kube: KubeFactory | None = None, **simulator_options: Any
) -> Iterator[Sandbox]:
    """A Sandbox (simulator with real PostgreSQL, no rate limit, fast state changes, ``simulator_options``
    on top) for ``namespace``, with ``console``: another API key of the same organization (someone
    else's), and ``mutations``: a :class:`MutationLog` of the accepted mutating requests."""
    options = {
        "create_seconds": 0.3,
        "resize_seconds": 0.5,
        "delete_seconds": 0.3,
        "rate_limit": None,
        "real_postgres": True,
        **simulator_options,
    }
    with Sandbox(simulator_options=options, namespaces=(namespace,), kube=kube) as sandbox:
        sandbox.console = sandbox.simulator.add_key(org_id=sandbox.simulator.org_id)  # type: ignore[attr-defined]
        sandbox.mutations = MutationLog(accepted_only=True)  # type: ignore[attr-defined]
        sandbox.simulator.add_observer(sandbox.mutations)  # type: ignore[attr-defined]
        yield sandbox


class LogCollector(logging.Handler):
    """Every log record, formatted (the leak scans of the end-to-end modules read them all)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 -- a record that cannot be formatted is not collected
            pass


@contextmanager
def collected_logs() -> Iterator[list[str]]:
    """Every log record of the block (operator, kopf, HTTP clients, psycopg, simulator, emulator) at DEBUG."""
    root = logging.getLogger()
    handler, level = LogCollector(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
