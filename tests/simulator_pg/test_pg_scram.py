"""The SCRAM verifiers the fleet stores match libpq's own (incl. SASLprep), and the exchange checks proofs."""

from __future__ import annotations

import base64

import psycopg
import pytest

from clickhouse_cloud_simulator.scram import ScramError, ScramServer, make_verifier, parse_verifier


@pytest.mark.parametrize("password", ["plain-ascii-pw", "ｐａｓｓ\u00adword", "Ünïcødé ß"])
def test_verifier_matches_libpq(password: str) -> None:
    conn = psycopg.pq.PGconn.connect_start(b"host=/nonexistent-dir-for-encrypt dbname=x")
    try:
        # scram-sha-256 encryption needs no server; libpq applies SASLprep itself.
        libpq = conn.encrypt_password(password.encode(), b"postgres", b"scram-sha-256").decode()
    finally:
        conn.finish()
    iterations, salt, _, _ = parse_verifier(libpq)  # type: ignore[misc]
    assert make_verifier(password, iterations=iterations, salt=salt) == libpq


def test_exchange_rejects_a_wrong_proof_and_a_missing_binding() -> None:
    verifier = make_verifier("right")
    server = ScramServer("postgres", verifier, channel_binding=b"\x01" * 32)
    assert server.mechanisms() == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
    first = server.first("SCRAM-SHA-256", b"n,,n=,r=abc").decode()
    nonce = first.split(",")[0][2:]
    with pytest.raises(ScramError) as info:
        server.final(f"c=biws,r={nonce},p={base64.b64encode(bytes(32)).decode()}".encode())
    assert info.value.sqlstate == "28P01"
    with pytest.raises(ScramError, match="negotiation error"):
        ScramServer("postgres", verifier, channel_binding=b"\x01" * 32).first("SCRAM-SHA-256", b"y,,n=,r=abc")
    with pytest.raises(ScramError, match="channel binding"):
        ScramServer("postgres", verifier, channel_binding=b"\x01" * 32).first("SCRAM-SHA-256-PLUS", b"n,,n=,r=abc")
