"""The drift tasks: the check's result read back strictly, alerts sent before links are handed on, skips explained."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.exceptions import AirflowSkipException

from edgeloop.drift import alert_state, publish, reports
from edgeloop.drift import tasks as drift_tasks
from edgeloop.drift.tasks import DriftAlertsPublished, DriftCheck, ReportsRendered
from edgeloop.metrics.push import TaskMetrics
from edgeloop.registry import aliases, client
from edgeloop.spec import PipelineSpec
from edgeloop.xcom import XComContractError

NOW = datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
NO_METRICS = TaskMetrics(gateway=None, dag_id="factory_maintenance__drift", task_id="publish_alerts")
SUMMARY_KEY = "reports/drift/factory_maintenance/run1/summary.json"


def check(**changes: Any) -> DriftCheck:
    fields: dict[str, Any] = {
        "status": "drift",
        "summary_key": SUMMARY_KEY,
        "reports": {"group=plant-north": "reports/drift/factory_maintenance/run1/group=plant-north.html"},
        "pending_reports": {"fleet": "reports/drift/factory_maintenance/run1/fleet.html"},
        "telemetry": "raw",
        "rows": 1200,
        "corrupt_objects": 0,
        "drifted_groups": ["plant-north"],
        "publish": [{"alert_id": "drift:1", "kind": "drift"}],
        "opened": ["drift:1"],
        "updated": [],
        "expired": [],
        "seconds": {"read": 0.1, "check": 0.2, "report": 0.3, "write": 0.1},
    }
    return DriftCheck(**{**fields, **changes})


class FakeS3:
    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        assert Key == SUMMARY_KEY
        return {"Body": io.BytesIO(json.dumps({"status": "drift", "scopes": []}).encode())}


class FakeClients:
    def kafka(self) -> dict[str, Any]:
        return {"bootstrap.servers": "fake:9092"}

    def s3(self) -> FakeS3:
        return FakeS3()

    def mlflow_uri(self) -> str:
        return "http://mlflow.invalid"


def test_a_raw_window_leaves_the_profile_counts_out_of_its_xcom() -> None:
    raw = check()
    assert "profiles" not in raw.to_xcom() and DriftCheck.from_xcom(raw.to_xcom()) == raw
    profiled = check(telemetry="profiles", profiles=4, records=1200, sampled_records=90)
    assert profiled.to_xcom()["sampled_records"] == 90 and DriftCheck.from_xcom(profiled.to_xcom()) == profiled


@pytest.mark.parametrize(
    "result",
    [
        DriftAlertsPublished(alert_ids=["drift:1"], drifted_groups=["g"], summary_key="s", reports={}, report_links={}),
        ReportsRendered(reports={"fleet": "k"}, disagreements=["fleet"]),
    ],
)
def test_results_survive_their_xcom_round_trip(result: Any) -> None:
    assert type(result).from_xcom(result.to_xcom()) == result


def test_the_publish_task_names_the_key_the_check_did_not_hand_over() -> None:
    data = check().to_xcom()
    del data["publish"]
    with pytest.raises(XComContractError, match=r"DriftCheck.from_xcom: missing key\(s\) \['publish'\]"):
        DriftCheck.from_xcom(data)


def test_without_a_champion_the_check_is_skipped(demo_spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "mlflow_client", lambda uri: object())
    monkeypatch.setattr(aliases, "champion_training_data", lambda mlflow, spec: None)
    clients: Any = FakeClients()
    with pytest.raises(AirflowSkipException, match="no champion model yet"):
        drift_tasks.check_drift(demo_spec, clients, run_id="scheduled__1", now=NOW)


def test_alerts_are_sent_and_confirmed_and_every_report_gets_a_link(
    demo_spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[Any] = []
    confirmed: list[Any] = []
    monkeypatch.setattr(publish, "publish_drift_alerts", lambda kafka, spec, alerts: sent.append(alerts) or ["drift:1"])
    monkeypatch.setattr(
        alert_state, "confirm_published", lambda s3, bucket, spec, ids, now: confirmed.append((ids, now))
    )
    clients: Any = FakeClients()

    published = drift_tasks.publish_alerts(demo_spec, clients, check(), now=NOW, metrics=NO_METRICS)
    assert sent == [[{"alert_id": "drift:1", "kind": "drift"}]] and confirmed == [(["drift:1"], NOW)]
    assert published.alert_ids == ["drift:1"] and published.drifted_groups == ["plant-north"]
    assert set(published.reports) == set(published.report_links) == {"fleet", "group=plant-north"}
    assert published.report_links["fleet"] == "/edgeloop/generator/reports/factory_maintenance/run1/fleet.html"


def test_render_reports_hands_on_what_it_wrote(demo_spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        reports,
        "render_pending_reports",
        lambda s3, bucket, spec, run_id: {"reports": {"fleet": "k"}, "disagreements": []},
    )
    clients: Any = FakeClients()
    rendered = drift_tasks.render_reports(demo_spec, clients, run_id="scheduled__1")
    assert rendered == ReportsRendered(reports={"fleet": "k"}, disagreements=[])
