"""Settings of an ingest run that exactly-once depends on, checked before anything connects."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeloop.ingest import ingest_topic
from edgeloop.ingest.decode import RecordSchema, timestamp_field
from edgeloop.ingest.run import _consumer_config
from edgeloop.spec import FieldSpec, PipelineSpec, load_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"


@pytest.fixture
def spec() -> PipelineSpec:
    return load_spec(DEMO)


def test_the_caller_cannot_turn_auto_commit_back_on(spec: PipelineSpec) -> None:
    config = _consumer_config(
        spec, {"bootstrap.servers": "b:9092", "enable.auto.commit": True, "sasl.mechanism": "PLAIN"}, None
    )
    assert config["enable.auto.commit"] is False and config["enable.auto.offset.store"] is False
    assert config["enable.partition.eof"] is True
    assert config["sasl.mechanism"] == "PLAIN", "security settings pass through"
    assert config["group.id"] == "edgeloop.factory_maintenance.ingest"


def test_group_id_from_the_connection_or_the_argument(spec: PipelineSpec) -> None:
    assert _consumer_config(spec, {"group.id": "from-conn"}, None)["group.id"] == "from-conn"
    assert _consumer_config(spec, {"group.id": "from-conn"}, "explicit")["group.id"] == "explicit"


def test_only_ingestible_topics_are_accepted(spec: PipelineSpec) -> None:
    with pytest.raises(ValueError, match="topic 'alerts' is not one of the ingestible topics"):
        ingest_topic(spec, "alerts", consumer_config={}, s3=None)


def test_the_timestamp_field_must_be_a_timestamp() -> None:
    good = RecordSchema((FieldSpec(name="at", type="timestamp", role="timestamp"),), 100)
    assert timestamp_field(good) == "at"
    as_int = RecordSchema((FieldSpec(name="at", type="int", role="timestamp"),), 100)
    with pytest.raises(ValueError, match=r"role 'timestamp' \(at\) must exist and have type timestamp"):
        timestamp_field(as_int)
    with pytest.raises(ValueError, match=r"\(None\)"):
        timestamp_field(RecordSchema((FieldSpec(name="x", type="float"),), 100))
