"""The ingest tasks: what plan, ingest_topic and publish hand each other, read back strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowSkipException

from edgeloop.ingest import run
from edgeloop.ingest import tasks as ingest_tasks
from edgeloop.ingest.tasks import RawEvent, TopicIngested
from edgeloop.metrics.push import TaskMetrics
from edgeloop.spec import PipelineSpec, load_spec
from edgeloop.xcom import XComContractError

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
NO_METRICS = TaskMetrics(gateway=None, dag_id="factory_maintenance__ingest", task_id="ingest_topic")


@pytest.fixture
def spec() -> PipelineSpec:
    return load_spec(DEMO)


def summary(topic: str, records: int, objects: list[str]) -> dict[str, Any]:
    return {
        "pipeline": "factory_maintenance",
        "topic": topic,
        "objects": objects,
        "deadletter_objects": [],
        "objects_created": len(objects),
        "records": records,
        "dead_letters": 0,
        "dead_letters_by_kind": {},
        "bytes": 10 * records,
        "value_bytes": 8 * records,
        "messages": records,
        "flushes": len(objects),
        "lag": {"0": 0},
        "lag_total": 0,
        "skipped_by_retention": {},
        "stopped": "end of topic",
        "duration_s": 0.5,
    }


class FakeClients:
    def kafka(self) -> dict[str, Any]:
        return {"bootstrap.servers": "fake:9092"}

    def s3(self) -> object:
        return object()


def test_results_survive_their_xcom_round_trip() -> None:
    topic = TopicIngested.from_xcom(summary("factory_maintenance.telemetry", 3, ["raw/a.parquet"]))
    assert TopicIngested.from_xcom(topic.to_xcom()) == topic
    event = RawEvent(
        records=3,
        dead_letters=0,
        topics={"t": {"records": 3, "objects": 1}},
        objects=["k"],
        objects_total=1,
        lag_total=0,
    )
    assert RawEvent.from_xcom(event.to_xcom()) == event


def test_a_renamed_summary_key_fails_with_the_name_of_the_key() -> None:
    data = summary("factory_maintenance.telemetry", 3, [])
    data["record_count"] = data.pop("records")
    with pytest.raises(
        XComContractError,
        match=r"TopicIngested.from_xcom: missing key\(s\) \['records'\]; unknown key\(s\) \['record_count'\]",
    ):
        TopicIngested.from_xcom(data)


def test_the_plan_defaults_to_the_spec_and_refuses_topics_that_are_not_ingestible(spec: PipelineSpec) -> None:
    assert ingest_tasks.plan(spec, None) == list(spec.topics.ingest)
    assert ingest_tasks.plan(spec, ["health"]) == ["health"]
    with pytest.raises(ValueError, match=r"params\.topics: \['alerts'\] are not ingestible topics"):
        ingest_tasks.plan(spec, ["alerts", "health"])


def test_ingest_topic_uses_the_spec_budget_unless_the_run_gives_one(
    spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def move(spec: PipelineSpec, topic: str, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return summary(spec.topic(topic), 2, ["raw/x.parquet"])

    monkeypatch.setattr(run, "ingest_topic", move)
    clients: Any = FakeClients()
    result = ingest_tasks.ingest_topic(
        spec, clients, "health", max_records=None, accept_lost_offsets=False, metrics=NO_METRICS
    )
    ingest_tasks.ingest_topic(spec, clients, "health", max_records=7, accept_lost_offsets=True, metrics=NO_METRICS)
    assert result.records == 2 and result.topic == spec.topic("health")
    assert [(c["max_records"], c["accept_lost_offsets"], c["codec"]) for c in calls] == [
        (spec.ingest.max_records, False, None),
        (7, True, None),
    ]


def test_publish_merges_the_topics_and_skips_a_run_without_records() -> None:
    telemetry = TopicIngested.from_xcom(summary("factory_maintenance.telemetry", 3, ["raw/a.parquet"]))
    health = TopicIngested.from_xcom(summary("factory_maintenance.health", 0, []))
    event = ingest_tasks.publish([telemetry, health])
    assert (event.records, event.objects, event.objects_total) == (3, ["raw/a.parquet"], 1)
    assert set(event.topics) == {"factory_maintenance.telemetry", "factory_maintenance.health"}
    with pytest.raises(AirflowSkipException, match="no new records"):
        ingest_tasks.publish([health])
