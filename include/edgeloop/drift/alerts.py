"""Drift alerts and the open-alert state that suppresses duplicates (pure functions).

A drift run's summary becomes findings (one per drifted group, or `*` for fleet-wide
drift that no single group explains). While an alert covering a group is open (its
retraining flow has not finished), a new finding for that group updates the open alert
instead of opening a second one, so only new alerts are published on the `alerts`
topic, where every `kind: drift` message starts the annotation/retraining flow.

The state is one JSON object: `{"version", "pipeline", "open": {alert_id: record}, "closed": [...]}`.
An alert is opened with `published: false` and marked published after the message is
on Kafka; a run that died in between republishes the same message (same `alert_id`).
Nothing here does I/O: `alert_state` stores the state in S3 with conditional puts.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

STATE_VERSION = 1
FLEET_WIDE = "*"
SEVERITIES = ("low", "medium", "high")
_KEEP_RUNS = 20
_KEEP_CLOSED = 50


@dataclass(frozen=True)
class DriftFinding:
    """What one run says about one group (or `*`, the whole fleet)."""

    group: str
    columns: dict[str, float | None]
    severity: str
    report_key: str | None


@dataclass
class AlertPlan:
    """The new state and what to do about it: messages to publish, alerts opened and updated."""

    state: dict[str, Any]
    publish: list[dict[str, Any]] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)


def empty_state(pipeline: str) -> dict[str, Any]:
    return {"version": STATE_VERSION, "pipeline": pipeline, "open": {}, "closed": []}


def _checked_state(state: dict[str, Any] | None, pipeline: str) -> dict[str, Any]:
    if state is None:
        return empty_state(pipeline)
    if state.get("pipeline") != pipeline:
        raise ValueError(f"alert state belongs to pipeline {state.get('pipeline')!r}, not {pipeline!r}")
    if state.get("version") != STATE_VERSION or not isinstance(state.get("open"), dict):
        raise ValueError(f"alert state: unsupported version {state.get('version')!r} or no 'open' mapping")
    return copy.deepcopy(state)


def severity_of(view: dict[str, Any]) -> str:
    """`high`: data drift and a model signal (prediction drift or a confidence drop);
    `medium`: data drift alone; `low`: a confidence drop without data drift."""
    prediction = view.get("prediction_drift") or {}
    confidence = view.get("confidence") or {}
    model_signal = bool(prediction.get("drifted")) or bool(confidence.get("dropped"))
    if view.get("dataset_drift"):
        return "high" if model_signal else "medium"
    return "low"


def findings_from_summary(summary: dict[str, Any]) -> list[DriftFinding]:
    """One finding per drifted group; fleet-wide drift with no drifted group becomes `*`."""
    findings = [
        DriftFinding(name, dict(view["drifted_columns"]), severity_of(view), view.get("report_key"))
        for name, view in sorted(summary.get("groups", {}).items())
        if view.get("status") == "drift"
    ]
    overall = summary.get("overall") or {}
    if not findings and overall.get("status") == "drift":
        findings.append(
            DriftFinding(FLEET_WIDE, dict(overall["drifted_columns"]), severity_of(overall), overall.get("report_key"))
        )
    return findings


def alert_id_for(pipeline: str, run_id: str, groups: list[str]) -> str:
    """Deterministic: the same run and groups always give the same id (re-runs do not duplicate)."""
    digest = hashlib.sha256(f"{pipeline}|{run_id}|{','.join(sorted(groups))}".encode()).hexdigest()
    return f"drift-{digest[:16]}"


def _max_severity(*values: str) -> str:
    return max(values, key=SEVERITIES.index)


def alert_message(record: dict[str, Any]) -> dict[str, Any]:
    """The message for the pipeline's `alerts` topic (see `edgeloop.events`)."""
    keys = (
        "kind",
        "pipeline",
        "alert_id",
        "groups",
        "columns",
        "scores",
        "window",
        "report_key",
        "report_keys",
        "summary_key",
        "severity",
        "model_versions",
        "run_id",
        "created_at",
        "source",
    )
    return {k: copy.deepcopy(record[k]) for k in keys if k in record}


def _new_record(summary: dict[str, Any], findings: list[DriftFinding], now: datetime) -> dict[str, Any]:
    pipeline, run_id = summary["pipeline"], summary["run_id"]
    groups = sorted(f.group for f in findings)
    drifted_versions = sorted(n for n, v in summary.get("model_versions", {}).items() if v.get("status") == "drift")
    return {
        "kind": "drift",
        "pipeline": pipeline,
        "alert_id": alert_id_for(pipeline, run_id, groups),
        "groups": groups,
        "columns": sorted({c for f in findings for c in f.columns}),
        "scores": {f.group: dict(f.columns) for f in findings},
        "window": summary.get("window", {}),
        "report_key": next((f.report_key for f in findings if f.report_key), None),
        "report_keys": {f.group: f.report_key for f in findings},
        "summary_key": summary.get("summary_key"),
        "severity": _max_severity(*(f.severity for f in findings)),
        "model_versions": drifted_versions,
        "run_id": run_id,
        "created_at": now.isoformat(),
        "source": "edgeloop.drift",
        # bookkeeping, not part of the message
        "opened_at": now.isoformat(),
        "updated_at": now.isoformat(),
        "runs": [run_id],
        "updates": 0,
        "published": False,
        "published_at": None,
    }


