"""Raw mode and profiles mode on the drift benchmark's data give the same verdicts.

The benchmark's fleet (3 groups, 20 columns; in plant-north two columns shifted by half a
spread and two scaled by 1.4) is checked twice with the same spec: from the raw records,
and from what its devices would have sent in profiles mode (each device's rows through its
own profiler, 60 s windows, merged per scope).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edgeloop.drift.columns import drift_columns
from edgeloop.drift.detect import DriftCheck, check_drift
from edgeloop.drift.profiles import merge_profiles, profile_sample
from edgeloop.drift.sample import FLEET, Stratum
from edgeloop.drift.synthetic import SensorDrift, make_telemetry, synthetic_spec
from edgeloop.drift.window import WindowBounds, frame_sample
from edgeloop.simulator.replay import replay_profiles

FEATURES = [f"f{i:02d}" for i in range(20)]
GROUPS = ["plant-north", "plant-south", "line-canary"]
DRIFTED = FEATURES[:4]
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def verdicts(check: DriftCheck) -> dict[str, tuple[str, ...]]:
    return {s.stratum.label: tuple(sorted(s.drifted_columns)) for s in check.scopes}


@pytest.mark.parametrize("method", ["psi", "wasserstein"])
def test_profiles_and_raw_records_flag_the_same_columns_of_the_same_group(method: str) -> None:
    spec = synthetic_spec(FEATURES, GROUPS, drift={"drift_share": 0.15, "method": method, "sample_per_group": 5000})
    faults = {c: SensorDrift(offset=0.5) for c in DRIFTED[:2]} | {c: SensorDrift(gain=1.4) for c in DRIFTED[2:]}
    window = make_telemetry(
        FEATURES, dict.fromkeys(GROUPS, 6000), seed=2, start=START, duration=timedelta(minutes=10),
        drift={"plant-north": faults}, devices_per_group=10,
    )  # fmt: skip
    reference = make_telemetry(FEATURES, dict.fromkeys(GROUPS, 4000), seed=1, start=START - timedelta(days=7))
    columns = drift_columns(spec)
    size = spec.drift.sample_per_group
    reference_sample = frame_sample(reference, columns, size, source="reference")

    raw = check_drift(frame_sample(window, columns, size, source="window"), reference_sample, spec)
    profiles, _ = replay_profiles(window, FEATURES, pipeline=spec.name, window_s=60.0, k=spec.telemetry.sketch_k)
    assert len(profiles) == 300  # 30 devices x 10 one-minute windows
    merged = merge_profiles(profiles)
    from edgeloop.drift.profiles import ProfileWindow

    sample = profile_sample(ProfileWindow(WindowBounds(end=START + timedelta(hours=1), start=START), merged), spec)
    from_profiles = check_drift(sample, reference_sample, spec)

    assert verdicts(raw)["group=plant-north"] == tuple(DRIFTED)
    assert verdicts(from_profiles) == verdicts(raw)
    for group in ("plant-south", "line-canary"):
        assert verdicts(from_profiles)[f"group={group}"] == ()
    assert from_profiles.scope(Stratum("group", "plant-north")).status == "drift"  # type: ignore[union-attr]
    assert sample.stats[FLEET].rows == len(window)
    assert abs(sample.stats[FLEET].confidence_mean - float(window["confidence"].mean())) < 1e-6  # type: ignore[operator]
