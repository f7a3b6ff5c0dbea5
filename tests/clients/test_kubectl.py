"""Real kubectl 1.35, default flags, against the demo's stand-ins with the operator running.

One sandbox (simulator without PostgreSQL + Kubernetes emulator + operator) serves the whole module;
the tests run in file order as a newcomer would type the commands: create the namespace and the
credentials Secret (typed, protobuf bodies), apply the CRDs and the examples (client-side apply,
validated through the server's OpenAPI), wait for Ready, read the printer columns, explain, patch,
replace, edit, server-side apply (with a conflict), events in both API groups, delete.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from clients_support import REPO_ROOT, Client, make_client, table

from mpg_operator.sandbox import Sandbox

NS = "shop"
MPG = "orders-db"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    options = {
        "create_seconds": 0.3,
        "delete_seconds": 0.2,
        "resize_seconds": 0.3,
        "rate_limit": None,
        "real_postgres": False,
    }
    with Sandbox(simulator_options=options, namespaces=("default",)) as sb:
        yield sb
        assert sb.kube.server_errors == []


@pytest.fixture(scope="module")
def kubectl(sandbox: Sandbox, client_tools: dict[str, Path]) -> Client:
    return make_client(client_tools["kubectl"], sandbox.kubeconfig)


@pytest.fixture(scope="module")
def credentials_env(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulator's API key as an env file (so no secret appears on a command line)."""
    path = tmp_path_factory.mktemp("creds") / "clickhouse-cloud.env"
    sim = sandbox.simulator
    path.write_text(f"keyId={sim.key_id}\nkeySecret={sim.key_secret}\norganizationId={sim.org_id}\n")
    path.chmod(0o600)
    return path


def test_typed_create_namespace_and_secret(sandbox: Sandbox, kubectl: Client, credentials_env: Path) -> None:
    # kubectl's typed `create` commands send protobuf bodies whatever the server advertises.
    assert kubectl("create", "namespace", NS).strip() == f"namespace/{NS} created"
    out = kubectl("create", "secret", "generic", "clickhouse-cloud", "-n", NS, f"--from-env-file={credentials_env}")
    assert out.strip() == "secret/clickhouse-cloud created"
    stored = sandbox.kube.get("v1", "Secret", "clickhouse-cloud", NS)
    assert stored["type"] == "Opaque"
    decoded = {k: base64.b64decode(v).decode() for k, v in stored["data"].items()}
    assert decoded == {
        "keyId": sandbox.simulator.key_id,
        "keySecret": sandbox.simulator.key_secret,
        "organizationId": sandbox.simulator.org_id,
    }
    assert sandbox.kube.get("v1", "Namespace", NS)["status"]["phase"] == "Active"
    kubectl("create", "configmap", "settings", "-n", NS, "--from-literal=mode=demo")
    kubectl("create", "serviceaccount", "robot", "-n", NS)
    assert sandbox.kube.get("v1", "ConfigMap", "settings", NS)["data"] == {"mode": "demo"}
    assert sandbox.kube.get("v1", "ServiceAccount", "robot", NS) is not None
    kubectl("create", "service", "clusterip", "orders-api", "-n", NS, "--tcp=80:8080")
    service = sandbox.kube.get("v1", "Service", "orders-api", NS)
    assert service["spec"]["ports"] == [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}]
    assert service["spec"]["selector"] == {"app": "orders-api"} and service["spec"]["type"] == "ClusterIP"
    # A second create is the real server's AlreadyExists Status.
    again = kubectl.run("create", "namespace", NS, check=False)
    assert again.returncode == 1
    assert f'Error from server (AlreadyExists): namespaces "{NS}" already exists' in again.stderr


def test_apply_crds_and_examples_validated_and_operator_makes_it_ready(
    sandbox: Sandbox, kubectl: Client, credentials_env: Path, tmp_path: Path
) -> None:
    out = kubectl("apply", "-f", "deploy/crds/")
    assert "customresourcedefinition.apiextensions.k8s.io/managedpostgreses.clickhouse.cloud" in out
    # The examples as a user applies them: credentials.yaml filled in with the real key.
    examples = tmp_path / "examples"
    shutil.copytree(REPO_ROOT / "deploy" / "examples", examples)
    creds = yaml.safe_load((examples / "credentials.yaml").read_text())
    creds["stringData"] = dict(line.split("=", 1) for line in credentials_env.read_text().split())
    (examples / "credentials.yaml").write_text(yaml.safe_dump(creds))
    out = kubectl("apply", "-f", str(examples), "-v=6")
    assert "deployment.apps/orders-api created" in out
    assert "secret/clickhouse-cloud configured" in out
    assert f"managedpostgres.clickhouse.cloud/{MPG} created" in out
    assert sandbox.kube.get("apps/v1", "Deployment", "orders-api", NS)["spec"]["replicas"] == 1
    kubectl("wait", "--for=condition=Ready", f"managedpostgres/{MPG}", "-n", NS, "--timeout=60s")
    assert sandbox.is_ready(MPG, NS)


