"""Alert messages and duplicate suppression: one open alert per group until its flow finishes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edgeloop.drift.alerts import (
    FLEET_WIDE,
    close_alerts,
    findings_from_summary,
    mark_published,
    open_groups,
    plan_drift_alerts,
    severity_of,
)
from edgeloop.events import parse_alert

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _view(status: str, columns: dict[str, float] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "status": status,
        "dataset_drift": status == "drift",
        "drifted_columns": columns or {},
        "report_key": extra.pop("report_key", None),
        "prediction_drift": extra.pop("prediction_drift", None),
        "confidence": extra.pop("confidence", None),
        **extra,
    }


def summary(run: str, drifted: dict[str, dict[str, float]], *, fleet: str = "no drift") -> dict[str, Any]:
    """A drift run summary in the shape `results.build_summary` writes."""
    groups = {g: _view("no drift") for g in ("line-canary", "plant-north", "plant-south")}
    for group, columns in drifted.items():
        groups[group] = _view("drift", columns, report_key=f"reports/drift/p/{run}/group={group}.html")
    return {
        "pipeline": "p",
        "run_id": run,
        "status": "drift" if drifted or fleet == "drift" else "no drift",
        "window": {"start": "2026-03-01T11:30:00+00:00", "end": "2026-03-01T12:00:00+00:00", "records": None},
        "summary_key": f"reports/drift/p/{run}/summary.json",
        "overall": _view(
            fleet, {"rpm": 0.3} if fleet == "drift" else {}, report_key=f"reports/drift/p/{run}/fleet.html"
        ),
        "groups": groups,
        "model_versions": {},
    }


NORTH = {"plant-north": {"rpm": 0.4, "temperature_c": 0.2}}


def _run_three_times(drifted: dict[str, dict[str, float]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Three drift runs in a row, each publishing what its plan says and confirming it."""
    state: dict[str, Any] | None = None
    published: list[dict[str, Any]] = []
    for i in range(3):
        plan = plan_drift_alerts(state, summary(f"run{i}", drifted), T0 + timedelta(hours=i))
        published.extend(plan.publish)
        state = mark_published(plan.state, [m["alert_id"] for m in plan.publish], T0 + timedelta(hours=i))
    assert state is not None
    return state, published


def test_three_drift_results_for_the_same_group_make_one_open_alert() -> None:
    state, published = _run_three_times(NORTH)

    assert len(state["open"]) == 1
    assert len(published) == 1
    record = next(iter(state["open"].values()))
    assert record["groups"] == ["plant-north"]
    assert record["updates"] == 2
    assert record["runs"] == ["run0", "run1", "run2"]
    assert record["latest"]["run_id"] == "run2"


def test_the_alert_message_has_the_alerts_topic_format() -> None:
    plan = plan_drift_alerts(None, summary("run0", NORTH), T0)
    (message,) = plan.publish

    assert parse_alert(json.dumps(message)) == message  # what the AssetWatcher's trigger accepts
    assert message["kind"] == "drift" and message["pipeline"] == "p"
    assert message["groups"] == ["plant-north"]
    assert message["columns"] == ["rpm", "temperature_c"]
    assert message["scores"] == {"plant-north": {"rpm": 0.4, "temperature_c": 0.2}}
    assert message["report_key"] == "reports/drift/p/run0/group=plant-north.html"
    assert message["window"]["end"] == "2026-03-01T12:00:00+00:00"
    assert message["severity"] == "medium"
    assert message["alert_id"].startswith("drift-")
    assert "published" not in message and "runs" not in message  # bookkeeping stays in the state


def test_an_alert_not_yet_confirmed_is_published_again_with_the_same_id() -> None:
    first = plan_drift_alerts(None, summary("run0", NORTH), T0)
    again = plan_drift_alerts(
        first.state, summary("run1", NORTH), T0 + timedelta(hours=1)
    )  # run0 died before confirming

    assert [m["alert_id"] for m in again.publish] == [m["alert_id"] for m in first.publish]
    assert len(again.state["open"]) == 1


