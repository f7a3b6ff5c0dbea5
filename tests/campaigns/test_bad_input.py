"""The bad-input corpus (``bad_inputs.py``): every case rejected by the CRD, or conditioned by the
operator with a clear message, a Warning event and no avoidable mutating API call.

* CRD cases run against the real kube-apiserver (``real_kubeconfig``) and against the Kubernetes
  emulator, both with the project's CRD (fast, no operator): the emulator must give the real verdicts.
* Operator cases run end to end in one Sandbox (simulator without PostgreSQL, emulator, the real
  operator): all applied at once, each with its own API key and organization, so the simulator's
  requests are counted per case by the organization in their path.

Full corpus: ``.venv/bin/pytest -q tests/campaigns/test_bad_input.py`` (about a minute).
"""

from __future__ import annotations

import copy
import re
import time
import uuid
from typing import Any

import pytest

pytest.importorskip("kmock")
pytest.importorskip("celpy")

from bad_inputs import (  # noqa: E402
    CONDITION,
    CRD,
    CRD_CASES,
    NAMESPACE,
    OPERATOR_CASES,
    BadInput,
    manifest_of,
    mp,
)
from support import realkube  # noqa: E402

from kubeemu import ApiError, KubeEmulator  # noqa: E402
from mpg_operator import crd as crd_module  # noqa: E402
from mpg_operator.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION  # noqa: E402

MUTATING = ("POST", "PATCH", "DELETE", "PUT")
_ORG_IN_PATH = re.compile(r"/v1/organizations/([^/]+)")


# --------------------------------------------------------------------------- the corpus itself


def test_the_corpus_is_large_and_well_formed():
    cases = CRD_CASES + OPERATOR_CASES
    assert len(cases) >= 80
    assert len({c.name for c in cases}) == len(cases), "case names must be unique"
    for case in cases:
        assert case.expect in (CRD, CONDITION) and case.message and case.what, case.name
        if case.expect == CONDITION:
            assert case.reason and case.condition in ("Synced", "Ready"), case.name


def test_docs_list_every_case():
    """docs/reliability.md, section "Bad input", has a row per case (regenerate it from the corpus)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text(encoding="utf-8")
    section = text.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    missing = [c.name for c in CRD_CASES + OPERATOR_CASES if f"| `{c.name}` |" not in section]
    assert missing == []


# --------------------------------------------------------------------------- CRD level (fast)


class Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class EmulatorTarget:
    """The emulator with the project's CRD (namespace ``default``)."""

    def __init__(self, emu: KubeEmulator) -> None:
        self.emu, self.namespace = emu, NAMESPACE

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.emu.apply(obj)
        except ApiError as e:
            raise Refused(e.code, e.message) from None

    def get(self, name: str) -> dict[str, Any] | None:
        return self.emu.get(API_VERSION, KIND, name, NAMESPACE)

    def delete(self, name: str) -> None:
        self.emu.delete(API_VERSION, KIND, name, NAMESPACE)


class RealTarget:
    """The real kube-apiserver (``real_kubeconfig``) with the project's CRD, in a namespace of its own.

    ``apply`` creates, or replaces what is stored (with its resourceVersion), like ``kubectl apply``
    does in effect; a refusal is the server's Status, unchanged."""

    def __init__(self, api: Any, namespace: str) -> None:
        import kubernetes

        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.namespace = namespace
        self.api_exception = kubernetes.client.ApiException

    def _in_namespace(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj["metadata"]["namespace"] = self.namespace
        return obj

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        body = self._in_namespace(obj)
        name = body["metadata"]["name"]
        try:
            try:
                return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
            except self.api_exception as e:
                if e.status != 409:
                    raise
            current = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self.custom.replace_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, body)
        except self.api_exception as e:
            raise Refused(*realkube.status_of(e)) from None

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except self.api_exception as e:
            if e.status == 404:
                return None
            raise

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)