def test_apply_rejects_unknown_fields_without_storing(sandbox: Sandbox, kubectl: Client, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "clickhouse.cloud/v1alpha1",
                "kind": "ManagedPostgres",
                "metadata": {"name": "typo-db", "namespace": NS},
                "spec": {"provider": "aws", "region": "us-west-2", "size": "r8gd.large", "sise": "r8gd.xlarge"},
            }
        )
    )
    proc = kubectl.run("apply", "-f", str(bad), check=False)
    assert proc.returncode == 1
    assert 'strict decoding error: unknown field "spec.sise"' in proc.stderr
    assert sandbox.get("typo-db", NS) is None


def test_get_shows_printer_columns(sandbox: Sandbox, kubectl: Client) -> None:
    rows = table(kubectl("get", "mpg", "-A"))
    row = next(r for r in rows if r["NAME"] == MPG)
    status = sandbox.get(MPG, NS)["status"]
    assert row["NAMESPACE"] == NS
    assert row["READY"] == "True"
    assert row["STATE"] == "running"
    assert row["SIZE"] == "r8gd.large"
    assert row["REGION"] == "us-west-2"
    assert row["HOST"] == status["hostname"]
    assert row["AGE"].endswith("s")


def test_get_watch_streams_table_rows(sandbox: Sandbox, kubectl: Client) -> None:
    proc = subprocess.Popen(
        [str(kubectl.binary), "get", "mpg", "-n", NS, "--watch", "--request-timeout=20s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=kubectl.env(),
    )
    try:
        header, first = proc.stdout.readline(), proc.stdout.readline()
        assert header.split()[:6] == ["NAME", "READY", "STATE", "SIZE", "REGION", "HOST"]
        assert first.split()[:3] == [MPG, "True", "running"]
        sandbox.kube.store.patch(
            sandbox.kube.store.resolve("clickhouse.cloud", "v1alpha1", "managedpostgreses"),
            NS,
            MPG,
            "application/merge-patch+json",
            {"metadata": {"labels": {"watched": "yes"}}},
        )
        changed = proc.stdout.readline()
        assert changed.split()[:3] == [MPG, "True", "running"]  # a MODIFIED event, printed as a row
    finally:
        proc.kill()
        proc.wait()


def test_builtin_kinds_show_their_usual_columns(kubectl: Client) -> None:
    headers = {
        "namespaces": ["NAME", "STATUS", "AGE"],
        "secrets": ["NAME", "TYPE", "DATA", "AGE"],
        "configmaps": ["NAME", "DATA", "AGE"],
        "deployments": ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "services": ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
        "serviceaccounts": ["NAME", "SECRETS", "AGE"],
        "events": ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
    }
    for resource, expected in headers.items():
        out = kubectl("get", resource, "-n", NS)
        assert out.splitlines()[0].split() == " ".join(expected).split(), (resource, out)
    secrets = {r["NAME"]: r for r in table(kubectl("get", "secrets", "-n", NS))}
    assert secrets["clickhouse-cloud"]["TYPE"] == "Opaque" and secrets["clickhouse-cloud"]["DATA"] == "3"
    conn = secrets[f"{MPG}-connection"]
    assert int(conn["DATA"]) >= 8
    namespaces = {r["NAME"]: r["STATUS"] for r in table(kubectl("get", "namespaces"))}
    assert namespaces[NS] == "Active"
    svc = table(kubectl("get", "services", "-n", NS))[0]
    assert svc["NAME"] == "orders-api" and svc["TYPE"] == "ClusterIP" and svc["CLUSTER-IP"].startswith("10.96.")
    assert svc["PORT(S)"] == "80/TCP"
    deploy = table(kubectl("get", "deployments", "-n", NS))[0]
    assert deploy["NAME"] == "orders-api" and deploy["READY"] == "0/1"


def test_admission_policy_and_binding_are_stored(sandbox: Sandbox, kubectl: Client) -> None:
    manifests = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": "mpg-sizes"},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["clickhouse.cloud"],
                            "apiVersions": ["*"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["managedpostgreses"],
                        }
                    ]
                },
                "validations": [{"expression": "object.spec.size.startsWith('r8gd.')"}],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": "mpg-sizes"},
            "spec": {"policyName": "mpg-sizes", "validationActions": ["Deny"]},
        },
    ]
    out = kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(m) for m in manifests))
    assert "validatingadmissionpolicy.admissionregistration.k8s.io/mpg-sizes created" in out
    assert "validatingadmissionpolicybinding.admissionregistration.k8s.io/mpg-sizes created" in out
    policy = sandbox.kube.get("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", "mpg-sizes")
    assert policy["spec"]["validations"][0]["expression"].startswith("object.spec.size")
    rows = table(kubectl("get", "validatingadmissionpolicies"))
    assert rows == [{"NAME": "mpg-sizes", "VALIDATIONS": "1", "PARAMKIND": "<unset>", "AGE": rows[0]["AGE"]}]
    rows = table(kubectl("get", "validatingadmissionpolicybindings"))
    assert rows[0]["NAME"] == "mpg-sizes" and rows[0]["POLICYNAME"] == "mpg-sizes"
    kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", "mpg-sizes")
    assert sandbox.kube.list("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") == []


