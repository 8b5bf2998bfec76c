"""Local staging of a flush: Parquet per hour, bounded buffers, dead-letter lines with the raw bytes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from edgeloop.ingest.metrics import ingest_metrics
from edgeloop.ingest.staging import HOUR_US, PartitionStage, deadletter_line

SCHEMA = pa.schema([pa.field("record_id", pa.string(), nullable=False), pa.field("_kafka_offset", pa.int64())])


def rows(start: int, n: int) -> pa.Table:
    return pa.table(
        {"record_id": [f"r{i}" for i in range(start, start + n)], "_kafka_offset": list(range(start, start + n))},
        schema=SCHEMA,
    )


def hours(*values: int) -> pa.Array:
    return pa.array([v * HOUR_US for v in values], pa.int64())


def test_rows_are_split_by_hour_in_offset_order(tmp_path: Path) -> None:
    stage = PartitionStage(0, SCHEMA, tmp_path)
    stage.add_rows(rows(0, 4), hours(10, 11, 10, 11))
    stage.add_rows(rows(4, 2), hours(11, 12))
    staged = stage.finish()
    assert [(s.hour, s.rows, s.kind) for s in staged] == [
        (datetime.fromtimestamp(10 * 3600, UTC), 2, "raw"),
        (datetime.fromtimestamp(11 * 3600, UTC), 3, "raw"),
        (datetime.fromtimestamp(12 * 3600, UTC), 1, "raw"),
    ]
    assert pq.read_table(staged[1].path).column("record_id").to_pylist() == ["r1", "r3", "r4"]
    stage.discard()
    assert not stage.dir.exists()


def test_buffered_rows_stay_bounded_with_many_open_hours(tmp_path: Path) -> None:
    stage = PartitionStage(0, SCHEMA, tmp_path, row_group_rows=1000, max_pending_rows=100)
    for batch in range(20):
        stage.add_rows(rows(batch * 30, 30), hours(*[i % 10 for i in range(30)]))  # rows of 10 hours a batch
        assert stage._pending_rows <= 100
    staged = stage.finish()
    assert [s.rows for s in staged] == [60] * 10
    assert all(pq.ParquetFile(s.path).metadata.num_row_groups > 1 for s in staged), "written early, in pieces"


def test_a_dead_letter_line_keeps_the_exact_bytes_and_the_reason() -> None:
    line = deadletter_line(
        topic="t",
        partition=3,
        offset=42,
        timestamp_ms=1767225600000,
        key=b"dev-1",
        value=b"\xff\x00raw",
        kind="undecodable",
        reason="undecodable: not UTF-8",
    )
    entry = json.loads(line)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert base64.b64decode(entry["payload_base64"]) == b"\xff\x00raw"
    assert base64.b64decode(entry["key_base64"]) == b"dev-1"
    assert (entry["partition"], entry["offset"], entry["kind"], entry["size"]) == (3, 42, "undecodable", 5)


def test_dead_letters_are_staged_in_the_hour_of_the_first_bad_message(tmp_path: Path) -> None:
    stage = PartitionStage(1, SCHEMA, tmp_path)
    stage.add_dead_letter(b'{"a": 1}\n', 7 * 3_600_000 + 5)
    stage.add_dead_letter(b'{"a": 2}\n', 9 * 3_600_000)
    (staged,) = stage.finish()
    assert (staged.kind, staged.rows, staged.hour) == ("deadletter", 2, datetime.fromtimestamp(7 * 3600, UTC))
    assert staged.path.read_bytes() == b'{"a": 1}\n{"a": 2}\n'


def test_metrics_follow_the_catalog_with_bounded_labels() -> None:
    from edgeloop.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml")
    topic = spec.topic("telemetry")
    result = {
        "pipeline": spec.name,
        "topic": topic,
        "records": 10,
        "value_bytes": 3000,
        "objects": ["a", "b"],
        "dead_letters_by_kind": {"undecodable": 1, "invalid_json": 2, "oversized": 1},
        "duration_s": 1.5,
    }
    registry = ingest_metrics(spec, result)
    samples = {
        (s.name, s.labels.get("reason")): s
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }
    assert samples[("edgeloop_ingest_records_total", None)].value == 10
    assert samples[("edgeloop_ingest_bytes_total", None)].value == 3000
    assert samples[("edgeloop_ingest_files_total", None)].value == 2
    assert samples[("edgeloop_ingest_deadletter_records_total", "decode")].value == 3
    assert samples[("edgeloop_ingest_deadletter_records_total", "too_large")].value == 1
    assert samples[("edgeloop_ingest_deadletter_records_total", "schema")].value == 0
    assert samples[("edgeloop_ingest_run_duration_seconds", None)].value == 1.5
    ingest = [s for (name, _), s in samples.items() if name.startswith("edgeloop_ingest_")]
    assert all(s.labels["pipeline"] == spec.name and s.labels["topic"] == topic for s in ingest)
