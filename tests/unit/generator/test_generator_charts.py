"""The Pipelines page's charts: which PromQL each chart asks, how answers become series, and the route.

Prometheus is a fake range-query function here; tests/e2e/test_pipeline_charts.py asks the real one
through the real api-server.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.unit.generator.generator_kit import ADMIN, DEMO_SPEC, FAKE_ACCESS, PREFIX, VIEWER, FakeKafka, fake_sources

from edgeloop.generator import charts as c
from edgeloop.generator.app import GeneratorSettings, create_app
from edgeloop.metrics.promql import PrometheusQueryError, PrometheusUnavailable
from edgeloop.spec import PipelineSpec, load_spec

NOW = 1_767_225_600.0


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(DEMO_SPEC)


def with_drift(spec: PipelineSpec, **drift: Any) -> PipelineSpec:
    data = spec.model_dump(by_alias=True)
    data["drift"] = {**data["drift"], **drift}
    return PipelineSpec.model_validate(data)


def row(value_by_t: dict[float, str], **labels: str) -> dict[str, Any]:
    return {"metric": labels, "values": [[t, v] for t, v in value_by_t.items()]}


# --- which query each chart asks ---------------------------------------------------------------


def test_the_demo_drift_chart_shows_the_worst_psi_per_group_against_the_spec_threshold(spec: PipelineSpec) -> None:
    drift = c.drift_chart(spec)
    assert spec.drift.method == "psi"
    assert drift.exprs == ('max by (group) (edgeloop_drift_score{pipeline="factory_maintenance"})',)
    assert drift.threshold == c.Threshold(0.2, "column drift above 0.2")
    assert drift.legend == ("group",)


def test_p_value_methods_chart_the_lowest_score_and_auto_charts_the_drifted_share(spec: PipelineSpec) -> None:
    ks = c.drift_chart(with_drift(spec, method="ks", threshold=0.05))
    assert ks.exprs[0].startswith("min by (group) (edgeloop_drift_score{")
    assert ks.threshold is not None and ks.threshold.label == "column drift below 0.05"
    auto = c.drift_chart(with_drift(spec, method="auto", threshold=None, drift_share=0.3))
    assert auto.exprs[0].startswith("max by (group) (edgeloop_drift_share_ratio{")
    assert auto.threshold == c.Threshold(0.3, "dataset drift at 30%")
    assert c.drift_chart(with_drift(spec, threshold=None)).threshold is None  # no made-up threshold


def test_every_chart_selects_its_pipeline_and_groups_by_bounded_labels_only(spec: PipelineSpec) -> None:
    charts = c.pipeline_charts(spec)
    assert [chart.id for chart in charts] == ["drift", "rollout", "versions", "skew"]
    for chart in charts:
        assert chart.exprs
        for expr in chart.exprs:
            assert '{pipeline="factory_maintenance"}' in expr, expr
        assert set(chart.legend) <= {"group", "wave"}
    rollout = charts[1]
    assert rollout.legend == ("wave", "group")
    assert rollout.threshold == c.Threshold(0.95, "health gate: 95% applied")
    versions = charts[2]
    assert versions.steps and versions.y_min is None
    assert any("edgeloop_registry_champion_version" in e and '"champion"' in e for e in versions.exprs)


def test_the_step_keeps_every_range_at_240_points_or_fewer() -> None:
    assert [c.step_seconds(h * 3600) for h in c.RANGE_HOURS] == [15, 120, 600, 3600]
    assert c.step_seconds(400 * 24 * 3600) == math.ceil(400 * 24 * 3600 / 240)
    for hours in (1, 2, 5, 6, 12, 24, 48, 168):
        assert hours * 3600 / c.step_seconds(hours * 3600) <= c.MAX_POINTS


# --- how answers become series -------------------------------------------------------------------


def test_series_come_in_spec_order_with_readable_names_and_gaps_for_nan(spec: PipelineSpec) -> None:
    groups = [g.name for g in spec.groups]  # line-canary, plant-north, plant-south
    matrix = [
        row({NOW: "0.1"}, group="plant-south", job="edgeloop", instance="x"),
        row({NOW: "0.2"}, group="_all"),
        row({NOW - 60: "NaN", NOW: "0.3", NOW + 60: "+Inf"}, group="line-canary"),
        row({NOW: "4"}, group="champion"),
        row({NOW: "NaN"}, group="plant-north"),  # nothing left: no series
    ]
    series = c.shape_series(matrix, ("group",), groups)
    assert [s["name"] for s in series] == ["line-canary", "plant-south", "whole fleet", "champion"]
    assert series[0]["points"] == [[NOW, 0.3]]
    assert series[1]["labels"] == {"group": "plant-south"}, "only legend labels are kept"


def test_rollout_series_are_ordered_by_wave_then_group(spec: PipelineSpec) -> None:
    groups = [g.name for g in spec.groups]
    matrix = [
        row({NOW: "0.5"}, wave="1", group="plant-south"),
        row({NOW: "1"}, wave="0", group="line-canary"),
        row({NOW: "0.7"}, wave="1", group="plant-north"),
        row({NOW: "0.7"}, wave="10", group="plant-north"),
    ]
    names = [s["name"] for s in c.shape_series(matrix, ("wave", "group"), groups)]
    assert names == ["wave 0 · line-canary", "wave 1 · plant-north", "wave 1 · plant-south", "wave 10 · plant-north"]


def test_a_chart_never_carries_more_than_max_series() -> None:
    matrix = [row({NOW: "1"}, group=f"g{i:03d}") for i in range(100)]
    assert len(c.shape_series(matrix, ("group",), max_series=24)) == 24


# --- one answer for the page ---------------------------------------------------------------------


class FakePrometheus:
    """A range-query function: answers by metric name in the expression, records what was asked."""

    def __init__(self, answers: dict[str, list[dict[str, Any]]], fail: Exception | None = None) -> None:
        self.answers = answers
        self.fail = fail
        self.asked: list[tuple[str, float, float, float]] = []

    def __call__(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        self.asked.append((expr, start, end, step))
        if self.fail is not None:
            raise self.fail
        return [r for metric, rows in self.answers.items() if metric in expr for r in rows]


def test_chart_data_answers_every_chart_with_its_series(spec: PipelineSpec) -> None:
    prometheus = FakePrometheus(
        {
            "edgeloop_drift_score": [row({NOW - 120: "0.05", NOW: "0.31"}, group="plant-north")],
            "edgeloop_registry_champion_version": [row({NOW: "3"}, group="champion")],
            "edgeloop_rollout_model_version": [row({NOW: "3"}, group="line-canary")],
        }
    )
    body = c.chart_data(spec, prometheus, end=NOW, hours=6)
    assert body["available"] is True and body["message"] is None
    assert (body["start"], body["end"], body["step"]) == (NOW - 6 * 3600, NOW, 120)
    by_id = {chart["id"]: chart for chart in body["charts"]}
    assert by_id["drift"]["series"] == [
        {"name": "plant-north", "labels": {"group": "plant-north"}, "points": [[NOW - 120, 0.05], [NOW, 0.31]]}
    ]
    assert by_id["drift"]["threshold"] == {"value": 0.2, "label": "column drift above 0.2"}
    assert [s["name"] for s in by_id["versions"]["series"]] == ["line-canary", "champion"]
    assert by_id["rollout"]["series"] == [] and by_id["rollout"]["error"] is None
    assert {step for _, _, _, step in prometheus.asked} == {120}
    assert len(prometheus.asked) == 5  # one query per chart, two for the versions


def test_without_prometheus_the_page_gets_a_message_and_empty_charts(spec: PipelineSpec) -> None:
    body = c.chart_data(spec, None, end=NOW, hours=1)
    assert body["available"] is False
    assert "EDGELOOP_PROMETHEUS_URL" in body["message"]
    assert [chart["series"] for chart in body["charts"]] == [[], [], [], []]


def test_an_unreachable_prometheus_is_asked_once_and_named_in_the_message(spec: PipelineSpec) -> None:
    down = FakePrometheus({}, fail=PrometheusUnavailable("Prometheus at http://127.0.0.1:9 is not reachable"))
    body = c.chart_data(spec, down, end=NOW, hours=1)
    assert body["available"] is False
    assert body["message"] == "Charts unavailable: Prometheus at http://127.0.0.1:9 is not reachable"
    assert len(down.asked) == 1


def test_one_failing_query_leaves_the_other_charts(spec: PipelineSpec) -> None:
    def query(expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        if "rollout" in expr:
            raise PrometheusQueryError("http://p/api/v1/query_range: query timed out")
        return [row({NOW: "0.1"}, group="plant-north")]

    body = c.chart_data(spec, query, end=NOW, hours=1)
    by_id = {chart["id"]: chart for chart in body["charts"]}
    assert body["available"] is True
    assert by_id["rollout"]["error"] == "http://p/api/v1/query_range: query timed out"
    assert by_id["drift"]["series"] and by_id["skew"]["series"]


# --- the route ------------------------------------------------------------------------------------


QueryRange = Callable[[str, str, float, float, float, float], list[dict[str, Any]]]


def charts_client(folder: Path, query_range: QueryRange, prometheus_url: str | None) -> TestClient:
    shutil.copy(DEMO_SPEC, folder / DEMO_SPEC.name)
    (folder / "broken.yaml").write_text("name: broken\n")  # a spec with errors, for the 409
    sources = dataclasses.replace(fake_sources(FakeKafka()), query_range=query_range)
    app = create_app(GeneratorSettings(pipelines_dir=folder, prometheus_url=prometheus_url), FAKE_ACCESS, sources)
    return TestClient(app, root_path=PREFIX)


def test_the_charts_route_needs_a_login_and_answers_series(tmp_path: Path) -> None:
    asked: list[tuple[str, str, float]] = []

    def query_range(url: str, expr: str, start: float, end: float, step: float, timeout: float) -> list[dict[str, Any]]:
        asked.append((url, expr, timeout))
        return [row({end: "0.4"}, group="plant-north")] if "drift_score" in expr else []

    client = charts_client(tmp_path, query_range, "http://prometheus.test:9090")
    assert client.get("/api/pipelines/factory_maintenance/charts").status_code == 401
    assert client.get("/api/pipelines/factory_maintenance/charts", headers={"X-Test-User": "nobody"}).status_code == 403
    assert asked == [], "nothing is asked before the login is checked"

    answer = client.get("/api/pipelines/factory_maintenance/charts", params={"hours": 24}, headers=VIEWER)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["hours"] == 24 and body["step"] == 600
    drift = next(chart for chart in body["charts"] if chart["id"] == "drift")
    assert drift["series"][0]["name"] == "plant-north"
    assert {url for url, _, _ in asked} == {"http://prometheus.test:9090"}
    assert {timeout for _, _, timeout in asked} == {GeneratorSettings(pipelines_dir=tmp_path).charts_timeout_s}


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/api/pipelines/nope/charts", {}, 404),
        ("/api/pipelines/broken/charts", {}, 409),
        ("/api/pipelines/factory_maintenance/charts", {"hours": 0}, 422),
        ("/api/pipelines/factory_maintenance/charts", {"hours": 169}, 422),
        ("/api/pipelines/Bad-Name/charts", {}, 422),
    ],
)
def test_the_charts_route_refuses_unknown_broken_or_bad_requests(
    tmp_path: Path, path: str, params: dict[str, Any], status: int
) -> None:
    client = charts_client(tmp_path, lambda *args: [], "http://prometheus.test:9090")
    assert client.get(path, params=params, headers=ADMIN).status_code == status


def test_without_a_prometheus_url_the_route_says_so_instead_of_failing(tmp_path: Path) -> None:
    def never(*args: Any) -> list[dict[str, Any]]:
        raise AssertionError("no Prometheus is configured: nothing may be asked")

    client = charts_client(tmp_path, never, None)
    body = client.get("/api/pipelines/factory_maintenance/charts", headers=VIEWER).json()
    assert body["available"] is False and "not configured" in body["message"]


def test_settings_read_the_prometheus_url_from_the_stack_variables(tmp_path: Path) -> None:
    environ = {"EDGELOOP_PIPELINES_DIR": str(tmp_path), "EDGELOOP_PROMETHEUS_URL": "http://127.0.0.1:19090"}
    assert GeneratorSettings.from_environment(environ).prometheus_url == "http://127.0.0.1:19090"
    assert GeneratorSettings.from_environment({"EDGELOOP_PROMETHEUS_URL": ""}).prometheus_url is None
