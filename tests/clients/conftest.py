"""Fixtures of the real-client tests (helpers in clients_support.py: a module name no other
test folder uses, so it is imported unambiguously)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("kmock")
pytest.importorskip("celpy")

from clients_support import tools  # noqa: E402


@pytest.fixture(scope="session")
def client_tools() -> dict[str, Path]:
    return tools()
