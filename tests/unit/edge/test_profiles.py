"""Profiles mode on the device: what a window's profile holds, which records still go out and why, the wire."""

from __future__ import annotations

import contextlib
import json
import math
import random
from datetime import timedelta
from pathlib import Path

import datasketches as ds
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.helpers.keys import TRUSTED, device_key
from tests.unit.edge.conftest import NOW, PIPELINE

from edgeloop.contract.identity import DeviceRegistry, Enrolment
from edgeloop.contract.keys import Keyring
from edgeloop.contract.profile import (
    BadProfile,
    ColumnProfile,
    check_signed,
    decode_profile,
    encode_profile,
    load_sketch,
    merge_moments,
)
from edgeloop.edge.config import parse_config
from edgeloop.edge.device import DeviceCore
from edgeloop.edge.profile import RecordSampler, local_drift_score
from edgeloop.edge.runtime import load_model
from edgeloop.fleet.agents import agent_config
from edgeloop.simulator.baseline import reference_readings
from edgeloop.spec import PipelineSpec, with_profiles
from edgeloop.training.sensors import SensorProfile

DEVICE = "plant-north-00001"


@pytest.fixture
def profiled(spec: PipelineSpec, tmp_path: Path, baseline_model: bytes) -> tuple[DeviceCore, list[float]]:
    """A plant-north device in profiles mode (60 s windows) on the baseline model, its clock settable."""
    profiles = with_profiles(spec, window=timedelta(seconds=60), sample_rate=0.05)
    raw = agent_config(profiles, "plant-north", DEVICE, {"bootstrap.servers": "127.0.0.1:1"}, tmp_path)
    clock = [NOW]
    core = DeviceCore.for_config(
        parse_config(raw), TRUSTED, identity=device_key(PIPELINE, DEVICE), clock=lambda: clock[0]
    )
    core.model = load_model(baseline_model, "0", spec.features)
    return core, clock


def _readings(profile: SensorProfile, n: int, shift: float = 0.0) -> np.ndarray:
    rows = reference_readings(profile, n, seed=7)
    rows[:, 0] += shift
    return rows


def _registry(core: DeviceCore) -> DeviceRegistry:
    assert core.identity is not None
    keys = Keyring.of([core.identity.public])
    return DeviceRegistry({core.device_id: Enrolment(core.device_id, core.group_id, PIPELINE, keys, "2026-01-01")})


def test_a_window_becomes_one_signed_profile_and_a_few_records_that_say_why(
    profiled: tuple[DeviceCore, list[float]], profile: SensorProfile
) -> None:
    core, _ = profiled
    rows = _readings(profile, 600)
    proba = core.score(rows)
    assert proba is not None
    sent = [core.observe(row, proba[i], NOW + i * 0.05) for i, row in enumerate(rows)]
    records = [json.loads(m.value) for m in sent if m is not None]
    assert core.profiles_due(NOW + 59) == []
    (message,) = core.profiles_due(NOW + 60)
    assert message.kind == "profiles" and message.key == DEVICE.encode()

    got = decode_profile(message.value)
    assert (got.device_id, got.group_id, got.model_version) == (DEVICE, "plant-north", "0")
    assert got.records == 600 and got.sent == len(records) == 600 - core.counters.not_sent
    assert check_signed(got, _registry(core)) is None
    vibration = got.column("vibration_rms")
    assert vibration is not None and vibration.count == 600
    assert load_sketch(vibration).n == 600
    assert math.isclose(vibration.mean, float(rows[:, 0].astype(np.float64).mean()), rel_tol=1e-9)
    assert math.isclose(vibration.variance, float(rows[:, 0].var()), rel_tol=1e-6)
    prediction = got.column("prediction")
    assert prediction is not None and prediction.kind == "categorical" and prediction.count == 600

    reasons = {r["sample_reason"] for r in records}
    assert reasons <= {"uniform", "low_confidence"} and "uniform" in reasons
    low = [r for r in records if r["sample_reason"] == "low_confidence"]
    assert all(r["confidence"] < 0.5 for r in low)
    assert sum(1 for p in proba if p.max() < 0.5) == len(low)  # every low-confidence record went out
    assert len(records) < 0.2 * 600


def test_a_window_that_drifts_from_the_models_reference_raises_the_sample_rate(
    profiled: tuple[DeviceCore, list[float]], profile: SensorProfile
) -> None:
    core, _ = profiled
    clean, shifted = _readings(profile, 300), _readings(profile, 300, shift=60.0)
    for i, row in enumerate(clean):
        core.observe(row, None, NOW + i * 0.1)
    core.profiles_due(NOW + 60)
    assert core.local_drift is not None and core.local_drift < 2.5 and not core.sampler.drifting  # type: ignore[union-attr]
    for i, row in enumerate(shifted):
        core.observe(row, None, NOW + 60 + i * 0.1)
    core.profiles_due(NOW + 120)
    assert core.local_drift > 2.5 and core.sampler.drifting  # type: ignore[union-attr,operator]
    sent = [core.observe(row, None, NOW + 120 + i * 0.1) for i, row in enumerate(shifted)]
    reasons = [json.loads(m.value)["sample_reason"] for m in sent if m is not None]
    assert reasons.count("local_drift") > 0.05 * len(shifted)  # drift_sample_rate 0.1 of 300


