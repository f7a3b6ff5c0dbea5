"""The chart's monitoring objects: ServiceMonitor paths, the PrometheusRule (promtool), the Grafana
dashboard (structure, datasource variables, PromQL), and every metric name they use exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_chart import CHART_DIR, of_kind, one, render
from deploy_values import VALUE_SETS

from clickhouse_cloud_simulator.prometheus import FAMILY_NAMES
from mpg_operator.cloud.config import ClientSettings
from mpg_operator.controller.cloudaccess import ClientPool, ServiceSnapshots
from mpg_operator.controller.metrics import OperatorMetrics
from mpg_operator.controller.observer import Observer
from mpg_operator.controller.relay import MetricsRelay

pytestmark = pytest.mark.usefixtures("helm_tools")

ALERTS = CHART_DIR / "files" / "alerts.yaml"
DASHBOARD = CHART_DIR / "files" / "grafana-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
DURATION = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")
METRIC_NAME = re.compile(r"\b(mpg_operator_[a-z_]+|Postgres[A-Za-z_]+)\b")
REQUIRED_ALERTS = {
    "ManagedPostgresServiceNotRunning",
    "ManagedPostgresNotReady",
    "MpgOperatorApiErrors",
    "MpgOperatorRateLimitPressure",
    "MpgOperatorRateLimited",
    "MpgMetricsRelayStale",
}


def exposed_series() -> set[str]:
    """Every series name the operator's /metrics and the relay's /metrics/services can carry."""
    metrics = OperatorMetrics()
    snapshots = ServiceSnapshots()
    metrics.snapshots = snapshots
    metrics.clients = ClientPool(ClientSettings())
    metrics.observer = Observer(snapshots, interval=30, fast_interval=2.5, forget_after=60, in_flight=lambda _: False)
    metrics.relay = MetricsRelay(snapshots, dict)
    names: set[str] = set()
    for family in metrics.registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
    # The relay passes the API's families through under their own names (reference §5.3).
    return names | set(FAMILY_NAMES)


def alert_rules(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panel_targets(board: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(panel, target) for panel in board["panels"] for target in panel.get("targets", [])]


def promql(expr: str) -> str:
    """A dashboard query with Grafana's variables substituted, as Grafana sends it."""
    return expr.replace("$__rate_interval", "5m").replace("$namespace", ".*").replace("$managedpostgres", ".*")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


