"""The real Kubernetes control plane for tests (``scripts/control_plane.py``): started on first use,
once per session, and stopped at its end.

``MPG_TEST_KUBECONFIG``, when set, wins: the tests then run against that cluster instead. When the
control plane is not built (no ``go`` on PATH, or ``make control-plane`` not run), the tests that
need it are skipped with the reason, or fail when ``CI`` is true: CI must not pass by skipping.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def control_plane_script() -> ModuleType:
    """``scripts/control_plane.py`` as a module (``build``, ``built``, ``ControlPlane``)."""
    spec = importlib.util.spec_from_file_location("control_plane", REPO_ROOT / "scripts" / "control_plane.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def under_ci() -> bool:
    """Whether the suite runs in CI (``CI`` set to true, as CI services do)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Skip the test with ``reason``; under CI fail it instead."""
    if under_ci():
        pytest.fail(f"{reason} (CI=true: the real control plane is required)", pytrace=False)
    pytest.skip(reason)


def session_kubeconfig(workdir: Path) -> Iterator[Path]:
    """Yield the path of an admin kubeconfig: ``MPG_TEST_KUBECONFIG``'s, else a local control plane's
    running in ``workdir`` until the generator is closed."""
    given = os.environ.get("MPG_TEST_KUBECONFIG")
    if given:
        yield Path(given)
        return
    script = control_plane_script()
    if not script.built():
        if not script.go_available():
            unavailable("no real control plane: the Go toolchain (go) is not on PATH to build it")
        unavailable(f"no real control plane built in {script.cache_dir()}: run `make control-plane`")
    with script.ControlPlane(workdir) as plane:
        yield plane.kubeconfig
