"""The Helm chart, rendered by the real helm binary: lint, schema, objects, wiring."""

from __future__ import annotations

import base64
import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_chart import (
    CHART_DIR,
    KUBE_VERSION,
    RELEASE_NAMESPACE,
    helm,
    lint,
    of_kind,
    one,
    render,
    sync_crds_module,
    template_error,
)
from deploy_values import FAKE_CREDENTIALS, VALUE_SETS

pytestmark = pytest.mark.usefixtures("helm_tools")

CHART = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
PEERING_CRDS = {d["spec"]["names"]["kind"]: d for d in yaml.safe_load_all((CHART_DIR / "crds" / "kopf-peering.yaml").read_text())}
STANDARD_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                   "app.kubernetes.io/managed-by", "helm.sh/chart")


@functools.cache
def _render_cached(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(VALUE_SETS[name]))


def rendered(name: str) -> list[dict[str, Any]]:
    """The chart rendered (CRDs included) with a named value set; rendered once per session."""
    return list(_render_cached(name))


def deployments(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return of_kind(objs, "Deployment")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return one(deployment["spec"]["template"]["spec"]["containers"])


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(deployment)["env"]}


def validate_service_monitor(sm: dict[str, Any], objs: list[dict[str, Any]]) -> None:
    """kubernetes-validate has no schema for this CR: check its structure and what it selects."""
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    assert sm["metadata"]["namespace"] == RELEASE_NAMESPACE
    spec = sm["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    assert spec["namespaceSelector"] == {"matchNames": [RELEASE_NAMESPACE]}
    services = [s for s in of_kind(objs, "Service")
                if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    service = one(services)
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}
        assert endpoint["port"] in port_names
        assert endpoint["path"] in ("/metrics", "/metrics/services")
        # The relayed series carry the ManagedPostgres' namespace: kept, not renamed exported_namespace.
        assert endpoint.get("honorLabels", False) == (endpoint["path"] == "/metrics/services")
        for key in ("interval", "scrapeTimeout"):
            assert re.fullmatch(r"([0-9]+(ms|s|m|h))+", endpoint[key]), endpoint[key]


def validate_object(obj: dict[str, Any], objs: list[dict[str, Any]]) -> None:
    kind = obj["kind"]
    if kind == "ServiceMonitor":
        validate_service_monitor(obj, objs)
    elif kind == "PrometheusRule":  # no schema either: promtool checks it (test_deploy_observability.py)
        assert obj["apiVersion"] == "monitoring.coreos.com/v1" and set(obj) == {"apiVersion", "kind", "metadata", "spec"}
        assert obj["metadata"]["namespace"] == RELEASE_NAMESPACE and obj["spec"]["groups"]
    elif kind in PEERING_CRDS:
        crd = PEERING_CRDS[kind]
        assert obj["apiVersion"] == f"{crd['spec']['group']}/v1"
        jsonschema.validate(obj, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        assert ("namespace" in obj["metadata"]) == (crd["spec"]["scope"] == "Namespaced")
    else:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_strict(name: str) -> None:
    lint(VALUE_SETS[name])


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_object_validates(name: str) -> None:
    objs = rendered(name)
    assert deployments(objs), "no Deployment rendered"
    for obj in objs:
        try:
            validate_object(obj, objs)
        except jsonschema.ValidationError as exc:  # kubernetes_validate's error is one too
            where = "/".join(str(p) for p in exc.absolute_path)
            raise AssertionError(f"{obj['kind']} {obj['metadata'].get('name')}: at {where}: {exc.message}") from None


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_templated_objects_carry_standard_labels(name: str) -> None:
    for obj in render(VALUE_SETS[name], include_crds=False):
        labels = obj["metadata"].get("labels", {})
        missing = [label for label in STANDARD_LABELS if label not in labels]
        assert not missing, f"{obj['kind']} {obj['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/version"] == CHART["appVersion"]
        assert labels["helm.sh/chart"] == f"mpg-operator-{CHART['version']}"


def test_chart_crds_mirror_deploy_crds_byte_for_byte() -> None:
    diff = sync_crds_module().differences()
    assert not diff, "chart crds/ out of date; run scripts/sync-chart-crds.py:\n" + "\n".join(diff)


def test_crds_ship_in_crds_folder_only() -> None:
    # Helm installs crds/ but never upgrades or deletes it: uninstall never deletes databases.
    assert not of_kind(render(include_crds=False), "CustomResourceDefinition")
    crds = {o["metadata"]["name"]: o for o in of_kind(rendered("defaults"), "CustomResourceDefinition")}
    mpg = crds["managedpostgreses.clickhouse.cloud"]
    assert mpg["spec"]["group"] == "clickhouse.cloud"
    assert mpg["spec"]["names"]["kind"] == "ManagedPostgres"
    assert "mpg" in mpg["spec"]["names"].get("shortNames", [])
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= set(crds)
    for path in (CHART_DIR / "templates").iterdir():
        assert "CustomResourceDefinition" not in path.read_text(), f"{path.name} templates a CRD"


def test_default_deployment() -> None:
    objs = rendered("defaults")
    deployment = one(deployments(objs))
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    c = container(deployment)
    assert c["image"] == f"ghcr.io/mpg-operator/mpg-operator:{CHART['appVersion']}", "the published image by default"
    assert c["args"] == ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz",
                         "--metrics-port=9090", "--log-format=json"]
    assert "command" not in c, "the image's ENTRYPOINT is mpg-operator"
    assert env_of(deployment) == {
        "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        "CLICKHOUSE_CLOUD_API_URL": "https://api.clickhouse.cloud/v1",
        "MPG_DEFAULT_DELETION_POLICY": "Delete",
        "MPG_POLL_INTERVAL": "300",
        "MPG_POLL_INTERVAL_ACTIVE": "15",
        "MPG_API_RATE_LIMIT": "10",
        "MPG_LIST_MAX_AGE": "30",
        "MPG_LIST_FAST_INTERVAL": "2.5",
        "MPG_MAX_CONCURRENT_PASSES": "32",
        "MPG_CREATE_GRACE": "60",
        "MPG_UPDATE_CONFIRM": "15",
        "MPG_CONFIG_RESYNC": "3600",
        "MPG_API_RATE_WINDOW": "10",
        "MPG_API_TIMEOUT": "30",
        "MPG_API_MAX_RETRIES": "5",
        "HOME": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    sa = one(of_kind(objs, "ServiceAccount"))
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert not of_kind(objs, "Secret"), "no credentials configured: no Secret"
    assert not of_kind(objs, "ServiceMonitor")


def test_values_reach_the_operator() -> None:
    deployment = one(deployments(rendered("tuned")))
    env = env_of(deployment)
    assert env["CLICKHOUSE_CLOUD_API_URL"] == "http://clickhouse-api-proxy.infra.svc:8080/v1"
    assert env["MPG_DEFAULT_DELETION_POLICY"] == "Orphan"
    assert (env["MPG_POLL_INTERVAL"], env["MPG_POLL_INTERVAL_ACTIVE"], env["MPG_API_RATE_LIMIT"]) == ("600", "20", "5")
    assert env["MPG_API_TIMEOUT"] == "20" and env["EXAMPLE_EXTRA"] == "yes"
    pod = deployment["spec"]["template"]["spec"]
    assert container(deployment)["image"] == "registry.example.com/platform/mpg-operator:0.1.0-rc1"
    assert pod["imagePullSecrets"] == [{"name": "registry-pull"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"example.com/owner": "platform"}
    args = container(one(deployments(rendered("metrics-off"))))["args"]
    assert "--log-format=text" in args and "--metrics-port=0" in args


def test_namespace_scoped_install() -> None:
    objs = rendered("namespace-scoped")
    args = container(one(deployments(objs)))["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    roles = of_kind(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = of_kind(objs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    cluster_role = one(of_kind(objs, "ClusterRole"))
    assert {r for rule in cluster_role["rules"] for r in rule["resources"]} == {"customresourcedefinitions", "namespaces"}
    assert {v for rule in cluster_role["rules"] for v in rule["verbs"]} == {"list", "watch"}


def test_created_credentials_secret() -> None:
    objs = rendered("created-credentials")
    secret = one(of_kind(objs, "Secret"))
    assert secret["metadata"]["namespace"] == RELEASE_NAMESPACE
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == FAKE_CREDENTIALS
    deployment = one(deployments(objs))
    assert env_of(deployment)["MPG_DEFAULT_CREDENTIALS_SECRET"] == f"{RELEASE_NAMESPACE}/{secret['metadata']['name']}"
    # A changed key restarts the operator.
    assert "checksum/credentials" in deployment["spec"]["template"]["metadata"]["annotations"]


def test_existing_credentials_secret() -> None:
    objs = rendered("existing-credentials")
    assert not of_kind(objs, "Secret"), "an existing Secret is referenced, never rendered"
    env = env_of(one(deployments(objs)))
    assert env["MPG_DEFAULT_CREDENTIALS_SECRET"] == f"{RELEASE_NAMESPACE}/clickhouse-cloud-api"


def test_namespace_scoped_operator_can_read_only_its_default_secret_in_its_namespace() -> None:
    objs = rendered("namespace-scoped-credentials")
    role = one([r for r in of_kind(objs, "Role") if r["metadata"]["namespace"] == RELEASE_NAMESPACE])
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                              "resourceNames": ["clickhouse-cloud-api"], "verbs": ["get"]}]


def test_peering_hot_standby() -> None:
    objs = rendered("peering-standby")
    primary, standby = sorted(deployments(objs), key=lambda d: d["metadata"]["name"])
    assert standby["metadata"]["name"] == primary["metadata"]["name"] + "-standby"
    priorities = []
    for deployment in (primary, standby):
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
        args = container(deployment)["args"]
        assert "--peering=mpg-operator" in args
        priorities.append(int(one([a for a in args if a.startswith("--priority=")]).split("=")[1]))
    assert priorities[0] > priorities[1], "kopf pauses every peer when the top priority is shared"
    # Deployments must never select each other's pods.
    sel = [d["spec"]["selector"]["matchLabels"] for d in (primary, standby)]
    assert not sel[0].items() <= standby["spec"]["template"]["metadata"]["labels"].items()
    assert not sel[1].items() <= primary["spec"]["template"]["metadata"]["labels"].items()
    assert one(of_kind(objs, "ClusterKopfPeering"))["metadata"]["name"] == "mpg-operator"
    rules = one(of_kind(objs, "ClusterRole"))["rules"]
    assert {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
            "verbs": ["get", "list", "watch", "patch"]} in rules


def test_peering_namespace_scoped_uses_namespaced_peerings() -> None:
    objs = rendered("peering-namespace-scoped")
    assert len(deployments(objs)) == 1
    assert sorted(p["metadata"]["namespace"] for p in of_kind(objs, "KopfPeering")) == ["team-a", "team-b"]
    assert not of_kind(objs, "ClusterKopfPeering")
    for role in of_kind(objs, "Role"):
        assert any(r["resources"] == ["kopfpeerings"] for r in role["rules"])


def test_metrics_service_selects_the_operator_pod() -> None:
    objs = rendered("service-monitor")
    service = one(of_kind(objs, "Service"))
    pod_labels = one(deployments(objs))["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port = one(service["spec"]["ports"])
    assert port["targetPort"] == "metrics" and port["port"] == 9090
    sm = one(of_kind(objs, "ServiceMonitor"))
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    objs_off = rendered("metrics-off")
    assert not of_kind(objs_off, "Service") and not of_kind(objs_off, "ServiceMonitor")
    assert "metrics" not in {p["name"] for p in container(one(deployments(objs_off)))["ports"]}


BAD_VALUES = [
    pytest.param({"config": {"defaultDeletionPolicy": "Keep"}}, "/config/defaultDeletionPolicy", id="deletion-policy"),
    pytest.param({"replicaCount": 2}, "/replicaCount", id="replicas-without-peering"),
    pytest.param({"replicaCount": 3, "peering": {"enabled": True}}, "/replicaCount", id="too-many-replicas"),
    pytest.param({"watchNamespaces": ["team-a", "Team_B"]}, "/watchNamespaces/1", id="namespace-pattern"),
    pytest.param({"watchNamespaces": ["team-a", "team-a"]}, "/watchNamespaces", id="namespace-duplicates"),
    pytest.param({"config": {"apiRateLimit": 0}}, "/config/apiRateLimit", id="rate-limit-zero"),
    pytest.param({"config": {"apiRateLimit": 1001}}, "/config/apiRateLimit", id="rate-limit-too-high"),
    pytest.param({"config": {"apiRateLimit": 2.5}}, "/config/apiRateLimit", id="rate-limit-not-integer"),
    pytest.param({"config": {"pollInterval": "5m"}}, "/config/pollInterval", id="poll-interval-string"),
    pytest.param({"config": {"logFormat": "yaml"}}, "/config/logFormat", id="log-format"),
    pytest.param({"config": {"apiUrl": "api.clickhouse.cloud"}}, "/config/apiUrl", id="api-url-scheme"),
    pytest.param({"credentials": {"existingSecret": "ch-api", "create": FAKE_CREDENTIALS}},
                 "/credentials/create/keyId", id="credentials-both"),
    pytest.param({"credentials": {"create": {"keyId": "only-the-id"}}}, "/credentials/create", id="credentials-partial"),
    pytest.param({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}, "/metrics/enabled",
                 id="service-monitor-without-metrics"),
    pytest.param({"watchNamespace": ["team-a"]}, "'watchNamespace'", id="misspelt-key"),
    pytest.param({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", id="pull-policy"),
    pytest.param({"image": {"digest": "sha256:abc"}}, "/image/digest", id="digest-short"),
    pytest.param({"image": {"digest": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}},
                 "/image/digest", id="digest-without-algorithm"),
]


@pytest.mark.parametrize(("values", "field"), BAD_VALUES)
def test_schema_rejects_bad_values_naming_the_field(values: dict[str, Any], field: str) -> None:
    error = template_error(values)
    assert "values don't meet the specifications of the schema" in error
    assert field in error, error


def test_image_digest_pins_the_image_and_overrides_the_tag() -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    values = {"image": {"repository": "registry.example.com/mpg-operator", "tag": "9.9.9", "digest": digest},
              "peering": {"enabled": True}, "replicaCount": 2}
    images = {container(d)["image"] for d in deployments(render(values, include_crds=False))}
    assert images == {f"registry.example.com/mpg-operator@{digest}"}, "main and standby both pinned"


def test_equal_peering_priorities_rejected() -> None:
    error = template_error({"peering": {"enabled": True, "priority": 50, "standbyPriority": 50}, "replicaCount": 2})
    assert "peering.priority must be greater than peering.standbyPriority" in error


def test_notes_tell_the_next_command(tmp_path: Path) -> None:
    proc = helm("install", "mpg-operator", str(CHART_DIR), "--namespace", RELEASE_NAMESPACE,
                "--dry-run=client", "--set", "credentials.existingSecret=ch-api")
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {RELEASE_NAMESPACE} rollout status deployment/mpg-operator" in notes
    assert f"kubectl -n {RELEASE_NAMESPACE} create secret generic ch-api" in notes
    assert "keeps the CRDs" in notes


def test_schema_is_draft_07_for_every_helm_version() -> None:
    # Helm before 3.18 validates with a draft-07 library; keep to draft-07 keywords.
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load((CHART_DIR / "values.yaml").read_text()))
    for values in VALUE_SETS.values():
        jsonschema.Draft7Validator(schema).validate(values)


def test_every_documented_setting_has_a_named_value() -> None:
    """The README's settings table says the chart sets them all: each variable is in the Deployment
    from a named value, and the operator reads each variable the chart sets."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("| variable | meaning | default |"):]
    table = table[: table.index("\n\n")]
    documented = set(re.findall(r"`((?:MPG|CLICKHOUSE)_[A-Z_]+)`", table))
    env = env_of(one(deployments(rendered("defaults"))))
    optional = {"MPG_DEFAULT_CREDENTIALS_SECRET"}  # only when the chart has a default key
    assert documented - optional <= set(env), sorted(documented - optional - set(env))
    sources = "".join(p.read_text() for p in (Path(__file__).resolve().parents[2] / "operator").rglob("*.py"))
    assert all(name in sources for name in documented)
