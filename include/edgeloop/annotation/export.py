"""Export: a batch's annotations joined back to its records as a new curated dataset version.

Steps, each create-only so that any re-run continues instead of duplicating:

1. Stage (once per batch): fetch the batch's tasks and annotations, resolve one label per
   record (majority of valid annotations), join with the records snapshot taken at
   selection, and write `A/<batch>/export/data-<digest>.parquet`, then
   `A/<batch>/export/lineage.json` (the commit point: a re-run reuses what was staged).
2. Claim the next version: `C/_versions/vNNNNNN.json` written with `If-None-Match: *`; the
   first writer of a number owns it. A re-run first looks for a claim of this batch made
   after the staging, so it never claims a second number.
3. Publish `C/<version>/data.parquet`, then `C/<version>/lineage.json` (a version is complete
   when its lineage exists), then `A/<batch>/export.json` (the batch's record of its version).

Left out, with reasons: tasks deleted in the tool, tasks nobody annotated, skipped
(cancelled) annotations, rejected annotations, labels outside the spec's label set, ties
between labels, records missing from the snapshot.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from edgeloop.annotation.backend import AnnotationBackend, TaskResult
from edgeloop.annotation.batch import project_ref
from edgeloop.annotation.manifest import (
    S3Client,
    batch_prefix,
    export_record_key,
    load_manifest,
    opened_key,
    put_json_if_absent,
    read_json,
)
from edgeloop.annotation.selection import SOURCE_COLUMN, load_records
from edgeloop.spec import PipelineSpec
from edgeloop.storage import get_bytes, put_if_absent, with_retries

if TYPE_CHECKING:
    import pandas as pd

LABEL_COLUMN = "label"
LABEL_COLUMNS = (LABEL_COLUMN, "label_agreement", "label_votes", "annotation_task_id", "annotation_batch_id")
LINEAGE_VERSION = 1
EXAMPLES_PER_REASON = 20
MAX_CLAIM_ATTEMPTS = 50
_VERSION = re.compile(r"^v(\d{6})$")
_CLAIM = re.compile(r"/_versions/(v\d{6})\.json$")

REASONS = (
    "task_deleted",
    "not_annotated",
    "skipped",
    "rejected",
    "unknown_label",
    "no_majority",
    "record_missing",
)


class NothingToExport(Exception):
    """No record of the batch has a usable label: no dataset version is made (the run is skipped)."""

    def __init__(self, reason: str, left_out: Mapping[str, int]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.left_out = dict(left_out)


class ExportError(Exception):
    """The export cannot go on (stored state inconsistent, no version number could be claimed)."""


# --- keys ---------------------------------------------------------------------------------------


def format_version(number: int) -> str:
    return f"v{number:06d}"


def version_prefix(spec: PipelineSpec, version: str) -> str:
    return f"{spec.storage_prefix('curated')}/{version}"


def data_key(spec: PipelineSpec, version: str) -> str:
    return f"{version_prefix(spec, version)}/data.parquet"


def lineage_key(spec: PipelineSpec, version: str) -> str:
    return f"{version_prefix(spec, version)}/lineage.json"


def claims_prefix(spec: PipelineSpec) -> str:
    return f"{spec.storage_prefix('curated')}/_versions/"


def staged_lineage_key(spec: PipelineSpec, batch_id: str) -> str:
    return f"{batch_prefix(spec, batch_id)}/export/lineage.json"


# --- resolving labels (pure) ----------------------------------------------------------------------


@dataclass
class Resolution:
    """What the annotations of a batch say: one label per record, or why a record is left out."""

    labels: dict[str, tuple[str, float, int, int]] = field(
        default_factory=dict
    )  # record -> label, agreement, votes, task
    left_out: dict[str, str] = field(default_factory=dict)  # record -> reason
    annotators: Counter[str] = field(default_factory=Counter)
    annotations: Counter[str] = field(default_factory=Counter)  # total, skipped, rejected, unknown_label, ...
    agreements: list[float] = field(default_factory=list)  # per record labelled by several annotations

    def left_out_counts(self) -> dict[str, int]:
        counts = Counter(self.left_out.values())
        return {reason: counts[reason] for reason in REASONS if counts[reason]}


def resolve_labels(
    record_ids: Sequence[str], tasks: Mapping[str, int], results: Sequence[TaskResult], labels: Sequence[str]
) -> Resolution:
    """One label per record: the majority of its valid annotations (submitted, not rejected, a known label).

    `tasks` maps record id -> task id as opened; `results` are the tasks that still exist.
    """
    allowed = set(labels)
    by_task = {r.task_id: r for r in results}
    out = Resolution()
    for record_id in record_ids:
        task_id = tasks.get(record_id)
        result = by_task.get(task_id) if task_id is not None else None
        if result is None:
            out.left_out[record_id] = "task_deleted"
            continue
        if not result.annotations:
            out.left_out[record_id] = "not_annotated"
            continue
        votes: list[str] = []
        seen = Counter[str]()
        for annotation in result.annotations:
            out.annotations["total"] += 1
            if annotation.cancelled:
                out.annotations["skipped"] += 1
                seen["skipped"] += 1
                continue
            if annotation.rejected:
                out.annotations["rejected"] += 1
                seen["rejected"] += 1
                continue
            if len(annotation.labels) != 1 or annotation.labels[0] not in allowed:
                out.annotations["unknown_label"] += 1
                seen["unknown_label"] += 1
                continue
            votes.append(annotation.labels[0])
            out.annotators[annotation.annotator] += 1
            out.annotations["from_prediction"] += int(annotation.from_prediction)
        if not votes:
            out.left_out[record_id] = next(r for r in ("unknown_label", "rejected", "skipped") if seen[r])
            continue
        ranked = Counter(votes).most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            out.left_out[record_id] = "no_majority"
            continue
        label, count = ranked[0]
        agreement = count / len(votes)
        if len(votes) > 1:
            out.agreements.append(agreement)
        out.labels[record_id] = (label, agreement, len(votes), int(result.task_id))
    return out


# --- storage helpers ------------------------------------------------------------------------------


def _listing(s3: S3Client, bucket: str, prefix: str) -> list[tuple[str, datetime]]:
    """(key, last modified) of every object under a prefix."""
    out: list[tuple[str, datetime]] = []
    token: str | None = None
    while True:
        request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if token:
            request["ContinuationToken"] = token

        def page_of(request: dict[str, Any] = request) -> dict[str, Any]:
            page: dict[str, Any] = s3.list_objects_v2(**request)
            return page

        page = with_retries(f"list s3://{bucket}/{prefix}", page_of)
        out.extend((item["Key"], item["LastModified"]) for item in page.get("Contents", []))
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return out


def list_versions(spec: PipelineSpec, s3: S3Client) -> list[str]:
    """Complete curated versions of a pipeline (those with a lineage.json), oldest first."""
    prefix = f"{spec.storage_prefix('curated')}/"
    versions = set()
    for key, _ in _listing(s3, spec.storage.bucket, prefix):
        parts = key[len(prefix) :].split("/")
        if len(parts) == 2 and _VERSION.match(parts[0]) and parts[1] == "lineage.json":
            versions.add(parts[0])
    return sorted(versions)


def latest_version(spec: PipelineSpec, s3: S3Client) -> str | None:
    versions = list_versions(spec, s3)
    return versions[-1] if versions else None


def _claim_of_batch(spec: PipelineSpec, s3: S3Client, batch_id: str, since: datetime) -> str | None:
    """A version this batch already claimed (a run that stopped after claiming); only claims after `since` are read."""
    bucket = spec.storage.bucket
    for key, modified in sorted(_listing(s3, bucket, claims_prefix(spec)), reverse=True):
        match = _CLAIM.search(key)
        if match is None or modified < since:
            continue
        claim = read_json(s3, bucket, key)
        if claim is not None and claim.get("batch_id") == batch_id:
            return match.group(1)
    return None


def _claim_next_version(spec: PipelineSpec, s3: S3Client, batch_id: str, now: datetime) -> str:
    bucket = spec.storage.bucket
    for _ in range(MAX_CLAIM_ATTEMPTS):
        numbers = [
            int(m.group(1)[1:]) for key, _ in _listing(s3, bucket, claims_prefix(spec)) if (m := _CLAIM.search(key))
        ]
        version = format_version(max(numbers, default=0) + 1)
        claim = {"pipeline": spec.name, "batch_id": batch_id, "version": version, "claimed_at": now.isoformat()}
        if put_json_if_absent(s3, bucket, f"{claims_prefix(spec)}{version}.json", claim):
            return version
    raise ExportError(f"could not claim a curated version for batch {batch_id} in {MAX_CLAIM_ATTEMPTS} attempts")


# --- the export -----------------------------------------------------------------------------------


def _examples(resolution: Resolution) -> dict[str, list[str]]:
    examples: dict[str, list[str]] = {}
    for record_id, reason in resolution.left_out.items():
        bucket = examples.setdefault(reason, [])
        if len(bucket) < EXAMPLES_PER_REASON:
            bucket.append(record_id)
    return examples


def build_dataset(
    spec: PipelineSpec, manifest: Mapping[str, Any], records: pd.DataFrame, resolution: Resolution
) -> pd.DataFrame:
    """The labelled records, in manifest order: every schema column, the source object and the label columns."""
    import pandas as pd

    record_column = spec.field_with_role("record_id") or "record_id"
    clash = sorted(set(LABEL_COLUMNS) & {f.name for f in spec.schema_})
    if clash:
        raise ExportError(f"schema fields {clash} clash with the curated dataset's label columns")
    by_id = records.assign(_rid=records[record_column].astype(str)).drop_duplicates("_rid").set_index("_rid")
    rows = []
    for entry in manifest["records"]:
        record_id = str(entry["record_id"])
        if record_id not in resolution.labels:
            continue
        if record_id not in by_id.index:
            resolution.left_out[record_id] = "record_missing"
            continue
        rows.append(record_id)
    for record_id in [r for r, reason in resolution.left_out.items() if reason == "record_missing"]:
        resolution.labels.pop(record_id, None)
    frame = by_id.loc[rows].reset_index(drop=True) if rows else by_id.iloc[0:0].reset_index(drop=True)
    keep = [f.name for f in spec.schema_ if f.name in frame.columns] + [SOURCE_COLUMN]
    frame = frame[keep].copy()
    resolved = [resolution.labels[r] for r in rows]
    frame[LABEL_COLUMN] = pd.Series([r[0] for r in resolved], dtype="string")
    frame["label_agreement"] = pd.Series([r[1] for r in resolved], dtype="float64")
    frame["label_votes"] = pd.Series([r[2] for r in resolved], dtype="int64")
    frame["annotation_task_id"] = pd.Series([r[3] for r in resolved], dtype="int64")
    frame["annotation_batch_id"] = pd.Series([manifest["batch_id"]] * len(rows), dtype="string")
    return frame


def _lineage(
    spec: PipelineSpec,
    manifest: Mapping[str, Any],
    opened: Mapping[str, Any],
    resolution: Resolution,
    frame: pd.DataFrame,
    *,
    data_object: str,
    partial: bool,
    now: datetime,
) -> dict[str, Any]:
    sources = sorted(set(frame[SOURCE_COLUMN].astype(str))) if not frame.empty else []
    agreements = resolution.agreements
    return {
        "lineage_version": LINEAGE_VERSION,
        "pipeline": spec.name,
        "batch_id": manifest["batch_id"],
        "alert_id": manifest["alert_id"],
        "groups": manifest["groups"],
        "strategy": manifest["strategy"],
        "window": manifest.get("window"),
        "manifest_key": f"{batch_prefix(spec, manifest['batch_id'])}/manifest.json",
        "records_key": manifest["records_key"],
        "source_objects": sources,
        "backend": opened.get("backend"),
        "project": opened.get("project"),
        "url": opened.get("url"),
        "opened_at": opened.get("opened_at"),
        "exported_at": now.isoformat(),
        "partial": partial,
        "counts": {
            "selected": len(manifest["records"]),
            "exported": len(frame),
            "left_out": len(resolution.left_out),
        },
        "left_out": {"reasons": resolution.left_out_counts(), "examples": _examples(resolution)},
        "annotations": {
            k: resolution.annotations[k] for k in ("total", "skipped", "rejected", "unknown_label", "from_prediction")
        },
        "annotators": dict(sorted(resolution.annotators.items())),
        "agreement": {
            "records_with_several_annotations": len(agreements),
            "mean": round(sum(agreements) / len(agreements), 6) if agreements else None,
            "min": round(min(agreements), 6) if agreements else None,
            "unanimous": sum(1 for a in agreements if a == 1.0),
        },
        "label_distribution": {
            label: int(count) for label, count in sorted(Counter(frame[LABEL_COLUMN].astype(str)).items())
        },
        "label_set": list(spec.annotation.labels),
        "label_column": LABEL_COLUMN,
        "columns": list(frame.columns),
        "staged_data_key": data_object,
        "labelled_record_ids": [str(r) for r in frame[spec.field_with_role("record_id") or "record_id"]],
    }


def _stage(
    spec: PipelineSpec, s3: S3Client, backend: AnnotationBackend, batch_id: str, *, partial: bool, now: datetime
) -> dict[str, Any]:
    """Fetch, resolve, join and stage the export of a batch (once); returns the staged lineage."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bucket = spec.storage.bucket
    staged = read_json(s3, bucket, staged_lineage_key(spec, batch_id))
    if staged is not None:
        return staged
    manifest = load_manifest(spec, s3, batch_id)
    opened = read_json(s3, bucket, opened_key(spec, batch_id))
    if opened is None:
        raise ExportError(f"batch {batch_id} was never opened (no s3://{bucket}/{opened_key(spec, batch_id)})")
    tasks = {str(k): int(v) for k, v in opened["tasks"].items()}
    results = backend.fetch_results(project_ref(opened), sorted(set(tasks.values())))
    record_ids = [str(r["record_id"]) for r in manifest["records"]]
    resolution = resolve_labels(record_ids, tasks, results, spec.annotation.labels)
    frame = build_dataset(spec, manifest, load_records(spec, s3, manifest), resolution)
    if frame.empty:
        counts = resolution.left_out_counts()
        raise NothingToExport(f"batch {batch_id}: no record has a usable label ({counts})", counts)
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink, compression="zstd")
    body = sink.getvalue()
    data_object = f"{batch_prefix(spec, batch_id)}/export/data-{hashlib.sha256(body).hexdigest()[:16]}.parquet"
    put_if_absent(s3, bucket, data_object, body)
    lineage = _lineage(spec, manifest, opened, resolution, frame, data_object=data_object, partial=partial, now=now)
    if not put_json_if_absent(s3, bucket, staged_lineage_key(spec, batch_id), lineage):
        lineage = read_json(s3, bucket, staged_lineage_key(spec, batch_id)) or lineage
    return lineage


