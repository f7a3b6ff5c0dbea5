"""docs/install.md, docs/argocd.md and deploy/argocd/: every command, snippet and manifest is checked."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_chart import KUBE_VERSION, REPO_ROOT, of_kind, one, render, template
from mpg_operator.controller.cloudaccess import CREDENTIAL_KEYS
from mpg_operator.controller.handlers import FINALIZER
from mpg_operator.reconcile.connection import REQUIRED_KEYS

pytestmark = pytest.mark.usefixtures("helm_tools")

DOCS = REPO_ROOT / "docs"
ARGOCD = REPO_ROOT / "deploy" / "argocd"
HEALTH_LUA = (ARGOCD / "health.lua").read_text()
HEALTH_KEY = "resource.customizations.health.clickhouse.cloud_ManagedPostgres"
CRD = yaml.safe_load((REPO_ROOT / "deploy" / "crds" / "managedpostgreses.clickhouse.cloud.yaml").read_text())
CHART_VERSION = yaml.safe_load((REPO_ROOT / "deploy" / "helm" / "mpg-operator" / "Chart.yaml").read_text())["version"]
PUBLISHED_CHART = "oci://ghcr.io/mpg-operator/charts/mpg-operator"
MPG_SCHEMA = next(v for v in CRD["spec"]["versions"] if v["name"] == "v1alpha1")["schema"]["openAPIV3Schema"]


def code_blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(), flags=re.DOTALL | re.MULTILINE)


def helm_commands(path: Path) -> list[list[str]]:
    commands = []
    for block in code_blocks(path, "sh"):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip().startswith("helm "):
                commands.append(shlex.split(command, comments=True))
    return commands


def set_values(argv: list[str]) -> dict[str, Any]:
    """--set a.b=c arguments as a values dict (the subset of Helm's syntax the docs use)."""
    values: dict[str, Any] = {}
    for flag, arg in itertools.pairwise(argv):
        if flag != "--set":
            continue
        key, _, raw = arg.partition("=")
        value: Any = [v for v in raw.strip("{}").split(",")] if raw.startswith("{") else raw
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return values


def check_managed_postgres(obj: dict[str, Any]) -> None:
    assert obj["apiVersion"] == "clickhouse.cloud/v1alpha1"
    jsonschema.validate(obj["spec"], MPG_SCHEMA["properties"]["spec"])


def connection_secret_refs(deployment: dict[str, Any]) -> set[tuple[str, str]]:
    pod = deployment["spec"]["template"]["spec"]
    refs = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for c in pod["containers"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            refs |= {(volume["secret"]["secretName"], item["key"]) for item in volume["secret"].get("items", [])}
    return refs


def test_argocd_cm_snippets_carry_health_lua_verbatim() -> None:
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert cm["data"][HEALTH_KEY] == HEALTH_LUA
    kubernetes_validate.validate(cm, KUBE_VERSION, strict=True)
    [doc_cm] = [yaml.safe_load(b) for b in code_blocks(DOCS / "argocd.md", "yaml") if HEALTH_KEY in b]
    assert doc_cm == cm, "docs/argocd.md's argocd-cm snippet differs from deploy/argocd/argocd-cm.yaml"


def test_crd_has_no_schema_defaults() -> None:
    # A schema default makes the stored object differ from Git: Argo CD would show it OutOfSync.
    def walk(node: Any, path: str) -> list[str]:
        if isinstance(node, dict):
            found = [path] if "default" in node and not path.endswith("/properties") else []
            return found + [p for k, v in node.items() for p in walk(v, f"{path}/{k}")]
        if isinstance(node, list):
            return [p for i, v in enumerate(node) for p in walk(v, f"{path}/{i}")]
        return []

    assert walk(MPG_SCHEMA, "") == []


def test_install_md_starts_with_a_short_helm_install() -> None:
    first = code_blocks(DOCS / "install.md", "sh")[0].replace("\\\n", " ")
    argv = shlex.split(first)
    assert argv[:4] == ["helm", "install", "mpg-operator", PUBLISHED_CHART]
    assert argv[argv.index("--version") + 1] == CHART_VERSION
    assert argv.count("--set") == 1, "the published chart needs only the credentials"


@pytest.mark.parametrize("argv", helm_commands(DOCS / "install.md"), ids=lambda a: " ".join(a[:2]))
def test_install_md_helm_commands_render(argv: list[str]) -> None:
    assert argv[1] in ("install", "upgrade", "uninstall")
    if argv[1] == "uninstall":
        return
    # The published chart is this chart at its version; a checkout's chart needs your own image.
    assert argv[3] in (PUBLISHED_CHART, "deploy/helm/mpg-operator")
    values = set_values(argv)
    if argv[3] == PUBLISHED_CHART:
        assert argv[argv.index("--version") + 1] == CHART_VERSION
    else:
        assert "--version" not in argv and values["image"]["repository"]
    objs = render(values, namespace=argv[argv.index("--namespace") + 1])
    deployment = one(of_kind(objs, "Deployment"))
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    if "credentials" in values:
        assert env["MPG_DEFAULT_CREDENTIALS_SECRET"] == "mpg-system/" + values["credentials"]["existingSecret"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    if "digest" in values.get("image", {}):
        assert image == f"ghcr.io/mpg-operator/mpg-operator@{values['image']['digest']}"


def test_install_md_manifests_are_valid_and_fit_together() -> None:
    docs = [yaml.safe_load(b) for b in code_blocks(DOCS / "install.md", "yaml")]
    mpg = one(of_kind(docs, "ManagedPostgres"))
    check_managed_postgres(mpg)
    deployment = one(of_kind(docs, "Deployment"))
    kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    refs = connection_secret_refs(deployment)
    assert {name for name, _ in refs} == {f"{mpg['metadata']['name']}-connection"}
    assert {key for _, key in refs} <= set(REQUIRED_KEYS)
    assert f"finalizer (`{FINALIZER}`)" in (DOCS / "install.md").read_text()


def test_argocd_example_app_waves_and_references() -> None:
    objs = [yaml.safe_load(p.read_text()) for p in sorted((ARGOCD / "example-app").glob("*.yaml"))]
    wave = {o["kind"]: int(o["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for o in objs}
    assert wave["Secret"] < wave["ManagedPostgres"] < wave["Deployment"]
    secret, mpg, deployment = (one(of_kind(objs, k)) for k in ("Secret", "ManagedPostgres", "Deployment"))
    for obj in (secret, deployment):
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    check_managed_postgres(mpg)
    assert mpg["spec"]["credentialsRef"]["name"] == secret["metadata"]["name"]
    assert set(secret["stringData"]) == set(CREDENTIAL_KEYS)
    refs = connection_secret_refs(deployment)
    assert {name for name, _ in refs} == {f"{mpg['metadata']['name']}-connection"}
    assert {key for _, key in refs} <= set(REQUIRED_KEYS)


@pytest.mark.parametrize("name", ["application-operator.yaml", "application-example.yaml"])
def test_argocd_applications_point_at_real_paths(name: str) -> None:
    app = yaml.safe_load((ARGOCD / name).read_text())
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    assert "finalizers" not in app["metadata"], "cascading deletion would delete the CRD with every database"
    source = app["spec"]["source"]
    assert (REPO_ROOT / source["path"]).is_dir()
    if "helm" in source:
        proc = template(source["helm"]["valuesObject"], release=source["helm"]["releaseName"],
                        namespace=app["spec"]["destination"]["namespace"])
        assert "kind: Deployment" in proc.stdout