def test_explain_uses_the_crd_schema(kubectl: Client) -> None:
    out = kubectl("explain", "managedpostgres.spec")
    assert "KIND:       ManagedPostgres" in out
    assert "FIELD: spec <Object>" in out
    for field in ("provider", "region", "size", "haType", "credentialsRef", "deletionPolicy"):
        assert f"  {field}\t<" in out, field
    assert "enum: Delete, Orphan" in out
    assert "  region\t<string>\n" in out  # required by a CEL rule, except for a read replica or a restore
    assert "FIELD: region <string>" in kubectl("explain", "managedpostgres.spec.region")
    for field in ("pgConfig", "pgBouncerConfig", "restartPolicy", "readReplicaOf", "restoreFrom"):
        assert f"  {field}\t<" in out, field
    config = kubectl("explain", "managedpostgres.spec.pgConfig")
    assert "FIELD: pgConfig <map[string]string>" in config and "restart" in config
    assert "ENUM:\n    Never\n    OnConfigChange" in kubectl("explain", "managedpostgres.spec.restartPolicy")


def test_patch_replace_and_edit(sandbox: Sandbox, kubectl: Client, tmp_path: Path) -> None:
    before = sandbox.get(MPG, NS)["metadata"]["generation"]
    kubectl("patch", "mpg", MPG, "-n", NS, "--type=merge", "-p", '{"spec":{"tags":{"team":"orders","tier":"gold"}}}')
    obj = sandbox.get(MPG, NS)
    assert obj["spec"]["tags"] == {"team": "orders", "tier": "gold"}
    assert obj["metadata"]["generation"] == before + 1
    # The real server's CEL rules answer through kubectl: region is immutable.
    proc = kubectl.run(
        "patch", "mpg", MPG, "-n", NS, "--type=merge", "-p", '{"spec":{"region":"eu-west-1"}}', check=False
    )
    assert proc.returncode == 1 and "spec.region: Invalid value" in proc.stderr and "immutable" in proc.stderr
    # replace: GET, change, PUT (with the resourceVersion read)
    manifest = tmp_path / "mpg.yaml"
    manifest.write_text(kubectl("get", "mpg", MPG, "-n", NS, "-o", "yaml"))
    body = yaml.safe_load(manifest.read_text())
    body["spec"]["tags"]["owner"] = "alice"
    manifest.write_text(yaml.safe_dump(body))
    assert "replaced" in kubectl("replace", "-f", str(manifest))
    assert sandbox.get(MPG, NS)["spec"]["tags"]["owner"] == "alice"
    # A stale replace is the optimistic-concurrency Conflict.
    stale = kubectl.run("replace", "-f", str(manifest), check=False)
    assert stale.returncode == 1 and "the object has been modified" in stale.stderr
    # kubectl edit with a scripted editor
    out = kubectl("edit", "mpg", MPG, "-n", NS, EDITOR="sed -i s/owner:\\ alice/owner:\\ bob/")
    assert "edited" in out
    assert sandbox.get(MPG, NS)["spec"]["tags"]["owner"] == "bob"
    managers = {e["manager"] for e in sandbox.get(MPG, NS)["metadata"]["managedFields"]}
    assert {"kubectl-client-side-apply", "kubectl-patch", "kubectl-replace", "kubectl-edit"} <= managers
    # ... and the operator picks the change up (tags are sent with the next update)
    sandbox.wait_for(
        lambda: (
            sandbox.get(MPG, NS)["status"].get("observedGeneration") == sandbox.get(MPG, NS)["metadata"]["generation"]
        ),
        timeout=30,
        what="observed",
    )


