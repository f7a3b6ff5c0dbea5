"""Client-side helpers for the fleet tests: CA files, TLS connections like a client of the real service."""

from __future__ import annotations

import socket
import ssl
import struct
from pathlib import Path

import psycopg

from clickhouse_cloud_simulator.postgres import Endpoint, PostgresFleet


def write_ca(fleet: PostgresFleet, service_id: str, directory: Path) -> Path:
    path = directory / f"{service_id}-ca.pem"
    path.write_text(fleet.ca_pem(service_id))
    return path


async def connect(
    endpoint: Endpoint, password: str, ca_file: Path, *, dbname: str = "postgres", **extra: str
) -> psycopg.AsyncConnection:
    """Connect like a client of the real service: verify-full against the service CA, channel binding required."""
    params: dict[str, object] = {
        "host": endpoint.host,
        "port": endpoint.port,
        "user": "postgres",
        "password": password,
        "dbname": dbname,
        "sslmode": "verify-full",
        "sslrootcert": str(ca_file),
        "channel_binding": "require",
        "connect_timeout": 10,
        "autocommit": True,
    }
    params.update(extra)
    return await psycopg.AsyncConnection.connect(**params)  # type: ignore[arg-type]


def tls_version(endpoint: Endpoint, ca_file: Path, maximum: str | None = None) -> str:
    """Send an SSLRequest and complete a verified TLS handshake; returns the negotiated protocol version."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if maximum is not None:
        ctx.maximum_version = getattr(ssl.TLSVersion, maximum.replace(".", "_"))
    with socket.create_connection((endpoint.host, endpoint.port), timeout=10) as raw:
        raw.sendall(struct.pack("!II", 8, 80877103))
        assert raw.recv(1) == b"S"
        with ctx.wrap_socket(raw, server_hostname=endpoint.host) as tls:
            version = tls.version()
            assert version is not None
            return version
