#!/usr/bin/env python3
"""The release version: pyproject.toml's [project] version is the source; everything else must agree.

    scripts/release_version.py check [--tag vX.Y.Z] [--owner OWNER]
        Every carrier of the version agrees with pyproject.toml and CHANGELOG.md has a dated section
        for it; with --tag, the tag is "v" + that version. Prints version=X.Y.Z and, with --owner,
        the published names (image=, chart=, chart-registry=), one per line, for $GITHUB_OUTPUT.
        Exit status 1, with each disagreement on stderr, otherwise.
    scripts/release_version.py notes [VERSION]
        The CHANGELOG.md section of VERSION (default: the current version), for the release notes.
    scripts/release_version.py crds
        The chart's CRDs (what `helm install` creates) as one YAML stream: the release's CRD asset.
    scripts/release_version.py set X.Y.Z
        Writes X.Y.Z into every carrier (not CHANGELOG.md: its section is written by hand).

The release workflow (.github/workflows/release.yml) runs `check` and `notes`; so does
tests/deploy/test_release.py.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VERSION_RE = r"\d+\.\d+\.\d+"
REGISTRY = "ghcr.io"
IMAGE_NAME = "mpg-operator"
CHART_NAME = "mpg-operator"
CHANGELOG = "CHANGELOG.md"
CHART_CRDS = "deploy/helm/mpg-operator/crds"


@dataclass(frozen=True)
class Carrier:
    """A file that states the version: a regex whose group "v" is the version, and how many matches it needs."""

    path: str
    pattern: str
    min_count: int = 1

    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.MULTILINE)


SOURCE = Carrier("pyproject.toml", rf'^version = "(?P<v>{VERSION_RE})"$')
CARRIERS = (
    SOURCE,
    Carrier("operator/mpg_operator/__init__.py", rf'^__version__ = "(?P<v>{VERSION_RE})"$'),
    Carrier("deploy/helm/mpg-operator/Chart.yaml", rf"^version: (?P<v>{VERSION_RE})$"),
    Carrier("deploy/helm/mpg-operator/Chart.yaml", rf'^appVersion: "(?P<v>{VERSION_RE})"$'),
    Carrier("Dockerfile", rf"^ARG VERSION=(?P<v>{VERSION_RE})$"),
    Carrier("deploy/argocd/application-operator.yaml", rf"^    targetRevision: v(?P<v>{VERSION_RE})$"),
    Carrier("deploy/argocd/application-example.yaml", rf"^    targetRevision: v(?P<v>{VERSION_RE})$"),
    # The published chart in the install commands (helm install/upgrade oci://... --version X.Y.Z).
    Carrier("README.md", rf"oci://\S+/{CHART_NAME} --version (?P<v>{VERSION_RE})\b"),
    Carrier("docs/install.md", rf"oci://\S+/{CHART_NAME} (?:[^\n]*?)--version (?P<v>{VERSION_RE})\b", min_count=2),
    # The image, the CRD asset and the build command there.
    Carrier(
        "docs/install.md", rf"(?:{IMAGE_NAME}:|/download/v|--build-arg VERSION=)(?P<v>{VERSION_RE})\b", min_count=3
    ),
)


def current_version(root: Path = REPO_ROOT) -> str:
    return tomllib.loads((root / SOURCE.path).read_text())["project"]["version"]


def disagreements(root: Path = REPO_ROOT) -> list[str]:
    """What disagrees with pyproject.toml's version, one message each; [] when everything agrees."""
    version = current_version(root)
    problems = []
    for carrier in CARRIERS:
        found = [m.group("v") for m in carrier.regex().finditer((root / carrier.path).read_text())]
        if len(found) < carrier.min_count:
            problems.append(
                f"{carrier.path}: expected {carrier.min_count} match(es) of /{carrier.pattern}/, found {len(found)}"
            )
        problems += [f"{carrier.path}: {v} (pyproject.toml says {version})" for v in found if v != version]
    if changelog_section(version, root) is None:
        problems.append(f"{CHANGELOG}: no '## [{version}] - YYYY-MM-DD' section with content")
    return problems


def changelog_section(version: str, root: Path = REPO_ROOT) -> str | None:
    """The body of CHANGELOG.md's '## [version] - date' section, or None if it is missing or empty."""
    text = (root / CHANGELOG).read_text()
    match = re.search(
        rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}\n(?P<body>.*?)(?=^## |^\[[^\]]+\]: |\Z)",
        text,
        re.MULTILINE | re.DOTALL,
    )
    body = match.group("body").strip() if match else ""
    return body or None


def published_names(owner: str) -> dict[str, str]:
    """Where the release workflow publishes the image and the chart (GHCR wants lower-case names)."""
    base = f"{REGISTRY}/{owner.lower()}"
    return {
        "image": f"{base}/{IMAGE_NAME}",
        "chart-registry": f"oci://{base}/charts",
        "chart": f"oci://{base}/charts/{CHART_NAME}",
    }


def crds_stream(root: Path = REPO_ROOT) -> str:
    """The chart's crds/ files as one YAML stream, in file-name order."""
    parts = [path.read_text().strip() for path in sorted((root / CHART_CRDS).glob("*.yaml"))]
    return "".join(f"---\n{part.removeprefix('---').lstrip()}\n" for part in parts)


def set_version(new: str, root: Path = REPO_ROOT) -> None:
    if not re.fullmatch(VERSION_RE, new):
        raise SystemExit(f"not a release version (X.Y.Z): {new}")

    def replace(match: re.Match[str]) -> str:
        start, end = (i - match.start() for i in match.span("v"))
        return match.group(0)[:start] + new + match.group(0)[end:]

    for carrier in CARRIERS:
        path = root / carrier.path
        path.write_text(carrier.regex().sub(replace, path.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="every carrier agrees; with --tag, the tag too")
    check.add_argument("--tag", help="the Git tag being released, vX.Y.Z")
    check.add_argument("--owner", help="the GitHub owner the image and chart are published under")
    notes = commands.add_parser("notes", help="the CHANGELOG.md section of a version")
    notes.add_argument("version", nargs="?")
    commands.add_parser("crds", help="the chart's CRDs as one YAML stream")
    bump = commands.add_parser("set", help="write a new version into every carrier")
    bump.add_argument("version")
    args = parser.parse_args(argv)
    root: Path = args.root

    if args.command == "set":
        set_version(args.version, root)
        return 0
    if args.command == "crds":
        sys.stdout.write(crds_stream(root))
        return 0
    version = current_version(root)
    if args.command == "notes":
        section = changelog_section(args.version or version, root)
        if section is None:
            print(f"{CHANGELOG} has no section for {args.version or version}", file=sys.stderr)
            return 1
        print(section)
        return 0
    problems = disagreements(root)
    if args.tag is not None and args.tag != f"v{version}":
        problems.insert(0, f"tag {args.tag!r} is not v{version}, the version in pyproject.toml: not releasing")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"version={version}")
    for key, value in (published_names(args.owner) if args.owner else {}).items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
