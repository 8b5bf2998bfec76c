"""Where ingestion resumes, read from the object store alone (a fake store: pure logic)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ingest_fakes import FakeS3

from edgeloop.ingest.keys import flush_marker_key
from edgeloop.ingest.progress import CorruptMarkerError, FlushMarker, read_progress
from edgeloop.spec import PipelineSpec, load_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
TOPIC = "factory_maintenance.telemetry"


@pytest.fixture
def spec() -> PipelineSpec:
    return load_spec(DEMO)


def store_flush(s3: FakeS3, spec: PipelineSpec, partition: int, first: int, last: int, *, written: bool) -> FlushMarker:
    objects = (f"raw/x/{partition}-{first}-{last}.parquet", f"deadletter/x/{partition}-{first}-{last}.jsonl")
    marker = FlushMarker(TOPIC, partition, first, last, objects, records=last - first, dead_letters=1)
    s3.objects[(spec.storage.bucket, flush_marker_key(spec, TOPIC, partition, first))] = marker.to_json()
    for key in objects if written else objects[:1]:
        s3.objects[(spec.storage.bucket, key)] = b"data"
    return marker


def test_a_partition_with_nothing_stored_starts_from_the_beginning(spec: PipelineSpec) -> None:
    progress = read_progress(FakeS3(), spec, TOPIC, 0)
    assert (progress.next_offset, progress.redo) == (None, None)


def test_resume_after_the_newest_complete_flush(spec: PipelineSpec) -> None:
    s3 = FakeS3()
    for first, last in [(0, 99), (100, 199), (200, 1234)]:
        store_flush(s3, spec, 2, first, last, written=True)
    store_flush(s3, spec, 1, 0, 5000, written=True)  # another partition does not count
    progress = read_progress(s3, spec, TOPIC, 2)
    assert (progress.next_offset, progress.redo) == (1235, None)


def test_an_interrupted_flush_is_redone_from_its_first_offset(spec: PipelineSpec) -> None:
    s3 = FakeS3()
    store_flush(s3, spec, 0, 0, 99, written=True)
    interrupted = store_flush(s3, spec, 0, 100, 180, written=False)
    progress = read_progress(s3, spec, TOPIC, 0)
    assert progress.next_offset == 100
    assert progress.redo == interrupted


def test_reading_progress_costs_a_few_requests_however_many_flushes(spec: PipelineSpec) -> None:
    s3 = FakeS3()
    for n in range(300):
        store_flush(s3, spec, 0, n * 10, n * 10 + 9, written=True)
    s3.calls.clear()
    assert read_progress(s3, spec, TOPIC, 0).next_offset == 3000
    assert s3.calls == ["list_objects_v2", "get_object", "head_object", "head_object"]


def test_a_marker_that_disagrees_with_its_key_is_reported(spec: PipelineSpec) -> None:
    s3 = FakeS3()
    marker = FlushMarker(TOPIC, 0, 50, 60, (), 10, 0)
    key = flush_marker_key(spec, TOPIC, 0, 40)
    s3.objects[(spec.storage.bucket, key)] = marker.to_json()
    with pytest.raises(CorruptMarkerError, match=key):
        read_progress(s3, spec, TOPIC, 0)


def test_an_unreadable_marker_names_its_key(spec: PipelineSpec) -> None:
    s3 = FakeS3()
    key = flush_marker_key(spec, TOPIC, 0, 0)
    s3.objects[(spec.storage.bucket, key)] = b"{not json"
    with pytest.raises(CorruptMarkerError, match=key):
        read_progress(s3, spec, TOPIC, 0)