@pytest.fixture(scope="module", params=["emulator", "real"])
def server(request: pytest.FixtureRequest):
    """The CRD's verdicts from both the emulator and the real kube-apiserver: they must agree."""
    if request.param == "emulator":
        with KubeEmulator(crds=[crd_module.crd()], namespaces=[NAMESPACE]) as emu:
            yield EmulatorTarget(emu)
            assert emu.server_errors == []
        return
    api = realkube.client(request.getfixturevalue("real_kubeconfig"))
    realkube.ensure_crd(api, crd_module.crd())
    with realkube.fresh_namespace(api, "bad-input") as namespace:
        yield RealTarget(api, namespace)


def test_a_valid_resource_is_accepted(server):
    stored = server.apply(
        mp(
            "baseline-ok",
            serviceName="orders db (eu).v2",
            postgresVersion="18",
            haType="sync",
            tags={"team": "orders", "Cost-Center.2": "a_b-c.d"},
            credentialsRef={"name": "clickhouse-cloud"},
            connectionSecret={"name": "orders.db-connection"},
            deletionPolicy="Orphan",
        )
    )
    assert stored["spec"]["serviceName"] == "orders db (eu).v2"
    assert server.apply(mp("n" * 50))  # the longest default serviceName
    assert server.apply(mp("m" * 63, serviceName="short"))  # the longest name (a label value)


@pytest.mark.parametrize("case", CRD_CASES, ids=lambda c: c.name)
def test_crd_rejects(server, case: BadInput):
    if case.old is not None:
        server.apply(copy.deepcopy(case.old))  # the valid object the update starts from
    with pytest.raises(Refused) as err:
        server.apply(manifest_of(case))
    assert err.value.code == 422, err.value.message
    assert case.message in err.value.message, f"{case.name}: {err.value.message}"
    name = case.manifest["metadata"]["name"]
    stored = server.get(name)
    if case.old is None:
        assert stored is None, "a rejected object must not be stored"
    else:
        assert stored["spec"] == case.old["spec"], "a rejected update must not change the object"
        server.delete(name)


@pytest.mark.parametrize("case", OPERATOR_CASES, ids=lambda c: c.name)
def test_operator_cases_pass_the_crd(server, case: BadInput):
    """Input only the operator or the API can judge must reach them (not be refused as malformed)."""
    body = manifest_of(case)
    body["metadata"]["name"] = "crd-ok-" + case.name
    body["spec"].pop("connectionSecret", None)  # the name-specific default-secret rule needs the real name
    assert server.apply(body)


def test_the_emulator_refuses_with_the_real_servers_words(real_kubeconfig):
    """Every CRD case, applied to the emulator and to the real kube-apiserver: the same code and the
    same whole message (not just the corpus's substring), so a user of the emulator sees what a user
    of a cluster sees."""
    api = realkube.client(real_kubeconfig)
    realkube.ensure_crd(api, crd_module.crd())
    differences = []
    with (
        KubeEmulator(crds=[crd_module.crd()], namespaces=[NAMESPACE]) as emu,
        realkube.fresh_namespace(api, "bad-input-words") as namespace,
    ):
        targets = (EmulatorTarget(emu), RealTarget(api, namespace))
        for case in CRD_CASES:
            answers = []
            for target in targets:
                if case.old is not None:
                    target.apply(copy.deepcopy(case.old))
                try:
                    target.apply(manifest_of(case))
                    answers.append((200, "accepted"))
                except Refused as refused:
                    answers.append((refused.code, refused.message))
                if case.old is not None:
                    target.delete(case.manifest["metadata"]["name"])
            if answers[0] != answers[1]:
                differences.append(f"{case.name}:\n  emulator: {answers[0]}\n  real:     {answers[1]}")
        assert emu.server_errors == []
    assert differences == [], "\n".join(differences)


# --------------------------------------------------------------------------- operator level (end to end)


