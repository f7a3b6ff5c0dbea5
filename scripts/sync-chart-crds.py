#!/usr/bin/env python3
"""Copy deploy/crds/*.yaml into the Helm chart's crds/ folder byte for byte, or check that they match.

Usage: scripts/sync-chart-crds.py [--check]   (--check: change nothing, exit 1 and list differences)
The chart's crds/ may hold chart-only files (CHART_ONLY); any other file must mirror deploy/crds.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE = REPO_ROOT / "deploy" / "crds"
CHART_CRDS = REPO_ROOT / "deploy" / "helm" / "mpg-operator" / "crds"
CHART_ONLY = {"kopf-peering.yaml"}


def differences(source: Path = SOURCE, chart_crds: Path = CHART_CRDS) -> list[str]:
    """Human-readable differences between deploy/crds and the chart's crds/ (empty: in sync)."""
    wanted = {p.name: p for p in sorted(source.glob("*.yaml"))}
    present = {p.name: p for p in sorted(chart_crds.glob("*.yaml"))}
    out = []
    if not wanted:
        out.append(f"{source} has no CRD files")
    for name, src in wanted.items():
        if name not in present:
            out.append(f"{name}: missing from the chart's crds/")
        elif src.read_bytes() != present[name].read_bytes():
            out.append(f"{name}: differs from {src.relative_to(REPO_ROOT)}")
    for name in sorted(set(present) - set(wanted) - CHART_ONLY):
        out.append(f"{name}: in the chart's crds/ but not in deploy/crds (stale?)")
    return out


def sync(source: Path = SOURCE, chart_crds: Path = CHART_CRDS) -> list[str]:
    """Make the chart's crds/ mirror deploy/crds; return the names written or removed."""
    changed = []
    chart_crds.mkdir(parents=True, exist_ok=True)
    for src in sorted(source.glob("*.yaml")):
        dst = chart_crds / src.name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)
            changed.append(f"copied {src.name}")
    for stale in sorted(chart_crds.glob("*.yaml")):
        if stale.name not in CHART_ONLY and not (source / stale.name).exists():
            stale.unlink()
            changed.append(f"removed {stale.name}")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on any difference")
    args = parser.parse_args(argv)
    if args.check:
        diff = differences()
        for line in diff:
            print(line, file=sys.stderr)
        return 1 if diff else 0
    for line in sync():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
