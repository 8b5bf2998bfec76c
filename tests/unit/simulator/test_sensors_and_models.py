"""Sensor data, drift and the models devices run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeloop.contract.messages import BASELINE_VERSION
from edgeloop.simulator.fleet import allocate_devices
from edgeloop.simulator.models import (
    BaselineRuleModel,
    InferenceError,
    ModelLoadError,
    baseline_provider,
)
from edgeloop.spec import PipelineSpec, load_spec
from edgeloop.training.sensors import DEMO_FEATURES, DriftInjection, apply_drift, check_drift, sensor_profile

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(DEMO)


def labelled_sample(spec: PipelineSpec, n: int = 6000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    profile = sensor_profile(spec)
    rng = np.random.default_rng(seed)
    states = profile.initial_states(n, rng)
    readings = profile.sample(states, profile.device_bias(n, rng), np.zeros(len(profile.features)), rng)
    return readings, states


def test_demo_profile_is_physical(spec: PipelineSpec) -> None:
    readings, states = labelled_sample(spec)
    rms = readings[:, DEMO_FEATURES.index("vibration_rms")]
    peak = readings[:, DEMO_FEATURES.index("vibration_peak")]
    temperature = readings[:, DEMO_FEATURES.index("temperature_c")]
    medians = [float(np.median(rms[states == k])) for k in range(3)]
    assert medians[0] < 2.8 < medians[1] < 7.1 < medians[2]  # ISO 10816 zones
    assert (peak >= rms).all()
    assert temperature[states == 2].mean() > temperature[states == 0].mean() + 10
    shares = np.bincount(states, minlength=3) / len(states)
    assert 0.55 < shares[0] < 0.8 and shares[2] > 0.05  # mostly healthy machines, some faults


def test_machine_states_move_gradually_and_stay_valid(spec: PipelineSpec) -> None:
    profile = sensor_profile(spec)
    rng = np.random.default_rng(3)
    states = profile.initial_states(2000, rng)
    after = profile.step_states(states, rng)
    assert set(np.unique(after)) <= {0, 1, 2}
    assert 0.01 < (after != states).mean() < 0.06  # about 3 % of the machines change state per reading
    assert not ((states == 0) & (after == 2)).any()  # a healthy machine does not jump to fault


def test_a_small_group_sees_the_steady_mix_within_one_drift_window(spec: PipelineSpec) -> None:
    """Over 300 readings (5 minutes at 1 Hz) 20 machines spend close to the steady share in each state."""
    profile = sensor_profile(spec)
    rng = np.random.default_rng(11)
    states = profile.initial_states(20, rng)
    seen = np.zeros(3)
    for _ in range(300):
        states = profile.step_states(states, rng)
        seen += np.bincount(states, minlength=3)
    assert np.abs(seen / seen.sum() - profile.steady_state()).max() < 0.12


def test_group_offsets_differ_between_plants(spec: PipelineSpec) -> None:
    profile = sensor_profile(spec)
    assert not np.allclose(profile.group_offsets["plant-north"], profile.group_offsets["plant-south"])
    assert np.allclose(profile.group_offsets["line-canary"], 0.0)


def test_generic_profile_for_other_specs(spec: PipelineSpec) -> None:
    other = spec.model_copy(update={"annotation": spec.annotation.model_copy(update={"labels": ["ok", "bad"]})})
    profile = sensor_profile(other)
    assert profile.name == "generic" and profile.labels == ("ok", "bad")
    rng = np.random.default_rng(0)
    states = profile.initial_states(4000, rng)
    readings = profile.sample(states, profile.device_bias(4000, rng), np.zeros(len(profile.features)), rng)
    assert (readings[states == 1].mean(axis=0) > readings[states == 0].mean(axis=0)).all()


def test_drift_recalibrates_one_feature() -> None:
    readings = np.ones((4, 3))
    injection = DriftInjection("plant-south", "b", offset=1.0, gain=2.0)
    out = apply_drift(readings, ["a", "b", "c"], [injection])
    assert out[:, 1].tolist() == [3.0] * 4 and out[:, 0].tolist() == [1.0] * 4


def test_drift_activation() -> None:
    at_time = DriftInjection("g", "f", at_s=60)
    at_count = DriftInjection("g", "f", after_records=100)
    assert not at_time.active(59, 10_000) and at_time.active(60, 0)
    assert not at_count.active(1e6, 99) and at_count.active(0, 100)
    assert DriftInjection("g", "f").active(0, 0)


def test_drift_must_name_a_group_and_a_feature(spec: PipelineSpec) -> None:
    with pytest.raises(ValueError, match=r"drift\[0\].group"):
        check_drift(spec, [DriftInjection("atlantis", "rpm")])
    with pytest.raises(ValueError, match=r"drift\[0\].feature"):
        check_drift(spec, [DriftInjection("plant-south", "humidity")])


def test_devices_split_over_groups_in_proportion(spec: PipelineSpec) -> None:
    assert allocate_devices(spec, None) == [("line-canary", 20), ("plant-north", 120), ("plant-south", 120)]
    split = dict(allocate_devices(spec, 10_000))
    assert sum(split.values()) == 10_000
    assert abs(split["plant-north"] - split["plant-south"]) <= 1
    assert split["plant-north"] > 6 * split["line-canary"]
    assert sum(n for _, n in allocate_devices(spec, 7)) == 7


def test_baseline_model_is_useful_but_not_perfect(spec: PipelineSpec) -> None:
    readings, states = labelled_sample(spec)
    model = BaselineRuleModel(sensor_profile(spec))
    proba = model.predict_proba(readings)
    assert np.allclose(proba.sum(axis=1), 1.0)
    accuracy = (proba.argmax(axis=1) == states).mean()
    assert 0.7 < accuracy < 0.97
    assert list(model.labels) == ["normal", "wear", "fault"]


def test_a_drifted_sensor_fools_the_baseline(spec: PipelineSpec) -> None:
    readings, states = labelled_sample(spec)
    model = BaselineRuleModel(sensor_profile(spec))
    before = (model.predict_proba(readings).argmax(axis=1) == states).mean()
    drifted = apply_drift(readings.copy(), list(DEMO_FEATURES), [DriftInjection("g", "vibration_rms", gain=2.2)])
    after = (model.predict_proba(drifted).argmax(axis=1) == states).mean()
    assert after < before - 0.2


def test_provider_caches_versions_and_injects_faults(spec: PipelineSpec) -> None:
    profile = sensor_profile(spec)
    provider = baseline_provider(profile, faults={"5": "crash", "6": "bad", "7": "load_error"}, every_version=True)
    assert provider.default_version() == BASELINE_VERSION
    assert provider.load("3") is provider.load("3")
    readings, states = labelled_sample(spec, n=2000)
    with pytest.raises(InferenceError, match="injected crash"):
        provider.load("5").predict_proba(readings)
    good = (provider.load("3").predict_proba(readings).argmax(axis=1) == states).mean()
    bad_proba = provider.load("6").predict_proba(readings)
    assert (bad_proba.argmax(axis=1) == states).mean() < good - 0.3
    assert bad_proba.max(axis=1).mean() < 0.5  # below the rollout gate's usual min_mean_confidence
    with pytest.raises(ModelLoadError, match="version 7"):
        provider.load("7")


def test_without_a_registry_only_the_baseline_loads(spec: PipelineSpec) -> None:
    provider = baseline_provider(sensor_profile(spec))
    assert provider.load("0").version == "0"
    with pytest.raises(ModelLoadError, match="no registry"):
        provider.load("3")


def test_unknown_fault_kinds_are_refused(spec: PipelineSpec) -> None:
    with pytest.raises(ValueError, match="not faults"):
        baseline_provider(sensor_profile(spec), faults={"3": "explode"})  # type: ignore[dict-item]