def test_a_raw_mode_record_says_it_is_one_of_all(core: DeviceCore, profile: SensorProfile) -> None:
    message = core.observe(_readings(profile, 1)[0], None, NOW)
    assert message is not None
    assert core.profiles_due(NOW + 3600) == []
    assert "sample_reason" not in json.loads(message.value) or json.loads(message.value)["sample_reason"] == "all"


def test_the_sampler_sends_every_low_confidence_record_and_a_share_of_the_rest() -> None:
    sampler = RecordSampler(rate=0.1, low_confidence=0.6, drift_rate=0.5, seed="x", rng=random.Random(1))
    assert all(sampler.reason(0.59) == "low_confidence" for _ in range(100))
    shares = [sampler.reason(0.9) for _ in range(10_000)]
    assert 0.08 < shares.count("uniform") / 10_000 < 0.12 and shares.count("local_drift") == 0
    sampler.drifting = True
    shares = [sampler.reason(0.9) for _ in range(10_000)]
    assert 0.45 < shares.count("local_drift") / 10_000 < 0.55 and shares.count("uniform") == 0


def test_local_drift_is_low_for_the_same_distribution_and_high_for_a_shift() -> None:
    rng = np.random.default_rng(3)

    def sketch(values: np.ndarray) -> ds.kll_floats_sketch:
        s = ds.kll_floats_sketch(200)
        s.update(values.astype(np.float32))
        return s

    reference = {"a": sketch(rng.normal(size=5000))}
    assert local_drift_score(reference, {"a": sketch(rng.normal(size=600))}) < 0.1
    assert local_drift_score(reference, {"a": sketch(rng.normal(1.0, 1.0, size=600))}) > 0.5
    assert local_drift_score(reference, {}) == 0.0


def test_merged_moments_equal_the_moments_of_all_values() -> None:
    rng = np.random.default_rng(5)
    chunks = [rng.normal(i, 1 + i, size=50 + 10 * i) for i in range(6)]
    columns = [
        ColumnProfile("x", "numeric", len(c), 1, float(c.min()), float(c.max()), float(c.mean()), float(c.var()))
        for c in chunks
    ]
    count, missing, low, high, mean, variance = merge_moments(columns)
    every = np.concatenate(chunks)
    assert (count, missing) == (every.size, 6)
    assert (low, high) == (every.min(), every.max())
    assert math.isclose(mean, every.mean(), rel_tol=1e-12) and math.isclose(variance, every.var(), rel_tol=1e-12)


def test_a_tampered_or_foreign_profile_is_refused_with_its_reason(profiled: tuple[DeviceCore, list[float]]) -> None:
    core, _ = profiled
    for i in range(30):
        core.observe([1.0, 2.0, 50.0, 10.0, 1400.0, 60.0], None, NOW + i)
    (message,) = core.profiles_due(NOW + 60)
    registry = _registry(core)
    tampered = bytearray(message.value)
    tampered[-100] ^= 1  # a byte of the last column's sketch
    assert check_signed(decode_profile(bytes(tampered), check_sketches=False), registry) == "bad_signature"
    unsigned = decode_profile(message.value).signed_part
    assert check_signed(decode_profile(unsigned), registry) == "unsigned"
    assert check_signed(decode_profile(message.value), DeviceRegistry()) == "unknown_device"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty"),
        (b"ELP0" + b"\0" * 10, "magic"),
        (b"ELP1\xff\x00{}", "truncated"),
        (b"ELP1\x02\x00{}\x00\x00", "header.device_id"),
        (b"ELP1" + b"\0" * (600 * 1024), "oversized"),
    ],
)
def test_bad_profiles_are_refused_naming_the_part(value: bytes, reason: str) -> None:
    with pytest.raises(BadProfile, match=reason):
        decode_profile(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.integers(min_value=0, max_value=400))
def test_no_bytes_make_the_decoder_fail_other_than_with_bad_profile(noise: bytes, cut: int) -> None:
    header = json.dumps(
        {"device_id": "d", "group_id": "g", "pipeline": "p", "model_version": "1", "window_start_ms": 0,
         "window_end_ms": 1, "records": 3, "sent": 1}
    ).encode()  # fmt: skip
    good = encode_profile(decode_profile(b"ELP1" + len(header).to_bytes(2, "little") + header + b"\x00\x00"))
    for value in (noise, b"ELP1" + noise, good[:cut] + noise):
        with contextlib.suppress(BadProfile):
            decode_profile(value)
