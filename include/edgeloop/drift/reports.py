"""Evidently HTML reports of checked scopes: the drifted ones at once, the others in the background.

A report is Evidently's own `Report([DataDriftPreset(...), ValueDrift(prediction)],
include_tests=True)` over the rows a scope was checked on (`detect.ReportInput`), so it
shows the scores and verdicts of the check. Building one takes seconds, so the drift
task builds only the drifted scopes' reports, before the alert is published
(`write_drifted_reports`). For every other checked scope it stores the rows and a plan
under `reports/drift/<pipeline>/_pending/<run>/` (`write_pending_reports`); the drift
DAG's `render_reports` task builds those reports after the alert is out
(`render_pending_reports`), clears `pending_reports` in the run's summary and removes the rows.

Evidently is imported only inside the function that builds a report.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from html import escape
from typing import Any

import pandas as pd

from edgeloop.drift.detect import ColumnDrift, DriftCheck, ReportInput, ScopeResult, finite_number, inert_category
from edgeloop.drift.examples import example_frames_section
from edgeloop.drift.results import drift_reports_prefix, report_key, safe_segment, summary_key
from edgeloop.drift.window import S3Client
from edgeloop.spec import PipelineSpec

log = logging.getLogger(__name__)

PLAN_VERSION = 1


def pending_prefix(spec: PipelineSpec, run_id: str) -> str:
    """`reports/drift/<pipeline>/_pending/<run>`: apart from every run's reports (no run segment starts with `_`)."""
    return f"{drift_reports_prefix(spec)}/_pending/{safe_segment(run_id)}"


def build_report(report: ReportInput) -> Any:
    """Run Evidently over one scope's rows; returns the Snapshot (its HTML with `get_html_str`)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    categorical = set(report.categorical)
    numerical = [c for c in report.columns if c not in categorical]
    cat_columns = list(report.categorical)
    prediction = report.prediction
    if prediction is not None:
        if pd.api.types.is_numeric_dtype(report.current[prediction].dtype):
            numerical.append(prediction)
        else:
            cat_columns.append(prediction)
            categorical.add(prediction)
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=cat_columns)
    preset = DataDriftPreset(
        columns=list(report.columns),
        method=report.method,
        threshold=report.threshold,
        drift_share=report.drift_share,
    )
    metrics: list[Any] = [preset]
    if prediction is not None:
        metrics.append(ValueDrift(column=prediction))
    return Report(metrics, include_tests=True).run(
        Dataset.from_pandas(evidently_frame(report.current, report.names, categorical), data_definition=definition),
        Dataset.from_pandas(evidently_frame(report.reference, report.names, categorical), data_definition=definition),
    )


def evidently_frame(frame: pd.DataFrame, columns: list[str], categorical: set[str]) -> pd.DataFrame:
    """The columns Evidently reads, categories as plain values with `<` made inert (see `inert_category`)."""
    out = frame[columns].copy()
    for column in categorical:
        values = out[column].astype("object").where(out[column].notna(), None)
        out[column] = values.map(inert_category, na_action="ignore")
    return out


def parse_snapshot(data: Mapping[str, Any]) -> tuple[dict[str, ColumnDrift], float | None, bool]:
    """Per-column verdicts, the drifted share and the dataset-drift verdict from `Snapshot.dict()`.

    A column drifted when its `ValueDrift` test failed; the dataset drifted when the
    `DriftedColumnsCount` test (share below drift_share) failed.
    """
    scores: dict[str, tuple[float | None, str, float | None]] = {}
    share: float | None = None
    for metric in data.get("metrics", []):
        config = metric.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith(":ValueDrift"):
            scores[config["column"]] = (
                finite_number(metric.get("value")),
                str(config.get("method")),
                config.get("threshold"),
            )
        elif kind.endswith(":DriftedColumnsCount"):
            share = finite_number((metric.get("value") or {}).get("share"))
    statuses: dict[str, str] = {}
    dataset_drift = False
    for test in data.get("tests", []):
        params = (test.get("metric_config") or {}).get("params") or {}
        kind = str(params.get("type", ""))
        status = _status_name(test.get("status"))
        if kind.endswith(":ValueDrift"):
            statuses[params["column"]] = status
        elif kind.endswith(":DriftedColumnsCount"):
            dataset_drift = dataset_drift or status == "FAIL"
    verdicts = {
        column: ColumnDrift(
            column=column,
            score=score,
            method=method,
            threshold=finite_number(threshold),
            drifted=statuses.get(column) == "FAIL",
            status=statuses.get(column, "MISSING"),
        )
        for column, (score, method, threshold) in scores.items()
    }
    return verdicts, share, dataset_drift


def _status_name(status: Any) -> str:
    """'FAIL', 'SUCCESS', ... from Evidently's TestStatus enum or its JSON string."""
    return str(getattr(status, "value", status)).upper()


