"""Small helpers for tests that talk to the real API server of ``real_kubeconfig``.

* :func:`client` -- a ``kubernetes`` ApiClient for a kubeconfig (admin).
* :func:`ensure_crd` -- create or update a CustomResourceDefinition and wait until it is Established
  (the control plane is shared by the whole session: another module may have installed it first).
* :func:`fresh_namespace` -- a namespace of its own for one test or module, deleted afterwards.
* :func:`status_of` -- ``(code, message)`` of an ``ApiException``: the Status the server answered.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes


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
    return lower[:-1] + "ies" if lower.endswith("y") else lower + "s"


class Reader:
    """``get``/``list`` by apiVersion and kind, like :class:`kubeemu.KubeEmulator`'s (``None`` when
    missing), so a test can read the real server and the emulator alike. Plurals are the regular ones
    (``Policy`` → ``policies``), which covers every kind the project's manifests use."""

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
