"""A whole local setup in one process: simulator + Kubernetes emulator + the real operator.

Powers ``mpg-operator demo`` and the end-to-end tests. Nothing here is used in production:
the operator runs exactly as in a cluster (kopf, real HTTP to the API, real HTTP to the
Kubernetes API), only the two servers it talks to are local stand-ins.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mpg_operator import crd as crd_module
from mpg_operator.resource import API_VERSION, KIND

T = TypeVar("T")
CREDENTIALS_SECRET = "clickhouse-cloud"


class OperatorThread:
    """The operator (kopf) in a background thread with its own event loop."""

    def __init__(self, env: dict[str, str], namespaces: list[str] | None = None) -> None:
        self.env = env
        self.namespaces = namespaces
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved_env: dict[str, str | None] = {}
        self.error: BaseException | None = None

    def start(self, timeout: float = 30.0) -> OperatorThread:
        import kopf

        from mpg_operator.controller import handlers  # noqa: F401 -- registers the handlers

        # Read by the operator at start-up, as from a pod spec; restored by stop().
        self._saved_env = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)

        def run() -> None:
            try:
                asyncio.run(
                    kopf.operator(
                        clusterwide=not self.namespaces,
                        namespaces=self.namespaces or [],
                        standalone=True,
                        stop_flag=self._stop,
                        ready_flag=self._ready,
                    )
                )
            except BaseException as e:  # noqa: BLE001 -- reported to the caller
                self.error = e
                self._ready.set()

        self._stop.clear()
        self._ready.clear()
        self._thread = threading.Thread(target=run, name="operator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self.error is not None:
            raise RuntimeError("the operator did not start") from self.error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        self._thread = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


KubeFactory = Callable[[list[dict[str, Any]], tuple[str, ...], Path], Any]
"""(crds, namespaces, workdir) -> the Kubernetes side, not yet started (``start()`` returns it)."""


def _emulator(crds: list[dict[str, Any]], namespaces: tuple[str, ...], workdir: Path) -> Any:
    from kubeemu import KubeEmulator

    return KubeEmulator(crds=crds, namespaces=namespaces)


class Sandbox:
    """Simulator (with real PostgreSQL when available) + Kubernetes (the emulator unless ``kube``
    makes another: the tests' real API server) + operator."""

    def __init__(
        self,
        *,
        simulator_options: dict[str, Any] | None = None,
        namespaces: tuple[str, ...] = ("default",),
        operator_env: dict[str, str] | None = None,
        start_operator: bool = True,
        crds: list[dict[str, Any]] | None = None,
        kube: KubeFactory | None = None,
    ) -> None:
        self.simulator_options = {"port": 0, **(simulator_options or {})}
        self.namespaces = namespaces
        self.operator_env = operator_env or {}
        self.start_operator = start_operator
        self.crds = crds
        self.kube_factory = kube or _emulator
        self.workdir = Path(tempfile.mkdtemp(prefix="mpg-sandbox-"))
        self.simulator: Any = None
        self.kube: Any = None
        self.operator: OperatorThread | None = None

    def start(self) -> Sandbox:
        from clickhouse_cloud_simulator import SimulatorConfig, SimulatorThread

        self.simulator = SimulatorThread(SimulatorConfig(**self.simulator_options)).start()
        self.kube = self.kube_factory(self.crds or crd_module.all_crds(), self.namespaces, self.workdir).start()
        self.kubeconfig = self.kube.write_kubeconfig(self.workdir / "kubeconfig")
        for namespace in self.namespaces:
            self.put_credentials(namespace)
        if self.start_operator:
            self.start_the_operator()
        return self

    def operator_environment(self) -> dict[str, str]:
        limit = self.simulator_options.get("rate_limit", 10)
        window = self.simulator_options.get("rate_window", 10.0)
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "CLICKHOUSE_CLOUD_API_URL": self.simulator.url,
            # The operator keeps to the API's limit; with the simulator's limit off, so may it.
            "MPG_API_RATE_LIMIT": str(limit or 100_000),
            "MPG_API_RATE_WINDOW": str(window),
            "MPG_POLL_INTERVAL": "30",
            "MPG_POLL_INTERVAL_ACTIVE": "0.5",
            "MPG_LIST_MAX_AGE": "10",
            "MPG_CREATE_GRACE": "3",  # the simulator lists a service as soon as it is created
            "MPG_UPDATE_CONFIRM": "2",
            **self.operator_env,
        }

    def rebuild_cluster(self) -> None:
        """A cluster rebuilt from scratch: a new, empty Kubernetes API (the credentials Secrets put
        back, as a GitOps tool would), the same ClickHouse Cloud organization."""
        running = self.operator is not None
        self.stop_the_operator()
        self.kube.stop()
        self.kube = self.kube_factory(self.crds or crd_module.all_crds(), self.namespaces, self.workdir).start()
        self.kubeconfig = self.kube.write_kubeconfig(self.workdir / "kubeconfig")
        for namespace in self.namespaces:
            self.put_credentials(namespace)
        if running:
            self.start_the_operator()

    def start_the_operator(self) -> None:
        # The emulator's operator serves every namespace; a real server's only the sandbox's own.
        namespaces = getattr(self.kube, "operator_namespaces", None)
        self.operator = OperatorThread(self.operator_environment(), namespaces=namespaces).start()

    def stop_the_operator(self) -> None:
        if self.operator is not None:
            self.operator.stop()
            self.operator = None

    def stop(self) -> None:
        self.stop_the_operator()
        if self.kube is not None:
            self.kube.stop()
        if self.simulator is not None:
            self.simulator.stop()

    def __enter__(self) -> Sandbox:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- conveniences ------------------------------------------------------------------

    def put_credentials(self, namespace: str, name: str = CREDENTIALS_SECRET, **overrides: str) -> None:
        data = {
            "keyId": self.simulator.key_id,
            "keySecret": self.simulator.key_secret,
            "organizationId": self.simulator.org_id,
            **overrides,
        }
        self.kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "stringData": data,
            }
        )

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return self.kube.apply(manifest)

    def get(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        return self.kube.get(API_VERSION, KIND, name, namespace)

    def delete(self, name: str, namespace: str = "default") -> bool:
        return self.kube.delete(API_VERSION, KIND, name, namespace)

    def patch_status(self, name: str, namespace: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch a ManagedPostgres's status (what an older operator version might have written)."""
        return self.kube.patch_status(API_VERSION, KIND, name, namespace, status)

    def secret(self, name: str, namespace: str = "default") -> dict[str, str] | None:
        """A Secret's data, decoded."""
        import base64

        obj = self.kube.get("v1", "Secret", name, namespace)
        if obj is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}

    def condition(self, name: str, type_: str, namespace: str = "default") -> dict[str, Any] | None:
        obj = self.get(name, namespace) or {}
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_:
                return cond
        return None

    def is_ready(self, name: str, namespace: str = "default") -> bool:
        cond = self.condition(name, "Ready", namespace)
        return bool(cond and cond.get("status") == "True")

    def remote_services(self) -> list[Any]:
        """The simulator's services (including ones being deleted)."""
        return list(self.simulator.services.values())

    @staticmethod
    def wait_for(predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.2, what: str = "") -> T:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
            time.sleep(interval)