def verdict_of(scope: ScopeResult) -> dict[str, Any]:
    """What a report must agree with: the drifted columns, the prediction's verdict, the dataset verdict."""
    return {
        "drifted_columns": sorted(scope.drifted_columns),
        "prediction_drift": scope.prediction.drifted if scope.prediction is not None else None,
        "dataset_drift": scope.dataset_drift,
    }


def snapshot_verdict(snapshot: Any, prediction: str | None) -> dict[str, Any]:
    """`verdict_of` as Evidently's report gives it."""
    verdicts, _, dataset_drift = parse_snapshot(snapshot.dict())
    return {
        "drifted_columns": sorted(c for c, v in verdicts.items() if v.drifted and c != prediction),
        "prediction_drift": verdicts[prediction].drifted if prediction in verdicts else None,
        "dataset_drift": dataset_drift,
    }


def _write_report(
    s3: S3Client, bucket: str, key: str, report: ReportInput, expected: Mapping[str, Any], *, before: str = ""
) -> bool:
    """Build, compare and write one report (`before`: HTML shown above Evidently's part); False when Evidently's
    verdict differs from the check's."""
    snapshot = build_report(report)
    # a report of sampled records (profiles mode) is not expected to repeat the verdict of the merged profiles
    agrees = report.from_sampled_records or snapshot_verdict(snapshot, report.prediction) == dict(expected)
    if not agrees:
        log.warning(
            "Evidently's report %s disagrees with the check: %s, the check said %s",
            key,
            snapshot_verdict(snapshot, report.prediction),
            dict(expected),
        )
    html = snapshot.get_html_str(as_iframe=False)
    if before:
        html = _after_body(html, before)
    if report.from_sampled_records:
        html = _sampled_records_note(html, len(report.current), expected)
    s3.put_object(Bucket=bucket, Key=key, Body=html.encode("utf-8"), ContentType="text/html; charset=utf-8")
    return agrees


def _sampled_records_note(html: str, rows: int, verdict: Mapping[str, Any]) -> str:
    """The report's first line in profiles mode: what the verdict came from, what the charts show."""
    drifted = ", ".join(verdict.get("drifted_columns") or []) or "none"
    note = (
        '<div style="padding:8px 12px;background:#fff4ce;border-bottom:1px solid #e0c060;font:14px sans-serif">'
        "Profiles mode: the drift verdict comes from the devices' merged profiles of every record (drifted"
        f" columns: {escape(drifted)}); the charts below show the {rows:,} records the devices sampled and sent.</div>"
    )
    return _after_body(html, note)


def _after_body(html: str, fragment: str) -> str:
    """`fragment` as the first thing in the document's body."""
    at = html.find("<body")
    end = html.find(">", at) + 1 if at >= 0 else 0
    return html[:end] + fragment + html[end:]


