"""Real kubectl, default flags, against the real kube-apiserver (``real_kubeconfig``) with the
project's CRDs: what ``test_kubectl.py`` shows against the emulator, shown on the real server, and
where the output is the server's (``explain``, the Table columns, error texts) compared with the
emulator's answer to the same command.

No operator runs here (``test_kubectl.py`` runs it, against the emulator): the status a user would
see is written through the status subresource, as the operator writes it. Every test has a
namespace of its own; the control plane is shared by the session.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from clients_support import REPO_ROOT, Client, make_client, table
from support import realkube

from kubeemu import KubeEmulator
from mpg_operator import crd as crd_module

HOST = "orders-db-6d8d2e3e.pg.example.test"


@pytest.fixture(scope="module")
def api(real_api: Any) -> Any:
    return real_api


@pytest.fixture(scope="module")
def kubectl(api: Any, real_kubeconfig: Path, client_tools: dict[str, Path]) -> Client:
    client = make_client(client_tools["kubectl"], real_kubeconfig)
    client("apply", "-f", "deploy/crds/")  # as a user installs them (they may be there already)
    return client


@pytest.fixture(scope="module")
def emulated(client_tools: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """kubectl against the emulator with the same CRD: to compare its output with the real server's."""
    with KubeEmulator(crds=[crd_module.crd()], namespaces=["default"]) as emu:
        yield make_client(client_tools["kubectl"], emu.write_kubeconfig(tmp_path_factory.mktemp("emu") / "kubeconfig"))
        assert emu.server_errors == []


@pytest.fixture
def ns(api: Any) -> Iterator[str]:
    with realkube.fresh_namespace(api, "kubectl") as name:
        yield name


def mpg(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "clickhouse.cloud/v1alpha1",
        "kind": "ManagedPostgres",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"provider": "aws", "region": "us-west-2", "size": "r8gd.large", **spec},
    }


