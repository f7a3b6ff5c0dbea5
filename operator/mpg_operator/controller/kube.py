"""Kubernetes I/O of the operator: the resource, its status, Secrets. Thin async wrappers.

Requests go through the operator's own aiohttp session (:class:`~.kubehttp.KubeSession`: the
credentials of kopf's public login functions, as the ``@kopf.on.login`` handler gives them to kopf;
logged in again on a 401), so the operator needs no Kubernetes client library of its own. Events
go through kopf (``kopf.event``).
"""

from __future__ import annotations

import asyncio
import base64
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from mpg_operator.controller.kubehttp import KubeApiError, KubeSession
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

__all__ = ["KubeApi", "KubeApiError", "KubeSession", "SecretKeyError"]

MERGE_PATCH = "application/merge-patch+json"


def _secret_path(namespace: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets"
    return path if name is None else f"{path}/{quote(name, safe='')}"


def _resource_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/{PLURAL}/{quote(name, safe='')}"


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
    return _controller(meta).get("uid")


def _controller(meta: dict[str, Any]) -> dict[str, Any]:
    """The Secret's controller ownerReference (``{}``: none)."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return {}


class KubeApi:
    """The few Kubernetes calls the operator makes, through ``session`` (by default its own
    :class:`KubeSession` with the operator's login: one per operator, so one per process)."""

    def __init__(self, session: KubeSession | None = None) -> None:
        self.session = session if session is not None else KubeSession()
        self._secret_locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, content_type: str = "application/json"
    ) -> Any:
        return await self.session.request(method, path, body, content_type=content_type)

    async def aclose(self) -> None:
        """Close the session (at operator shutdown)."""
        await self.session.aclose()

    # --- ManagedPostgres -----------------------------------------------------------------

    async def get_resource(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ManagedPostgres as stored now (a fresh read, not a watch cache)."""
        try:
            resource: dict[str, Any] = await self._request("GET", _resource_path(namespace, name))
            return resource
        except KubeApiError as e:
            if e.status == 404:
                return None
            raise

    async def list_resources(self, namespace: str) -> list[dict[str, Any]]:
        """The ManagedPostgres of a namespace, as stored now."""
        answer = await self._request("GET", f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/{PLURAL}")
        items: list[dict[str, Any]] = answer.get("items") or []
        return items

    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """An object of one of the operator's kinds (``plural``), as stored now; ``None``: not found."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/{plural}/{quote(name, safe='')}"
        try:
            found: dict[str, Any] = await self._request("GET", path)
            return found
        except KubeApiError as e:
            if e.status == 404:
                return None
            raise

    async def patch_object_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the status of an object of one of the operator's kinds (``plural``)."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/{plural}/{quote(name, safe='')}/status"
        stored: dict[str, Any] = await self._request("PATCH", path, {"status": status}, content_type=MERGE_PATCH)
        return stored

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the status subresource (``None`` values remove fields); returns the object."""
        path = _resource_path(namespace, name) + "/status"
        stored: dict[str, Any] = await self._request("PATCH", path, {"status": status}, content_type=MERGE_PATCH)
        return stored

    # --- Secrets -------------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            secret: dict[str, Any] = await self._request("GET", _secret_path(namespace, name))
        except KubeApiError as e:
            if e.status == 404:
                return None
            raise
        return secret

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
        controller = _controller(meta)
        return ObservedSecret(
            data=_decode(secret.get("data") or {}),
            annotations=dict(meta.get("annotations") or {}),
            controller_uid=controller.get("uid"),
            controller_name=(
                controller.get("name")
                if controller.get("apiVersion") == API_VERSION and controller.get("kind") == KIND
                else None
            ),
            labels=dict(meta.get("labels") or {}),
        )

    @staticmethod
    def _owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
        meta = owner["metadata"]
        return {
            "apiVersion": API_VERSION,
            "kind": owner.get("kind") or KIND,
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
        data: dict[str, str | None] | None,
        annotations: dict[str, str | None],
        labels: dict[str, str | None] | None = None,
    ) -> None:
        """Create the Secret, owned by the resource, or update it if the resource owns it.

        A Secret that exists and is not the resource's (no controller reference to it, and not
        handed over with the ``hand-over-to`` annotation) is never modified:
        :class:`SecretConflictError`. ``data=None`` only claims the Secret (before a create, so
        that the password the create returns is sure to have a place). Kubernetes refusing the
        Secret itself raises :class:`SecretRejectedError`. ``None`` values in ``data``, ``labels``
        and ``annotations`` remove those keys.
        """
        owner_meta = owner["metadata"]
        labels = {**(labels or {}), LABEL_MANAGED_BY: MANAGED_BY, LABEL_INSTANCE_OF: label_value(owner_meta["name"])}
        encoded = {k: None if v is None else base64.b64encode(v.encode()).decode() for k, v in (data or {}).items()}
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": _present(labels),
                "annotations": _present(annotations),
                "ownerReferences": [self._owner_reference(owner)],
            },
            "data": _present(encoded),
        }
        for attempt in range(CONFLICT_ATTEMPTS):
            if attempt:
                await asyncio.sleep(conflict_backoff(attempt))
            try:
                await self._request("POST", _secret_path(namespace), body)
                return
            except KubeApiError as e:
                if e.status in (400, 422):
                    reason = e.message or f"HTTP {e.status}"
                    raise SecretRejectedError(f"Kubernetes refused Secret {name!r}: {reason}") from None
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
                await self._request("PATCH", _secret_path(namespace, name), patch, content_type=MERGE_PATCH)
                return
            except KubeApiError as e:
                if e.status not in (404, 409):
                    raise
        raise RuntimeError(f"could not write Secret {namespace}/{name}: it kept changing")

    async def set_secret_finalizer(self, namespace: str, name: str, finalizer: str, present: bool) -> bool:
        """Add or remove one finalizer on a Secret (optimistic concurrency); True when the Secret
        carries it afterwards. A gone Secret carries nothing, and neither does one being deleted that
        did not carry it before (Kubernetes takes no new finalizers on an object being deleted).

        Many resources share one API-key Secret: their changes are serialized here, so they do not
        conflict with each other; a conflict with a writer outside this process is retried after a
        short, growing, jittered wait."""
        lock = self._secret_locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            return await self._set_secret_finalizer(namespace, name, finalizer, present)

    async def _set_secret_finalizer(self, namespace: str, name: str, finalizer: str, present: bool) -> bool:
        for attempt in range(CONFLICT_ATTEMPTS):
            if attempt:
                await asyncio.sleep(conflict_backoff(attempt))
            secret = await self.read_secret(namespace, name)
            if secret is None:
                return False
            meta = secret["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            if (finalizer in finalizers) == present:
                return present
            if present and meta.get("deletionTimestamp"):
                return False  # no new finalizers on an object being deleted
            finalizers = finalizers + [finalizer] if present else [f for f in finalizers if f != finalizer]
            patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
            try:
                await self._request("PATCH", _secret_path(namespace, name), patch, content_type=MERGE_PATCH)
                return present
            except KubeApiError as e:
                if e.status == 404:
                    return False
                if e.status != 409:
                    raise
        raise RuntimeError(f"could not update the finalizers of Secret {namespace}/{name}: too many conflicts")


CONFLICT_ATTEMPTS = 8


def conflict_backoff(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt`` (1, 2, ...) after a conflict: growing, capped at
    2 s, jittered so that writers that collided once do not collide again in step."""
    return random.uniform(0.5, 1.0) * min(2.0, 0.05 * 2**attempt)


def _present(values: dict[str, str | None]) -> dict[str, str]:
    """The entries to create with (``None`` means "remove", which a new object has nothing to)."""
    return {k: v for k, v in values.items() if v is not None}


def _decode(data: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, value in data.items():
        try:
            out[key] = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            out[key] = ""
    return out
