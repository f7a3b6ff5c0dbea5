"""SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL does it: verifiers and the server side of the exchange.

Used by the simulator's TLS front end (`pg_front.py`), which authenticates clients itself so that
`SCRAM-SHA-256-PLUS` with `tls-server-end-point` channel binding works in front of a server built
without OpenSSL. Verifiers are PostgreSQL's `pg_authid.rolpassword` format:
`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 parts).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stringprep
import unicodedata

ITERATIONS = 4096  # PostgreSQL's default scram_iterations
MECHANISM = "SCRAM-SHA-256"
MECHANISM_PLUS = "SCRAM-SHA-256-PLUS"
CHANNEL_BINDING_TYPE = "tls-server-end-point"


class ScramError(Exception):
    """Authentication failed or the exchange was malformed; carries the PostgreSQL SQLSTATE."""

    def __init__(self, sqlstate: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail


def saslprep(password: str) -> str:
    """SASLprep (RFC 4013) like PostgreSQL: on any failure the password is used unchanged."""
    if password.isascii():
        return password
    mapped = "".join(" " if stringprep.in_table_c12(ch) else ch for ch in password if not stringprep.in_table_b1(ch))
    normalized = unicodedata.normalize("NFKC", mapped)
    if not normalized:
        return password
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if any(check(ch) for ch in normalized for check in prohibited):
        return password
    has_ral = any(stringprep.in_table_d1(ch) for ch in normalized)
    if has_ral and (
        any(stringprep.in_table_d2(ch) for ch in normalized)
        or not stringprep.in_table_d1(normalized[0])
        or not stringprep.in_table_d1(normalized[-1])
    ):
        return password
    return normalized


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def make_verifier(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL would store for `password` (safe to put in SQL text)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)
    stored_key = hashlib.sha256(_hmac(salted, b"Client Key")).digest()
    server_key = _hmac(salted, b"Server Key")
    return f"{MECHANISM}${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def parse_verifier(verifier: str | None) -> tuple[int, bytes, bytes, bytes] | None:
    """(iterations, salt, StoredKey, ServerKey) of a SCRAM verifier, or None for anything else."""
    if not verifier or not verifier.startswith(MECHANISM + "$"):
        return None
    try:
        _, params, keys = verifier.split("$")
        iterations_text, salt_text = params.split(":")
        stored_text, server_text = keys.split(":")
        return (
            int(iterations_text),
            base64.b64decode(salt_text, validate=True),
            base64.b64decode(stored_text, validate=True),
            base64.b64decode(server_text, validate=True),
        )
    except ValueError:
        return None


def _attributes(text: str) -> list[tuple[str, str]]:
    out = []
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError("08P01", "malformed SCRAM message", f'Attribute expected, but found "{part[:20]}".')
        out.append((part[0], part[2:]))
    return out


class ScramServer:
    """Server side of one SCRAM exchange.

    `verifier` is the role's `rolpassword` (None: no usable password; the exchange runs with made-up
    keys and fails at the proof, as PostgreSQL's "mock" authentication does). `channel_binding` is the
    `tls-server-end-point` data of this TLS connection, or None when the connection is not TLS.
    """

    def __init__(self, user: str, verifier: str | None, channel_binding: bytes | None) -> None:
        self.user = user
        parsed = parse_verifier(verifier)
        self._valid = parsed is not None
        if parsed is None:
            parsed = (ITERATIONS, os.urandom(16), os.urandom(32), os.urandom(32))
        self._iterations, self._salt, self._stored_key, self._server_key = parsed
        self._channel_binding = channel_binding
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""

    def mechanisms(self) -> list[str]:
        """Mechanisms to offer, best first (PLUS only over TLS)."""
        return [MECHANISM_PLUS, MECHANISM] if self._channel_binding is not None else [MECHANISM]

    def _fail(self) -> ScramError:
        return ScramError("28P01", f'password authentication failed for user "{self.user}"')

    def first(self, mechanism: str, client_first: bytes) -> bytes:
        """Handle client-first-message; returns server-first-message."""
        if mechanism not in self.mechanisms():
            raise ScramError("08P01", "client selected an invalid SASL authentication mechanism")
        text = client_first.decode("utf-8", errors="strict")
        flag, _, rest = text.partition(",")
        authzid, _, bare = rest.partition(",")
        if flag == "p=" + CHANNEL_BINDING_TYPE:
            if mechanism != MECHANISM_PLUS:
                raise ScramError(
                    "08P01",
                    "malformed SCRAM message",
                    "The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data.",
                )
        elif flag.startswith("p="):
            raise ScramError("08P01", f'unsupported SCRAM channel-binding type "{flag[2:]}"')
        elif flag == "y":
            if self._channel_binding is not None:
                raise ScramError(
                    "08P01",
                    "SCRAM channel binding negotiation error",
                    "The client supports SCRAM channel binding but thinks the server does not.  "
                    "However, this server does support channel binding.",
                )
        elif flag != "n":
            raise ScramError("08P01", "malformed SCRAM message", "Unexpected channel-binding flag.")
        if mechanism == MECHANISM_PLUS and flag != "p=" + CHANNEL_BINDING_TYPE:
            raise ScramError("08P01", "channel binding is required, but client does not support it")
        if authzid:
            raise ScramError("0A000", "client uses authorization identity, but it is not supported")
        attrs = _attributes(bare)
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r" or not attrs[1][1]:
            raise ScramError("08P01", "malformed SCRAM message", "Could not parse the client nonce.")
        self._gs2_header = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._nonce = attrs[1][1] + _b64(os.urandom(18))
        self._server_first = f"r={self._nonce},s={_b64(self._salt)},i={self._iterations}"
        return self._server_first.encode("ascii")

    def final(self, client_final: bytes) -> bytes:
        """Handle client-final-message; returns server-final-message or raises ScramError."""
        text = client_final.decode("utf-8", errors="strict")
        without_proof, sep, proof_text = text.rpartition(",p=")
        if not sep:
            raise ScramError("08P01", "malformed SCRAM message", "Could not find proof in client-final-message.")
        attrs = dict(_attributes(without_proof))
        expected_cbind = self._gs2_header.encode("utf-8")
        if self._gs2_header.startswith("p="):
            assert self._channel_binding is not None
            expected_cbind += self._channel_binding
        try:
            cbind = base64.b64decode(attrs.get("c", ""), validate=True)
            proof = base64.b64decode(proof_text, validate=True)
        except ValueError as exc:
            raise ScramError("08P01", "malformed SCRAM message", "Invalid base64.") from exc
        if not hmac.compare_digest(cbind, expected_cbind):
            raise ScramError("28000", "SCRAM channel binding check failed")
        if attrs.get("r") != self._nonce:
            raise ScramError("08P01", "malformed SCRAM message", "Nonce does not match.")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = _hmac(self._stored_key, auth_message)
        if len(proof) != len(signature):
            raise self._fail()
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if not self._valid or not hmac.compare_digest(hashlib.sha256(client_key).digest(), self._stored_key):
            raise self._fail()
        return f"v={_b64(_hmac(self._server_key, auth_message))}".encode("ascii")