def ready_status(kubectl: Client, name: str, namespace: str) -> None:
    """What the operator writes once the service runs (through the status subresource)."""
    status = {
        "status": {
            "state": "running",
            "size": "r8gd.large",
            "hostname": HOST,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Running",
                    "message": "the service is running",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
    }
    kubectl("patch", "mpg", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(status))


def test_apply_rejects_unknown_fields_without_storing(kubectl: Client, ns: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(mpg("typo-db", ns, sise="r8gd.xlarge")))
    proc = kubectl.run("apply", "-f", str(bad), check=False)
    assert proc.returncode == 1
    assert 'strict decoding error: unknown field "spec.sise"' in proc.stderr
    missing = kubectl.run("get", "mpg", "typo-db", "-n", ns, check=False)
    assert "NotFound" in missing.stderr
    # The same manifest without the typo is created.
    bad.write_text(yaml.safe_dump(mpg("typo-db", ns)))
    assert "managedpostgres.clickhouse.cloud/typo-db created" in kubectl("apply", "-f", str(bad))


def test_the_crd_refuses_through_kubectl_as_through_the_emulator(
    kubectl: Client, emulated: Client, ns: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump(mpg("bad-region", ns, region="US-WEST-2")))
    real = kubectl.run("apply", "-f", str(manifest), check=False)
    assert real.returncode == 1
    assert 'spec.region: Invalid value: "US-WEST-2": region must be a cloud region name' in real.stderr
    emulator_manifest = tmp_path / "bad-emu.yaml"
    emulator_manifest.write_text(yaml.safe_dump(mpg("bad-region", "default", region="US-WEST-2")))
    emu = emulated.run("apply", "-f", str(emulator_manifest), check=False)
    assert emu.returncode == 1
    assert emu.stderr.replace(str(emulator_manifest), "M") == real.stderr.replace(str(manifest), "M")


def test_get_shows_printer_columns_and_wait_sees_ready(kubectl: Client, ns: str, tmp_path: Path) -> None:
    path = tmp_path / "db.yaml"
    path.write_text(yaml.safe_dump(mpg("orders-db", ns)))
    kubectl("apply", "-f", str(path))
    pending = kubectl.run("wait", "--for=condition=Ready", "mpg/orders-db", "-n", ns, "--timeout=1s", check=False)
    assert pending.returncode == 1 and "timed out waiting for the condition" in pending.stderr
    ready_status(kubectl, "orders-db", ns)
    out = kubectl("wait", "--for=condition=Ready", "mpg/orders-db", "-n", ns, "--timeout=30s")
    assert out.strip() == "managedpostgres.clickhouse.cloud/orders-db condition met"
    rows = table(kubectl("get", "mpg", "-A"))
    row = next(r for r in rows if r["NAME"] == "orders-db" and r["NAMESPACE"] == ns)
    assert (row["READY"], row["STATE"], row["SIZE"], row["REGION"], row["HOST"]) == (
        "True",
        "running",
        "r8gd.large",
        "us-west-2",
        HOST,
    )
    assert row["AGE"].endswith("s")
    header = kubectl("get", "mpg", "-n", ns).splitlines()[0].split()
    assert header == ["NAME", "READY", "STATE", "SIZE", "REGION", "HOST", "AGE"]
    # --for=delete returns once the object is gone (no finalizer without the operator).
    kubectl("delete", "mpg", "orders-db", "-n", ns, "--wait=false")
    kubectl("wait", "--for=delete", "mpg/orders-db", "-n", ns, "--timeout=30s")


def test_printer_columns_match_the_emulators(kubectl: Client, emulated: Client, ns: str, tmp_path: Path) -> None:
    for client, namespace in ((kubectl, ns), (emulated, "default")):
        path = tmp_path / f"{namespace}.yaml"
        path.write_text(yaml.safe_dump(mpg("columns-db", namespace, haType="sync")))
        client("apply", "-f", str(path))
        ready_status(client, "columns-db", namespace)
    wide = [
        table(c("get", "mpg", "columns-db", "-n", n, "-o", "wide")) for c, n in ((kubectl, ns), (emulated, "default"))
    ]
    for rows in wide:
        rows[0].pop("AGE")
    assert wide[0] == wide[1]
    assert wide[0] == [
        {
            "NAME": "columns-db",
            "READY": "True",
            "STATE": "running",
            "SIZE": "r8gd.large",
            "REGION": "us-west-2",
            "HOST": HOST,
        }
    ]


def test_explain_uses_the_crd_schema_as_on_the_emulator(kubectl: Client, emulated: Client) -> None:
    out = kubectl("explain", "managedpostgres.spec")
    assert "KIND:       ManagedPostgres" in out
    assert "FIELD: spec <Object>" in out
    for field in ("provider", "region", "size", "haType", "credentialsRef", "deletionPolicy", "pgConfig"):
        assert f"  {field}\t<" in out, field
    assert "enum: Delete, Orphan" in out
    assert "ENUM:\n    Never\n    OnConfigChange" in kubectl("explain", "managedpostgres.spec.restartPolicy")
    for path in ("managedpostgres", "managedpostgres.spec", "managedpostgres.spec.pgConfig", "managedpostgres.status"):
        assert kubectl("explain", path) == emulated("explain", path), path
    assert kubectl("explain", "managedpostgres", "--recursive") == emulated("explain", "managedpostgres", "--recursive")


def test_server_side_apply_conflicts_and_force(kubectl: Client, ns: str, tmp_path: Path) -> None:
    manifest = tmp_path / "cm.yaml"

    def write(data: dict[str, str]) -> None:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": ns}}
        manifest.write_text(yaml.safe_dump({**body, "data": data}))

    def stored() -> dict[str, Any]:
        return json.loads(kubectl("get", "configmap", "app-config", "-n", ns, "-o", "json", "--show-managed-fields"))

    write({"color": "blue", "size": "m"})
    assert "serverside-applied" in kubectl("apply", "--server-side", "-f", str(manifest))
    kubectl("patch", "configmap", "app-config", "-n", ns, "--type=merge", "-p", '{"data":{"color":"red"}}')
    proc = kubectl.run("apply", "--server-side", "-f", str(manifest), check=False)
    assert proc.returncode == 1
    assert 'Apply failed with 1 conflict: conflict with "kubectl-patch"' in proc.stderr
    assert ".data.color" in proc.stderr
    assert stored()["data"]["color"] == "red"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(manifest))
    cm = stored()
    assert cm["data"] == {"color": "blue", "size": "m"}
    owners = {e["manager"]: e for e in cm["metadata"]["managedFields"]}
    assert owners["kubectl"]["operation"] == "Apply"
    assert set(owners["kubectl"]["fieldsV1"]["f:data"]) == {"f:color", "f:size"}
    assert "kubectl-patch" not in owners  # its only field was taken over
    write({"color": "blue"})  # a field dropped from the applied configuration is removed
    kubectl("apply", "--server-side", "-f", str(manifest))
    assert stored()["data"] == {"color": "blue"}
    # The custom resource, server-side: a field another manager set conflicts the same way.
    db = tmp_path / "db.yaml"
    db.write_text(yaml.safe_dump(mpg("ssa-db", ns, tags={"team": "orders"})))
    kubectl("apply", "--server-side", "-f", str(db))
    kubectl("patch", "mpg", "ssa-db", "-n", ns, "--type=merge", "-p", '{"spec":{"tags":{"team":"billing"}}}')
    conflict = kubectl.run("apply", "--server-side", "-f", str(db), check=False)
    assert conflict.returncode == 1 and ".spec.tags.team" in conflict.stderr
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(db))
    body = json.loads(kubectl("get", "mpg", "ssa-db", "-n", ns, "-o", "json"))
    assert body["spec"]["tags"] == {"team": "orders"}


