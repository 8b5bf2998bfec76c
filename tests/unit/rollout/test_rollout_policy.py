"""The rollout policy: its spec fields, and the pure decisions (waves, shares, pacing, abort, success,
timeouts, late joiners) the rollout takes from it."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeloop.rollout.plan import spec_waves
from edgeloop.rollout.policy import (
    RolloutWave,
    classify_execution,
    desired_by_group,
    evaluate_abort,
    evaluate_success,
    late_joiner_order,
    pacing_schedule,
    policy_waves,
    rate_at,
    select_share,
    tally_executions,
)
from edgeloop.spec import AbortSpec, PipelineSpec, RateSpec, SpecInvalid, parse_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"


def spec_with(rollout: dict[str, Any], *, group_waves: bool = True) -> PipelineSpec:
    data = yaml.safe_load(DEMO.read_text())
    data["rollout"].update(rollout)
    if not group_waves:
        for group in data["groups"]:
            group.pop("wave")
    return parse_spec(yaml.safe_dump(data))


def spec_errors(rollout: dict[str, Any], *, group_waves: bool = True) -> dict[str, str]:
    with pytest.raises(SpecInvalid) as info:
        spec_with(rollout, group_waves=group_waves)
    return {e.location: e.message for e in info.value.errors}


SHARE_WAVES = {
    "canary_groups": [],
    "waves": [{"groups": ["plant-north"], "share": 0.02}, {"groups": ["plant-north"]}, {"groups": "all"}],
}


# --- the spec ---------------------------------------------------------------------------


def test_a_spec_without_policy_fields_keeps_todays_waves_and_no_controls() -> None:
    spec = spec_with({})
    rollout = spec.rollout
    assert rollout.waves == [] and rollout.rate is None and rollout.abort is None
    assert rollout.success_threshold is None and rollout.device_timeout is None and not rollout.shadow.enabled
    assert [(w.name, w.groups, w.share) for w in policy_waves(spec)] == [
        (w.name, w.groups, None) for w in spec_waves(spec)
    ]


def test_waves_by_share_then_group_then_the_rest() -> None:
    spec = spec_with(SHARE_WAVES, group_waves=False)
    assert policy_waves(spec) == [
        RolloutWave(0, ("plant-north",), 0.02, canary=True),
        RolloutWave(1, ("plant-north",), None, canary=False),
        RolloutWave(2, ("line-canary", "plant-south"), None, canary=False),
    ]


def test_waves_are_checked_against_the_groups_with_the_field_named() -> None:
    unknown = {"canary_groups": [], "waves": [{"groups": ["plant-east"]}, {"groups": "all"}]}
    assert "rollout.waves[0].groups: ['plant-east'] are not groups" in str(spec_errors(unknown, group_waves=False))
    unfinished = {"canary_groups": [], "waves": [{"groups": ["plant-north"], "share": 0.1}]}
    assert "never get all their devices" in str(spec_errors(unfinished, group_waves=False))
    shrinking = {"canary_groups": [], "waves": [{"groups": "all"}, {"groups": ["plant-north"], "share": 0.5}]}
    assert "rollout.waves[1]: group plant-north already reached share 1" in str(
        spec_errors(shrinking, group_waves=False)
    )
    assert "groups[1].wave: rollout.waves orders the rollout" in str(spec_errors(SHARE_WAVES))
    other_canary = {**SHARE_WAVES, "canary_groups": ["line-canary"]}
    assert "rollout.canary_groups" in str(spec_errors(other_canary, group_waves=False))
    assert spec_errors({"waves": [{"groups": "some"}]}) == {
        "rollout.waves[0].groups": "Value error, 'some' is neither a list of group names nor 'all'"
    }
    assert "rollout.waves[0].share" in spec_errors({"waves": [{"groups": "all", "share": 1.5}]})


def test_a_spec_with_waves_survives_a_round_trip_through_its_dump() -> None:
    from edgeloop.spec import with_profiles

    spec = spec_with(SHARE_WAVES, group_waves=False)
    again = PipelineSpec.model_validate(spec.model_dump(by_alias=True))
    assert policy_waves(again) == policy_waves(spec)
    assert with_profiles(spec).rollout.waves == spec.rollout.waves


def test_rate_abort_timeout_and_shadow_fields_are_validated_at_their_path() -> None:
    errors = spec_errors(
        {
            "rate": {"per_minute": 2000, "exponential": {"base_per_minute": 10, "increment_factor": 6}},
            "abort": {"failure_threshold_pct": 0, "failure_types": ["failed", "lost"]},
            "device_timeout": "0s",
            "success_threshold": 1.2,
            "shadow": {"min_agreement": 2, "window": "0s"},
        }
    )
    assert set(errors) == {
        "rollout.rate.per_minute",
        "rollout.rate.exponential.increment_factor",
        "rollout.abort.failure_threshold_pct",
        "rollout.abort.failure_types[1]",
        "rollout.device_timeout",
        "rollout.success_threshold",
        "rollout.shadow.min_agreement",
        "rollout.shadow.window",
    }
    neither = {"rate": {"exponential": {"base_per_minute": 10, "increment_factor": 2}}}
    assert "exactly one of step_up_after_devices" in spec_errors(neither)["rollout.rate.exponential"]
    over = {
        "rate": {
            "per_minute": 100,
            "exponential": {"base_per_minute": 200, "increment_factor": 2, "step_up_after_devices": 10},
        }
    }
    assert "base_per_minute: 200 is above per_minute 100" in spec_errors(over)["rollout.rate"]
    assert "rollout.shadow.groups" in str(spec_errors({"shadow": {"enabled": True, "groups": ["nope"]}}))


def test_a_full_policy_reads_as_written() -> None:
    spec = spec_with(
        {
            "rate": {
                "per_minute": 1000,
                "exponential": {"base_per_minute": 50, "increment_factor": 2, "step_up_after_success": 100},
            },
            "abort": {"failure_threshold_pct": 5, "min_executed": 50},
            "success_threshold": 0.9,
            "device_timeout": "5m",
            "shadow": {"enabled": True, "groups": ["line-canary"], "share": 0.5, "min_windows": 10},
        }
    )
    rollout = spec.rollout
    assert rollout.rate is not None and rollout.rate.exponential is not None
    assert rollout.rate.exponential.step_up_after_success == 100
    assert rollout.abort == AbortSpec(failure_threshold_pct=5, min_executed=50)
    assert rollout.abort.failure_types == ["failed", "timed_out", "rejected"]
    assert rollout.device_timeout == timedelta(minutes=5)
    assert rollout.shadow.window == timedelta(seconds=60) and rollout.shadow.min_windows == 10


# --- shares --------------------------------------------------------------------------------


DEVICES = [f"plant-north-{i:05d}" for i in range(1, 1001)]


def test_a_share_picks_the_same_devices_on_every_run_and_grows_by_keeping_them() -> None:
    first = select_share("ro-1", "plant-north", DEVICES, 0.02)
    again = select_share("ro-1", "plant-north", list(reversed(DEVICES)), 0.02)
    assert first == again and len(first.selected) == 20 and first.devices == 1000
    larger = select_share("ro-1", "plant-north", DEVICES, 0.1)
    assert set(first.selected) <= set(larger.selected) and len(larger.selected) == 100
    other = select_share("ro-2", "plant-north", DEVICES, 0.02)
    assert set(other.selected) != set(first.selected)
    assert len(select_share("ro-1", "plant-north", DEVICES, None).selected) == 1000


def test_a_small_share_of_a_small_group_still_reaches_one_device() -> None:
    assert len(select_share("ro-1", "g", ["a", "b", "c"], 0.02).selected) == 1
    assert select_share("ro-1", "g", [], 0.5).selected == ()
    assert len(select_share("ro-1", "g", [f"d{i}" for i in range(100)], 0.07).selected) == 7
    with pytest.raises(ValueError, match="share"):
        select_share("ro-1", "g", ["a"], 0)


# --- pacing --------------------------------------------------------------------------------


def most_in_a_minute(batches: list[Any]) -> int:
    per_second = Counter({b.at_s: len(b.devices) for b in batches})
    last = max(per_second)
    return max(sum(per_second[s] for s in range(start, start + 60)) for start in range(last + 1))


def test_without_a_rate_every_device_is_ordered_at_once() -> None:
    assert [(b.at_s, len(b.devices)) for b in pacing_schedule(DEVICES, None)] == [(0, 1000)]
    assert list(pacing_schedule([], RateSpec(per_minute=10))) == []


def test_a_fixed_rate_is_held_in_every_minute() -> None:
    devices = [f"d{i}" for i in range(10_000)]
    batches = list(pacing_schedule(devices, RateSpec(per_minute=1000)))
    assert [d for b in batches for d in b.devices] == devices
    assert most_in_a_minute(batches) == 1000
    assert batches[-1].at_s == 599  # 10,000 devices at 1,000 a minute: ten minutes
    slow = list(pacing_schedule(["a", "b", "c"], RateSpec(per_minute=2)))
    assert [(b.at_s, b.devices) for b in slow] == [(0, ("a",)), (30, ("b",)), (60, ("c",))]


def test_an_exponential_rate_steps_up_after_each_n_orders_up_to_the_maximum() -> None:
    rate = RateSpec.model_validate(
        {"per_minute": 1000, "exponential": {"base_per_minute": 10, "increment_factor": 2, "step_up_after_devices": 20}}
    )
    assert [rate_at(rate, n, 0).per_minute for n in (0, 19, 20, 40, 60, 140, 10_000)] == [
        10,
        10,
        20,
        40,
        80,
        1000,
        1000,
    ]
    assert rate_at(rate, 45, 0).steps == 2
    devices = [f"d{i}" for i in range(400)]
    batches = list(pacing_schedule(devices, rate))
    assert [d for b in batches for d in b.devices] == devices
    assert batches[0].per_minute == 10 and batches[-1].per_minute == 1000
    assert most_in_a_minute(batches) <= 1000
    first_minute = sum(len(b.devices) for b in batches if b.at_s < 60)
    assert first_minute == 10  # the base rate until 20 devices were ordered


def test_a_step_up_on_success_waits_for_devices_to_apply() -> None:
    rate = RateSpec.model_validate(
        {"per_minute": 100, "exponential": {"base_per_minute": 1, "increment_factor": 1.1, "step_up_after_success": 5}}
    )
    assert rate_at(rate, 50, 0).per_minute == 1 and rate_at(rate, 50, 0).criterion == "applied"
    assert rate_at(rate, 50, 5).per_minute == 2  # 1 x 1.1, rounded up to a whole device
    never = list(pacing_schedule(["a", "b", "c"], rate, applied=lambda ordered, at: 0))
    assert [b.at_s for b in never] == [0, 60, 120]


# --- timeouts, abort, success ------------------------------------------------------------------


def test_a_device_that_does_not_apply_in_time_has_timed_out_for_good() -> None:
    five = timedelta(minutes=5)
    assert classify_execution("d", None, 0.0, 200.0, five).state == "in_progress"
    late = classify_execution("d", None, 0.0, 301.0, five)
    assert (late.state, late.elapsed_s, late.timeout_s) == ("timed_out", 301.0, 300.0)
    assert classify_execution("d", "applied", 0.0, 900.0, five, reported_at=400.0).state == "timed_out"
    assert classify_execution("d", "applied", 0.0, 900.0, five, reported_at=100.0).state == "applied"
    assert classify_execution("d", "failed", 0.0, 900.0, five, reported_at=400.0).state == "failed"
    assert classify_execution("d", None, 0.0, 10_000.0, None).state == "in_progress"
    with pytest.raises(ValueError, match="status"):
        classify_execution("d", "done", 0.0, 1.0, five)


def test_outcomes_are_tallied_for_the_abort_and_success_rules() -> None:
    outcomes = [
        classify_execution(f"d{i}", s, 0.0, 400.0, timedelta(minutes=5))
        for i, s in enumerate(["applied", "applied", "failed", "rejected", None])
    ]
    tally = tally_executions(outcomes)
    assert (tally.targeted, tally.executed, tally.applied, tally.in_progress) == (5, 5, 2, 0)
    assert tally.failed_by_type == {"failed": 1, "timed_out": 1, "rejected": 1}


def test_the_abort_waits_for_the_minimum_executed_then_stops_at_the_threshold() -> None:
    policy = AbortSpec(failure_threshold_pct=10, min_executed=50, failure_types=["failed", "timed_out"])
    early = evaluate_abort(20, {"failed": 20}, policy)
    assert not early.abort and "fewer than 50" in early.reason
    stop = evaluate_abort(50, {"failed": 3, "timed_out": 2, "rejected": 30}, policy)
    assert stop.abort and (stop.failures, stop.failure_pct) == (5, 10.0)
    assert stop.to_dict()["counted_types"] == ("failed", "timed_out")
    assert not evaluate_abort(51, {"failed": 5}, policy).abort
    assert not evaluate_abort(50, {"failed": 50}, None).abort
    with pytest.raises(ValueError, match="failure types"):
        evaluate_abort(10, {"lost": 1}, policy)
    with pytest.raises(ValueError, match="at least the failures"):
        evaluate_abort(1, {"failed": 2}, policy)


def test_a_wave_advances_only_when_enough_of_its_devices_applied() -> None:
    assert evaluate_success(100, 90, 0.9).met
    short = evaluate_success(100, 89, 0.9)
    assert not short.met and short.reason == "89/100 applied (0.89 < 0.9)"
    assert not evaluate_success(0, 0, 0.5).met


# --- late joiners ------------------------------------------------------------------------------


def test_a_late_joiner_gets_its_groups_current_model() -> None:
    waves = policy_waves(spec_with(SHARE_WAVES, group_waves=False))
    during_share = desired_by_group(waves, "3", "4", ordered_waves=1, rolled_back=False)
    assert during_share == {"plant-north": "3", "line-canary": "3", "plant-south": "3"}
    after_group = desired_by_group(waves, "3", "4", ordered_waves=2, rolled_back=False)
    assert after_group["plant-north"] == "4" and after_group["plant-south"] == "3"
    assert set(desired_by_group(waves, "3", "4", ordered_waves=3, rolled_back=True).values()) == {"3"}
    joiner = late_joiner_order("plant-north-09999", "plant-north", "3", after_group)
    assert joiner.assign and joiner.desired_version == "4"
    assert not late_joiner_order("plant-north-00001", "plant-north", "4", after_group).assign
    assert (
        late_joiner_order("new-1", "plant-north", None, after_group).reason
        == "runs no model, group plant-north wants 4"
    )
    assert not late_joiner_order("x", "plant-east", "3", after_group).assign


# --- what the rollout DAG takes from the policy ---------------------------------------------------


def test_the_dag_follows_waves_of_whole_groups_and_of_shares() -> None:
    from edgeloop.rollout.plan import RolloutPlanError, plan_rollout

    groups_only = spec_with(
        {"canary_groups": [], "waves": [{"groups": ["plant-north"]}, {"groups": "all"}]}, group_waves=False
    )
    assert [(w.name, w.groups) for w in spec_waves(groups_only)] == [
        ("canary", ("plant-north",)),
        ("wave_1", ("line-canary", "plant-south")),
    ]
    assert [w.groups for w in plan_rollout(groups_only, "4")] == [("plant-north",), ("line-canary", "plant-south")]
    by_share = spec_with(SHARE_WAVES, group_waves=False)
    assert plan_rollout(by_share, "4")[0].groups == spec_waves(by_share)[0].groups
    with pytest.raises(RolloutPlanError, match="skip_canary_reason"):
        plan_rollout(by_share, "4", ["plant-south"])  # the first wave is the canary wave
    assert [w.groups for w in plan_rollout(by_share, "4", ["plant-south"], "plant-south alone")][2] == ("plant-south",)


def group_reading(**kw: Any) -> Any:
    from edgeloop.rollout.gate import GroupReading

    base = dict(group="plant-north", devices=100, applied=100, failed=0, offline_ratio=0.0, error_rate=0.0)
    return GroupReading(**(base | {"mean_confidence": 0.9} | kw))


def test_the_gate_without_policy_fields_decides_and_records_as_before() -> None:
    from edgeloop.rollout.gate import evaluate_gate

    spec = spec_with({})
    decision = evaluate_gate([group_reading(applied=96)], spec.rollout.thresholds, 0.05, soak_over=True)
    assert decision.passed and "policy" not in decision.to_dict()
    short = evaluate_gate([group_reading(applied=90)], spec.rollout.thresholds, 0.05, soak_over=True)
    assert short.state == "fail" and "90/100 devices report the new version" in short.reasons[0]


def test_the_gate_aborts_once_enough_devices_finished_and_too_many_failed() -> None:
    from edgeloop.rollout.gate import evaluate_gate

    spec = spec_with({"abort": {"failure_threshold_pct": 10, "min_executed": 50}})
    rollout = spec.rollout
    few = evaluate_gate([group_reading(applied=30, failed=5)], rollout.thresholds, 0.05, False, abort=rollout.abort)
    assert few.state == "wait" and few.policy["abort"]["executed"] == 35 and not few.policy["abort"]["abort"]
    # 5 of 100 devices is within max_failure_ratio 0.05, but 5 of the 50 that finished is 10%
    stop = evaluate_gate([group_reading(applied=45, failed=5)], rollout.thresholds, 0.05, False, abort=rollout.abort)
    assert stop.state == "fail" and stop.reasons == [
        "abort criteria: 5 of 50 finished devices failed (failed, timed_out, rejected): 10% >= 10%"
    ]
    assert stop.to_dict()["policy"]["abort"]["failure_pct"] == 10.0


def test_the_success_threshold_takes_the_place_of_the_applied_ratio_at_the_end_of_the_soak() -> None:
    from edgeloop.rollout.gate import evaluate_gate

    spec = spec_with({"success_threshold": 0.9})
    thresholds, threshold = spec.rollout.thresholds, spec.rollout.success_threshold
    passed = evaluate_gate([group_reading(applied=90)], thresholds, 0.05, True, success_threshold=threshold)
    assert passed.passed and passed.policy["success"]["plant-north"]["ratio"] == 0.9
    short = evaluate_gate([group_reading(applied=89)], thresholds, 0.05, True, success_threshold=threshold)
    assert short.reasons == ["plant-north: success threshold not met: 89/100 applied (0.89 < 0.9)"]
    assert evaluate_gate([group_reading(applied=10)], thresholds, 0.05, False, success_threshold=threshold).state == (
        "wait"
    )


def test_the_deferred_gate_applies_the_specs_abort_criteria(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers.keys import TRUSTED

    from edgeloop.rollout import job
    from edgeloop.rollout.trigger import RolloutGateTrigger

    spec = spec_with({"abort": {"failure_threshold_pct": 10, "min_executed": 50}})
    readings = [group_reading(applied=45, failed=5)]
    monkeypatch.setattr(job, "read_group_readings", lambda *args, **kwargs: (readings, {}))
    trigger = RolloutGateTrigger(
        pipeline=spec.name,
        groups=["plant-north"],
        model_version="4",
        assignment_ids={},
        started_at=0.0,
        soak_seconds=1e12,
        trusted_keys=TRUSTED.hex_keys(),
    )
    event = trigger._check(spec, {})
    assert event["state"] == "fail" and event["reasons"][0].startswith("abort criteria: 5 of 50")
    assert event["policy"]["abort"]["min_executed"] == 50


def test_the_shadow_wave_is_the_first_waves_groups_unless_the_spec_names_some() -> None:
    from edgeloop.rollout.shadow import ShadowTargets, shadow_targets

    assert shadow_targets(spec_with({})) is None
    assert shadow_targets(spec_with({"shadow": {"enabled": True}})) == ShadowTargets(("line-canary",), None, 60.0)
    named = spec_with({"shadow": {"enabled": True, "groups": ["plant-south"], "share": 0.1, "window": "5m"}})
    assert shadow_targets(named) == ShadowTargets(("plant-south",), 0.1, 300.0)
