"""Opening a selected batch in the annotation tool, exactly once.

`open_batch` imports one task per selected record (shown as a table, with its image when
the record points to one, and the model's prediction as a pre-annotation) into the
pipeline's project, then stores `opened.json` with the task ids, the link and the SLA
deadline. A retry finds `opened.json` and returns it; a retry after a crash between the
import and `opened.json` asks the tool which records of the batch already have a task and
imports only the others.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from edgeloop.annotation.backend import AnnotationBackend, BackendError, ProjectRef, TaskPayload
from edgeloop.annotation.manifest import S3Client, load_manifest, opened_key, put_json_if_absent, read_json
from edgeloop.annotation.selection import SOURCE_COLUMN, load_records
from edgeloop.spec import PipelineSpec

log = logging.getLogger(__name__)

MAX_PRESIGN = timedelta(days=7)  # the longest SigV4 presigned URLs live


def _display(value: Any) -> Any:
    """A JSON value for the task table: None for missing, ISO strings for times, plain numbers."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value


def image_url(s3: S3Client, spec: PipelineSpec, ref: Any, expires: timedelta) -> str | None:
    """A URL the annotator's browser can open: http(s) refs as they are, s3:// refs and keys presigned."""
    if ref is None or ref == "":
        return None
    text = str(ref)
    if text.startswith(("http://", "https://")):
        return text
    if text.startswith("s3://"):
        bucket, _, key = text[5:].partition("/")
    else:
        bucket, key = spec.storage.bucket, text.lstrip("/")
    if not bucket or not key:
        raise ValueError(f"image reference {text!r} names no object")
    return presigned_image_url(s3, bucket, key, expires)


def presigned_image_url(s3: S3Client, bucket: str, key: str, expires: timedelta) -> str:
    """A GET URL of one object that works without credentials until `expires` from now (1 s to 7 days).

    Signed locally by the S3 client (no request is made); the annotation tool stores the URL, so
    the image stays in the bucket. Raise ValueError for an empty bucket or key or an expiry out of range.
    """
    if not bucket or not key:
        raise ValueError(f"a presigned URL needs a bucket and a key, got bucket {bucket!r} and key {key!r}")
    seconds = int(expires.total_seconds())
    if not 1 <= seconds <= int(MAX_PRESIGN.total_seconds()):
        raise ValueError(f"presigned URL expiry {expires} is not between 1 second and {MAX_PRESIGN}")
    url: str = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=seconds)
    return url


def task_payloads(
    spec: PipelineSpec, s3: S3Client, batch_id: str, rows: list[Mapping[str, Any]], *, presign_for: timedelta
) -> list[TaskPayload]:
    """One task per record: every schema field but the id and image shown, prediction as pre-annotation."""
    record = spec.field_with_role("record_id") or "record_id"
    image = spec.field_with_role("image_ref")
    prediction = spec.field_with_role("prediction")
    confidence = spec.field_with_role("confidence")
    model_version = spec.field_with_role("model_version")
    shown = [f.name for f in spec.schema_ if f.name not in (record, image)]
    payloads = []
    for row in rows:
        conf = _display(row.get(confidence)) if confidence else None
        payloads.append(
            TaskPayload(
                record_id=str(row[record]),
                batch_id=batch_id,
                fields={name: _display(row.get(name)) for name in shown},
                prediction=None if not prediction or row.get(prediction) is None else str(row[prediction]),
                confidence=float(conf) if conf is not None else None,
                model_version=None if not model_version or row.get(model_version) is None else str(row[model_version]),
                image_url=image_url(s3, spec, row.get(image), presign_for) if image else None,
            )
        )
    return payloads


def open_batch(
    spec: PipelineSpec,
    s3: S3Client,
    backend: AnnotationBackend,
    batch_id: str,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Create the batch's tasks in the pipeline's project (once) and return where and until when.

    Returns {batch_id, backend, project_id, project_title, url, expected, tasks, imported,
    reused, opened_at, deadline}. `deadline` is opened_at + spec.annotation.sla.
    """
    bucket = spec.storage.bucket
    stored = read_json(s3, bucket, opened_key(spec, batch_id))
    if stored is not None:
        log.info("batch %s is already open in project %s", batch_id, stored["project"]["id"])
        return _summary(stored, imported=0)
    manifest = load_manifest(spec, s3, batch_id)
    records = load_records(spec, s3, manifest)
    project = backend.ensure_project(spec)
    existing = backend.batch_tasks(project, batch_id)
    record_column = spec.field_with_role("record_id") or "record_id"
    todo = [row for row in records.to_dict(orient="records") if str(row[record_column]) not in existing]
    opened_at = now or datetime.now(UTC)
    presign_for = min(MAX_PRESIGN, spec.annotation.sla + timedelta(days=1))
    created = backend.import_tasks(project, task_payloads(spec, s3, batch_id, todo, presign_for=presign_for))
    tasks = {**existing, **created}
    missing = [r["record_id"] for r in manifest["records"] if r["record_id"] not in tasks]
    if missing:
        raise BackendError(
            f"batch {batch_id}: {len(missing)} records have no task after the import, e.g. {missing[:3]}"
        )
    if existing:
        log.info(
            "batch %s: %d tasks were already in project %s, imported %d",
            batch_id,
            len(existing),
            project.id,
            len(created),
        )
    record = _opened_record(spec, backend, project, manifest, tasks, opened_at, backend.batch_url(project, batch_id))
    if not put_json_if_absent(s3, bucket, opened_key(spec, batch_id), record):
        record = read_json(s3, bucket, opened_key(spec, batch_id)) or record
    return _summary(record, imported=len(created))


def _opened_record(
    spec: PipelineSpec,
    backend: AnnotationBackend,
    project: ProjectRef,
    manifest: Mapping[str, Any],
    tasks: Mapping[str, int],
    opened_at: datetime,
    url: str,
) -> dict[str, Any]:
    return {
        "pipeline": spec.name,
        "batch_id": manifest["batch_id"],
        "alert_id": manifest["alert_id"],
        "backend": backend.kind,
        "project": {"id": project.id, "title": project.title, "url": project.url},
        "url": url,
        "expected": len(manifest["records"]),
        "opened_at": opened_at.isoformat(),
        "deadline": (opened_at + spec.annotation.sla).isoformat(),
        "tasks": dict(sorted(tasks.items())),
        "source_column": SOURCE_COLUMN,
    }


def _summary(record: Mapping[str, Any], *, imported: int) -> dict[str, Any]:
    return {
        "batch_id": record["batch_id"],
        "backend": record["backend"],
        "project_id": record["project"]["id"],
        "project_title": record["project"]["title"],
        "project_url": record["project"]["url"],
        "url": record["url"],
        "expected": record["expected"],
        "tasks": len(record["tasks"]),
        "imported": imported,
        "reused": len(record["tasks"]) - imported,
        "opened_at": record["opened_at"],
        "deadline": record["deadline"],
    }


def project_ref(record: Mapping[str, Any]) -> ProjectRef:
    """The project of an `open_batch` summary or `opened.json` record."""
    if "project" in record:
        p = record["project"]
        return ProjectRef(id=int(p["id"]), title=str(p["title"]), url=str(p["url"]))
    return ProjectRef(
        id=int(record["project_id"]), title=str(record.get("project_title", "")), url=str(record.get("project_url", ""))
    )
