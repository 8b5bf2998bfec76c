"""Example frames in a camera pipeline's drift report.

Story: the lamp of hall-east has failed (flatter frames). The drift report of hall-east opens with
eight frames of its current window, evenly spaced by time, beside eight of its reference, each
embedded in the HTML: a person sees the flat frames without leaving the report. A frame that is missing, has
another digest, is too big or whose key is not its content address is left out and counted; the
report is written all the same. A sensor pipeline's report has no such section and reads no frame.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from champion_fakes import BUCKET, MemoryS3
from tests.helpers.camera_records import camera_records

from edgeloop.contract.frame import MAX_FRAME_PNG_BYTES, frame_key
from edgeloop.drift.columns import drift_columns
from edgeloop.drift.detect import ReportInput, check_drift
from edgeloop.drift.examples import (
    EXAMPLES_PER_SIDE,
    collect_examples,
    example_frames_section,
    examples_html,
    pick_examples,
)
from edgeloop.drift.reference import reference_from_frame
from edgeloop.drift.reports import write_drifted_reports
from edgeloop.drift.sample import Stratum
from edgeloop.drift.window import frame_sample
from edgeloop.spec import PipelineSpec, load_spec
from edgeloop.vision.frames import decode_png, encode_png, group_conditions, make_frames

ROOT = Path(__file__).resolve().parents[3]
RUN = "scheduled__2026-03-01T12:00:00+00:00"
WINDOW = {"start": "2026-03-01T11:55:00+00:00", "end": "2026-03-01T12:00:00+00:00", "records": None}
IMG = re.compile(rb'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    spec = load_spec(ROOT / "include" / "pipelines" / "visual_inspection.yaml")
    drift = spec.drift.model_copy(update={"min_rows": 100, "sample_per_group": 400})
    return spec.model_copy(update={"drift": drift})


def shown_frames(html: bytes, side: str) -> list[bytes]:
    """The PNG bytes embedded in one side's row of the report's example frames."""
    row = re.search(rb'data-side="' + side.encode() + rb'".*?</div>', html, re.S)
    assert row is not None, side
    return [base64.b64decode(data) for data in IMG.findall(row.group(0))]


def test_the_drifted_halls_report_opens_with_its_flat_frames_beside_the_reference(spec: PipelineSpec) -> None:
    s3 = MemoryS3()
    reference = camera_records(spec, s3, pd.Timestamp("2026-02-01T00:00:00Z"), 200)
    current = camera_records(spec, s3, pd.Timestamp("2026-03-01T11:56:00Z"), 200, failed_lamp="hall-east")
    columns = drift_columns(spec)
    check = check_drift(
        frame_sample(current, columns, spec.drift.sample_per_group, seed=1),
        reference_from_frame(reference, spec).sample,
        spec,
    )
    assert check.drifted_groups == ["hall-east"]

    reports = write_drifted_reports(s3, BUCKET, spec, RUN, check, window=WINDOW)

    html = s3.objects[(BUCKET, reports["group=hall-east"])]
    assert re.search(rb'<body[^>]*><section id="edgeloop-example-frames"', html)  # above Evidently's part
    assert b"Example frames of group hall-east, window 2026-03-01T11:55:00+00:00 to 2026-03-01T12:00:00+00:00" in html
    now, before = shown_frames(html, "current"), shown_frames(html, "reference")
    assert len(now) == len(before) == EXAMPLES_PER_SIDE
    east = current["group_id"] == "hall-east"
    assert {hashlib.sha256(png).hexdigest() for png in now} <= set(current.loc[east, "frame_sha256"])
    assert {hashlib.sha256(png).hexdigest() for png in before} <= set(reference.loc[east, "frame_sha256"])
    contrast = [np.mean([decode_png(png).std() for png in side]) for side in (now, before)]
    assert contrast[0] < 0.7 * contrast[1]  # the failed lamp's flatter frames, as a person sees them
    assert b"Frames not shown" not in html


def framed_rows(spec: PipelineSpec, s3: MemoryS3, count: int) -> pd.DataFrame:
    """`count` rows of one camera in shuffled order, each frame stored, one second apart."""
    pixels, labels = make_frames("hall-west-cam-1", 0, count, group_conditions("hall-west"))
    rows = []
    for index, frame in enumerate(pixels):
        png = encode_png(frame)
        digest = hashlib.sha256(png).hexdigest()
        key = frame_key(spec.name, digest, storage_prefix=spec.storage.prefix)
        s3.put(key, png)
        ts = pd.Timestamp("2026-03-01T11:56:00Z") + pd.Timedelta(seconds=index)
        rows.append({"ts": ts, "frame_key": key, "frame_sha256": digest, "prediction": labels[index]})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=7).reset_index(drop=True)


def test_examples_are_evenly_spaced_by_time_and_the_same_every_time(spec: PipelineSpec) -> None:
    rows = framed_rows(spec, MemoryS3(), 72)
    rows.loc[rows["ts"] == rows["ts"].max(), "frame_key"] = None  # a record without its frame is never picked
    columns = drift_columns(spec)

    picked = pick_examples(rows, columns)

    seconds = ((picked["ts"] - rows["ts"].min()).dt.total_seconds()).astype(int).tolist()
    assert seconds == [0, 10, 20, 30, 40, 50, 60, 70]
    assert picked.equals(pick_examples(rows.sample(frac=1.0, random_state=3), columns))
    assert len(pick_examples(rows.head(5), columns)) == 5
    assert pick_examples(rows.drop(columns="frame_sha256"), columns).empty


def report_of(current: pd.DataFrame, reference: pd.DataFrame) -> ReportInput:
    return ReportInput(current, reference, ("brightness",), (), None, None, None, 0.3)


def test_a_missing_or_bad_frame_is_left_out_and_counted_and_the_rest_are_shown(spec: PipelineSpec) -> None:
    s3 = MemoryS3()
    rows = framed_rows(spec, s3, 8).sort_values("ts").reset_index(drop=True)
    keys = rows["frame_key"].tolist()
    del s3.objects[(BUCKET, keys[0])]  # never arrived
    s3.put(keys[1], s3.objects[(BUCKET, keys[2])])  # another frame's bytes under its address
    rows.loc[3, "frame_key"] = "models/visual_inspection/model.onnx"  # names another object of the bucket
    big = b"\x89PNG\r\n\x1a\n" + bytes(MAX_FRAME_PNG_BYTES)
    rows.loc[4, "frame_sha256"] = hashlib.sha256(big).hexdigest()
    rows.loc[4, "frame_key"] = frame_key(spec.name, rows.loc[4, "frame_sha256"])
    s3.put(rows.loc[4, "frame_key"], big)
    rows.loc[5, "prediction"] = "<script>alert(1)</script>"

    examples = collect_examples(s3, BUCKET, spec, report_of(rows, rows.iloc[5:]))

    assert examples is not None
    assert examples.skipped == Counter({"missing": 1, "digest": 1, "key": 1, "too_large": 1})
    assert [f.key for f in examples.current] == keys[2:3] + keys[5:]
    assert [f.key for f in examples.reference] == keys[5:]
    html = examples_html(examples, Stratum("group", "hall-west"), None)
    assert "Example frames of group hall-west, the current window" in html
    assert "Frames not shown: digest 1, key 1, missing 1, too_large 1." in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert len(IMG.findall(html.encode())) == 4 + 3


def test_a_sensor_pipelines_report_gets_no_frames_and_reads_none() -> None:
    sensors = load_spec(ROOT / "include" / "pipelines" / "factory_maintenance.yaml")
    s3 = MemoryS3()
    rows = pd.DataFrame({"vibration_rms": [1.0, 2.0], "frame_key": ["a", "b"], "frame_sha256": ["0" * 64] * 2})
    assert drift_columns(sensors).frame == ()
    assert example_frames_section(s3, BUCKET, sensors, Stratum("group", "plant-north"), report_of(rows, rows)) == ""
    assert s3.gets == []
