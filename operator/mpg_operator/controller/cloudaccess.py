"""API keys, clients and batched observation: how the operator reaches ClickHouse Cloud.

* :func:`resolve_credentials` reads the API key from the resource's ``credentialsRef`` Secret,
  or from the operator-wide default Secret.
* :class:`ClientPool` keeps one client per key (and the client shares one rate limiter per key).
* :class:`ServiceSnapshots` serves every resource of an organization from one LIST: the cost of
  observation does not grow with the number of resources. It tells who changed between two
  LISTs; :mod:`mpg_operator.controller.observer` keeps the LISTs coming and wakes those.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import SecretStr

from mpg_operator.cloud.client import CloudClient
from mpg_operator.cloud.config import ClientSettings
from mpg_operator.cloud.errors import CloudError
from mpg_operator.cloud.ids import canonical_id
from mpg_operator.cloud.models import PostgresServiceListItem
from mpg_operator.controller.kube import KubeApi, SecretKeyError
from mpg_operator.reconcile.planner import owner_uid

CREDENTIAL_KEYS = ("keyId", "keySecret", "organizationId")


@dataclass(frozen=True)
class Credentials:
    key_id: str
    key_secret: SecretStr = field(repr=False)
    organization_id: str
    source: str
    """``namespace/name`` of the Secret they came from (for messages)."""


class CredentialsError(Exception):
    """No usable API key: the message names the Secret and keys to fix."""


async def resolve_credentials(
    kube: KubeApi,
    namespace: str,
    secret_name: str | None,
    default_secret: tuple[str, str] | None,
) -> Credentials:
    """The API key for a resource: its ``credentialsRef`` Secret, else the operator default."""
    if secret_name:
        ref = (namespace, secret_name)
    elif default_secret:
        ref = default_secret
    else:
        raise CredentialsError(
            "spec.credentialsRef is not set and the operator has no default credentials Secret "
            "(MPG_DEFAULT_CREDENTIALS_SECRET): create a Secret with keys keyId, keySecret and "
            "organizationId and reference it in spec.credentialsRef.name"
        )
    try:
        values = await kube.read_secret_data(ref[0], ref[1], CREDENTIAL_KEYS)
    except SecretKeyError as e:
        raise CredentialsError(f"{e} (needs keys {', '.join(CREDENTIAL_KEYS)})") from None
    return Credentials(
        key_id=values["keyId"].strip(),
        key_secret=SecretStr(values["keySecret"].strip()),
        organization_id=canonical_id(values["organizationId"]),
        source=f"{ref[0]}/{ref[1]}",
    )


class ClientPool:
    """One :class:`CloudClient` per API key and organization, created on first use."""

    def __init__(self, settings: ClientSettings, on_response=None) -> None:
        self._settings = settings
        self._on_response = on_response
        self._clients: dict[tuple[str, str, str], CloudClient] = {}

    def get(self, credentials: Credentials) -> CloudClient:
        digest = hashlib.sha256(credentials.key_secret.get_secret_value().encode()).hexdigest()
        key = (credentials.key_id, digest, credentials.organization_id)
        client = self._clients.get(key)
        if client is None:
            client = CloudClient.from_settings(
                self._settings,
                key_id=credentials.key_id,
                key_secret=credentials.key_secret,
                organization_id=credentials.organization_id,
                on_response=self._on_response,
            )
            self._clients[key] = client
        return client

    def clients(self) -> list[CloudClient]:
        return list(self._clients.values())

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


@dataclass(frozen=True)
class Snapshot:
    """The organization's services as one LIST returned them."""

    services: list[PostgresServiceListItem]
    fetched_at: float
    """Wall-clock time the LIST request was sent."""


current_resource: contextvars.ContextVar[str | None] = contextvars.ContextVar("mpg_current_resource", default=None)
"""The uid of the resource whose pass runs in this task (set by the handlers' daemon loop), so
that :class:`ServiceSnapshots` knows which resources use which key and organization."""

ChangeHook = Callable[[set[str]], None]
"""``on_change(uids)``: resources whose service changed, appeared or vanished between two LISTs."""


@dataclass(eq=False)
class SnapshotEntry:
    """The observation of one organization through one API key (one client)."""

    client: CloudClient
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    snapshot: Snapshot | None = None
    error: CloudError | None = None
    error_at: float = 0.0
    failures: int = 0
    users: dict[str, float] = field(default_factory=dict)
    """uid -> ``time.monotonic()`` of its last pass that read this entry."""


def changed_owners(old: list[PostgresServiceListItem], new: list[PostgresServiceListItem]) -> set[str]:
    """Owner uids of the services that changed, appeared or vanished from ``old`` to ``new``."""
    before = {s.id: s for s in old}
    uids: set[str] = set()
    for service in new:
        previous = before.pop(service.id, None)
        if previous is None or previous != service:
            uid = owner_uid(service)
            if uid:
                uids.add(uid)
            if previous is not None and (uid := owner_uid(previous)):
                uids.add(uid)  # the owner tag itself changed
    for service in before.values():  # vanished
        if uid := owner_uid(service):
            uids.add(uid)
    return uids


class ServiceSnapshots:
    """Batched observation: one LIST per organization and API key serves every resource.

    Entries are keyed by the client (:class:`ClientPool` has one per key id, secret digest and
    organization), not by the key id: a Secret with the right key id and a wrong secret gets its
    own entry, its own 401, and never another key's services, errors or snapshot. (Clients of one
    key id still share one rate limiter: the server limits per key.)

    Concurrent callers share one request; a snapshot younger than ``max_age`` is reused. A
    failed LIST is remembered for ``error_ttl`` seconds, so many resources with a broken key do
    not each hammer the API. Every new LIST is compared with the previous one and ``on_change``
    gets the owners of the services that differ (the observer wakes exactly those resources).
    """

    def __init__(self, *, error_ttl: float = 5.0, on_change: ChangeHook | None = None) -> None:
        self._entries: dict[CloudClient, SnapshotEntry] = {}
        self._error_ttl = error_ttl
        self.on_change = on_change

    def entries(self) -> list[SnapshotEntry]:
        return list(self._entries.values())

    def forget(self, entry: SnapshotEntry) -> None:
        """Drop an entry nobody uses any more (its snapshot too)."""
        if self._entries.get(entry.client) is entry:
            del self._entries[entry.client]

    async def get(self, client: CloudClient, *, max_age: float) -> Snapshot:
        entry = self._entries.get(client)
        if entry is None:
            entry = self._entries[client] = SnapshotEntry(client)
        uid = current_resource.get()
        if uid is not None:
            entry.users[uid] = time.monotonic()
        return await self.refresh(entry, max_age=max_age)

    async def refresh(self, entry: SnapshotEntry, *, max_age: float) -> Snapshot:
        """The entry's snapshot, LISTed anew unless one younger than ``max_age`` exists."""
        async with entry.lock:
            now = time.time()
            snap = entry.snapshot
            if snap is not None and now - snap.fetched_at <= max_age:
                return snap
            if entry.error is not None and now - entry.error_at < self._error_ttl:
                raise entry.error
            sent_at = time.time()
            try:
                services = await entry.client.list_services()
            except CloudError as e:
                entry.error, entry.error_at = e, time.time()
                entry.failures += 1
                raise
            entry.error, entry.failures = None, 0
            entry.snapshot = Snapshot(services=services, fetched_at=sent_at)
            if snap is not None and self.on_change is not None:
                uids = changed_owners(snap.services, services)
                if uids:
                    self.on_change(uids)
            return entry.snapshot
