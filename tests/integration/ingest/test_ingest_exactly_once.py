"""Ingest on real Kafka and real S3 (moto server): every record stored once, whatever the re-runs."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest
from benchmarks.soak_ingest import make_record, produce, read_back

from edgeloop.ingest import FlushConflictError, FlushMarker, flush_marker_key, ingest_topic, raw_prefix
from edgeloop.spec import PipelineSpec
from edgeloop.storage import get_bytes, list_keys, put_if_absent

pytestmark = pytest.mark.integration
START = datetime(2026, 3, 1, 9, 40, tzinfo=UTC)


def good_messages(spec: PipelineSpec, first: int, count: int, partitions: int) -> list[tuple[int | None, bytes | None]]:
    rng = random.Random(first)
    return [
        (n % partitions, json.dumps(make_record(spec, f"id-{n}", START + timedelta(seconds=7 * n), rng)).encode())
        for n in range(first, first + count)
    ]


def ingest(spec: PipelineSpec, kafka_config: dict[str, str], s3: Any, **kwargs: Any) -> dict[str, Any]:
    return ingest_topic(spec, "telemetry", consumer_config=kafka_config, s3=s3, **kwargs)


def test_reruns_store_every_record_exactly_once(
    make_spec: Callable[..., PipelineSpec], kafka_config: dict[str, str], s3_client: Any
) -> None:
    spec = make_spec(partitions=3, batch_size=500, file_max_records=700)
    topic = spec.topic("telemetry")
    produce(kafka_config["bootstrap.servers"], topic, good_messages(spec, 0, 3000, 3))

    first = ingest(spec, kafka_config, s3_client)
    assert (first["records"], first["dead_letters"], first["lag_total"], first["stopped"]) == (3000, 0, 0, "caught_up")
    assert len({k.split("/dt=")[1].split("/")[0] for k in first["objects"]}) >= 1
    assert any("hour=09" in k for k in first["objects"]) and any("hour=10" in k for k in first["objects"])

    again = ingest(spec, kafka_config, s3_client)
    assert (again["records"], again["messages"], again["objects"], again["stopped"]) == (0, 0, [], "caught_up")

    produce(kafka_config["bootstrap.servers"], topic, good_messages(spec, 3000, 500, 3))
    more = ingest(spec, kafka_config, s3_client)
    assert more["records"] == 500

    stored = read_back(s3_client, spec, topic)
    assert stored.record_ids.keys() == {f"id-{n}" for n in range(3500)}
    assert set(stored.record_ids.values()) == {1}


def test_objects_carry_the_spec_schema_and_their_offsets(
    make_spec: Callable[..., PipelineSpec], kafka_config: dict[str, str], s3_client: Any
) -> None:
    spec = make_spec(partitions=1)
    topic = spec.topic("telemetry")
    produce(kafka_config["bootstrap.servers"], topic, good_messages(spec, 0, 10, 1))
    result = ingest(spec, kafka_config, s3_client)
    (key,) = result["objects"]
    assert key == f"{raw_prefix(spec, topic)}/dt=2026-03-01/hour=09/0-0-9.parquet"
    table = pq.read_table(io.BytesIO(get_bytes(s3_client, spec.storage.bucket, key)))
    assert table.schema.names == [f.name for f in spec.schema_] + ["_kafka_partition", "_kafka_offset"]
    assert str(table.schema.field(spec.field_with_role("timestamp") or "").type) == "timestamp[us, tz=UTC]"
    assert table.column("_kafka_offset").to_pylist() == list(range(10))


def test_a_record_budget_stops_the_run_and_the_next_run_continues(
    make_spec: Callable[..., PipelineSpec], kafka_config: dict[str, str], s3_client: Any
) -> None:
    spec = make_spec(partitions=2, batch_size=100)
    topic = spec.topic("telemetry")
    produce(kafka_config["bootstrap.servers"], topic, good_messages(spec, 0, 1000, 2))
    partial = ingest(spec, kafka_config, s3_client, max_records=300)
    assert partial["stopped"] == "max_records"
    assert 300 <= partial["records"] < 1000
    assert partial["lag_total"] == 1000 - partial["records"]
    rest = ingest(spec, kafka_config, s3_client)
    assert partial["records"] + rest["records"] == 1000
    assert set(read_back(s3_client, spec, topic).record_ids.values()) == {1}


def test_malformed_records_are_dead_lettered_with_reasons_and_good_ones_land(
    make_spec: Callable[..., PipelineSpec], kafka_config: dict[str, str], s3_client: Any
) -> None:
    spec = make_spec(partitions=1, max_record_bytes=2000)
    topic = spec.topic("telemetry")
    rng = random.Random(1)
    good = make_record(spec, "good", START, rng)
    temperature = "temperature_c"
    malformed: dict[str, bytes | None] = {
        "empty: the message has no value": None,
        "oversized: 2501 bytes": b"{" + b" " * 2499 + b"}",
        "undecodable: not UTF-8": b'{"record_id": "\xc3\x28"}',
        "invalid JSON": b'{"record_id": "cut',
        "schema: expected a JSON object, got array": b"[]",
        f"schema: field '{temperature}' is missing and not nullable": json.dumps(
            {k: v for k, v in good.items() if k != temperature}
        ).encode(),
        f"schema: field '{temperature}' (float): expected number, got string": json.dumps(
            {**good, temperature: "hot"}
        ).encode(),
        "schema: field 'ts' (timestamp)": json.dumps({**good, "ts": "not a time"}).encode(),
        "NaN is not valid JSON": json.dumps({**good, temperature: float("nan")}).encode(),
    }
    messages: list[tuple[int | None, bytes | None]] = []
    for n, bad in enumerate(malformed.values()):
        messages.append((0, json.dumps({**good, "record_id": f"good-{n}"}).encode()))
        messages.append((0, bad))
    offsets = produce(kafka_config["bootstrap.servers"], topic, messages)

    result = ingest(spec, kafka_config, s3_client)
    assert (result["records"], result["dead_letters"]) == (len(malformed), len(malformed))
    stored = read_back(s3_client, spec, topic)
    assert set(stored.record_ids) == {f"good-{n}" for n in range(len(malformed))}
    for n, reason in enumerate(malformed):
        assert reason in stored.deadletter_reasons[offsets[2 * n + 1]]

    (dl_key,) = result["deadletter_objects"]
    first_line = json.loads(get_bytes(s3_client, spec.storage.bucket, dl_key).splitlines()[0])
    assert first_line["payload_base64"] is None and first_line["kind"] == "empty"
    assert ingest(spec, kafka_config, s3_client)["dead_letters"] == 0, "a re-run dead-letters nothing twice"


def test_a_flush_interrupted_between_its_objects_is_redone_to_the_same_keys(
    make_spec: Callable[..., PipelineSpec], kafka_config: dict[str, str], s3_client: Any
) -> None:
    spec = make_spec(partitions=1, batch_size=50, file_max_records=120)
    topic, bucket = spec.topic("telemetry"), spec.storage.bucket
    # 7 s apart from 09:40: the first flush (0..119) fits in hour 09, the second (120..239) spans 09 and 10.
    produce(kafka_config["bootstrap.servers"], topic, good_messages(spec, 0, 240, 1))
    first = ingest(spec, kafka_config, s3_client)
    second_flush = sorted(k for k in first["objects"] if k.endswith("/0-120-239.parquet"))
    assert [k.split("/")[-2] for k in second_flush] == ["hour=09", "hour=10"]
    # The state a crash leaves after the newest flush stored its marker and its first object only:
    s3_client.delete_object(Bucket=bucket, Key=second_flush[1])

    produce(kafka_config["bootstrap.servers"], topic, good_messages(spec, 240, 160, 1))
    result = ingest(spec, kafka_config, s3_client)
    assert result["records"] == 120 + 160, "the interrupted flush is redone from its first offset, then new records"
    assert sorted(k for k in result["objects"] if k.endswith("/0-120-239.parquet")) == second_flush
    assert result["objects_created"] == len(result["objects"]) - 1, "the object stored before the crash is kept"
    stored = read_back(s3_client, spec, topic)
    assert sum(stored.record_ids.values()) == 400 and set(stored.record_ids.values()) == {1}


def test_a_second_writer_with_a_different_range_is_refused(
    make_spec: Callable[..., PipelineSpec], kafka_config: dict[str, str], s3_client: Any
) -> None:
    spec = make_spec(partitions=1)
    topic = spec.topic("telemetry")
    produce(kafka_config["bootstrap.servers"], topic, good_messages(spec, 0, 30, 1))
    marker_key = flush_marker_key(spec, topic, 0, 0)
    other = FlushMarker(topic, 0, 0, 10, (f"{raw_prefix(spec, topic)}/someone-else.parquet",), 11, 0)
    # Another run's flush 0..10 is in progress: its marker exists, its object does not yet.
    assert put_if_absent(s3_client, spec.storage.bucket, marker_key, other.to_json())
    with pytest.raises(FlushConflictError, match=marker_key):
        ingest(spec, kafka_config, s3_client)
    assert not [k for k in list_keys(s3_client, spec.storage.bucket, raw_prefix(spec, topic)) if "dt=" in k]
