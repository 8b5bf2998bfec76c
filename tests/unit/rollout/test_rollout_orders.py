"""A kafka wave's device orders with plain fakes: shares, paced batches, timeouts and the abort between batches."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.keys import OPERATOR

from edgeloop.contract.identity import DeviceRegistry
from edgeloop.contract.messages import DeviceState
from edgeloop.fleet.control import DeviceStates
from edgeloop.rollout import orders
from edgeloop.rollout.orders import PacedWave, WaveExecutions, run_paced_wave, wave_share
from edgeloop.spec import AbortSpec, ExponentialRate, PipelineSpec, PolicyWave, RateSpec, load_spec

SPEC = load_spec(Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml")
GROUP = "plant-north"
DEVICES = [f"{GROUP}-{i:03d}" for i in range(10)]


def with_rollout(**policy: Any) -> PipelineSpec:
    return SPEC.model_copy(update={"rollout": SPEC.rollout.model_copy(update=policy)})


def state(device: str, **reported: Any) -> DeviceState:
    return DeviceState(device, GROUP, {}, dict(reported))


class FakeFleet:
    """Device-state as the fake devices report it: each ordered device answers `answer` at once."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.ordered: list[tuple[float, tuple[str, ...]]] = []
        self.now = 1000.0

    def refresh(self, timeout: float = 0) -> tuple[DeviceRegistry, DeviceStates]:
        done = {d for _, batch in self.ordered for d in batch}
        states = {}
        for device in DEVICES:
            if device in done and self.answer == "applied":
                states[device] = state(device, model_version="7")
            elif device in done and self.answer == "failed":
                states[device] = state(device, model_version="6", assignment_id=f"a.{device}", status="failed")
            else:
                states[device] = state(device, model_version="6")
        return DeviceRegistry(), DeviceStates(states)

    def mark_error_reports(self, timeout: float = 0) -> None:
        pass

    def new_error_reports(self, timeout: float = 0) -> list[Any]:
        return []

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    def make(answer: str | None, spec: PipelineSpec) -> tuple[FakeFleet, PacedWave]:
        fleet = FakeFleet(answer)

        def publish(spec: Any, kafka: Any, signer: Any, devices: Any, version: str, ident: str, artifact: Any) -> None:
            fleet.ordered.append((fleet.now, tuple(devices)))

        monkeypatch.setattr(orders, "publish_device_orders", publish)
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

    return make


def test_the_share_of_a_wave_comes_from_the_policy_waves() -> None:
    spec = with_rollout(canary_groups=[], waves=[PolicyWave(groups=[GROUP], share=0.2), PolicyWave(groups="all")])
    assert wave_share(spec, 0, GROUP) == 0.2
    assert wave_share(spec, 1, GROUP) is None
    assert wave_share(spec, 0, "plant-south") is None
    assert wave_share(spec, -1, GROUP) is None  # a rollback orders the whole group
    assert wave_share(SPEC, 0, GROUP) is None


def test_a_share_wave_orders_the_same_share_at_once_and_not_the_group(fake: Any) -> None:
    fleet, wave = fake("applied", with_rollout())

    record, order_group = run_paced_wave(wave, "ro-1", 0.2, timeout_s=60)

    assert len(record["devices"]) == 2 and fleet.ordered == [(1000.0, tuple(record["devices"]))]
    assert record["progress"]["applied"] == 2 and not record["stopped"] and not order_group
    _, again = fake("applied", with_rollout())
    assert run_paced_wave(again, "ro-1", 0.2, timeout_s=60)[0]["devices"] == record["devices"]


def test_a_paced_wave_orders_by_the_schedule_then_the_group(fake: Any) -> None:
    rate = RateSpec(
        per_minute=60, exponential=ExponentialRate(base_per_minute=30, increment_factor=2, step_up_after_devices=4)
    )
    fleet, wave = fake("applied", with_rollout(rate=rate))

    record, order_group = run_paced_wave(wave, "ro-1", None, timeout_s=600)

    assert [round(at - 1000) for at, _ in fleet.ordered] == [0, 2, 4, 6, 7, 8, 9, 10, 11, 12]
    assert [b["per_minute"] for b in record["batches"]] == [30, 30, 30, 30, 60, 60, 60, 60, 60, 60]
    assert order_group and record["progress"]["applied"] == 10


