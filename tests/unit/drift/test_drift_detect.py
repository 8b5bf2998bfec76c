"""Detection with Evidently per edge group: the right group, the right columns, honest skips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgeloop.drift.columns import MissingColumnsError, drift_columns
from edgeloop.drift.detect import (
    DRIFT,
    NO_DRIFT,
    NOT_ENOUGH_DATA,
    NOT_ENOUGH_REFERENCE,
    DriftCheck,
    check_drift,
)
from edgeloop.drift.reference import reference_from_frame
from edgeloop.drift.reports import parse_snapshot
from edgeloop.drift.sample import FLEET, Stratum
from edgeloop.drift.synthetic import SensorDrift, make_telemetry
from edgeloop.drift.window import frame_sample
from edgeloop.spec import PipelineSpec

GROUPS = {"line-canary": 1500, "plant-north": 1500, "plant-south": 1500}
DRIFTED = ["vibration_rms", "vibration_peak", "temperature_c", "motor_current_a"]
SENSOR_CHANGE = {
    "vibration_rms": SensorDrift(offset=0.6),
    "vibration_peak": SensorDrift(offset=0.6),
    "temperature_c": SensorDrift(gain=1.5),
    "motor_current_a": SensorDrift(gain=1.5),
}


def _sample(spec: PipelineSpec, frame: pd.DataFrame, seed: int = 0):  # type: ignore[no-untyped-def]
    return frame_sample(frame, drift_columns(spec), spec.drift.sample_per_group, seed=seed)


def _reference(spec: PipelineSpec, rows: dict[str, int] | None = None):  # type: ignore[no-untyped-def]
    return reference_from_frame(make_telemetry(spec.features, rows or {g: 3000 for g in GROUPS}, seed=1), spec).sample


@pytest.fixture(scope="module")
def drifted_check(demo_spec: PipelineSpec) -> DriftCheck:
    current = make_telemetry(demo_spec.features, GROUPS, seed=2, drift={"plant-north": SENSOR_CHANGE})
    return check_drift(_sample(demo_spec, current), _reference(demo_spec), demo_spec, keep_report_input=False)


def test_sensor_drift_in_one_group_is_found_in_that_group_only(drifted_check: DriftCheck) -> None:
    north = drifted_check.scope(Stratum("group", "plant-north"))
    assert north is not None
    assert north.status == DRIFT
    assert north.dataset_drift
    assert sorted(north.drifted_columns) == sorted(DRIFTED)
    assert all(score is not None and score > 0.1 for score in north.drifted_columns.values())
    for clean in ("line-canary", "plant-south"):
        scope = drifted_check.scope(Stratum("group", clean))
        assert scope is not None
        assert scope.status == NO_DRIFT, (clean, scope.drifted_columns)
    assert drifted_check.drifted_groups == ["plant-north"]
    assert drifted_check.status == DRIFT


def test_each_group_is_compared_with_its_own_reference_and_states_its_sample(drifted_check: DriftCheck) -> None:
    north = drifted_check.scope(Stratum("group", "plant-north"))
    assert north is not None
    assert north.reference_scope == "group"
    assert (north.rows, north.sample_size, north.reference_size) == (1500, 1500, 3000)
    assert drifted_check.fleet.sample_size == 3000  # the fleet is sampled down to sample_per_group
    assert drifted_check.settings["sample_per_group"] == 3000


def test_the_drifted_group_reports_its_health_context(drifted_check: DriftCheck) -> None:
    north = drifted_check.scope(Stratum("group", "plant-north"))
    assert north is not None
    assert north.health["versions"]["config_version"] == {"cfg-plant-north-1": 1500}
    assert north.health["versions"]["model_version"] == {"7": 1500}
    assert north.health["devices"] == 20


def test_prediction_drift_and_confidence_are_signals(drifted_check: DriftCheck) -> None:
    north = drifted_check.scope(Stratum("group", "plant-north"))
    assert north is not None
    assert north.prediction is not None
    assert north.prediction.column == "prediction"
    assert north.confidence is not None
    assert 0 < north.confidence.current_mean < 1


def test_a_confidence_drop_alone_is_drift(demo_spec: PipelineSpec) -> None:
    current = make_telemetry(demo_spec.features, GROUPS, seed=3)
    current.loc[current["group_id"] == "plant-south", "confidence"] -= 0.3
    check = check_drift(_sample(demo_spec, current), _reference(demo_spec), demo_spec, keep_report_input=False)

    south = check.scope(Stratum("group", "plant-south"))
    assert south is not None and south.confidence is not None
    assert south.confidence.dropped
    assert not south.dataset_drift
    assert south.status == DRIFT
    assert check.drifted_groups == ["plant-south"]


def test_several_model_versions_get_a_check_each(demo_spec: PipelineSpec) -> None:
    spec = demo_spec.model_copy(update={"drift": demo_spec.drift.model_copy(update={"per_group": False})})
    current = make_telemetry(spec.features, {"plant-north": 1200}, seed=4, model_versions=("6", "7"))
    check = check_drift(_sample(spec, current), _reference(spec), spec, keep_report_input=False)

    assert [s.stratum for s in check.scopes] == [FLEET, Stratum("model_version", "6"), Stratum("model_version", "7")]
    assert all(s.status == NO_DRIFT for s in check.scopes)


def test_a_small_window_is_skipped_never_no_drift(demo_spec: PipelineSpec) -> None:
    current = make_telemetry(demo_spec.features, {"line-canary": 100, "plant-north": 120}, seed=5)
    check = check_drift(_sample(demo_spec, current), _reference(demo_spec), demo_spec, keep_report_input=False)

    assert check.status == NOT_ENOUGH_DATA
    assert all(s.status == NOT_ENOUGH_DATA for s in check.scopes)
    assert check.scope(Stratum("group", "plant-south")) is not None  # a silent group is reported too
    assert check.drifted_groups == []


def test_an_empty_window_is_skipped(demo_spec: PipelineSpec) -> None:
    empty = make_telemetry(demo_spec.features, {"plant-north": 0}, seed=6)
    check = check_drift(_sample(demo_spec, empty), _reference(demo_spec), demo_spec)
    assert check.status == NOT_ENOUGH_DATA
    assert check.fleet.rows == 0


def test_one_quiet_group_is_skipped_while_the_others_are_checked(demo_spec: PipelineSpec) -> None:
    current = make_telemetry(demo_spec.features, {"line-canary": 50, "plant-north": 1500}, seed=7)
    check = check_drift(_sample(demo_spec, current), _reference(demo_spec), demo_spec, keep_report_input=False)

    canary = check.scope(Stratum("group", "line-canary"))
    assert canary is not None and canary.status == NOT_ENOUGH_DATA and canary.rows == 50
    north = check.scope(Stratum("group", "plant-north"))
    assert north is not None and north.status == NO_DRIFT
    assert check.status == NO_DRIFT


def test_a_too_small_reference_is_its_own_skip(demo_spec: PipelineSpec) -> None:
    current = make_telemetry(demo_spec.features, GROUPS, seed=8)
    tiny = _reference(demo_spec, {"plant-north": 100})
    check = check_drift(_sample(demo_spec, current), tiny, demo_spec, keep_report_input=False)
    assert check.status == NOT_ENOUGH_REFERENCE


def test_nan_and_inf_are_counted_and_a_column_without_enough_values_is_left_out(demo_spec: PipelineSpec) -> None:
    current = make_telemetry(demo_spec.features, GROUPS, seed=9)
    south = current.index[current["group_id"] == "plant-south"]
    current.loc[south[:1400], "rpm"] = np.nan  # 100 values left: fewer than min_rows (300)
    current.loc[south[:5], "acoustic_db"] = np.inf
    check = check_drift(_sample(demo_spec, current), _reference(demo_spec), demo_spec, keep_report_input=False)

    scope = check.scope(Stratum("group", "plant-south"))
    assert scope is not None
    assert scope.nonfinite == {"acoustic_db": {"nan": 0, "inf": 5}, "rpm": {"nan": 1400, "inf": 0}}
    assert "rpm" in scope.skipped_columns and "min_rows 300" in scope.skipped_columns["rpm"]
    assert [c.column for c in scope.columns] == [f for f in demo_spec.features if f != "rpm"]
    assert scope.status == NO_DRIFT
    assert check.fleet.nonfinite["rpm"] == {"nan": 1400, "inf": 0}


def test_a_reference_without_the_checked_columns_fails_with_their_names(demo_spec: PipelineSpec) -> None:
    frame = make_telemetry(demo_spec.features, {"plant-north": 500}, seed=10).drop(columns=["rpm", "acoustic_db"])
    with pytest.raises(MissingColumnsError, match=r"\['acoustic_db', 'rpm'\]") as caught:
        reference_from_frame(frame, demo_spec, source="champion v7")
    assert caught.value.missing == ["acoustic_db", "rpm"]
    assert "champion v7" in str(caught.value)


def test_parse_snapshot_reads_statuses_as_json_text_too() -> None:
    data = {
        "metrics": [
            {"config": {"type": "evidently:metric_v2:DriftedColumnsCount"}, "value": {"count": 1, "share": 0.5}},
            {
                "config": {"type": "evidently:metric_v2:ValueDrift", "column": "a", "method": "PSI", "threshold": 0.1},
                "value": 0.4,
            },
            {
                "config": {"type": "evidently:metric_v2:ValueDrift", "column": "b", "method": "PSI", "threshold": 0.1},
                "value": float("nan"),
            },
        ],
        "tests": [
            {"metric_config": {"params": {"type": "evidently:metric_v2:DriftedColumnsCount"}}, "status": "FAIL"},
            {"metric_config": {"params": {"type": "evidently:metric_v2:ValueDrift", "column": "a"}}, "status": "FAIL"},
            {"metric_config": {"params": {"type": "evidently:metric_v2:ValueDrift", "column": "b"}}, "status": "ERROR"},
        ],
    }
    verdicts, share, dataset_drift = parse_snapshot(data)
    assert share == 0.5 and dataset_drift
    assert verdicts["a"].drifted and verdicts["a"].score == 0.4
    assert not verdicts["b"].drifted and verdicts["b"].score is None and verdicts["b"].status == "ERROR"
