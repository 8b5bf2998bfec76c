"""A drift alert reaches the pipeline's alerts topic in the form the AssetWatcher's trigger accepts."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from edgeloop.drift.alerts import plan_drift_alerts
from edgeloop.drift.publish import publish_drift_alerts
from edgeloop.drift.synthetic import synthetic_spec
from edgeloop.events import alert_matches, parse_alert
from edgeloop.kafka import ensure_pipeline_topics
from edgeloop.spec import PipelineSpec

pytestmark = pytest.mark.integration


@pytest.fixture
def spec(kafka_config: dict[str, str]) -> Iterator[PipelineSpec]:
    """A pipeline of its own with its topics, deleted again after the test."""
    from confluent_kafka.admin import AdminClient

    spec = synthetic_spec(["a"], ["plant-north"], name=f"drift_kafka_{uuid.uuid4().hex[:8]}")
    created = ensure_pipeline_topics(spec, kafka_config)
    yield spec
    admin = AdminClient(kafka_config)  # kept alive until the deletions are confirmed
    for future in admin.delete_topics(created, operation_timeout=30).values():
        future.result()


def test_a_new_drift_alert_is_delivered_to_the_alerts_topic(kafka_config: dict[str, str], spec: PipelineSpec) -> None:
    from confluent_kafka import Consumer, TopicPartition

    summary = {
        "pipeline": spec.name,
        "run_id": "run0",
        "window": {"start": None, "end": "2026-03-01T12:00:00+00:00", "records": 5000},
        "summary_key": "reports/drift/x/run0/summary.json",
        "overall": {"status": "no drift", "drifted_columns": {}},
        "groups": {
            "plant-north": {
                "status": "drift",
                "dataset_drift": True,
                "drifted_columns": {"a": 0.4},
                "report_key": "reports/drift/x/run0/group=plant-north.html",
            }
        },
    }
    plan = plan_drift_alerts(None, summary, datetime(2026, 3, 1, 12, 0, tzinfo=UTC))

    delivered = publish_drift_alerts(kafka_config, spec, plan.publish)

    assert delivered == plan.opened
    consumer = Consumer({**kafka_config, "group.id": f"it-{uuid.uuid4().hex}", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(spec.topic("alerts"), timeout=10).topics[spec.topic("alerts")].partitions
        consumer.assign([TopicPartition(spec.topic("alerts"), p, 0) for p in partitions])
        deadline = time.monotonic() + 30
        message = None
        while message is None and time.monotonic() < deadline:
            polled = consumer.poll(1.0)
            if polled is not None and polled.error() is None:
                message = polled
    finally:
        consumer.close()
    assert message is not None, "no message on the alerts topic within 30 s"
    assert message.key() == b"plant-north"  # the one group it is about (events.alert_key)
    alert = parse_alert(message.value())
    assert alert_matches(alert, spec.name, ["drift"])
    assert alert["groups"] == ["plant-north"] and alert["columns"] == ["a"]
    assert json.loads(message.value())["report_key"] == "reports/drift/x/run0/group=plant-north.html"
