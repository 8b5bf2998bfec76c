"""Drift on camera frames, unchanged stages: the records cameras send, decoded as ingest decodes them, go through
the drift check per edge group on the spec's 14 image feature columns; a lighting drift of one hall's cameras is
found in that hall only."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tests.helpers.camera_models import camera_cores, camera_model, vision_spec
from tests.helpers.keys import TRUSTED

from edgeloop.drift.columns import drift_columns
from edgeloop.drift.detect import DRIFT, NO_DRIFT, DriftCheck, check_drift
from edgeloop.drift.reference import reference_from_frame
from edgeloop.drift.sample import Stratum
from edgeloop.drift.window import frame_sample
from edgeloop.ingest.decode import decode_records, record_schema
from edgeloop.simulator.cameras import CameraRig, camera_rig, camera_step

NOW = 1_767_225_600.0
ROUNDS = 40  # frames per camera and window: 400 per group of 10 cameras, over the spec's min_rows


def _window(cores: list, rig: CameraRig, start: float) -> pd.DataFrame:  # type: ignore[type-arg]
    """The telemetry of ROUNDS frames per camera, as ingest stores it (decoded by the spec's schema)."""
    values = [
        m.value for r in range(ROUNDS) for _, m in camera_step(cores, rig, start + r).messages if m.kind == "telemetry"
    ]
    decoded = decode_records(values, record_schema(vision_spec()), [int((start + ROUNDS) * 1000)] * len(values))
    assert decoded.bad == []
    return decoded.table.to_pandas()


@pytest.fixture(scope="module")
def lighting_check() -> DriftCheck:
    spec = vision_spec()
    cores = camera_cores(spec, 10, TRUSTED, camera_model(), NOW)
    rig = camera_rig(spec)
    reference = _window(cores, rig, NOW)
    rig.inject("hall-east", "lighting")
    current = _window(cores, rig, NOW + ROUNDS)
    sample = frame_sample(current, drift_columns(spec), spec.drift.sample_per_group, seed=0)
    return check_drift(sample, reference_from_frame(reference, spec).sample, spec, keep_report_input=False)


def test_a_lighting_drift_is_found_in_the_drifted_hall_only(lighting_check: DriftCheck) -> None:
    east = lighting_check.scope(Stratum("group", "hall-east"))
    assert east is not None and east.status == DRIFT and east.dataset_drift
    assert {"brightness", "contrast", "dark_share"} <= set(east.drifted_columns)
    for clean in ("cell-canary", "hall-west"):
        scope = lighting_check.scope(Stratum("group", clean))
        assert scope is not None and scope.status == NO_DRIFT, (clean, scope.drifted_columns)
    assert lighting_check.drifted_groups == ["hall-east"]


def test_the_check_reads_the_image_columns_of_the_spec(lighting_check: DriftCheck) -> None:
    assert json.loads(json.dumps(lighting_check.settings["columns"])) == list(vision_spec().drift.columns)