def test_a_rerun_of_the_same_run_changes_nothing_but_the_time() -> None:
    plan = plan_drift_alerts(None, summary("run0", NORTH), T0)
    state = mark_published(plan.state, [m["alert_id"] for m in plan.publish], T0)
    rerun = plan_drift_alerts(state, summary("run0", NORTH), T0 + timedelta(minutes=5))

    assert rerun.publish == [] and rerun.opened == []
    assert next(iter(rerun.state["open"].values()))["updates"] == 0


def test_a_new_group_opens_its_own_alert_while_another_is_open() -> None:
    state, _ = _run_three_times(NORTH)
    plan = plan_drift_alerts(state, summary("run9", {**NORTH, "plant-south": {"acoustic_db": 0.5}}), T0)

    assert len(plan.opened) == 1
    (message,) = plan.publish
    assert message["groups"] == ["plant-south"]
    assert open_groups(plan.state) == {"plant-north": plan.updated[0], "plant-south": plan.opened[0]}


def test_fleet_wide_drift_without_a_drifted_group_is_one_alert_for_the_whole_fleet() -> None:
    plan = plan_drift_alerts(None, summary("run0", {}, fleet="drift"), T0)
    (message,) = plan.publish
    assert message["groups"] == [FLEET_WIDE]
    assert message["report_key"] == "reports/drift/p/run0/fleet.html"

    # while it is open, a drifted group is part of that flow
    later = plan_drift_alerts(plan.state, summary("run1", NORTH), T0 + timedelta(hours=1))
    assert later.opened == [] and later.updated == plan.opened


def test_no_drift_opens_nothing() -> None:
    plan = plan_drift_alerts(None, summary("run0", {}), T0)
    assert plan.publish == [] and plan.state["open"] == {}


def test_after_the_flow_closes_the_alert_new_drift_opens_a_new_one() -> None:
    state, _ = _run_three_times(NORTH)
    state, closed = close_alerts(
        state, "p", T0 + timedelta(days=1), reason="retrained: model v8", groups=["plant-north"]
    )
    assert len(closed) == 1 and state["open"] == {}
    assert state["closed"][-1]["close_reason"] == "retrained: model v8"

    plan = plan_drift_alerts(state, summary("run5", NORTH), T0 + timedelta(days=2))
    assert len(plan.publish) == 1 and plan.publish[0]["alert_id"] not in closed


def test_an_alert_open_too_long_expires_and_drift_opens_a_fresh_one() -> None:
    first = plan_drift_alerts(None, summary("run0", NORTH), T0)
    state = mark_published(first.state, first.opened, T0)
    plan = plan_drift_alerts(state, summary("run1", NORTH), T0 + timedelta(days=8), max_open_age=timedelta(days=7))

    assert plan.expired == first.opened
    assert plan.opened and plan.opened != first.opened
    assert plan.state["closed"][-1]["close_reason"].startswith("expired")


def test_severity_grows_with_the_evidence() -> None:
    assert severity_of(_view("drift", {"a": 1.0})) == "medium"
    assert severity_of(_view("drift", {"a": 1.0}, prediction_drift={"drifted": True})) == "high"
    assert severity_of(_view("drift", {"a": 1.0}, confidence={"dropped": True})) == "high"
    confidence_only = _view("drift", confidence={"dropped": True})
    confidence_only["dataset_drift"] = False
    assert severity_of(confidence_only) == "low"


def test_the_state_of_another_pipeline_is_refused() -> None:
    plan = plan_drift_alerts(None, summary("run0", NORTH), T0)
    other = {**summary("run1", NORTH), "pipeline": "q"}
    with pytest.raises(ValueError, match="belongs to pipeline 'p'"):
        plan_drift_alerts(plan.state, other, T0)


def test_findings_follow_the_summary() -> None:
    findings = findings_from_summary(summary("run0", {**NORTH, "line-canary": {"rpm": 0.2}}, fleet="drift"))
    assert [f.group for f in findings] == ["line-canary", "plant-north"]  # groups explain the fleet's drift
