"""Kubernetes I/O of the operator: the resource, its status, Secrets. Thin async wrappers.

The ``kubernetes`` client is synchronous, so every call runs in a small thread pool.
Events go through kopf (``kopf.event``), which is already logged in.
"""

from __future__ import annotations

import asyncio
import base64
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from mpg_operator.reconcile.connection import (
    ANN_HAND_OVER_TO,
    LABEL_INSTANCE_OF,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    ObservedSecret,
    SecretConflictError,
    SecretRejectedError,
    label_value,
)
from mpg_operator.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"
"""Explicit: the generated client would otherwise pick JSON Patch for a dict body."""


def load_kube_config() -> kubernetes.client.ApiClient:
    """In-cluster config when running in a pod, else ``$KUBECONFIG`` (read now, not at import)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration
        )
    return kubernetes.client.ApiClient(configuration)


@dataclass(frozen=True)
class SecretKeyError(Exception):
    """A Secret or some of its keys are missing."""

    namespace: str
    name: str
    missing_keys: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.missing_keys:
            return f"Secret {self.namespace}/{self.name} lacks key(s) {', '.join(self.missing_keys)}"
        return f"Secret {self.namespace}/{self.name} does not exist"


def _controller_uid(meta: dict[str, Any]) -> str | None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            uid: str | None = ref.get("uid")
            return uid
    return None


def _status_message(e: ApiException) -> str:
    import json

    try:
        return json.loads(e.body or "{}").get("message") or str(e.reason)
    except (ValueError, AttributeError):
        return str(e.reason)


class KubeApi:
    """The few Kubernetes calls the operator makes."""

    def __init__(self, api_client: kubernetes.client.ApiClient, *, threads: int = 8) -> None:
        self._api_client = api_client
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube")
        self._secret_locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- ManagedPostgres -----------------------------------------------------------------

    async def get_resource(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ManagedPostgres as stored now (a fresh read, not a watch cache)."""
        try:
            return await self._run(self._custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def list_resources(self, namespace: str) -> list[dict[str, Any]]:
        """The ManagedPostgres of a namespace, as stored now."""
        answer = await self._run(self._custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL)
        items: list[dict[str, Any]] = answer.get("items") or []
        return items

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the status subresource (``None`` values remove fields); returns the object."""
        return await self._run(
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
        )

    # --- Secrets -------------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            secret = await self._run(self._core.read_namespaced_secret, name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return self._api_client.sanitize_for_serialization(secret)

    async def read_secret_data(self, namespace: str, name: str, keys: tuple[str, ...]) -> dict[str, str]:
        """Decoded values of ``keys``; :class:`SecretKeyError` names what is missing."""
        secret = await self.read_secret(namespace, name)
        if secret is None:
            raise SecretKeyError(namespace, name)
        data = _decode(secret.get("data") or {})
        missing = tuple(k for k in keys if not data.get(k))
        if missing:
            raise SecretKeyError(namespace, name, missing)
        return {k: data[k] for k in keys}

    async def observe_connection_secret(self, namespace: str, name: str) -> ObservedSecret | None:
        secret = await self.read_secret(namespace, name)
        if secret is None:
            return None
        meta = secret.get("metadata") or {}
        return ObservedSecret(
            data=_decode(secret.get("data") or {}),
            annotations=dict(meta.get("annotations") or {}),
            controller_uid=_controller_uid(meta),
        )

    @staticmethod
    def _owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
        meta = owner["metadata"]
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }

    async def write_connection_secret(
        self,
        *,
        namespace: str,
        name: str,
        owner: dict[str, Any],
        data: dict[str, str] | None,
        annotations: dict[str, str | None],
        labels: dict[str, str] | None = None,
    ) -> None:
        """Create the Secret, owned by the resource, or update it if the resource owns it.

        A Secret that exists and is not the resource's (no controller reference to it, and not
        handed over with the ``hand-over-to`` annotation) is never modified:
        :class:`SecretConflictError`. ``data=None`` only claims the Secret (before a create, so
        that the password the create returns is sure to have a place). Kubernetes refusing the
        Secret itself raises :class:`SecretRejectedError`.
        """
        owner_meta = owner["metadata"]
        labels = {**(labels or {}), LABEL_MANAGED_BY: MANAGED_BY, LABEL_INSTANCE_OF: label_value(owner_meta["name"])}
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in (data or {}).items()}
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "annotations": {k: v for k, v in annotations.items() if v is not None},
                "ownerReferences": [self._owner_reference(owner)],
            },
            "data": encoded,
        }
        for _ in range(5):
            try:
                await self._run(self._core.create_namespaced_secret, namespace, body)
                return
            except ApiException as e:
                if e.status in (400, 422):
                    raise SecretRejectedError(f"Kubernetes refused Secret {name!r}: {_status_message(e)}") from None
                if e.status != 409:
                    raise
            existing = await self.read_secret(namespace, name)
            if existing is None:
                continue  # deleted meanwhile: create it
            meta = existing.get("metadata") or {}
            uid = _controller_uid(meta)
            handed_over = uid is None and (meta.get("annotations") or {}).get(ANN_HAND_OVER_TO) == owner_meta["name"]
            if uid != owner_meta["uid"] and not handed_over:
                raise SecretConflictError(f"Secret {namespace}/{name} exists and is not owned by this resource")
            if data is None:
                return  # already ours: claimed
            patch: dict[str, Any] = {
                "metadata": {
                    "labels": labels,
                    "annotations": annotations,
                    # Optimistic concurrency: the ownership just checked is the one written over.
                    "resourceVersion": meta.get("resourceVersion"),
                },
                "data": encoded,
            }
            if handed_over:
                others = [r for r in meta.get("ownerReferences") or [] if not r.get("controller")]
                patch["metadata"]["ownerReferences"] = others + [self._owner_reference(owner)]
            try:
                await self._run(self._core.patch_namespaced_secret, name, namespace, patch, _content_type=MERGE_PATCH)
                return
            except ApiException as e:
                if e.status not in (404, 409):
                    raise
        raise RuntimeError(f"could not write Secret {namespace}/{name}: it kept changing")

    async def set_secret_finalizer(self, namespace: str, name: str, finalizer: str, present: bool) -> None:
        """Add or remove one finalizer on a Secret (optimistic concurrency; a gone Secret is fine).

        Many resources share one API-key Secret: their changes are serialized here, so they do not
        conflict with each other (only with writers outside this process)."""
        lock = self._secret_locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            await self._set_secret_finalizer(namespace, name, finalizer, present)

    async def _set_secret_finalizer(self, namespace: str, name: str, finalizer: str, present: bool) -> None:
        for _ in range(5):
            secret = await self.read_secret(namespace, name)
            if secret is None:
                return
            meta = secret["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            if (finalizer in finalizers) == present:
                return
            if present and meta.get("deletionTimestamp"):
                return  # no new finalizers on an object being deleted
            finalizers = finalizers + [finalizer] if present else [f for f in finalizers if f != finalizer]
            patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
            try:
                await self._run(self._core.patch_namespaced_secret, name, namespace, patch, _content_type=MERGE_PATCH)
                return
            except ApiException as e:
                if e.status == 404:
                    return
                if e.status != 409:
                    raise
        raise RuntimeError(f"could not update the finalizers of Secret {namespace}/{name}: too many conflicts")


def _decode(data: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, value in data.items():
        try:
            out[key] = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            out[key] = ""
    return out
