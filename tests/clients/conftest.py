"""Fixtures of the real-client tests (helpers in clients_support.py: a module name no other
test folder uses, so it is imported unambiguously)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kmock")
pytest.importorskip("celpy")

from clients_support import tools  # noqa: E402
from support import realkube  # noqa: E402

from mpg_operator import crd as crd_module  # noqa: E402


@pytest.fixture(scope="session")
def client_tools() -> dict[str, Path]:
    return tools()


@pytest.fixture(scope="module")
def real_api(real_kubeconfig: Path) -> Any:
    """A client of the real API server, with the project's CRD installed and Established."""
    client = realkube.client(real_kubeconfig)
    realkube.ensure_crd(client, crd_module.crd())
    return client
