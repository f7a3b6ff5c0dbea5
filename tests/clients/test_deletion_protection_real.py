"""Deletion protection on the real kube-apiserver: the ValidatingAdmissionPolicy of
``deploy/admission/deletion-protection.yaml``, applied with kubectl, evaluated by the server.

``tests/deploy/test_deploy_deletion_protection.py`` evaluates the same CEL with cel-python and checks
the manifests and the chart; this module shows the server's verdict as a user meets it: ``kubectl
delete`` of a protected ManagedPostgres is refused with the policy's message, an unprotected one is
deleted, and deleting a namespace that holds a protected one leaves the namespace Terminating (the
namespace controller's DELETEs are refused too, and so are the deletions of the same kind that come after
the refused one) until the command the message names turns protection off. The emulator stores ValidatingAdmissionPolicies but does not evaluate them (its README), so this
runs on the real server only.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from clients_support import REPO_ROOT, Client, make_client
from support import realkube

MANIFEST = REPO_ROOT / "deploy" / "admission" / "deletion-protection.yaml"
POLICY = "mpg-operator-deletion-protection"


def expected_message(name: str, namespace: str) -> str:
    """The policy's messageExpression, as docs/install.md quotes it."""
    return (
        f"ManagedPostgres {namespace}/{name} has spec.deletionProtection: true and was not deleted. To delete it "
        f"deliberately, turn protection off first: kubectl patch managedpostgres {name} -n {namespace} --type merge "
        f'-p \'{{"spec":{{"deletionProtection":false}}}}\' then delete it again (its spec.deletionPolicy decides '
        "whether the ClickHouse Cloud service is deleted or kept)."
    )


def mpg(name: str, namespace: str, **spec: Any) -> str:
    body = {
        "apiVersion": "clickhouse.cloud/v1alpha1",
        "kind": "ManagedPostgres",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"provider": "aws", "region": "us-west-2", "size": "r8gd.large", **spec},
    }
    return yaml.safe_dump(body)


@pytest.fixture(scope="module")
def api(real_api: Any) -> Any:
    return real_api


@pytest.fixture(scope="module")
def kubectl(api: Any, real_kubeconfig: Path, client_tools: dict[str, Path]) -> Iterator[Client]:
    """kubectl with the policy and its binding applied (removed again at the end: it is cluster-wide)."""
    client = make_client(client_tools["kubectl"], real_kubeconfig)
    out = client("apply", "-f", str(MANIFEST))
    assert f"validatingadmissionpolicy.admissionregistration.k8s.io/{POLICY}" in out
    assert f"validatingadmissionpolicybinding.admissionregistration.k8s.io/{POLICY}" in out
    _wait_until_enforced(client, api)
    yield client
    client("delete", "-f", str(MANIFEST), "--ignore-not-found")


def _wait_until_enforced(kubectl: Client, api: Any) -> None:
    """A new policy takes effect once the server has compiled it: probe with a dry-run DELETE."""
    with realkube.fresh_namespace(api, "vap-probe") as ns:
        kubectl("apply", "-f", "-", input=mpg("probe", ns, deletionProtection=True))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            proc = kubectl.run("delete", "mpg", "probe", "-n", ns, "--dry-run=server", check=False)
            if proc.returncode != 0 and POLICY in proc.stderr:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the policy was not enforced within 30 s: {proc.stdout} {proc.stderr}")
        kubectl("patch", "mpg", "probe", "-n", ns, "--type=merge", "-p", '{"spec":{"deletionProtection":false}}')


@pytest.fixture
def ns(api: Any) -> Iterator[str]:
    with realkube.fresh_namespace(api, "vap") as name:
        yield name


def test_a_protected_resource_is_refused_with_the_policys_message(kubectl: Client, ns: str) -> None:
    kubectl("apply", "-f", "-", input=mpg("orders-db", ns, deletionProtection=True))
    proc = kubectl.run("delete", "mpg", "orders-db", "-n", ns, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f'Error from server (Forbidden): managedpostgreses.clickhouse.cloud "orders-db" is forbidden: '
        f"ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: "
        + expected_message("orders-db", ns)
    )
    assert (
        kubectl("get", "mpg", "orders-db", "-n", ns, "-o", "name").strip()
        == "managedpostgres.clickhouse.cloud/orders-db"
    )
    # The way out the message names, run as written, then the delete goes through.
    command = expected_message("orders-db", ns).split("first: ", 1)[1].split(" then delete", 1)[0]
    argv = shlex.split(command)
    assert argv[0] == "kubectl"
    assert "patched" in kubectl(*argv[1:])
    assert 'managedpostgres.clickhouse.cloud "orders-db" deleted' in kubectl("delete", "mpg", "orders-db", "-n", ns)


@pytest.mark.parametrize(
    "spec",
    [{"deletionProtection": False}, {}, {"deletionProtection": False, "deletionPolicy": "Orphan"}],
    ids=["protection-false", "field-absent", "orphan-unprotected"],
)
def test_an_unprotected_resource_is_deleted(kubectl: Client, ns: str, spec: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", input=mpg("scratch-db", ns, **spec))
    out = kubectl("delete", "mpg", "scratch-db", "-n", ns)
    assert 'managedpostgres.clickhouse.cloud "scratch-db" deleted' in out
    assert "NotFound" in kubectl.run("get", "mpg", "scratch-db", "-n", ns, check=False).stderr


def test_deleting_the_namespace_of_a_protected_resource_stays_refused(kubectl: Client, api: Any) -> None:
    with realkube.fresh_namespace(api, "vap-ns") as ns:
        kubectl("apply", "-f", "-", input=mpg("orders-db", ns, deletionProtection=True))
        kubectl("apply", "-f", "-", input=mpg("scratch-db", ns))
        kubectl("delete", "namespace", ns, "--wait=false")
        # The namespace controller deletes what it can and reports what it could not.
        deadline = time.monotonic() + 60
        failure: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            namespace = json.loads(kubectl("get", "namespace", ns, "-o", "json"))
            conditions = {c["type"]: c for c in namespace["status"].get("conditions") or []}
            failure = conditions.get("NamespaceDeletionContentFailure")
            if failure and failure["status"] == "True":
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the namespace controller reported no refused deletion: {failure}")
        assert namespace["status"]["phase"] == "Terminating"
        assert expected_message("orders-db", ns) in failure["message"]
        assert failure["reason"] == "ContentDeletionFailed"
        # The namespace controller deletes a kind with one DELETE of the collection; the server deletes
        # its items in name order and stops at the first refusal: an unprotected ManagedPostgres named
        # after the protected one stays too (until protection is off). The controller retries: still refused.
        time.sleep(3)
        remaining = json.loads(kubectl("get", "mpg", "-n", ns, "-o", "json"))["items"]
        assert sorted(item["metadata"]["name"] for item in remaining) == ["orders-db", "scratch-db"]
        # Protection off: the namespace controller finishes on its next pass.
        kubectl("patch", "mpg", "orders-db", "-n", ns, "--type=merge", "-p", '{"spec":{"deletionProtection":false}}')
        kubectl("wait", "--for=delete", f"namespace/{ns}", "--timeout=90s")
        assert "NotFound" in kubectl.run("get", "namespace", ns, check=False).stderr