def _staged_at(spec: PipelineSpec, s3: S3Client, batch_id: str) -> datetime:
    key = staged_lineage_key(spec, batch_id)
    head = with_retries(
        f"head s3://{spec.storage.bucket}/{key}", lambda: s3.head_object(Bucket=spec.storage.bucket, Key=key)
    )
    modified: datetime = head["LastModified"]
    return modified - timedelta(seconds=2)  # object times have second precision


def export_dataset(
    spec: PipelineSpec,
    s3: S3Client,
    backend: AnnotationBackend,
    batch_id: str,
    *,
    partial: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Turn a batch's annotations into the next curated dataset version (once per batch).

    Returns {batch_id, version, data_key, lineage_key, rows, label_distribution, left_out,
    partial, created}; `created` is False when an earlier run already made the version.
    Raises NothingToExport when no record has a usable label.
    """
    bucket = spec.storage.bucket
    now = now or datetime.now(UTC)
    record = read_json(s3, bucket, export_record_key(spec, batch_id))
    if record is not None:
        _publish(spec, s3, record["version"], read_json(s3, bucket, staged_lineage_key(spec, batch_id)))
        return _summary(spec, record, created=False)
    lineage = _stage(spec, s3, backend, batch_id, partial=partial, now=now)
    version = _claim_of_batch(spec, s3, batch_id, _staged_at(spec, s3, batch_id))
    created = version is None
    if version is None:
        version = _claim_next_version(spec, s3, batch_id, now)
    _publish(spec, s3, version, lineage)
    record = {
        "pipeline": spec.name,
        "batch_id": batch_id,
        "version": version,
        "data_key": data_key(spec, version),
        "lineage_key": lineage_key(spec, version),
        "rows": lineage["counts"]["exported"],
        "label_distribution": lineage["label_distribution"],
        "left_out": lineage["left_out"]["reasons"],
        "partial": lineage["partial"],
        "exported_at": lineage["exported_at"],
        "labelled_record_ids": lineage["labelled_record_ids"],
    }
    if not put_json_if_absent(s3, bucket, export_record_key(spec, batch_id), record):
        record = read_json(s3, bucket, export_record_key(spec, batch_id)) or record
    return _summary(spec, record, created=created)


def _publish(spec: PipelineSpec, s3: S3Client, version: str, lineage: Mapping[str, Any] | None) -> None:
    """Write the version's data then its lineage (both create-only; a finished version is left as it is)."""
    bucket = spec.storage.bucket
    if read_json(s3, bucket, lineage_key(spec, version)) is not None:
        return
    if lineage is None:
        raise ExportError(f"curated {version} has no lineage and the batch's staged export is gone")
    put_if_absent(s3, bucket, data_key(spec, version), get_bytes(s3, bucket, str(lineage["staged_data_key"])))
    published = {**lineage, "version": version, "data_key": data_key(spec, version)}
    put_json_if_absent(s3, bucket, lineage_key(spec, version), published)


def _summary(spec: PipelineSpec, record: Mapping[str, Any], *, created: bool) -> dict[str, Any]:
    return {
        "batch_id": record["batch_id"],
        "version": record["version"],
        "data_key": record["data_key"],
        "lineage_key": record["lineage_key"],
        "uri": f"s3://{spec.storage.bucket}/{version_prefix(spec, record['version'])}",
        "rows": record["rows"],
        "label_distribution": record["label_distribution"],
        "left_out": record["left_out"],
        "partial": record["partial"],
        "created": created,
    }
