"""The demo's loop summary: each stage's share from the end times of its runs."""

from __future__ import annotations

from edgeloop.demo import all_devices_on, stage_seconds

INJECTED = "2026-11-25T10:00:00+00:00"


def test_each_stage_counts_from_the_previous_stage_end() -> None:
    ends = {
        "detection": "2026-11-25T10:02:10Z",
        "annotation": "2026-11-25T10:02:40.500000Z",
        "training": "2026-11-25T10:03:40Z",
        "rollout": "2026-11-25T10:06:40Z",
    }
    shares = stage_seconds(INJECTED, ends, loop_seconds=420.0)
    assert shares == {"detection": 130.0, "annotation": 30.5, "training": 59.5, "rollout": 180.0, "fleet": 20.0}
    assert sum(shares.values()) == 420.0


def test_a_stage_that_has_not_ended_stops_the_split_there() -> None:
    shares = stage_seconds(INJECTED, {"detection": "2026-11-25T10:01:00Z", "annotation": None}, 300.0)
    assert shares == {"detection": 60.0}
    assert stage_seconds(None, {"detection": "2026-11-25T10:01:00Z"}, 300.0) == {}


def test_every_device_must_report_the_version() -> None:
    assert all_devices_on({"a": {"2": 20}, "b": {"2": 120}}, "2", 140)
    assert not all_devices_on({"a": {"2": 19, "1": 1}, "b": {"2": 120}}, "2", 140)
    assert not all_devices_on({"a": {"2": 20}}, "2", 140)  # devices that never reported count as not updated