def _update_record(record: dict[str, Any], finding: DriftFinding, summary: dict[str, Any], now: datetime) -> None:
    run_id = summary["run_id"]
    if run_id not in record["runs"]:
        record["runs"] = [*record["runs"], run_id][-_KEEP_RUNS:]
        record["updates"] += 1
    record["updated_at"] = now.isoformat()
    record["latest"] = {
        "run_id": run_id,
        "summary_key": summary.get("summary_key"),
        "window": summary.get("window", {}),
        "report_key": finding.report_key,
    }
    record.setdefault("latest_scores", {})[finding.group] = dict(finding.columns)
    record["latest_severity"] = _max_severity(record.get("latest_severity", "low"), finding.severity)


def _covering(open_alerts: dict[str, dict[str, Any]], group: str) -> str | None:
    """The open alert that already covers a group: one naming it, or a fleet-wide one."""
    for alert_id, record in sorted(open_alerts.items(), key=lambda item: item[1]["opened_at"]):
        if group in record["groups"] or FLEET_WIDE in record["groups"]:
            return alert_id
    return None


def _close(state: dict[str, Any], alert_id: str, now: datetime, reason: str) -> None:
    record = state["open"].pop(alert_id)
    record["closed_at"] = now.isoformat()
    record["close_reason"] = reason
    state["closed"] = [*state.get("closed", []), record][-_KEEP_CLOSED:]


def plan_drift_alerts(
    state: dict[str, Any] | None,
    summary: dict[str, Any],
    now: datetime,
    *,
    max_open_age: timedelta | None = None,
) -> AlertPlan:
    """Decide what a drift run's summary does to the open alerts.

    Groups already covered by an open alert update it; the other drifted groups open one
    new alert together. Open alerts older than `max_open_age` (a flow that never finished)
    are closed as expired first. `publish` holds every open alert not yet published.
    """
    new_state = _checked_state(state, summary["pipeline"])
    plan = AlertPlan(state=new_state)
    if max_open_age is not None:
        for alert_id, record in list(new_state["open"].items()):
            if now - datetime.fromisoformat(record["opened_at"]) > max_open_age:
                _close(new_state, alert_id, now, f"expired: open longer than {max_open_age}")
                plan.expired.append(alert_id)
    fresh: list[DriftFinding] = []
    for finding in findings_from_summary(summary):
        covering = _covering(new_state["open"], finding.group)
        if covering is None:
            fresh.append(finding)
            continue
        _update_record(new_state["open"][covering], finding, summary, now)
        if covering not in plan.updated:
            plan.updated.append(covering)
    if fresh:
        record = _new_record(summary, fresh, now)
        new_state["open"][record["alert_id"]] = record
        plan.opened.append(record["alert_id"])
    plan.publish = [alert_message(r) for r in new_state["open"].values() if not r["published"]]
    return plan


def mark_published(state: dict[str, Any], alert_ids: list[str], now: datetime) -> dict[str, Any]:
    """The state after these alerts' messages are on Kafka (unknown or closed ids are ignored)."""
    new_state = _checked_state(state, state["pipeline"])
    for alert_id in alert_ids:
        record = new_state["open"].get(alert_id)
        if record is not None and not record["published"]:
            record["published"] = True
            record["published_at"] = now.isoformat()
    return new_state


def close_alerts(
    state: dict[str, Any] | None,
    pipeline: str,
    now: datetime,
    *,
    reason: str,
    alert_ids: list[str] | None = None,
    groups: list[str] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Close open alerts by id and/or by group (e.g. when retraining for them finished).

    Closing group `*` closes every open alert; a group closes the alerts naming it.
    Returns the new state and the ids closed.
    """
    new_state = _checked_state(state, pipeline)
    wanted = set(alert_ids or [])
    group_set = set(groups or [])
    closed = []
    for alert_id, record in sorted(new_state["open"].items()):
        by_group = FLEET_WIDE in group_set or bool(group_set & set(record["groups"]))
        if alert_id in wanted or by_group:
            closed.append(alert_id)
    for alert_id in closed:
        _close(new_state, alert_id, now, reason)
    return new_state, closed


def open_groups(state: dict[str, Any] | None) -> dict[str, str]:
    """Group -> id of the open alert covering it."""
    if state is None:
        return {}
    return {g: alert_id for alert_id, record in state["open"].items() for g in record["groups"]}
