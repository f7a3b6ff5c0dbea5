"""API keys, clients and batched observation: how the operator reaches ClickHouse Cloud.

* :func:`resolve_credentials` reads the API key from the resource's ``credentialsRef`` Secret,
  or from the operator-wide default Secret.
* :class:`ClientPool` keeps one client per key (and the client shares one rate limiter per key).
* :class:`ServiceSnapshots` serves every resource of an organization from one LIST: the cost of
  observation does not grow with the number of resources.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field

from pydantic import SecretStr

from mpg_operator.cloud.client import CloudClient
from mpg_operator.cloud.config import ClientSettings
from mpg_operator.cloud.errors import CloudError
from mpg_operator.cloud.models import PostgresServiceListItem
from mpg_operator.controller.kube import KubeApi, SecretKeyError

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
        organization_id=values["organizationId"].strip(),
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


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    snapshot: Snapshot | None = None
    error: CloudError | None = None
    error_at: float = 0.0


class ServiceSnapshots:
    """Batched observation: one LIST per organization serves every resource.

    Concurrent callers share one request; a snapshot younger than ``max_age`` is reused. A
    failed LIST is remembered for ``error_ttl`` seconds, so many resources with a broken key do
    not each hammer the API.
    """

    def __init__(self, *, error_ttl: float = 5.0) -> None:
        self._entries: dict[tuple[str, str, str], _Entry] = {}
        self._error_ttl = error_ttl

    async def get(self, client: CloudClient, *, max_age: float) -> Snapshot:
        key = (client.base_url, client.organization_id, client.key_id)
        entry = self._entries.setdefault(key, _Entry())
        async with entry.lock:
            now = time.time()
            snap = entry.snapshot
            if snap is not None and now - snap.fetched_at <= max_age:
                return snap
            if entry.error is not None and now - entry.error_at < self._error_ttl:
                raise entry.error
            sent_at = time.time()
            try:
                services = await client.list_services()
            except CloudError as e:
                entry.error, entry.error_at = e, time.time()
                raise
            entry.error = None
            entry.snapshot = Snapshot(services=services, fetched_at=sent_at)
            return entry.snapshot
