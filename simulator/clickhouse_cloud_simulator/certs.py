"""CA certificates of services when no PostgreSQL fleet runs (real X.509, made by ``openssl``)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import textwrap


class CertificateCache:
    """One self-signed CA certificate per (service, generation): a rename makes a new one."""

    def __init__(self) -> None:
        self._pems: dict[tuple[str, int], str] = {}

    async def get(self, service_id: str, generation: int, common_name: str) -> str:
        key = (service_id, generation)
        if key not in self._pems:
            self._pems = {k: v for k, v in self._pems.items() if k[0] != service_id}
            self._pems[key] = await _make_ca(common_name, f"{service_id}/{generation}")
        return self._pems[key]


async def _make_ca(common_name: str, seed: str) -> str:
    openssl = shutil.which("openssl")
    if openssl:
        cn = "".join(c for c in common_name if c.isalnum() or c in ".-")[:60] or "postgres"
        proc = await asyncio.create_subprocess_exec(
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "/dev/null",
            "-days",
            "3650",
            "-subj",
            f"/O=ClickHouse Cloud Simulator/CN={cn} CA",
            "-out",
            "-",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        if proc.returncode == 0 and out.startswith(b"-----BEGIN CERTIFICATE-----"):
            return out.decode()
    # No openssl: a PEM-framed placeholder (not a parsable certificate).
    blob = b"".join(hashlib.sha256(f"{seed}/{i}".encode()).digest() for i in range(12))
    body = "\n".join(textwrap.wrap(base64.b64encode(blob).decode(), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"
