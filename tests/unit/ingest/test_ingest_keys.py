"""Object keys of the ingest stage: deterministic from the offset range, readable back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgeloop.ingest.keys import (
    MAX_OFFSET,
    OffsetRange,
    deadletter_object_key,
    first_offset_of_marker,
    flush_marker_key,
    hour_dir,
    parse_object_key,
    raw_object_key,
)
from edgeloop.spec import PipelineSpec, load_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"


@pytest.fixture
def spec() -> PipelineSpec:
    base = load_spec(DEMO)
    return base.model_copy(update={"storage": base.storage.model_copy(update={"prefix": "tenant-a/edge"})})


def test_raw_key_names_pipeline_topic_hour_and_offset_range(spec: PipelineSpec) -> None:
    hour = datetime(2026, 2, 3, 7, 59, 12, tzinfo=UTC)
    key = raw_object_key(spec, "factory_maintenance.telemetry", hour, OffsetRange(4, 1200, 1399))
    assert key == (
        "tenant-a/edge/raw/factory_maintenance/factory_maintenance.telemetry/dt=2026-02-03/hour=07/4-1200-1399.parquet"
    )
    assert key.startswith(spec.storage_prefix("raw") + "/")


def test_deadletter_key_mirrors_raw_layout(spec: PipelineSpec) -> None:
    key = deadletter_object_key(spec, "t.errors", datetime(2026, 1, 1, 0, tzinfo=UTC), OffsetRange(0, 5, 5))
    assert key == "tenant-a/edge/deadletter/factory_maintenance/t.errors/dt=2026-01-01/hour=00/0-5-5.jsonl"


def test_hour_dir_uses_utc_whatever_the_input_zone() -> None:
    from zoneinfo import ZoneInfo

    local = datetime(2026, 6, 1, 1, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # 23:30 UTC the day before
    assert hour_dir(local) == "dt=2026-05-31/hour=23"


def test_parse_object_key_inverts_the_naming(spec: PipelineSpec) -> None:
    hour = datetime(2026, 2, 3, 7, tzinfo=UTC)
    key = raw_object_key(spec, "x.telemetry", hour, OffsetRange(2, 10, 99))
    assert parse_object_key(key) == (hour, OffsetRange(2, 10, 99))


@pytest.mark.parametrize(
    "key",
    [
        "raw/p/t/dt=2026-01-01/hour=00/2-10.parquet",
        "raw/p/t/2-10-20.parquet",
        "raw/p/t/dt=2026-01-01/h=00/2-10-20.parquet",
    ],
)
def test_parse_object_key_names_the_bad_key(key: str) -> None:
    with pytest.raises(ValueError, match="raw/p/t"):
        parse_object_key(key)


def test_offset_range_rejects_inverted_ranges() -> None:
    with pytest.raises(ValueError, match=r"partition 1, offsets 9\.\.3"):
        OffsetRange(1, 9, 3)


def test_flush_markers_list_newest_first(spec: PipelineSpec) -> None:
    """S3 lists keys in ascending order: the newest flush (highest first offset) must come first."""
    offsets = [0, 9, 10, 99, 100, 123_456_789, MAX_OFFSET]
    keys = [flush_marker_key(spec, "t.telemetry", 3, o) for o in offsets]
    assert sorted(keys) == list(reversed(keys))
    assert [first_offset_of_marker(k) for k in keys] == offsets
    assert all("/_flushes/3/" in k for k in keys)


def test_marker_key_rejects_a_negative_offset(spec: PipelineSpec) -> None:
    with pytest.raises(ValueError, match="offset -1 of partition 0"):
        flush_marker_key(spec, "t.telemetry", 0, -1)
