"""deploy/argocd/health.lua run by a real Lua 5.1 (lupa; Argo CD's gopher-lua is Lua 5.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from lupa import lua51

from mpg_operator.reconcile.model import Reason

REPO_ROOT = Path(__file__).resolve().parents[2]
ARGOCD_DIR = REPO_ROOT / "deploy" / "argocd"
HEALTH_LUA = (ARGOCD_DIR / "health.lua").read_text()
CASES = yaml.safe_load((ARGOCD_DIR / "health_test.yaml").read_text())["tests"]
CRD = yaml.safe_load((REPO_ROOT / "deploy" / "crds" / "managedpostgreses.clickhouse.cloud.yaml").read_text())
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def run_health(obj: dict[str, Any]) -> dict[str, str]:
    """Evaluate health.lua the way Argo CD does: ``obj`` global, script returns a table."""
    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    env = lua.globals()
    for unsafe in ("os", "io", "package", "require", "debug", "dofile", "loadfile", "load", "loadstring"):
        env[unsafe] = None  # Argo CD's sandbox offers none of these; the script must not need them
    env.obj = lua.table_from(obj, recursive=True)
    result = lua.execute(HEALTH_LUA)
    return {"status": result["status"], "message": result["message"]}


def crd_schema() -> dict[str, Any]:
    version = next(v for v in CRD["spec"]["versions"] if v["name"] == "v1alpha1")
    return version["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_health_of_realistic_objects(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((ARGOCD_DIR / case["inputPath"]).read_text())
    assert run_health(obj) == case["healthStatus"]


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_fixtures_match_the_crd_schema(case: dict[str, Any]) -> None:
    # The fixtures must look like what the operator can actually store.
    obj = yaml.safe_load((ARGOCD_DIR / case["inputPath"]).read_text())
    assert obj["apiVersion"] == f"{CRD['spec']['group']}/v1alpha1" and obj["kind"] == CRD["spec"]["names"]["kind"]
    schema = crd_schema()["properties"]
    jsonschema.validate(obj["spec"], schema["spec"])
    if "status" in obj:
        jsonschema.validate(obj["status"], schema["status"])


def test_every_fixture_has_an_expectation() -> None:
    used = {Path(c["inputPath"]).name for c in CASES}
    assert used == {p.name for p in (ARGOCD_DIR / "testdata").glob("*.yaml")}
    assert {c["healthStatus"]["status"] for c in CASES} == {"Healthy", "Progressing", "Degraded"}


@pytest.mark.parametrize("obj", [
    {},
    {"metadata": {}},
    {"metadata": {"generation": 1}, "status": {}},
    {"metadata": {"generation": 1}, "status": {"conditions": []}},
    {"metadata": {"generation": 2}, "status": {"observedGeneration": 2, "conditions": [{"type": "Ready"}]}},
    {"metadata": {"generation": 2}, "status": {"observedGeneration": 2, "state": "running",
                                               "conditions": [{"type": "Synced", "status": "False"}]}},
], ids=["empty", "no-generation", "empty-status", "no-conditions", "condition-without-status", "reason-missing"])
def test_partial_objects_never_break_the_script(obj: dict[str, Any]) -> None:
    health = run_health(obj)
    assert health["status"] == "Progressing" and health["message"]


def test_ready_condition_for_an_older_generation_is_not_healthy() -> None:
    obj = yaml.safe_load((ARGOCD_DIR / "testdata" / "healthy.yaml").read_text())
    obj["status"]["conditions"][0]["observedGeneration"] = 1  # status.observedGeneration is 2
    assert run_health(obj)["status"] == "Progressing"


def test_terminal_reason_with_status_true_is_not_degraded() -> None:
    obj = yaml.safe_load((ARGOCD_DIR / "testdata" / "healthy.yaml").read_text())
    obj["status"]["conditions"][1]["reason"] = "TerminalNothingReally"
    assert run_health(obj)["status"] == "Healthy"


@pytest.mark.parametrize("reason", [r.value for r in Reason])
def test_health_check_agrees_with_reason_is_terminal(reason: str) -> None:
    """``Reason.is_terminal`` is the one definition; the Lua check must read every reason the same way."""
    obj = {
        "apiVersion": "clickhouse.cloud/v1alpha1",
        "kind": "ManagedPostgres",
        "metadata": {"name": "x", "namespace": "y", "generation": 2},
        "spec": {},
        "status": {
            "observedGeneration": 1,
            "conditions": [
                {"type": "Ready", "status": "False", "reason": reason, "message": "m", "observedGeneration": 2},
                {"type": "Synced", "status": "False", "reason": reason, "message": "m", "observedGeneration": 2},
            ],
        },
    }
    degraded = run_health(obj)["status"] == "Degraded"
    assert degraded is Reason(reason).is_terminal