def _credentials(sb: Any, case_name: str, kind: str) -> tuple[dict[str, str] | None, str | None]:
    """The case's credentials Secret data (None: no Secret) and the organization its requests go to."""
    if kind in ("missing", "none"):
        return None, None
    key_id, key_secret, org_id = sb.simulator.add_key()
    data = {"keyId": key_id, "keySecret": key_secret, "organizationId": org_id}
    if kind == "no-keySecret":
        del data["keySecret"]
    elif kind == "no-organizationId":
        del data["organizationId"]
        return data, None
    elif kind == "empty-keyId":
        data["keyId"] = ""
    elif kind == "wrong-keySecret":
        data["keySecret"] = "not-the-key-secret-" + uuid.uuid4().hex
    elif kind == "unknown-keyId":
        data["keyId"] = "unknown" + uuid.uuid4().hex[:12]
    elif kind == "wrong-org":
        data["organizationId"] = str(uuid.uuid4())
    elif kind == "org-not-uuid":
        data["organizationId"] = "not-a-uuid-" + uuid.uuid4().hex[:8]
    else:
        assert kind == "fresh", kind
    return data, data.get("organizationId")


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "stringData": data,
    }


class Campaign:
    def __init__(self, sb: Any) -> None:
        self.sb = sb
        self.org_of: dict[str, str | None] = {}  # case name -> organization id in its requests
        self.setup_orgs: set[str] = set()
        self.conditions: dict[str, dict | None] = {}
        self.unrelated: dict[str, dict[str, str]] = {}  # pre-existing Secrets and their data
        self.since: dict[str, int] = {}  # case name -> index in the simulator's requests where it starts

    def run(self) -> Campaign:
        sb = self.sb
        for case in OPERATOR_CASES:
            for obj in case.setup:
                if obj["kind"] == "Secret":
                    sb.apply(copy.deepcopy(obj))
                    self.unrelated[obj["metadata"]["name"]] = dict(obj["stringData"])
                else:  # another ManagedPostgres, Ready first
                    data, org = _credentials(sb, obj["metadata"]["name"], "fresh")
                    sb.apply(_secret(obj["spec"]["credentialsRef"]["name"], data))
                    self.setup_orgs.add(org)
                    sb.apply(copy.deepcopy(obj))
        for case in OPERATOR_CASES:
            for obj in case.setup:
                if obj["kind"] == KIND:
                    self.wait_ready(obj["metadata"]["name"])
        updates = [case for case in OPERATOR_CASES if case.old is not None]
        for case in updates:  # a running service first; only the update is judged
            data, org = _credentials(sb, case.name, case.credentials)
            self.org_of[case.name] = org
            sb.apply(_secret(case.manifest["spec"]["credentialsRef"]["name"], data))
            sb.apply(copy.deepcopy(case.old))
        for case in updates:
            self.wait_ready(case.name)
            time.sleep(1)  # let the create settle (no request in flight)
        for case in OPERATOR_CASES:
            self.since[case.name] = len(sb.simulator.requests)
            if case.old is None:
                data, org = _credentials(sb, case.name, case.credentials)
                self.org_of[case.name] = org
                if data is not None:
                    sb.apply(_secret(case.manifest["spec"]["credentialsRef"]["name"], data))
            sb.apply(manifest_of(case))

        def settled() -> bool:
            for case in OPERATOR_CASES:
                cond = sb.condition(case.name, case.condition, NAMESPACE)
                self.conditions[case.name] = cond
            return all(
                c and c.get("status") == "False" and c.get("reason") == case.reason
                for case, c in ((k, self.conditions[k.name]) for k in OPERATOR_CASES)
            )

        deadline = time.monotonic() + 60
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(5)  # ten active poll intervals: a rejected request must not be sent again
        for case in OPERATOR_CASES:
            self.conditions[case.name] = sb.condition(case.name, case.condition, NAMESPACE)
        return self

    def wait_ready(self, name: str, timeout: float = 60) -> None:
        try:
            self.sb.wait_for(lambda: self.sb.is_ready(name, NAMESPACE), timeout=timeout, what=f"{name} Ready")
        except TimeoutError:
            status = (self.sb.get(name, NAMESPACE) or {}).get("status") or {}
            raise TimeoutError(f"{name} not Ready after {timeout:.0f} s: {status.get('conditions')}") from None

    def mutating_requests(self, org: str | None, since: int = 0) -> list[Any]:
        return [
            r
            for r in self.sb.simulator.requests[since:]
            if r.method in MUTATING and (m := _ORG_IN_PATH.match(r.path)) and m.group(1).lower() == (org or "").lower()
        ]

    def warnings_for(self, name: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.sb.kube.list("v1", "Event", NAMESPACE)
            if (e.get("involvedObject") or {}).get("name") == name and e.get("type") == "Warning"
        ]