def test_the_abort_criteria_stop_a_paced_wave_before_its_next_batch(fake: Any) -> None:
    spec = with_rollout(rate=RateSpec(per_minute=60), abort=AbortSpec(failure_threshold_pct=50, min_executed=3))
    spec = spec.model_copy(update={"rollout": spec.rollout.model_copy(update={"max_failure_ratio": 1.0})})
    fleet, wave = fake("failed", spec)

    record, order_group = run_paced_wave(wave, "ro-1", None, timeout_s=600)

    assert len(fleet.ordered) == 3 and record["stopped"] and not order_group
    assert record["abort"]["abort"] and record["abort"]["executed"] == 3
    assert record["progress"]["executions"]["failed_by_type"]["failed"] == 3


def test_an_order_not_applied_in_time_is_timed_out_for_good() -> None:
    executions = WaveExecutions("7", "a", timedelta(seconds=10), ordered_at={"d1": 0.0, "d2": 0.0})
    late = DeviceStates({"d1": state("d1", model_version="6"), "d2": state("d2", model_version="7")})

    assert [e.state for e in executions.observe(late, 5.0)] == ["in_progress", "applied"]
    assert [e.state for e in executions.observe(late, 11.0)] == ["timed_out", "applied"]
    applied_late = DeviceStates({"d1": state("d1", model_version="7"), "d2": state("d2", model_version="7")})
    assert [e.state for e in executions.observe(applied_late, 12.0)] == ["timed_out", "applied"]


def test_the_gate_counts_timed_out_devices_for_the_abort_criteria() -> None:
    from edgeloop.rollout.gate import GroupReading, evaluate_gate

    reading = GroupReading(GROUP, 10, 7, 0, 0.0, 0.0, 0.9, timed_out=3)
    abort = AbortSpec(failure_threshold_pct=20, min_executed=10, failure_types=["timed_out"])

    decision = evaluate_gate([reading], SPEC.rollout.thresholds, 1.0, soak_over=False, abort=abort)

    assert decision.state == "fail" and decision.policy["abort"]["failures"] == 3
    assert decision.reasons == ["abort criteria: 3 of 10 finished devices failed (timed_out): 30% >= 20%"]


def test_the_apply_part_names_a_share_waves_devices_and_each_groups_policy_decisions(fake: Any) -> None:
    from edgeloop.rollout.steps import wave_outcome

    _, wave = fake("applied", with_rollout(rate=RateSpec(per_minute=60)))
    record, _ = run_paced_wave(wave, "ro-1", 0.2, timeout_s=60)
    result = {"group": GROUP, "strategy": "kafka", "duration_s": 1.0, **record}

    outcome = wave_outcome({"model_version": "7", "rollout_id": "ro-1"}, {"index": 0, "groups": [GROUP]}, [result])

    assert outcome["devices"] == {GROUP: record["devices"]}
    assert outcome["policy"][GROUP]["share"] == {"share": 0.2, "members": 10, "selected": 2}
    assert [b["devices"] for b in outcome["policy"][GROUP]["batches"]] == [1, 1]
    assert outcome["policy"][GROUP]["abort"]["reason"] == "no abort criteria in the spec"
    assert outcome["results"][0]["applied"] == 2 and outcome["results"][0]["executions"]["applied"] == 2


def test_a_pause_holds_the_next_batch_and_delays_the_rest_of_the_schedule(fake: Any) -> None:
    fleet, wave = fake("applied", with_rollout(rate=RateSpec(per_minute=60)))
    wave.paused = lambda: 1001.5 <= fleet.now < 1010.0  # paused after the second order, for about 8 s

    record, _ = run_paced_wave(wave, "ro-1", 0.3, timeout_s=600)

    assert [round(at - 1000, 1) for at, _ in fleet.ordered] == [0.0, 1.0, 10.0]
    assert record["pauses"] == [{"at": 1002.0, "held_s": 8.0, "resumed": True, "ordered": 2}]


