"""Fleet status and health decisions from hand-made device-state, heartbeats and error reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgeloop.contract.messages import DeviceState, Target, iso_ms, new_assignment
from edgeloop.events import parse_alert
from edgeloop.fleet.control import DeviceStates, assignment_progress
from edgeloop.fleet.health import (
    FleetStatus,
    device_alerts,
    health_report_key,
    render_status_json,
    render_status_text,
    summarize_fleet,
)
from edgeloop.fleet.topics import TopicRecord
from edgeloop.spec import PipelineSpec, load_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
WINDOW_S = 60.0
STALE_S = 120.0


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(DEMO)


def state(device: str, group: str, desired: str = "2", reported: str = "2", desired_age_s: float = 600) -> DeviceState:
    return DeviceState(
        device,
        group,
        {"model_version": desired, "updated_at": iso_ms(NOW_MS / 1000 - desired_age_s)},
        {"model_version": reported},
    )


def beat(device: str, group: str, age_s: float, records: int, errors: int = 0, **extra: Any) -> TopicRecord:
    body = {
        "device_id": device,
        "group_id": group,
        "records": records,
        "errors": errors,
        "uptime_s": 10_000.0,
        "interval_s": 10.0,
        "confidence_mean": 0.9,
        **extra,
    }
    return TopicRecord(0, 0, NOW_MS - int(age_s * 1000), device.encode(), json.dumps(body).encode())


def healthy_beats(device: str, group: str, base: int = 1000) -> list[TopicRecord]:
    # one heartbeat before the window (the baseline) and two inside it: 60 records in the window
    return [beat(device, group, 70, base), beat(device, group, 35, base + 30), beat(device, group, 5, base + 60)]


def summarize(
    spec: PipelineSpec, states: list[DeviceState], beats: list[TopicRecord], errors: list[TopicRecord] | None = None
) -> FleetStatus:
    return summarize_fleet(
        spec,
        DeviceStates({s.device_id: s for s in states}),
        beats,
        errors or [],
        now_ms=NOW_MS,
        window_s=WINDOW_S,
        stale_after_s=STALE_S,
    )


def test_online_offline_and_stale(spec: PipelineSpec) -> None:
    states = [state(f"n-{i}", "plant-north") for i in range(4)]
    beats = [
        *healthy_beats("n-0", "plant-north"),
        beat("n-1", "plant-north", 45, 10),  # 45 s > 3 heartbeat intervals: offline
        beat("n-2", "plant-north", 150, 10),  # older than stale_after but in the lookback: newly stale
    ]  # n-3 never seen: stale
    group = summarize(spec, states, beats).group("plant-north")
    assert (group.devices, group.online, group.offline, group.stale) == (4, 1, 1, 2)
    assert group.newly_stale == ["n-2"]
    assert group.offline_ratio == 0.75
    assert group.last_seen == iso_ms(NOW_MS / 1000 - 5)


def test_error_rate_comes_from_heartbeat_counters(spec: PipelineSpec) -> None:
    states = [state("s-0", "plant-south"), state("s-1", "plant-south")]
    beats = [
        beat("s-0", "plant-south", 70, 500, 0),
        beat("s-0", "plant-south", 5, 530, 30),  # 30 records and 30 errors in the window
        beat("s-1", "plant-south", 70, 900, 4),
        beat("s-1", "plant-south", 30, 10, 0, uptime_s=20.0),  # restarted: counters reset
        beat("s-1", "plant-south", 5, 40, 0, uptime_s=45.0),
    ]
    group = summarize(spec, states, beats).group("plant-south")
    assert group.records == 30 + 40
    assert group.errors == 30
    assert group.error_rate == pytest.approx(30 / 100)


def test_devices_started_in_the_window_count_from_zero(spec: PipelineSpec) -> None:
    beats = [beat("c-0", "line-canary", 30, 20, 1, uptime_s=25.0), beat("c-0", "line-canary", 5, 50, 2, uptime_s=50.0)]
    group = summarize(spec, [state("c-0", "line-canary")], beats).group("line-canary")
    assert (group.records, group.errors) == (50, 2)


def test_version_skew_waits_for_the_grace_period(spec: PipelineSpec) -> None:
    states = [
        state("n-0", "plant-north", desired="3", reported="2", desired_age_s=600),  # late: skewed
        state("n-1", "plant-north", desired="3", reported="2", desired_age_s=5),  # just assigned: not yet
        state("n-2", "plant-north", desired="3", reported="3"),
    ]
    beats = [b for d in ("n-0", "n-1", "n-2") for b in healthy_beats(d, "plant-north")]
    group = summarize(spec, states, beats).group("plant-north")
    assert group.skewed == 1 and group.in_sync == 1
    assert group.desired_models == {"3": 3} and group.reported_models == {"2": 2, "3": 1}


def test_unknown_devices_and_unreadable_feedback_are_counted(spec: PipelineSpec) -> None:
    states = [state("n-0", "plant-north")]
    beats = [
        *healthy_beats("n-0", "plant-north"),
        beat("ghost-1", "plant-north", 5, 1),
        beat("n-9", "atlantis", 5, 1),
        TopicRecord(0, 7, NOW_MS - 1000, None, b"garbage"),
    ]
    errors = [
        TopicRecord(
            0, 1, NOW_MS - 1000, b"ghost-2", json.dumps({"device_id": "ghost-2", "kind": "inference"}).encode()
        ),
        TopicRecord(0, 2, NOW_MS - 1000, b"n-0", json.dumps({"device_id": "n-0", "kind": "inference"}).encode()),
        TopicRecord(0, 3, NOW_MS - 1000, b"n-0", b"{"),
    ]
    status = summarize(spec, states, beats, errors)
    assert status.unknown_devices == 3
    assert status.unknown_device_ids == ["ghost-1", "ghost-2", "n-9"]
    assert status.bad_feedback == 2
    assert status.group("plant-north").error_reports == {"inference": 1}


def fleet_with_failing_south(spec: PipelineSpec) -> FleetStatus:
    states, beats = [], []
    for group in ("line-canary", "plant-north", "plant-south"):
        for i in range(5):
            device = f"{group}-{i}"
            states.append(state(device, group))
            if group == "plant-south":
                beats += [beat(device, group, 70, 100, 0), beat(device, group, 5, 110, 50)]
            else:
                beats += healthy_beats(device, group)
    return summarize(spec, states, beats)


def test_exactly_one_alert_for_the_group_over_its_error_rate(spec: PipelineSpec) -> None:
    alerts = device_alerts(spec, fleet_with_failing_south(spec))
    assert len(alerts) == 1
    alert = parse_alert(json.dumps(alerts[0]))
    assert alert["kind"] == "device" and alert["pipeline"] == spec.name
    assert alert["group"] == "plant-south" and alert["reason"] == "error_rate" and alert["reasons"] == ["error_rate"]
    assert alert["readings"]["error_rate"] == pytest.approx(50 / 60, abs=1e-3)
    assert alert["thresholds"]["max_error_rate"] == spec.fleet_health.max_error_rate


def test_a_healthy_fleet_raises_no_alert(spec: PipelineSpec) -> None:
    states = [state(f"n-{i}", "plant-north") for i in range(5)]
    beats = [b for i in range(5) for b in healthy_beats(f"n-{i}", "plant-north")]
    assert device_alerts(spec, summarize(spec, states, beats)) == []


def test_too_few_inferences_do_not_make_an_error_rate_alert(spec: PipelineSpec) -> None:
    beats = [beat("n-0", "plant-north", 70, 0, 0), beat("n-0", "plant-north", 5, 5, 5)]
    assert device_alerts(spec, summarize(spec, [state("n-0", "plant-north")], beats)) == []


def test_one_alert_names_every_failed_check(spec: PipelineSpec) -> None:
    states = [state(f"n-{i}", "plant-north", desired="3", reported="2") for i in range(4)]
    beats = [b for i in range(2) for b in healthy_beats(f"n-{i}", "plant-north")]
    alerts = device_alerts(spec, summarize(spec, states, beats))
    assert len(alerts) == 1
    assert alerts[0]["reasons"] == ["offline_ratio", "version_skew"]


def test_rendering(spec: PipelineSpec) -> None:
    status = fleet_with_failing_south(spec)
    text = render_status_text(status)
    assert "plant-south" in text and "83.33%" in text and "2x5 -> 2x5" in text
    data = json.loads(render_status_json(status))
    assert data["groups"][2]["error_rate"] == pytest.approx(0.8333, abs=1e-4)
    assert health_report_key(spec, status.generated_at) == (
        "reports/factory_maintenance/fleet/dt=2026-01-01/fleet-health-000000.json"
    )


def test_assignment_progress_counts_applied_failed_and_pending() -> None:
    assignment = new_assignment(
        Target("group", "plant-north"), model_version="4", assignment_id="asg-9", pipeline="factory_maintenance"
    )
    states = DeviceStates(
        {
            "n-0": DeviceState("n-0", "plant-north", {}, {"model_version": "4"}),
            "n-1": DeviceState(
                "n-1",
                "plant-north",
                {},
                {"model_version": "3", "assignment_id": "asg-9", "status": "failed", "reason": "corrupt artifact"},
            ),
            "n-2": DeviceState("n-2", "plant-north", {}, {"model_version": "3"}),
            "s-0": DeviceState("s-0", "plant-south", {}, {"model_version": "3"}),
        }
    )
    progress = assignment_progress(assignment, states)
    assert progress.devices == 3
    assert (
        progress.applied == ["n-0"] and progress.failed == {"n-1": "corrupt artifact"} and progress.pending == ["n-2"]
    )
    assert not progress.complete
    assert progress.to_dict()["applied_ratio"] == pytest.approx(1 / 3, abs=1e-3)
