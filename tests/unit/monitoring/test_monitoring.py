"""Prometheus rules (promtool unit tests for every rule), the scrape config and the Grafana dashboards."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from string import Template
from types import ModuleType
from typing import Any

import pytest
import yaml

from edgeloop.metrics.catalogue import metric_names

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "monitoring"
RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))
TEST_FILES = sorted((MONITORING / "tests").glob("*.test.yml"))
DASHBOARD_DIR = MONITORING / "grafana" / "dashboards"

# Airflow's own metrics as the official Helm chart's statsd-exporter names them
# (apache/airflow chart/files/statsd-mappings.yml; unmapped names: dots become underscores).
AIRFLOW_METRICS = {
    "airflow_dagrun_duration",
    "airflow_dagrun_failed",
    "airflow_scheduler_heartbeat",
    "airflow_triggers_running",
    "airflow_task_duration",
    "airflow_executor_running_tasks",
    "airflow_executor_queued_tasks",
    "airflow_dag_processing_import_errors",
}
PROMETHEUS_BUILTINS = {"ALERTS", "ALERTS_FOR_STATE", "up"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: install Debian's `prometheus` package (make system-packages)")
    return path


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, check=False, capture_output=True, text=True)


def _rules() -> list[dict[str, Any]]:
    return [
        rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
    ]


def _recorded_names() -> set[str]:
    return {rule["record"] for rule in _rules() if "record" in rule}


def metric_tokens(expr: str) -> set[str]:
    """Names of the series a PromQL expression selects (functions, keywords and label lists removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    tokens = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group() in PROMQL_WORDS:
            continue
        if re.fullmatch(r"[0-9eE]+", match.group()):
            continue
        tokens.add(match.group())
    return tokens


def _known_series() -> set[str]:
    return set(metric_names()) | _recorded_names() | PROMETHEUS_BUILTINS


def test_metric_tokens_reads_promql() -> None:
    expr = (
        'sum by (pipeline, group) (rate(edgeloop_ingest_records_total{topic=~"a|b"}[5m]))'
        " > on (pipeline) group_left x:y"
    )
    assert metric_tokens(expr) == {"edgeloop_ingest_records_total", "x:y"}


# --- rules --------------------------------------------------------------------------------------


def test_rules_live_where_the_local_stack_loads_them_and_nothing_else_does() -> None:
    assert [p.name for p in RULE_FILES] == ["edgeloop-alerts.yml", "edgeloop-recording.yml"]
    assert not list((MONITORING / "rules").glob("*test*")), "promtool tests must not sit among the rule files"


def test_rule_files_pass_promtool_check() -> None:
    result = _run([_promtool(), "check", "rules", *map(str, RULE_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_has_a_promtool_unit_test() -> None:
    tested_alerts: set[str] = set()
    tested_exprs: list[str] = []
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested_alerts |= {t["alertname"] for t in case.get("alert_rule_test", [])}
            tested_exprs += [t["expr"] for t in case.get("promql_expr_test", [])]
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert alerts - tested_alerts == set(), "alerts without a promtool test"
    untested = {name for name in _recorded_names() if not any(name in metric_tokens(e) for e in tested_exprs)}
    assert untested == set(), "recording rules without a promtool test"


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    outcomes: dict[str, set[bool]] = {}
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                outcomes.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    assert {name for name, seen in outcomes.items() if seen != {True, False}} == set()


def test_promtool_unit_tests_pass() -> None:
    result = _run(
        [_promtool(), "test", "rules", *(p.name for p in TEST_FILES)],
        cwd=MONITORING / "tests",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES)


def test_a_changed_threshold_makes_the_promtool_tests_fail(tmp_path: Path) -> None:
    shutil.copytree(MONITORING / "rules", tmp_path / "rules")
    shutil.copytree(MONITORING / "tests", tmp_path / "tests")
    alerts = tmp_path / "rules" / "edgeloop-alerts.yml"
    text = alerts.read_text()
    assert "edgeloop:ingest_deadletter_ratio:rate30m > 0.05" in text
    alerts.write_text(
        text.replace(
            "edgeloop:ingest_deadletter_ratio:rate30m > 0.05", "edgeloop:ingest_deadletter_ratio:rate30m > 0.5"
        )
    )
    result = _run(
        [_promtool(), "test", "rules", "edgeloop-alerts.test.yml"],
        cwd=tmp_path / "tests",
    )
    assert result.returncode != 0
    assert "EdgeloopDeadletterRateHigh" in result.stdout + result.stderr


def test_rules_use_only_defined_metrics() -> None:
    known = _known_series()
    for rule in _rules():
        unknown = metric_tokens(rule["expr"]) - known
        assert unknown == set(), f"{rule.get('alert') or rule.get('record')}: unknown series {unknown}"


def test_alerts_carry_a_severity_and_explain_themselves() -> None:
    for rule in _rules():
        if "alert" not in rule:
            continue
        assert re.fullmatch(r"Edgeloop[A-Z][A-Za-z]+", rule["alert"])
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]


def test_recording_rules_follow_the_level_metric_operations_convention() -> None:
    for name in _recorded_names():
        assert re.fullmatch(r"edgeloop:[a-z0-9_]+(:[a-z0-9_]+)?", name), name


# --- scrape configuration -------------------------------------------------------------------------


def test_scrape_config_template_renders_into_a_valid_prometheus_config(tmp_path: Path) -> None:
    template = Template((MONITORING / "prometheus" / "prometheus.yml.tmpl").read_text())
    rendered = template.substitute(
        scrape_interval="15s",
        rules_dir=str(MONITORING / "rules"),
        pushgateway="pushgateway.monitoring:9091",
        exporter="airflow-api-server.airflow:8080",
        exporter_path="/edgeloop/metrics",
        airflow_statsd="airflow-statsd.airflow:9102",
        alertmanager="alertmanager.monitoring:9093",
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(rendered)
    result = _run([_promtool(), "check", "config", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout
    jobs = {job["job_name"]: job for job in yaml.safe_load(rendered)["scrape_configs"]}
    assert jobs["edgeloop-pushgateway"]["honor_labels"] is True
    assert jobs["edgeloop-exporter"]["metrics_path"] == "/edgeloop/metrics"


# --- dashboards -------------------------------------------------------------------------------------


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboards", MONITORING / "grafana" / "build_dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def test_committed_dashboards_are_what_the_builder_makes() -> None:
    rendered = _builder().render()
    committed = {path.name: path.read_text() for path in DASHBOARD_DIR.glob("*.json")}
    assert committed == rendered, "run: python monitoring/grafana/build_dashboards.py"


def test_one_overview_and_one_dashboard_per_stage() -> None:
    names = set(_dashboards())
    stages = {"ingest", "drift", "annotation", "training", "rollout", "fleet"}
    assert names == {"edgeloop-overview.json", *(f"edgeloop-{stage}.json" for stage in stages)}


def test_dashboards_have_unique_uids_and_panel_ids_and_fit_the_grid() -> None:
    uids = [board["uid"] for board in _dashboards().values()]
    assert len(set(uids)) == len(uids)
    for name, board in _dashboards().items():
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids), name
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, (name, panel["title"])


def test_every_panel_uses_the_datasource_variable() -> None:
    for name, board in _dashboards().items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert "pipeline" in variables, name
        for panel in _panels(board):
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"


def _exprs() -> list[tuple[str, str, str]]:
    return [
        (name, panel["title"], target["expr"])
        for name, board in _dashboards().items()
        for panel in _panels(board)
        for target in panel["targets"]
    ]


def test_every_panel_queries_edgeloop_or_airflow_metrics_that_exist() -> None:
    known = _known_series()
    for name, title, expr in _exprs():
        for token in metric_tokens(expr):
            base = re.sub(r"_(count|sum|bucket)$", "", token)
            assert token in known or base in AIRFLOW_METRICS, f"{name} / {title}: unknown series {token}"


def test_every_panel_expression_is_valid_promql(tmp_path: Path) -> None:
    rules = []
    for i, (_, _, expr) in enumerate(_exprs()):
        concrete = expr.replace("${pipeline}", "factory_maintenance").replace("$pipeline", "factory_maintenance")
        concrete = concrete.replace("$group", "plant-north")
        assert "$" not in concrete, expr
        rules.append({"record": f"dashboard:expr_{i}", "expr": concrete})
    path = tmp_path / "exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = _run([_promtool(), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_overview_shows_the_charts_that_matter_most() -> None:
    overview = _dashboards()["edgeloop-overview.json"]
    exprs = " ".join(t["expr"] for p in _panels(overview) for t in p["targets"])
    assert "edgeloop:drift_score:max" in exprs
    assert "edgeloop_rollout_devices_applied_ratio" in exprs and "wave" in exprs
    assert "edgeloop_rollout_model_version" in exprs and "edgeloop_registry_champion_version" in exprs


def test_grafana_provisioning_points_at_the_dashboards_and_prometheus() -> None:
    provisioning = MONITORING / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "edgeloop.yaml").read_text())["datasources"][0]
    assert datasource["type"] == "prometheus"
    provider = yaml.safe_load((provisioning / "dashboards" / "edgeloop.yaml").read_text())["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]
