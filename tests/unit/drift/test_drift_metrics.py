"""Drift results become the gauges edgeloop.metrics defines, with labels bounded by the spec."""

from __future__ import annotations

from typing import Any

from edgeloop.drift.metrics import drift_metric_values, open_alerts_by_group, record_drift_metrics
from edgeloop.drift.synthetic import synthetic_spec
from edgeloop.metrics.push import BatchMetrics

SPEC = synthetic_spec(["a", "b"], ["plant-north", "plant-south"], name="fm")


def _view(status: str, share: float | None, scores: dict[str, float], rows: int) -> dict[str, Any]:
    return {
        "status": status,
        "drift_share": share,
        "sample_size": {"current": rows, "reference": 1000},
        "columns": {c: {"score": s} for c, s in scores.items()},
    }


SUMMARY = {
    "overall": _view("no drift", 0.0, {"a": 0.01, "b": 0.02}, 2000),
    "groups": {
        "plant-north": _view("drift", 1.0, {"a": 0.4, "b": 0.3}, 1000),
        "plant-south": _view("skipped: not enough data", None, {}, 12),
        "unknown-group": _view("drift", 1.0, {"a": 0.9}, 500),  # not in the spec: never a label
    },
}


def test_each_checked_scope_reports_detection_share_scores_and_rows() -> None:
    values = {
        (name, tuple(sorted(labels.items()))): value for name, value, labels in drift_metric_values(SPEC, SUMMARY)
    }

    assert values[("edgeloop_drift_detected", (("group", "plant-north"),))] == 1.0
    assert values[("edgeloop_drift_detected", (("group", "_all"),))] == 0.0
    assert values[("edgeloop_drift_score", (("column", "a"), ("group", "plant-north")))] == 0.4
    assert values[("edgeloop_drift_sample_rows", (("group", "plant-south"),))] == 12
    assert ("edgeloop_drift_detected", (("group", "plant-south"),)) not in values  # skipped is not "no drift"
    assert not any(dict(labels).get("group") == "unknown-group" for _, labels in values)


def test_the_values_fit_the_metric_definitions() -> None:
    metrics = BatchMetrics(SPEC)
    assert record_drift_metrics(metrics, SPEC, SUMMARY) == 11  # fleet 5, plant-north 5, plant-south rows only
    assert "edgeloop_drift_score" in metrics.recorded()


def test_open_alerts_are_counted_per_group() -> None:
    state = {"open": {"x": {"groups": ["plant-north"]}, "y": {"groups": ["plant-north", "plant-south"]}}}
    assert open_alerts_by_group(state) == {"plant-north": 2, "plant-south": 1}
    assert open_alerts_by_group(None) == {}