def write_drifted_reports(
    s3: S3Client,
    bucket: str,
    spec: PipelineSpec,
    run_id: str,
    check: DriftCheck,
    *,
    window: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Build and write the Evidently report of every drifted scope; returns {scope label: report key}.

    A camera pipeline's report opens with example frames of the scope's current `window` and of its
    reference (`drift.examples`).
    """
    written: dict[str, str] = {}
    for scope in check.scopes:
        if scope.report is None or not scope.report_before_alert:
            continue
        key = report_key(spec, run_id, scope.stratum)
        frames = example_frames_section(s3, bucket, spec, scope.stratum, scope.report, window)
        _write_report(s3, bucket, key, scope.report, verdict_of(scope), before=frames)
        written[scope.stratum.label] = key
    return written


def write_pending_reports(
    s3: S3Client, bucket: str, spec: PipelineSpec, run_id: str, check: DriftCheck
) -> dict[str, str]:
    """Store the rows of every other checked scope and the plan `render_pending_reports` follows.

    Returns {scope label: report key} of the reports left to build (empty: nothing stored).
    """
    prefix = pending_prefix(spec, run_id)
    entries: list[dict[str, Any]] = []
    for scope in check.scopes:
        report = scope.report
        if report is None or scope.report_before_alert:
            continue
        key = report_key(spec, run_id, scope.stratum)
        stem = f"{prefix}/{key.rsplit('/', 1)[1].removesuffix('.html')}"
        rows = {"current": f"{stem}.current.parquet", "reference": f"{stem}.reference.parquet"}
        for side, frame in (("current", report.current), ("reference", report.reference)):
            s3.put_object(Bucket=bucket, Key=rows[side], Body=_parquet(frame[report.names]))
        entries.append(
            {
                "scope": scope.stratum.label,
                "report_key": key,
                "rows": rows,
                "columns": list(report.columns),
                "categorical": list(report.categorical),
                "prediction": report.prediction,
                "method": report.method,
                "threshold": report.threshold,
                "drift_share": report.drift_share,
                "from_sampled_records": report.from_sampled_records,
                "verdict": verdict_of(scope),
            }
        )
    if entries:
        plan = {"version": PLAN_VERSION, "run_id": run_id, "reports": entries}
        s3.put_object(Bucket=bucket, Key=f"{prefix}/plan.json", Body=json.dumps(plan, indent=1).encode("utf-8"))
    return {e["scope"]: e["report_key"] for e in entries}


def render_pending_reports(s3: S3Client, bucket: str, spec: PipelineSpec, run_id: str) -> dict[str, Any]:
    """Build the reports a drift run left pending, clear `pending_reports` in its summary, remove the rows.

    Safe to repeat: a second call finds no plan and does nothing. Returns `reports`
    ({scope label: key} written now) and `disagreements` (labels whose Evidently verdict
    differs from the check's, also logged as warnings; expected to stay empty).
    """
    prefix = pending_prefix(spec, run_id)
    plan = _read_json(s3, bucket, f"{prefix}/plan.json")
    if plan is None:
        return {"reports": {}, "disagreements": []}
    if plan.get("version") != PLAN_VERSION:
        raise ValueError(f"s3://{bucket}/{prefix}/plan.json: unsupported plan version {plan.get('version')!r}")
    written: dict[str, str] = {}
    disagreements: list[str] = []
    for entry in plan["reports"]:
        report = ReportInput(
            current=_read_parquet(s3, bucket, entry["rows"]["current"]),
            reference=_read_parquet(s3, bucket, entry["rows"]["reference"]),
            columns=tuple(entry["columns"]),
            categorical=tuple(entry["categorical"]),
            prediction=entry["prediction"],
            method=entry["method"],
            threshold=entry["threshold"],
            drift_share=float(entry["drift_share"]),
            from_sampled_records=bool(entry.get("from_sampled_records")),
        )
        if not _write_report(s3, bucket, entry["report_key"], report, entry["verdict"]):
            disagreements.append(entry["scope"])
        written[entry["scope"]] = entry["report_key"]
    _clear_pending(s3, bucket, summary_key(spec, run_id))
    for entry in plan["reports"]:
        for key in entry["rows"].values():
            s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_object(Bucket=bucket, Key=f"{prefix}/plan.json")
    return {"reports": written, "disagreements": disagreements}


def _clear_pending(s3: S3Client, bucket: str, key: str) -> None:
    summary = _read_json(s3, bucket, key)
    if summary is None or not summary.get("pending_reports"):
        return
    summary["pending_reports"] = {}
    body = json.dumps(summary, indent=1, sort_keys=True, allow_nan=False).encode("utf-8")
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")


def _read_json(s3: S3Client, bucket: str, key: str) -> Any:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return json.loads(body)


def _parquet(frame: pd.DataFrame) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    return buffer.getvalue()


def _read_parquet(s3: S3Client, bucket: str, key: str) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return pq.read_table(pa.BufferReader(body)).to_pandas()
