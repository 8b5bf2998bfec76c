"""A device that refuses its order counts as `rejected`, one that never answers as `timed_out`: in the job's
executions, the gate's readings and decision, and the apply part of the audit record.

The refusals here are what a real device core sends: a signed `bad_control` error report naming the order.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.keys import OPERATOR, TRUSTED, device_key

from edgeloop.contract.identity import DeviceRegistry, enrolment_record, parse_enrolment
from edgeloop.contract.keys import public_hex
from edgeloop.contract.messages import DeviceState, Target, iso_ms, new_assignment
from edgeloop.edge.device import DeviceCore
from edgeloop.fleet.control import DeviceStates
from edgeloop.fleet.topics import TopicRecord
from edgeloop.rollout import orders
from edgeloop.rollout.gate import GroupReading, evaluate_gate
from edgeloop.rollout.orders import PacedWave, WaveExecutions, order_outcome, refused_orders, run_paced_wave
from edgeloop.rollout.policy import ShareSelection, classify_execution
from edgeloop.rollout.steps import wave_outcome
from edgeloop.spec import AbortSpec, PipelineSpec, RateSpec, load_spec

SPEC = load_spec(Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml")
GROUP = "plant-north"
NOW = 1_767_225_600.0
DEVICES = [f"{GROUP}-{i}" for i in range(4)]


def enrolled(devices: list[str]) -> DeviceRegistry:
    out = {}
    for device in devices:
        record = enrolment_record(
            OPERATOR,
            device_id=device,
            group_id=GROUP,
            pipeline=SPEC.name,
            device_public_hex=public_hex(device_key(SPEC.name, device).public),
            enrolled_at=iso_ms(NOW),
        )
        out[device] = parse_enrolment(device.encode(), record, TRUSTED, SPEC.name)
    return DeviceRegistry(out)


REGISTRY = enrolled(DEVICES)


def refusal_report(device: str, order_id: str, **order: Any) -> TopicRecord:
    """The error report a real device core sends when it refuses `order_id` (here: an expired order)."""
    core = DeviceCore(device, GROUP, SPEC.name, [GROUP], [], TRUSTED, identity=device_key(SPEC.name, device))
    core.clock = lambda: NOW
    fields: dict[str, Any] = {"issued_at": NOW - 8 * 86_400, "ttl_s": 7 * 86_400} | order
    wire = new_assignment(
        Target("device", device), model_version="7", assignment_id=order_id, pipeline=SPEC.name, **fields
    ).to_wire(OPERATOR)
    taken, (report,) = core.on_control(wire, 12)
    assert taken is None and report.kind == "errors"
    return TopicRecord(0, 0, report.ts_ms, report.key, report.value)


def test_a_refusal_is_rejected_with_its_reason_and_silence_is_timed_out() -> None:
    five = timedelta(seconds=5)
    refused = classify_execution("d", "rejected", 0.0, 60.0, five, detail="expires_at: the order expired")
    assert (refused.state, refused.reason) == ("rejected", "reported rejected: expires_at: the order expired")
    assert classify_execution("d", None, 0.0, 60.0, five).state == "timed_out"
    assert classify_execution("d", "failed", 0.0, 60.0, five, detail="sha256 differs").reason == (
        "reported failed: sha256 differs"
    )


def test_what_a_device_says_about_its_order() -> None:
    ids = {"a", "a.d"}

    def state(**reported: Any) -> DeviceState:
        return DeviceState("d", GROUP, {}, reported)

    assert order_outcome(state(model_version="7"), "7", ids, "refused anyway") == ("applied", None)
    failed = state(model_version="6", assignment_id="a.d", status="failed", reason="digest")
    assert order_outcome(failed, "7", ids) == ("failed", "digest")
    refused = state(model_version="6", assignment_id="a", status="refused", reason="not for this line")
    assert order_outcome(refused, "7", ids) == ("rejected", "not for this line")
    assert order_outcome(state(model_version="6"), "7", ids, "signature: bad") == ("rejected", "signature: bad")
    assert order_outcome(None, "7", ids, "expired") == ("rejected", "expired")
    other = state(model_version="6", assignment_id="b", status="failed")
    assert order_outcome(other, "7", ids) == (None, None), "another order's failure is not this one's"


def test_only_a_signed_refusal_naming_the_order_counts() -> None:
    real = refusal_report(DEVICES[0], "a.plant-north-0")
    other_order = refusal_report(DEVICES[1], "b.plant-north-1")
    forged = TopicRecord(0, 3, real.timestamp_ms, DEVICES[2].encode(), real.value.replace(b"-0", b"-2"))
    unknown = refusal_report("ghost-9", "a.ghost-9")

    refused = refused_orders([real, other_order, forged, unknown], REGISTRY, lambda d: {"a", f"a.{d}"})

    assert list(refused) == [DEVICES[0]]
    assert "expires_at: the order expired" in refused[DEVICES[0]]


class RefusingFleet:
    """Devices 0 and 1 refuse their order (signed reports), device 2 applies it, device 3 never answers."""

    def __init__(self, earlier: list[TopicRecord] | None = None) -> None:
        self.now = 1000.0
        self.ordered: list[str] = []
        self.earlier = earlier or []  # error reports published before the wave
        self.read_to: int | None = None  # the end of the error reports read so far

    def error_log(self) -> list[TopicRecord]:
        return self.earlier + [refusal_report(d, f"a.{d}") for d in self.ordered if d in DEVICES[:2]]

    def refresh(self, timeout: float = 0) -> tuple[DeviceRegistry, DeviceStates]:
        applied = {"model_version": "7"} if DEVICES[2] in self.ordered else {"model_version": "6"}
        states = {d: DeviceState(d, GROUP, {}, applied if d == DEVICES[2] else {"model_version": "6"}) for d in DEVICES}
        return REGISTRY, DeviceStates(states)

    def mark_error_reports(self, timeout: float = 0) -> None:
        self.read_to = len(self.error_log())

    def new_error_reports(self, timeout: float = 0) -> list[TopicRecord]:
        assert self.read_to is not None, "marked before read"
        log = self.error_log()
        new, self.read_to = log[self.read_to :], len(log)
        return new

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def paced_wave(
    monkeypatch: pytest.MonkeyPatch, spec: PipelineSpec, earlier: list[TopicRecord] | None = None
) -> tuple[RefusingFleet, PacedWave]:
    fleet = RefusingFleet(earlier)
    monkeypatch.setattr(orders, "publish_device_orders", lambda *args: fleet.ordered.extend(args[3]))
    in_order = ShareSelection("ro-1", GROUP, 1.0, len(DEVICES), tuple(DEVICES))  # refusers first
    monkeypatch.setattr(orders, "select_share", lambda *args: in_order)
    executions = WaveExecutions("7", "a", spec.rollout.device_timeout)
    wave = PacedWave(
        spec,
        {},
        OPERATOR,
        fleet,
        GROUP,
        executions,
        None,
        clock=lambda: fleet.now,
        sleep=fleet.sleep,  # type: ignore[arg-type]
    )
    return fleet, wave


def with_rollout(**policy: Any) -> PipelineSpec:
    return SPEC.model_copy(update={"rollout": SPEC.rollout.model_copy(update=policy)})


def test_the_job_counts_refusals_as_rejected_and_silence_as_timed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = with_rollout(device_timeout=timedelta(seconds=30), max_failure_ratio=1.0)
    fleet, wave = paced_wave(monkeypatch, spec)

    record, _ = run_paced_wave(wave, "ro-1", None, timeout_s=600)

    tally = record["progress"]["executions"]
    assert tally["failed_by_type"] == {"failed": 0, "rejected": 2, "timed_out": 1}
    assert tally["applied"] == 1 and tally["executed"] == 4
    failed = record["progress"]["failed"]
    assert "expires_at: the order expired" in failed[DEVICES[0]] and failed[DEVICES[0]].startswith("reported rejected")
    assert failed[DEVICES[3]] == "no apply within 30 s of its order"
    assert fleet.now - 1000.0 > 30, "the silent device was waited for until its timeout"

    result = {"group": GROUP, "strategy": "kafka", "duration_s": 31.0, **record}
    part = wave_outcome({"model_version": "7", "rollout_id": "ro-1"}, {"index": 0, "groups": [GROUP]}, [result])
    audited = part["results"][0]  # the apply part of the rollout's audit record
    assert audited["executions"]["failed_by_type"] == {"failed": 0, "rejected": 2, "timed_out": 1}
    assert audited["failures"] == failed and audited["failed"] == 3


def test_the_abort_criteria_count_rejected_devices_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    rejected_only = AbortSpec(failure_threshold_pct=40, min_executed=2, failure_types=["rejected"])
    spec = with_rollout(rate=RateSpec(per_minute=60), abort=rejected_only, max_failure_ratio=1.0)
    fleet, wave = paced_wave(monkeypatch, spec)

    record, order_group = run_paced_wave(wave, "ro-1", None, timeout_s=600)

    assert record["stopped"] and not order_group and fleet.ordered == DEVICES[:2]
    assert record["abort"]["abort"] and tuple(record["abort"]["counted_types"]) == ("rejected",)


def test_the_gate_reads_rejected_apart_from_timed_out_and_records_both() -> None:
    reading = GroupReading(GROUP, 10, 6, 1, 0.0, 0.0, 0.9, timed_out=1, rejected=2)
    timed_out_only = AbortSpec(failure_threshold_pct=20, min_executed=10, failure_types=["timed_out"])

    passing = evaluate_gate([reading], SPEC.rollout.thresholds, 1.0, soak_over=False, abort=timed_out_only)
    rejected = AbortSpec(failure_threshold_pct=20, min_executed=10, failure_types=["rejected"])
    failing = evaluate_gate([reading], SPEC.rollout.thresholds, 1.0, soak_over=False, abort=rejected)

    assert passing.state == "wait" and passing.policy["abort"]["executed"] == 10
    assert failing.state == "fail" and failing.reasons == [
        "abort criteria: 2 of 10 finished devices failed (rejected): 20% >= 20%"
    ]
    recorded = failing.to_dict()["readings"][0]  # what the gate's audit part holds
    assert (recorded["failed"], recorded["rejected"], recorded["timed_out"]) == (1, 2, 1)
    ratio = evaluate_gate([reading], SPEC.rollout.thresholds, 0.25, soak_over=False)
    assert ratio.reasons == ["plant-north: 1/10 devices failed to apply, 2 refused the order (max ratio 0.25)"]


def test_each_error_report_is_looked_at_once_and_none_from_before_the_wave(monkeypatch: pytest.MonkeyPatch) -> None:
    """A poll looks only at the reports that came since the last one, and the first only at those published
    after the wave's mark (a crashing model's reports before it can number 100,000s, and a device's clock says
    nothing about when a report came); a refusal found once stays found."""
    spec = with_rollout(device_timeout=timedelta(seconds=30), max_failure_ratio=1.0)
    crashed = [TopicRecord(0, n, 0, b"d", b'{"kind": "inference"}') for n in range(1000)]
    _, wave = paced_wave(monkeypatch, spec, earlier=crashed)
    looked_at: list[int] = []

    def counted(records: Any, registry: DeviceRegistry, order_ids: Any) -> dict[str, str]:
        records = list(records)
        looked_at.append(len(records))
        return refused_orders(records, registry, order_ids)

    monkeypatch.setattr(orders, "refused_orders", counted)
    record, _ = run_paced_wave(wave, "ro-1", None, timeout_s=600)

    assert record["progress"]["executions"]["failed_by_type"]["rejected"] == 2
    assert len(looked_at) > 10 and sum(looked_at) == 2, looked_at  # 30 s of polls, two reports looked at once


def test_only_a_refusal_that_spells_its_kind_plainly_is_read() -> None:
    """A model's error reports are not parsed at all; a refusal whose kind is escaped in its JSON counts as
    silence (its device then times out), though its signature, over the parsed body, still verifies."""
    real = refusal_report(DEVICES[0], "a.plant-north-0")
    assert b'"bad_control"' in real.value
    escaped = TopicRecord(
        0, 1, real.timestamp_ms, real.key, real.value.replace(b'"bad_control"', b'"bad\\u005fcontrol"')
    )
    order_ids = lambda d: {"a", f"a.{d}"}  # noqa: E731
    assert list(refused_orders([real], REGISTRY, order_ids)) == [DEVICES[0]]
    assert refused_orders([escaped], REGISTRY, order_ids) == {}