def test_server_side_apply_conflicts_and_force(sandbox: Sandbox, kubectl: Client, tmp_path: Path) -> None:
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "app-config", "namespace": NS},
                "data": {"color": "blue", "size": "m"},
            }
        )
    )
    assert "serverside-applied" in kubectl("apply", "--server-side", "-f", str(manifest))
    kubectl("patch", "configmap", "app-config", "-n", NS, "--type=merge", "-p", '{"data":{"color":"red"}}')
    proc = kubectl.run("apply", "--server-side", "-f", str(manifest), check=False)
    assert proc.returncode == 1
    assert 'Apply failed with 1 conflict: conflict with "kubectl-patch"' in proc.stderr
    assert ".data.color" in proc.stderr
    assert sandbox.kube.get("v1", "ConfigMap", "app-config", NS)["data"]["color"] == "red"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(manifest))
    cm = sandbox.kube.get("v1", "ConfigMap", "app-config", NS)
    assert cm["data"] == {"color": "blue", "size": "m"}
    owners = {e["manager"]: e for e in cm["metadata"]["managedFields"]}
    assert owners["kubectl"]["operation"] == "Apply"
    assert set(owners["kubectl"]["fieldsV1"]["f:data"]) == {"f:color", "f:size"}
    assert "kubectl-patch" not in owners  # its only field was taken over
    # A field dropped from the applied configuration is removed (nobody else owns it).
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "app-config", "namespace": NS},
                "data": {"color": "blue"},
            }
        )
    )
    kubectl("apply", "--server-side", "-f", str(manifest))
    assert sandbox.kube.get("v1", "ConfigMap", "app-config", NS)["data"] == {"color": "blue"}
    # Server-side apply of the custom resource (kubectl migrates the client-side apply ownership).
    body = yaml.safe_load((REPO_ROOT / "deploy" / "examples" / "orders-db.yaml").read_text())
    body["spec"]["tags"] = {"team": "orders", "tier": "gold", "owner": "bob", "ssa": "yes"}
    mpg = tmp_path / "mpg.yaml"
    mpg.write_text(yaml.safe_dump(body))
    proc = kubectl.run("apply", "--server-side", "-f", str(mpg), check=False)
    if proc.returncode != 0:  # fields last written by kubectl-edit/-replace conflict, as on a real server
        assert "Apply failed with" in proc.stderr and "conflict" in proc.stderr
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(mpg))
    assert sandbox.get(MPG, NS)["spec"]["tags"]["ssa"] == "yes"


def test_events_served_in_both_groups(sandbox: Sandbox, kubectl: Client) -> None:
    rows = table(kubectl("get", "events", "-n", NS))
    created = [r for r in rows if r["REASON"] == "Created"]
    assert created and created[0]["OBJECT"] == f"managedpostgres/{MPG}" and created[0]["TYPE"] == "Normal"
    core = json.loads(kubectl("get", "events.v1.", "-n", NS, "-o", "json"))["items"]
    new = json.loads(kubectl("get", "events.v1.events.k8s.io", "-n", NS, "-o", "json"))["items"]
    assert {e["metadata"]["name"] for e in core} == {e["metadata"]["name"] for e in new}
    by_name = {e["metadata"]["name"]: e for e in new}
    for event in core:
        converted = by_name[event["metadata"]["name"]]
        assert converted["regarding"] == event["involvedObject"]
        assert converted["note"] == event["message"]
        assert converted["reason"] == event["reason"]
    assert "Created" in kubectl("get", "events.events.k8s.io", "-n", NS)


def test_status_errors_and_unsupported_media_types(sandbox: Sandbox, kubectl: Client) -> None:
    proc = kubectl.run("get", "mpg", "nope", "-n", NS, check=False)
    assert proc.stderr.strip() == 'Error from server (NotFound): managedpostgreses.clickhouse.cloud "nope" not found'
    url = f"{sandbox.kube.url}/api/v1/namespaces/{NS}/configmaps/app-config"
    request = urllib.request.Request(url, data=b"data: {}", method="PATCH", headers={"Content-Type": "text/plain"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    status = json.loads(caught.value.read())
    assert caught.value.code == 415 and status["kind"] == "Status" and status["reason"] == "UnsupportedMediaType"
    for media_type in (
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ):
        assert media_type in status["message"]


def test_delete_waits_for_the_operator(sandbox: Sandbox, kubectl: Client) -> None:
    service_id = sandbox.get(MPG, NS)["status"]["serviceId"]
    out = kubectl("delete", "-f", "deploy/examples/orders-db.yaml", "--timeout=60s")
    assert f'managedpostgres.clickhouse.cloud "{MPG}" deleted' in out
    assert sandbox.get(MPG, NS) is None
    remote = {s.id: s for s in sandbox.remote_services()}
    assert service_id not in remote or getattr(remote[service_id], "state", "") in ("deleting", "deleted")
    assert "No resources found" in kubectl.run("get", "mpg", "-A").stderr
