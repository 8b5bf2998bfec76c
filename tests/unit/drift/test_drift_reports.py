"""Evidently reports where someone opens them: drifted scopes with the check, the others after the alert.

Story: plant-north's sensors shift. The drift task writes plant-north's report before the
alert goes out and leaves the other scopes' rows (the fleet, line-canary, plant-south) to
the render task; the summary names those reports as pending. The render task then writes
them, clears the pending list and removes the rows; run again, it finds nothing to do. A
window without drift imports neither Evidently nor scipy.stats (most of a second) in the drift task.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from champion_fakes import BUCKET, MemoryS3

from edgeloop.drift.columns import drift_columns
from edgeloop.drift.detect import DriftCheck, check_drift
from edgeloop.drift.reference import reference_from_frame
from edgeloop.drift.reports import (
    pending_prefix,
    render_pending_reports,
    write_drifted_reports,
    write_pending_reports,
)
from edgeloop.drift.results import build_summary, write_summary
from edgeloop.drift.synthetic import SensorDrift, make_telemetry, synthetic_spec
from edgeloop.drift.window import frame_sample
from edgeloop.spec import PipelineSpec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
FEATURES = ["vibration_rms", "temperature_c", "rpm"]
GROUPS = ("line-canary", "plant-north", "plant-south")
RUN = "scheduled__2026-03-01T12:00:00+00:00"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return synthetic_spec(FEATURES, GROUPS, name="reports_story", drift={"sample_per_group": 2000, "min_rows": 200})


def window_check(spec: PipelineSpec, *, drifted: bool) -> DriftCheck:
    change = {"plant-north": {c: SensorDrift(offset=0.6) for c in FEATURES[:2]}} if drifted else None
    current = make_telemetry(FEATURES, dict.fromkeys(GROUPS, 1500), seed=3, drift=change)
    reference = reference_from_frame(make_telemetry(FEATURES, dict.fromkeys(GROUPS, 2000), seed=1), spec)
    sample = frame_sample(current, drift_columns(spec), spec.drift.sample_per_group, seed=3)
    return check_drift(sample, reference.sample, spec)


def write_run(s3: MemoryS3, spec: PipelineSpec, check: DriftCheck) -> tuple[dict[str, Any], dict[str, str]]:
    """What run_drift_check writes after the check: drifted reports, pending rows, the summary."""
    summary = build_summary(check, spec, RUN, window={}, reference={}, created_at=NOW)
    reports = write_drifted_reports(s3, BUCKET, spec, RUN, check)
    pending = write_pending_reports(s3, BUCKET, spec, RUN, check)
    write_summary(s3, BUCKET, summary)
    assert pending == summary["pending_reports"]
    return summary, reports


def stored_summary(s3: MemoryS3, summary: dict[str, Any]) -> Any:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=summary["summary_key"])["Body"].read())


def test_the_drifted_groups_report_comes_first_and_the_others_after_the_alert(spec: PipelineSpec) -> None:
    s3 = MemoryS3()
    check = window_check(spec, drifted=True)
    assert check.drifted_groups == ["plant-north"] and check.fleet.status == "no drift"
    summary, reports = write_run(s3, spec, check)

    north, south, fleet = (summary["groups"]["plant-north"], summary["groups"]["plant-south"], summary["overall"])
    canary = summary["groups"]["line-canary"]
    assert reports == {"group=plant-north": north["report_key"]}
    assert summary["pending_reports"] == {
        "fleet": fleet["report_key"],
        "group=line-canary": canary["report_key"],
        "group=plant-south": south["report_key"],
    }
    html = s3.objects[(BUCKET, north["report_key"])]
    assert html.lstrip().lower().startswith(b"<!doctype html>") and b"vibration_rms" in html
    assert (BUCKET, south["report_key"]) not in s3.objects and (BUCKET, fleet["report_key"]) not in s3.objects
    rows = s3.keys(pending_prefix(spec, RUN))
    assert len(rows) == 7 and rows[-1].endswith("/plan.json")  # current and reference rows of three scopes

    rendered = render_pending_reports(s3, BUCKET, spec, RUN)

    assert rendered == {"reports": summary["pending_reports"], "disagreements": []}
    for key in summary["pending_reports"].values():
        assert s3.objects[(BUCKET, key)].lstrip().lower().startswith(b"<!doctype html>")
    assert stored_summary(s3, summary)["pending_reports"] == {}
    assert s3.keys(pending_prefix(spec, RUN)) == []
    assert render_pending_reports(s3, BUCKET, spec, RUN) == {"reports": {}, "disagreements": []}


def test_a_window_without_drift_leaves_every_report_to_the_render_task(spec: PipelineSpec) -> None:
    s3 = MemoryS3()
    summary, reports = write_run(s3, spec, window_check(spec, drifted=False))
    assert reports == {}
    assert sorted(summary["pending_reports"]) == ["fleet", *(f"group={g}" for g in GROUPS)]
    assert all(view["report_key"] for view in summary["groups"].values())


def test_a_check_without_drift_imports_neither_evidently_nor_scipy_stats() -> None:
    code = f"""
import json, sys
sys.path[:0] = [{str(HERE)!r}, {str(ROOT / "include")!r}]
from champion_fakes import MemoryS3
from test_drift_reports import write_run, window_check
from edgeloop.drift.synthetic import synthetic_spec
spec = synthetic_spec({FEATURES!r}, {GROUPS!r}, name="reports_story", drift={{"sample_per_group": 2000}})
check = window_check(spec, drifted=False)
assert check.status == "no drift", check.status
write_run(MemoryS3(), spec, check)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("evidently", "plotly") or m == "scipy.stats")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
