"""The fleet_health and config_push tasks: given fakes for Kafka and storage, what each task hands the next."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgeloop import kafka
from edgeloop.fleet import health
from edgeloop.fleet import tasks as fleet_tasks
from edgeloop.fleet.health import FleetStatus, GroupStatus
from edgeloop.fleet.tasks import AlertsPublished, ConfigPushed, HealthReport
from edgeloop.metrics.push import TaskMetrics
from edgeloop.spec import PipelineSpec, load_spec
from edgeloop.xcom import XComContractError

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
NO_METRICS = TaskMetrics(gateway=None, dag_id="factory_maintenance__fleet_health", task_id="compute_health")


@pytest.fixture
def spec() -> PipelineSpec:
    return load_spec(DEMO)


class FakeS3:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: Any) -> None:
        self.objects[Key] = Body


class FakeClients:
    def __init__(self) -> None:
        self.s3_client = FakeS3()

    def kafka(self) -> dict[str, Any]:
        return {"bootstrap.servers": "fake:9092"}

    def s3(self) -> FakeS3:
        return self.s3_client


@pytest.mark.parametrize(
    "result",
    [
        HealthReport(report_key="fleet/health/a.json", alerts=[{"kind": "device", "group": "line-canary"}], groups=2),
        AlertsPublished(alerts_published=1, report_key="fleet/health/a.json"),
        ConfigPushed(assignment={"assignment_id": "push-1", "config": {"interval": 2.0}}, pushed_at=1.5),
    ],
)
def test_each_result_survives_its_xcom_round_trip(result: Any) -> None:
    assert type(result).from_xcom(result.to_xcom()) == result


def test_a_renamed_key_fails_where_the_next_task_reads_it() -> None:
    data = HealthReport(report_key="k", alerts=[], groups=0).to_xcom()
    data["key"] = data.pop("report_key")
    with pytest.raises(XComContractError, match=r"HealthReport.from_xcom: missing key\(s\) \['report_key'\]"):
        HealthReport.from_xcom(data)


def test_the_wait_reads_what_publish_assignment_pushed() -> None:
    with pytest.raises(XComContractError, match=r"ConfigPushed.from_xcom: missing key\(s\) \['pushed_at'\]"):
        ConfigPushed.from_xcom({"assignment": {}})


def test_an_unhealthy_group_is_reported_then_alerted_once(spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    sick = GroupStatus(group=spec.groups[0].name, devices=4, online=1, offline=3)
    status = FleetStatus(pipeline=spec.name, generated_at="2026-01-01T00:00:00Z", window_s=300.0, groups=[sick])
    monkeypatch.setattr(health, "fleet_status", lambda spec, kafka, trusted: status)
    sent: list[tuple[str, list[Any]]] = []
    monkeypatch.setattr(
        kafka, "publish_messages", lambda config, topic, messages, timeout=30.0: sent.append((topic, messages))
    )
    clients = FakeClients()

    report = fleet_tasks.compute_health(spec, clients, trusted=None, metrics=NO_METRICS)  # type: ignore[arg-type]
    assert report.groups == 1 and [a["group"] for a in report.alerts] == [sick.group]
    assert report.report_key in clients.s3_client.objects
    assert sent == []

    published = fleet_tasks.publish_device_alerts(spec, clients, HealthReport.from_xcom(report.to_xcom()))  # type: ignore[arg-type]
    assert published == AlertsPublished(alerts_published=1, report_key=report.report_key)
    assert [topic for topic, _ in sent] == [spec.topic("alerts")]
    assert [key for key, _ in sent[0][1]] == [sick.group.encode()]  # the alerts topic's one key rule


def test_a_config_push_without_a_configuration_is_refused(spec: PipelineSpec) -> None:
    with pytest.raises(ValueError, match=r"params\.config: no configuration to push"):
        fleet_tasks.publish_assignment(
            spec,
            FakeClients(),
            signer=None,
            params={"group": "line-canary"},
            run_id="manual__1",
            now=0.0,  # type: ignore[arg-type]
        )