@pytest.fixture(scope="module")
def campaign():
    from mpg_operator.sandbox import Sandbox

    options = {
        "real_postgres": False,
        "rate_limit": None,
        "create_seconds": 0.5,
        "resize_seconds": 0.5,
        "delete_seconds": 0.2,
    }
    with Sandbox(simulator_options=options, namespaces=(NAMESPACE,)) as sb:
        yield Campaign(sb).run()
        assert sb.kube.server_errors == []


@pytest.mark.e2e
@pytest.mark.parametrize("case", OPERATOR_CASES, ids=lambda c: c.name)
def test_operator_conditions(campaign: Campaign, case: BadInput):
    sb = campaign.sb
    cond = campaign.conditions.get(case.name)
    problems = []
    if not cond or cond.get("status") != "False" or cond.get("reason") != case.reason:
        problems.append(
            f"{case.condition} should be False/{case.reason}, is {cond and (cond.get('status'), cond.get('reason'))}"
            f": {cond and cond.get('message')!r}"
        )
    elif case.message not in (cond.get("message") or ""):
        problems.append(f"{case.condition} message should contain {case.message!r}: {cond.get('message')!r}")
    warnings = campaign.warnings_for(case.name)
    if not warnings:
        problems.append("no Warning event")
    org = campaign.org_of.get(case.name)
    calls = campaign.mutating_requests(org, campaign.since[case.name]) if org else []
    shown = [f"{r.method} {r.path.rsplit('/organizations/', 1)[-1].split('/', 1)[-1]} -> {r.status}" for r in calls]
    if len(calls) > case.mutating_calls or (case.mutating_calls and len(calls) != case.mutating_calls):
        problems.append(f"mutating API calls: expected {case.mutating_calls}, got {len(calls)}: {shown}")
    if org and case.old is None:
        created = [s for s in sb.remote_services() if s.org_id.lower() == org.lower()]
        if created:
            problems.append(f"{len(created)} service(s) created")
    for name, data in campaign.unrelated.items():
        if name in str(case.manifest) or name == f"{case.name}-connection":
            current = sb.secret(name, NAMESPACE) or {}
            if current != data:
                problems.append(f"the Secret {name} it does not own was changed (keys now {sorted(current)})")
    assert not problems, f"{case.name} ({case.what}): " + "; ".join(problems)


@pytest.mark.e2e
def test_no_mutating_call_outside_the_budget(campaign: Campaign):
    """Every mutating request is attributed to a case (or a setup resource), none to anything else."""
    known = {org.lower() for org in campaign.org_of.values() if org} | {o.lower() for o in campaign.setup_orgs}
    strays = [
        (r.method, r.path)
        for r in campaign.sb.simulator.requests
        if r.method in MUTATING and ((m := _ORG_IN_PATH.match(r.path)) is None or m.group(1).lower() not in known)
    ]
    assert strays == []


@pytest.mark.e2e
def test_the_first_owner_of_a_shared_secret_keeps_it(campaign: Campaign):
    sb = campaign.sb
    assert sb.is_ready("op-secret-shared-first", NAMESPACE)
    secret = sb.kube.get("v1", "Secret", "shared-connection", NAMESPACE)
    first = sb.get("op-secret-shared-first", NAMESPACE)
    owners = [ref.get("uid") for ref in secret["metadata"].get("ownerReferences") or []]
    assert owners == [first["metadata"]["uid"]]