def test_crd_rules_answer_through_kubectl_patch(kubectl: Client, ns: str, tmp_path: Path) -> None:
    path = tmp_path / "db.yaml"
    path.write_text(yaml.safe_dump(mpg("immutable-db", ns)))
    kubectl("apply", "-f", str(path))
    proc = kubectl.run(
        "patch", "mpg", "immutable-db", "-n", ns, "--type=merge", "-p", '{"spec":{"region":"eu-west-1"}}', check=False
    )
    assert proc.returncode == 1
    assert (
        'The ManagedPostgres "immutable-db" is invalid: spec.region: Invalid value: "eu-west-1": region is immutable'
        in proc.stderr
    )
    example = yaml.safe_load((REPO_ROOT / "deploy" / "examples" / "orders-db.yaml").read_text())
    example["metadata"]["namespace"] = ns
    path.write_text(yaml.safe_dump(example))
    assert "managedpostgres.clickhouse.cloud/orders-db created" in kubectl("apply", "-f", str(path))


def test_error_texts_match_the_emulators(kubectl: Client, emulated: Client, ns: str, tmp_path: Path) -> None:
    """The same mistakes through kubectl on both servers: the same words (names and paths aside)."""

    def answers(client: Client, namespace: str) -> list[str]:
        def run(*args: str, manifest: dict[str, Any] | None = None) -> str:
            if manifest is not None:
                path = tmp_path / f"{namespace}.yaml"
                path.write_text(yaml.safe_dump(manifest))
                args = (*args, "-f", str(path))
            proc = client.run(*args, check=False)
            assert proc.returncode != 0, args
            return proc.stderr.replace(namespace, "NS").replace(str(tmp_path), "TMP")

        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "errs", "namespace": namespace}}
        client("apply", "--server-side", "-f", "-", input=yaml.safe_dump({**cm, "data": {"a": "1"}}))
        client("patch", "configmap", "errs", "-n", namespace, "--type=merge", "-p", '{"data":{"a":"2"}}')
        return [
            run("apply", manifest=mpg("typo-db", namespace, sise="x")),
            run("apply", "--server-side", manifest=mpg("typo-db", namespace, sise="x")),
            run("apply", "--server-side", manifest={**cm, "data": {"a": "1"}}),
            run("get", "mpg", "nope", "-n", namespace),
            run("create", "namespace", namespace),
            run("apply", manifest=mpg("bad-db", namespace, provider="azure", tags={"chc_x": True})),
        ]

    emu, real = answers(emulated, "default"), answers(kubectl, ns)
    assert "failed to create typed patch object (NS/typo-db;" in real[1] and "field not declared in schema" in real[1]
    assert emu[:-1] == real[:-1]
    # Several schema errors: the real server lists them in no stable order (Go map iteration), the
    # emulator by path; the same lines either way.
    assert sorted(emu[-1].splitlines()) == sorted(real[-1].splitlines())
    assert len(real[-1].splitlines()) == 4