def test_service_monitor_scrapes_the_operator_and_the_relayed_databases():
    sm = one(of_kind(render(VALUE_SETS["observability"]), "ServiceMonitor"))
    by_path = {e["path"]: e for e in sm["spec"]["endpoints"]}
    assert set(by_path) == {"/metrics", "/metrics/services"}
    assert by_path["/metrics/services"]["honorLabels"] is True and by_path["/metrics/services"]["interval"] == "2m"
    off = {"metrics": {"serviceMonitor": {"enabled": True, "services": {"enabled": False}}}}
    assert [e["path"] for e in one(of_kind(render(off), "ServiceMonitor"))["spec"]["endpoints"]] == ["/metrics"]
    defaults = render({})
    assert not of_kind(defaults, "ServiceMonitor") and not of_kind(defaults, "PrometheusRule")
    assert not [c for c in of_kind(defaults, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]


def test_alert_file_parses_with_the_required_alerts():
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    rules = alert_rules(groups)
    assert REQUIRED_ALERTS <= {r["alert"] for r in rules}
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert "for" not in rule or DURATION.fullmatch(rule["for"])


def test_prometheus_rule_carries_the_alert_file_with_the_chosen_delay():
    rule = one(of_kind(render(VALUE_SETS["observability"]), "PrometheusRule"))
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    file_rules = {r["alert"]: r for r in alert_rules(yaml.safe_load(ALERTS.read_text())["groups"])}
    for r in alert_rules(rule["spec"]["groups"]):
        expected = dict(file_rules[r["alert"]])
        if r["alert"] in ("ManagedPostgresNotReady", "ManagedPostgresServiceNotRunning"):
            expected["for"] = "30m"  # metrics.prometheusRule.notReadyFor
        assert r == expected


@needs_promtool
def test_promtool_accepts_the_file_and_the_rendered_rule(tmp_path: Path):
    proc = promtool("check", "rules", str(ALERTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rendered = tmp_path / "rendered.yaml"
    spec = one(of_kind(render(VALUE_SETS["observability"]), "PrometheusRule"))["spec"]
    rendered.write_text(yaml.safe_dump(spec))
    proc = promtool("check", "rules", str(rendered))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def expected(alert: str, labels: dict[str, str], summary: str, description: str | None = None) -> dict[str, Any]:
    """An expected alert for promtool: labels and annotations (the description the file's, unless given)."""
    rule = one([r for r in alert_rules(yaml.safe_load(ALERTS.read_text())["groups"]) if r["alert"] == alert])
    annotations = {"summary": summary, "description": description or rule["annotations"]["description"]}
    return {"exp_labels": {"severity": rule["labels"]["severity"], **labels}, "exp_annotations": annotations}


@needs_promtool
def test_promtool_unit_tests_fire_the_alerts_on_matching_series(tmp_path: Path):
    shutil.copy(ALERTS, tmp_path / "alerts.yaml")
    labels = 'namespace="shop",managedpostgres="orders-db",postgres_service="s1"'
    tests = {
        "rule_files": ["alerts.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'PostgresServiceInfo{{{labels},postgres_status="stopped"}}', "values": "1x30"},
                    {
                        "series": 'mpg_operator_managedpostgres_resources{state="creating",ready="False",synced="True"}',
                        "values": "1x30",
                    },
                    {"series": 'mpg_operator_relay_data_age_seconds{organization="o1"}', "values": "60+60x30"},
                    {"series": 'mpg_operator_relay_up{organization="o1"}', "values": "1 0x30"},
                    {
                        "series": 'mpg_operator_api_rate_limited_total{operation="postgresServiceGetList"}',
                        "values": "0 0 1 1x27",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "ManagedPostgresServiceNotRunning",
                        "exp_alerts": [
                            expected(
                                "ManagedPostgresServiceNotRunning",
                                {
                                    "namespace": "shop",
                                    "managedpostgres": "orders-db",
                                    "postgres_service": "s1",
                                    "postgres_status": "stopped",
                                },
                                "ManagedPostgres shop/orders-db: service is stopped",
                                "Service s1 has not been running for a while. "
                                "Check `kubectl -n shop describe mpg orders-db`.",
                            )
                        ],
                    },
                    {"eval_time": "10m", "alertname": "ManagedPostgresNotReady", "exp_alerts": []},
                    {
                        "eval_time": "20m",
                        "alertname": "ManagedPostgresNotReady",
                        "exp_alerts": [
                            expected(
                                "ManagedPostgresNotReady",
                                {"state": "creating", "synced": "True"},
                                "1 ManagedPostgres resource(s) not Ready (service state creating, Synced True)",
                            )
                        ],
                    },
                    {"eval_time": "3m", "alertname": "MpgMetricsRelayStale", "exp_alerts": []},
                    {
                        "eval_time": "15m",
                        "alertname": "MpgMetricsRelayStale",
                        "exp_alerts": [
                            expected(
                                "MpgMetricsRelayStale",
                                {"organization": "o1"},
                                "Database metrics of organization o1 are 16m 0s old",
                            )
                        ],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "MpgMetricsRelayDown",
                        "exp_alerts": [
                            expected(
                                "MpgMetricsRelayDown",
                                {"organization": "o1"},
                                "The metrics relay cannot fetch organization o1's database metrics",
                            )
                        ],
                    },
                    {
                        "eval_time": "5m",
                        "alertname": "MpgOperatorRateLimited",
                        "exp_alerts": [
                            expected(
                                "MpgOperatorRateLimited",
                                {"operation": "postgresServiceGetList"},
                                "The ClickHouse Cloud API answered 429 to postgresServiceGetList",
                            )
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = promtool("test", "rules", str(tmp_path / "tests.yaml"))
    # promtool prints each failing expectation (expected vs got) when an alert does not fire as written.
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_panels_queries_and_datasource_variables():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "managedpostgres"):
        assert variables[name]["type"] == "query" and variables[name]["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}" and target["expr"].strip()
            for used in re.findall(r"\$(\w+)", target["expr"]):
                assert used in variables or used.startswith("__"), f"{panel['title']}: unknown variable ${used}"
    titles = {p["title"] for p in board["panels"]}
    assert {"Operator", "Databases"} <= titles
    assert any("create_to_ready" in t["expr"] for _, t in panel_targets(board))


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path):
    rules = [
        {"record": f"dashboard:panel{panel['id']}:{target['refId']}", "expr": promql(target["expr"])}
        for panel, target in panel_targets(dashboard())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_ships_verbatim_in_its_config_map():
    maps = of_kind(render(VALUE_SETS["observability"]), "ConfigMap")
    cm = one([c for c in maps if c["metadata"]["name"].endswith("-dashboard")])
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["mpg-operator.json"]) == dashboard()


def test_every_metric_a_panel_or_alert_uses_is_exposed():
    exposed = exposed_series()
    used: dict[str, str] = {}
    for _, target in panel_targets(dashboard()):
        used |= {name: "dashboard" for name in METRIC_NAME.findall(target["expr"])}
    for rule in alert_rules(yaml.safe_load(ALERTS.read_text())["groups"]):
        used |= {name: f"alert {rule['alert']}" for name in METRIC_NAME.findall(rule["expr"])}
    unknown = {name: where for name, where in used.items() if name not in exposed}
    assert not unknown, unknown
    # And the operator's side is used: each of its families appears in the dashboard or an alert.
    operator_families = {n for n in exposed if n.startswith("mpg_operator_")}
    unused = {n.removesuffix("_total").removesuffix("_bucket") for n in operator_families} - {
        n.removesuffix("_total").removesuffix("_bucket") for n in used
    }
    assert unused <= {
        "mpg_operator_start_time_seconds",
        "mpg_operator_events",
        "mpg_operator_observer_lists",
        "mpg_operator_reconcile_duration_seconds",
        "mpg_operator_reconcile_duration_seconds_count",
        "mpg_operator_reconcile_duration_seconds_sum",
        "mpg_operator_create_to_ready_seconds_count",
        "mpg_operator_create_to_ready_seconds_sum",
        "mpg_operator_api_request_duration_seconds_count",
        "mpg_operator_api_request_duration_seconds_sum",
        "mpg_operator_deletion_duration_seconds",
        "mpg_operator_deletion_duration_seconds_count",
        "mpg_operator_deletion_duration_seconds_sum",
        "mpg_operator_ratelimiter_waits",
        "mpg_operator_ratelimiter_pauses",
    }, unused


def test_docs_list_every_panel_alert_and_operator_metric():
    docs = (CHART_DIR.parents[2] / "docs" / "observability.md").read_text()
    for panel in dashboard()["panels"]:
        assert f"| {panel['title']} |" in docs, panel["title"]
        for target in panel.get("targets", []):
            assert target["expr"].replace("|", "\\|") in docs, target["expr"]
    for rule in alert_rules(yaml.safe_load(ALERTS.read_text())["groups"]):
        assert f"| `{rule['alert']}` |" in docs, rule["alert"]
    documented = set(re.findall(r"^\| `(mpg_operator_[a-z_]+)` \|", docs, flags=re.MULTILINE))
    exposed = {n for n in exposed_series() if n.startswith("mpg_operator_")}
    bases = {n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for n in exposed}
    assert documented == {n for n in bases if n in exposed or n + "_bucket" in exposed}
