"""Partition pruning and window bounds (pure: no storage involved)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edgeloop.drift.window import WindowBounds, hour_prefixes, parse_raw_key, window_bounds
from edgeloop.spec import PipelineSpec


def test_a_time_window_lists_only_the_hours_it_overlaps_across_midnight() -> None:
    start = datetime(2026, 3, 1, 23, 40, tzinfo=UTC)
    end = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    assert hour_prefixes("raw/p/p.telemetry", start, end) == [
        "raw/p/p.telemetry/dt=2026-03-01/hour=23/",
        "raw/p/p.telemetry/dt=2026-03-02/hour=00/",
    ]


def test_a_window_ending_inside_an_hour_includes_that_hour() -> None:
    end = datetime(2026, 3, 1, 12, 10, tzinfo=UTC)
    prefixes = hour_prefixes("x", end - timedelta(minutes=30), end)
    assert prefixes == ["x/dt=2026-03-01/hour=11/", "x/dt=2026-03-01/hour=12/"]


def test_window_bounds_follow_the_spec(demo_spec: PipelineSpec) -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    bounds = window_bounds(demo_spec, now)
    assert bounds == WindowBounds(end=now, start=now - demo_spec.drift.window)  # the spec's window

    by_count = demo_spec.model_copy(update={"drift": demo_spec.drift.model_copy(update={"window_records": 5000})})
    assert window_bounds(by_count, now) == WindowBounds(end=now, records=5000)
    assert window_bounds(by_count, now, window=timedelta(hours=2)).start == now - timedelta(hours=2)


def test_naive_times_and_empty_windows_are_rejected(demo_spec: PipelineSpec) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        window_bounds(demo_spec, datetime(2026, 3, 1, 12, 0))
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="not before its end"):
        WindowBounds(end=now, start=now)


def test_only_raw_parquet_keys_are_raw_objects() -> None:
    raw = parse_raw_key("raw/p/p.telemetry/dt=2026-03-01/hour=07/2-100-199.parquet")
    assert raw is not None
    assert raw.hour == datetime(2026, 3, 1, 7, tzinfo=UTC)
    assert (raw.offsets.partition, raw.offsets.first, raw.offsets.last) == (2, 100, 199)
    assert parse_raw_key("raw/p/p.telemetry/_flushes/2/9223372036854775707.json") is None
    assert parse_raw_key("raw/p/p.telemetry/dt=2026-03-01/hour=07/notes.txt") is None
    assert parse_raw_key("raw/p/p.telemetry/dt=2026-13-01/hour=07/2-100-199.parquet") is None