def test_a_paused_rollouts_gate_does_not_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers.keys import TRUSTED

    from edgeloop.rollout import job
    from edgeloop.rollout.gate import GroupReading
    from edgeloop.rollout.trigger import RolloutGateTrigger

    readings = [GroupReading(GROUP, 10, 10, 0, 0.0, 0.0, 0.9)]
    monkeypatch.setattr(job, "read_group_readings", lambda *args, **kwargs: (readings, {}))
    trigger = RolloutGateTrigger(
        pipeline=SPEC.name,
        groups=[GROUP],
        model_version="4",
        assignment_ids={},
        started_at=0.0,
        soak_seconds=1.0,
        trusted_keys=TRUSTED.hex_keys(),
    )
    flag = {"paused": True, "by": "ops", "reason": "line stop"}
    monkeypatch.setattr(RolloutGateTrigger, "pause_flag", lambda self, spec: flag)
    assert trigger._check(SPEC, {})["state"] == "wait" and trigger._check(SPEC, {})["paused"] == flag
    monkeypatch.setattr(RolloutGateTrigger, "pause_flag", lambda self, spec: None)
    assert trigger._check(SPEC, {})["state"] == "pass"


def test_a_share_of_a_group_ordered_through_its_daemonset_is_refused_at_plan_time() -> None:
    from edgeloop.rollout.plan import RolloutPlanError, plan_rollout

    groups = [g.model_copy(update={"strategy": "kubernetes"}) if g.name == GROUP else g for g in SPEC.groups]
    spec = with_rollout(canary_groups=[], waves=[PolicyWave(groups=[GROUP], share=0.1), PolicyWave(groups="all")])
    spec = spec.model_copy(update={"groups": groups})

    with pytest.raises(RolloutPlanError, match=r"rollout.waves\[0\].share: groups \['plant-north'\] are ordered"):
        plan_rollout(spec, "4")
    assert plan_rollout(with_rollout(canary_groups=[], waves=spec.rollout.waves), "4")[0].groups == (GROUP,)


def test_a_rollback_orders_the_group_at_once_whatever_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeloop.fleet import control
    from edgeloop.rollout.job import run_wave_job

    sent: list[str] = []
    monkeypatch.setattr(control, "publish_assignment", lambda spec, kafka, signer, order: sent.append(order.target.key))
    monkeypatch.setattr(control.FleetView, "refresh", lambda *a, **k: (DeviceRegistry(), DeviceStates()))
    monkeypatch.setattr(control.FleetView, "mark_error_reports", lambda *a, **k: None)
    monkeypatch.setattr(control.FleetView, "new_error_reports", lambda *a, **k: [])
    monkeypatch.setattr(orders, "publish_device_orders", lambda *a: sent.append("device orders"))
    spec = with_rollout(rate=RateSpec(per_minute=1), timeout=timedelta(0))

    run_wave_job(spec, {}, OPERATOR, GROUP, "0", "ro-1", rollback=True, paused=lambda: True)

    assert sent == [f"group:{GROUP}"], "neither paced nor held"


def test_a_group_order_waits_for_a_resume_and_the_pause_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeloop.fleet import control
    from edgeloop.rollout.job import run_kafka_wave

    sent: list[str] = []
    monkeypatch.setattr(control, "publish_assignment", lambda spec, kafka, signer, order: sent.append(order.target.key))
    monkeypatch.setattr(control.FleetView, "refresh", lambda *a, **k: (DeviceRegistry(), DeviceStates()))
    monkeypatch.setattr(control.FleetView, "mark_error_reports", lambda *a, **k: None)
    monkeypatch.setattr(control.FleetView, "new_error_reports", lambda *a, **k: [])
    answers = iter([True, True, False])

    result = run_kafka_wave(
        SPEC, {}, OPERATOR, GROUP, "0", "ro-1.g", timeout_s=0.5, sleep=lambda s: None, paused=lambda: next(answers)
    )

    assert sent == [f"group:{GROUP}"]
    (pause,) = result["pauses"]
    assert pause["resumed"] and pause["ordered"] == 0
