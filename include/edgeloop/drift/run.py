"""One drift run end to end: read the window, check it, write the results, fold them into the open alerts.

This is what the `<pipeline>__drift` DAG's check task calls. Only the drifted scopes'
Evidently reports are built here (the alert links to them); the other scopes' rows are
stored for the DAG's `render_reports` task (`reports.render_pending_reports`). It returns
a small dict (keys, counts, statuses and the alert messages still to publish), never data frames.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from edgeloop.drift.alert_state import record_drift_result
from edgeloop.drift.detect import check_drift
from edgeloop.drift.profiles import ProfileWindowSample, read_profile_window, report_from_sampled_records
from edgeloop.drift.reference import ReferenceSample
from edgeloop.drift.reports import write_drifted_reports, write_pending_reports
from edgeloop.drift.results import build_summary, write_summary
from edgeloop.drift.window import S3Client, WindowBounds, WindowSample, read_window
from edgeloop.spec import PipelineSpec


def seed_for(run_id: str) -> int:
    """The sampling seed of a run: a re-run of the same run draws the same samples."""
    return int(hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:8], 16)


def run_drift_check(
    s3: S3Client,
    bucket: str,
    spec: PipelineSpec,
    run_id: str,
    now: datetime,
    *,
    reference: ReferenceSample,
    topic: str | None = None,
    bounds: WindowBounds | None = None,
    fleet_state: Mapping[str, Mapping[str, Any]] | None = None,
    confidence_baseline: float | None = None,
    max_open_age: timedelta | None = None,
) -> dict[str, Any]:
    """Check the spec's current window against `reference`, write reports, update the open alerts.

    In `telemetry.mode: profiles` the window is the devices' merged profiles (`drift.profiles`)
    and the reports show the records the devices sampled.

    Returns `status` ("drift", "no drift", "skipped: not enough data", "skipped: not enough
    reference data"), `summary_key`, `reports` (the drifted scopes' reports, written),
    `pending_reports` (the other checked scopes' reports, for `render_pending_reports`),
    `drifted_groups`, `publish` (alert messages for the `alerts` topic; confirm them with
    `alert_state.confirm_published` once sent), `opened` / `updated` alert ids, and
    `seconds` spent reading, checking, building the drifted scopes' reports and writing.
    """
    started = time.perf_counter()
    window: WindowSample | ProfileWindowSample
    if spec.telemetry.mode == "profiles":
        window = read_profile_window(s3, bucket, spec, now, bounds=bounds, seed=seed_for(run_id))
    else:
        window = read_window(s3, bucket, spec, now, topic=topic, bounds=bounds, seed=seed_for(run_id))
    read_done = time.perf_counter()
    check = check_drift(
        window.sample, reference.sample, spec, fleet_state=fleet_state, confidence_baseline=confidence_baseline
    )
    if isinstance(window, ProfileWindowSample):
        report_from_sampled_records(check, window.sampled.sample)
    check_done = time.perf_counter()
    described = window.describe()
    summary = build_summary(check, spec, run_id, window=described, reference=reference.describe(), created_at=now)
    reports = write_drifted_reports(s3, bucket, spec, run_id, check, window=described)
    reports_done = time.perf_counter()
    pending = write_pending_reports(s3, bucket, spec, run_id, check)
    key = write_summary(s3, bucket, summary)
    plan = record_drift_result(s3, bucket, spec, summary, now, max_open_age=max_open_age)
    finished = time.perf_counter()
    return {
        "status": summary["status"],
        "summary_key": key,
        "reports": reports,
        "pending_reports": pending,
        "telemetry": spec.telemetry.mode,
        "rows": window.rows,
        **(
            {"profiles": window.profiles.profiles, "records": window.rows, "sampled_records": window.sampled.rows}
            if isinstance(window, ProfileWindowSample)
            else {}
        ),
        "corrupt_objects": len(window.corrupt),
        "drifted_groups": summary["drifted_groups"],
        "publish": plan.publish,
        "opened": plan.opened,
        "updated": plan.updated,
        "expired": plan.expired,
        "seconds": {
            "read": round(read_done - started, 3),
            "check": round(check_done - read_done, 3),
            "report": round(reports_done - check_done, 3),
            "write": round(finished - reports_done, 3),
        },
    }
