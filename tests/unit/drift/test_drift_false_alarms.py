"""False alarms: clean windows drawn from the reference's own distribution rarely flag drift."""

from __future__ import annotations

from edgeloop.drift.columns import drift_columns
from edgeloop.drift.detect import check_drift
from edgeloop.drift.reference import reference_from_frame
from edgeloop.drift.synthetic import make_telemetry
from edgeloop.drift.window import frame_sample
from edgeloop.spec import PipelineSpec

GROUPS = ("line-canary", "plant-north", "plant-south")


def test_at_most_one_of_twenty_clean_windows_flags_drift(demo_spec: PipelineSpec) -> None:
    # Three columns, where one drifted column already reaches drift_share 0.3 (the strictest setting for false alarms),
    # windows of 1,000 records per group against a 3,000-record reference per group.
    drift = demo_spec.drift.model_copy(update={"columns": ["vibration_rms", "temperature_c", "rpm"]})
    spec = demo_spec.model_copy(update={"drift": drift})
    reference = reference_from_frame(make_telemetry(spec.features, dict.fromkeys(GROUPS, 3000), seed=0), spec)
    columns = drift_columns(spec)
    flagged = []
    for seed in range(1, 21):
        window = make_telemetry(spec.features, dict.fromkeys(GROUPS, 1000), seed=seed)
        sample = frame_sample(window, columns, spec.drift.sample_per_group, seed=seed)
        check = check_drift(sample, reference.sample, spec, keep_report_input=False)
        assert len(check.scopes) == 4 and not any(s.skipped for s in check.scopes)
        if check.status == "drift":
            flagged.append((seed, {s.stratum.label: s.drifted_columns for s in check.scopes if s.status == "drift"}))
    assert len(flagged) <= 1, flagged
