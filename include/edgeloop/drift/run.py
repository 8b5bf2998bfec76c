"""One drift run end to end: read the window, check it, write the results, fold them into the open alerts.

This is what the `<pipeline>__drift` DAG's task calls. It returns a small dict (keys,
counts, statuses and the alert messages still to publish), never data frames.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from edgeloop.drift.alert_state import record_drift_result
from edgeloop.drift.detect import check_drift
from edgeloop.drift.reference import ReferenceSample
from edgeloop.drift.results import build_summary, write_drift_results
from edgeloop.drift.window import S3Client, WindowBounds, read_window
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

    Returns `status` ("drift", "no drift", "skipped: not enough data", "skipped: not enough
    reference data"), `summary_key`, `reports`, `drifted_groups`, `publish` (alert messages
    for the `alerts` topic; confirm them with `alert_state.confirm_published` once sent),
    `opened` / `updated` alert ids, and `seconds` spent reading, checking and writing.
    """
    started = time.perf_counter()
    window = read_window(s3, bucket, spec, now, topic=topic, bounds=bounds, seed=seed_for(run_id))
    read_done = time.perf_counter()
    check = check_drift(
        window.sample, reference.sample, spec, fleet_state=fleet_state, confidence_baseline=confidence_baseline
    )
    check_done = time.perf_counter()
    summary = build_summary(
        check, spec, run_id, window=window.describe(), reference=reference.describe(), created_at=now
    )
    written = write_drift_results(s3, bucket, spec, check, summary)
    plan = record_drift_result(s3, bucket, spec, summary, now, max_open_age=max_open_age)
    finished = time.perf_counter()
    return {
        "status": summary["status"],
        "summary_key": written["summary_key"],
        "reports": written["reports"],
        "rows": window.rows,
        "corrupt_objects": len(window.corrupt),
        "drifted_groups": summary["drifted_groups"],
        "publish": plan.publish,
        "opened": plan.opened,
        "updated": plan.updated,
        "expired": plan.expired,
        "seconds": {
            "read": round(read_done - started, 3),
            "check": round(check_done - read_done, 3),
            "write": round(finished - check_done, 3),
        },
    }
