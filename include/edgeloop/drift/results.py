"""Drift results: a compact JSON summary and Evidently HTML reports per run.

Layout: `reports/drift/<pipeline>/<run>/summary.json` and one HTML report per checked
scope (`fleet.html`, `group=<name>.html`, `model_version=<v>.html`). Keys depend only on
the pipeline, run and scope, so a re-run overwrites the same objects. The summary is
written after the reports of the drifted scopes: when it exists, those are there, and
`pending_reports` names the other scopes' reports, which the drift DAG's `render_reports`
task writes after the alert is published (it then empties `pending_reports`; see `reports`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from edgeloop.drift.detect import ColumnDrift, DriftCheck, ScopeResult
from edgeloop.drift.sample import Stratum
from edgeloop.drift.window import S3Client
from edgeloop.spec import PipelineSpec

SUMMARY_VERSION = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def drift_reports_prefix(spec: PipelineSpec) -> str:
    """`reports/drift/<pipeline>` (under the spec's storage prefix)."""
    return spec.storage_prefix("reports/drift")


def safe_segment(text: str) -> str:
    """A key segment from a run id or version: characters other than [A-Za-z0-9._=-] become '_'."""
    cleaned = _UNSAFE.sub("_", text).strip("._")
    if not cleaned:
        raise ValueError(f"'{text}' has no character usable in an object key")
    return cleaned


def run_prefix(spec: PipelineSpec, run_id: str) -> str:
    return f"{drift_reports_prefix(spec)}/{safe_segment(run_id)}"


def summary_key(spec: PipelineSpec, run_id: str) -> str:
    return f"{run_prefix(spec, run_id)}/summary.json"


def report_key(spec: PipelineSpec, run_id: str, stratum: Stratum) -> str:
    name = "fleet" if stratum.kind == "fleet" else f"{stratum.kind}={_stratum_segment(stratum.name)}"
    return f"{run_prefix(spec, run_id)}/{name}.html"


def _stratum_segment(name: str) -> str:
    """`safe_segment` of a group or model version, or a digest when a device sent a name with no usable character."""
    try:
        return safe_segment(name)[:80]
    except ValueError:
        return "_" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def _column(c: ColumnDrift) -> dict[str, Any]:
    return {"score": _round(c.score), "method": c.method, "threshold": _round(c.threshold), "drifted": c.drifted}


def scope_summary(scope: ScopeResult, report: str | None) -> dict[str, Any]:
    """The compact JSON view of one scope."""
    out: dict[str, Any] = {
        "status": scope.status,
        "rows": scope.rows,
        "sample_size": {"current": scope.sample_size, "reference": scope.reference_size},
        "reference_scope": scope.reference_scope or None,
        "dataset_drift": scope.dataset_drift,
        "drift_share": _round(scope.drift_share),
        "drifted_columns": {c: _round(s) for c, s in sorted(scope.drifted_columns.items())},
        "columns": {c.column: _column(c) for c in scope.columns},
        "skipped_columns": dict(scope.skipped_columns),
        "prediction_drift": _column(scope.prediction) if scope.prediction is not None else None,
        "confidence": None,
        "nonfinite": scope.nonfinite,
        "health": scope.health,
        "report_key": report,
    }
    if scope.confidence is not None:
        out["confidence"] = {
            "current_mean": _round(scope.confidence.current_mean),
            "reference_mean": _round(scope.confidence.reference_mean),
            "drop": _round(scope.confidence.drop),
            "limit": scope.confidence.limit,
            "dropped": scope.confidence.dropped,
        }
    return out


def reference_source(scope: ScopeResult, reference: Mapping[str, Any]) -> str | None:
    """Which reference a scope was compared with, in words (`reference_scope` says which rows of it).

    A group compared with its own reference rows names that group's source from the
    reference's description (e.g. "curated v000001 post-change window"); the fleet, a
    model version and a group compared with the whole fleet name the overall source.
    """
    if not scope.reference_scope:
        return None
    if scope.stratum.kind == "group" and scope.reference_scope == "group":
        group = (reference.get("groups") or {}).get(scope.stratum.name) or {}
        if group.get("source"):
            return str(group["source"])
    source = reference.get("source")
    return str(source) if source else None


def build_summary(
    check: DriftCheck,
    spec: PipelineSpec,
    run_id: str,
    *,
    window: dict[str, Any],
    reference: dict[str, Any],
    created_at: datetime,
) -> dict[str, Any]:
    """The run's summary: overall (fleet) and per group / model version, with report keys.

    Every checked scope has a report key; `pending_reports` ({scope label: key}) lists the
    reports not written yet (scopes without drift, rendered after the alert).
    """
    scopes: dict[str, dict[str, dict[str, Any]]] = {"group": {}, "model_version": {}}
    overall: dict[str, Any] = {}
    pending: dict[str, str] = {}
    for scope in check.scopes:
        key = report_key(spec, run_id, scope.stratum) if scope.report is not None else None
        if key is not None and not scope.report_before_alert:
            pending[scope.stratum.label] = key
        view = scope_summary(scope, key)
        view["reference_source"] = reference_source(scope, reference)
        if scope.stratum.kind == "fleet":
            overall = view
        else:
            scopes[scope.stratum.kind][scope.stratum.name] = view
    return {
        "version": SUMMARY_VERSION,
        "pipeline": spec.name,
        "run_id": run_id,
        "created_at": created_at.isoformat(),
        "status": check.status,
        "drifted_groups": check.drifted_groups,
        "window": window,
        "reference": reference,
        "settings": check.settings,
        "overall": overall,
        "groups": scopes["group"],
        "model_versions": scopes["model_version"],
        "pending_reports": pending,
        "summary_key": summary_key(spec, run_id),
    }


def write_summary(s3: S3Client, bucket: str, summary: dict[str, Any]) -> str:
    """Write the run's summary (after the drifted scopes' reports); returns its key."""
    body = json.dumps(summary, indent=1, sort_keys=True, allow_nan=False).encode("utf-8")
    s3.put_object(Bucket=bucket, Key=summary["summary_key"], Body=body, ContentType="application/json")
    return str(summary["summary_key"])
