"""KubeSession: TLS, credentials from a ConnectionInfo, re-login on a 401, renewal before expiry.

The Kubernetes emulator speaks plain HTTP without authentication, so a small TLS front that checks
credentials (a bearer token, basic auth or a client certificate) stands before it and forwards what
it accepts; it answers 401 with a ``Status``, as kube-apiserver does.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
from aiohttp import web

from mpg_operator import crd
from mpg_operator.controller.kube import KubeApi, KubeApiError
from mpg_operator.controller.kubehttp import KubeSession

pytest.importorskip("kmock")
pytest.importorskip("celpy")
x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from kubeemu import KubeEmulator  # noqa: E402

NS = "default"
UNAUTHORIZED = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "Unauthorized",
                "reason": "Unauthorized", "code": 401}  # fmt: skip


@dataclass
class Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM."""

    ca: bytes
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes


def _issue(name: str, issuer: x509.Name | None, signing_key: Any, key: Any, *, ca: bool) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
    return builder.sign(signing_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    return Pki(
        ca=_issue("test-ca", None, ca_key, ca_key, ca=True),
        server_cert=_issue("127.0.0.1", ca_name, ca_key, server_key, ca=False),
        server_key=_key_pem(server_key),
        client_cert=_issue("mpg-operator", ca_name, ca_key, client_key, ca=False),
        client_key=_key_pem(client_key),
    )


@dataclass
class Front:
    """TLS and authentication before the emulator: accepts ``Bearer <token>``, ``Basic <basic>``, or a
    client certificate when ``client_certs`` is on."""

    upstream: str
    token: str | None = None
    basic: str | None = None
    client_certs: bool = False
    url: str = ""
    seen: list[tuple[str | None, int]] = field(default_factory=list)
    """(Authorization header, answer status) of every request."""
    answer_next: tuple[int, Any] | None = None
    """An answer to give the next request instead of the emulator's."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        accepted = (
            (self.token is not None and auth == f"Bearer {self.token}")
            or (self.basic is not None and auth == f"Basic {self.basic}")
            or (self.client_certs and request.transport is not None and request.transport.get_extra_info("peercert"))
        )
        if not accepted:
            self.seen.append((auth, 401))
            return web.json_response(UNAUTHORIZED, status=401)
        if self.answer_next is not None:
            (status, body), self.answer_next = self.answer_next, None
            self.seen.append((auth, status))
            return web.json_response(body, status=status)
        headers = {k: v for k, v in request.headers.items() if k.lower() == "content-type"}
        async with aiohttp.ClientSession() as session:
            async with session.request(
                request.method, self.upstream + request.path_qs, data=await request.read(), headers=headers
            ) as resp:
                self.seen.append((auth, resp.status))
                return web.Response(body=await resp.read(), status=resp.status, content_type=resp.content_type)


@pytest.fixture
def emu() -> Iterator[KubeEmulator]:
    with KubeEmulator(crds=[crd.crd()], namespaces=[NS]) as emulator:
        yield emulator
        assert emulator.server_errors == []


@pytest.fixture
async def front(emu: KubeEmulator, pki: Pki, tmp_path: Path) -> AsyncIterator[Front]:
    front = Front(upstream=emu.url.rstrip("/"), token="token-1")
    for name in ("server.crt", "server.key", "ca.crt"):
        (tmp_path / name).write_bytes(
            {"server.crt": pki.server_cert, "server.key": pki.server_key, "ca.crt": pki.ca}[name]
        )
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    tls.load_verify_locations(tmp_path / "ca.crt")
    tls.verify_mode = ssl.CERT_OPTIONAL  # a client certificate is checked when one is sent
    runner = web.AppRunner(_app(front))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    host, port = runner.addresses[0][:2]
    front.url = f"https://{host}:{port}"
    yield front
    await runner.cleanup()


def _app(front: Front) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", front.handle)
    return app


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Logins:
    """A login function returning ``ConnectionInfo(**fields)`` as they are at each call."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields
        self.calls = 0

    def __call__(self) -> kopf.ConnectionInfo:
        self.calls += 1
        return kopf.ConnectionInfo(**self.fields)


@pytest.mark.parametrize("ca", ["path", "data", "pem"])
async def test_token_from_the_connection_info_over_tls_with_its_ca(
    front: Front, pki: Pki, tmp_path: Path, ca: str
) -> None:
    ca_fields = {"path": {"ca_path": str(tmp_path / "ca.crt")}, "data": {"ca_data": _b64(pki.ca)},
                 "pem": {"ca_data": pki.ca.decode()}}[ca]  # fmt: skip
    login = Logins(server=front.url, token="token-1", **ca_fields)
    api = KubeApi(KubeSession(login))
    try:
        assert await api.get_resource(NS, "absent") is None
        await api.write_connection_secret(
            namespace=NS, name="conn", owner=_owner(), data={"password": "pw"}, annotations={}
        )
        assert await api.read_secret_data(NS, "conn", ("password",)) == {"password": "pw"}
    finally:
        await api.aclose()
    assert login.calls == 1
    assert [auth for auth, _ in front.seen] == ["Bearer token-1"] * len(front.seen)


async def test_basic_auth_from_the_connection_info(front: Front, pki: Pki) -> None:
    front.token, front.basic = None, _b64(b"alice:s3cret")
    session = KubeSession(Logins(server=front.url, ca_data=_b64(pki.ca), username="alice", password="s3cret"))
    try:
        assert await KubeApi(session).get_resource(NS, "absent") is None
    finally:
        await session.aclose()
    assert front.seen == [(f"Basic {front.basic}", 404)]


async def test_client_certificate_from_data_or_paths(
    front: Front, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    front.token, front.client_certs = None, True
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    (tmp_path / "client.crt").write_bytes(pki.client_cert)
    (tmp_path / "client.key").write_bytes(pki.client_key)
    for fields in (
        {"certificate_data": _b64(pki.client_cert), "private_key_data": _b64(pki.client_key)},
        {"certificate_path": str(tmp_path / "client.crt"), "private_key_path": str(tmp_path / "client.key")},
    ):
        session = KubeSession(Logins(server=front.url, ca_data=_b64(pki.ca), **fields))
        try:
            assert await KubeApi(session).get_resource(NS, "absent") is None
        finally:
            await session.aclose()
    assert front.seen == [(None, 404), (None, 404)]
    assert list(scratch.iterdir()) == []  # the key written for ssl is gone


async def test_tls_is_verified_unless_insecure(front: Front) -> None:
    session = KubeSession(Logins(server=front.url, token="token-1"))  # the system's CAs do not know the test CA
    try:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await KubeApi(session).get_resource(NS, "absent")
    finally:
        await session.aclose()
    assert front.seen == []
    session = KubeSession(Logins(server=front.url, token="token-1", insecure=True))
    try:
        assert await KubeApi(session).get_resource(NS, "absent") is None
    finally:
        await session.aclose()


async def test_a_401_logs_in_again_once_and_retries(front: Front, pki: Pki) -> None:
    """A rotated token: the request refused with the old one logs in again and is sent again; a burst of
    requests refused together logs in once."""
    login = Logins(server=front.url, ca_data=_b64(pki.ca), token="token-1")
    api = KubeApi(KubeSession(login))
    try:
        assert await api.get_resource(NS, "absent") is None
        front.token = login.fields["token"] = "token-2"  # rotated: the server takes only the new one
        assert await api.get_resource(NS, "absent") is None
        assert login.calls == 2
        assert front.seen[1:] == [("Bearer token-1", 401), ("Bearer token-2", 404)]

        front.token = login.fields["token"] = "token-3"
        answers = await asyncio.gather(*(api.get_resource(NS, f"absent-{i}") for i in range(5)))
        assert answers == [None] * 5 and login.calls == 3
        assert [a for a in front.seen[3:] if a[1] != 401] == [("Bearer token-3", 404)] * 5
    finally:
        await api.aclose()


async def test_a_token_refused_after_a_new_login_is_an_error_that_does_not_show_it(front: Front, pki: Pki) -> None:
    login = Logins(server=front.url, ca_data=_b64(pki.ca), token="not-the-token-xyz")
    api = KubeApi(KubeSession(login))
    try:
        with pytest.raises(KubeApiError) as err:
            await api.get_resource(NS, "db")
    finally:
        await api.aclose()
    assert err.value.status == 401 and err.value.message == "Unauthorized"
    assert login.calls == 2 and len(front.seen) == 2  # one new login, one retry
    assert "not-the-token-xyz" not in f"{err.value} {err.value!r} {err.value.args}"


async def test_credentials_that_expire_soon_are_renewed_before_the_request(front: Front, pki: Pki) -> None:
    now = datetime.datetime.now(datetime.UTC)
    soon = (now + datetime.timedelta(seconds=30)).replace(tzinfo=None)  # naive: UTC; within the renewal margin
    login = Logins(server=front.url, ca_data=_b64(pki.ca), token="token-1", expiration=soon)
    api = KubeApi(KubeSession(login))
    try:
        assert await api.get_resource(NS, "a") is None
        front.token = login.fields["token"] = "token-2"  # the server takes only the new token from now on
        login.fields["expiration"] = now + datetime.timedelta(hours=1)
        assert await api.get_resource(NS, "a") is None  # renewed before it was sent
        assert await api.get_resource(NS, "a") is None  # valid for an hour: no new login
    finally:
        await api.aclose()
    assert login.calls == 2
    assert front.seen == [("Bearer token-1", 404), ("Bearer token-2", 404), ("Bearer token-2", 404)]


async def test_a_closed_session_is_opened_again(front: Front, pki: Pki) -> None:
    login = Logins(server=front.url, ca_data=_b64(pki.ca), token="token-1")
    api = KubeApi(KubeSession(login))
    try:
        assert await api.get_resource(NS, "a") is None
        await api.aclose()  # as at operator shutdown
        assert await api.get_resource(NS, "a") is None  # a fresh session and login
        assert login.calls == 2
    finally:
        await api.aclose()
    assert [status for _, status in front.seen] == [404, 404]


async def test_only_a_status_message_is_kept_from_an_error(front: Front, pki: Pki) -> None:
    api = KubeApi(KubeSession(Logins(server=front.url, ca_data=_b64(pki.ca), token="token-1")))
    echoed = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "data": {"password": "c2VjcmV0"}}
    try:
        front.answer_next = (500, echoed)
        with pytest.raises(KubeApiError) as err:
            await api.read_secret(NS, "x")
        assert err.value.status == 500 and err.value.message is None and "c2VjcmV0" not in str(err.value)
        front.answer_next = (409, {"kind": "Status", "message": "the object has been modified", "reason": "Conflict"})
        with pytest.raises(KubeApiError) as err:
            await api.read_secret(NS, "x")
        assert (err.value.status, err.value.message, err.value.reason) == (
            409, "the object has been modified", "Conflict"
        )  # fmt: skip
    finally:
        await api.aclose()


def _owner() -> dict[str, Any]:
    return {"metadata": {"name": "db", "uid": "uid-db"}}
