"""Where the annotation stage keeps its state in object storage, and the batch id.

Layout (A = spec.storage_prefix('annotations'), C = spec.storage_prefix('curated')):

    A/<batch>/records-<digest>.parquet   the selected records, every schema column (written first)
    A/<batch>/manifest.json              the batch: record ids, source objects, strategy, alert id (commit point)
    A/<batch>/opened.json                the tool's project and task ids, when the batch was opened
    A/<batch>/export/lineage-<digest>.json + data-<digest>.parquet   the export, frozen at its first run
    A/<batch>/export.json                the dataset version the batch became (last step of the export)
    C/_versions/v000007.json             the claim of version 7 (create-only; names the batch)
    C/v000007/data.parquet, lineage.json the curated dataset version (lineage.json written last)

Every object is written create-only (`If-None-Match: *`), so a retried or re-run task finds
what an earlier attempt wrote instead of writing something else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edgeloop.spec import PipelineSpec
from edgeloop.storage import get_bytes, list_keys, put_if_absent, with_retries

MANIFEST_VERSION = 1
S3Client = Any  # a boto3 S3 client (no type stubs)


class ManifestError(Exception):
    """A stored annotation object is missing or not what this code wrote."""


def batch_id_for(pipeline: str, alert_id: str, groups: Iterable[str]) -> str:
    """Deterministic: the same alert and groups always give the same batch id."""
    digest = hashlib.sha256(f"{pipeline}|{alert_id}|{','.join(sorted(set(groups)))}".encode()).hexdigest()
    return f"batch-{digest[:16]}"


def batch_prefix(spec: PipelineSpec, batch_id: str) -> str:
    return f"{spec.storage_prefix('annotations')}/{batch_id}"


def manifest_key(spec: PipelineSpec, batch_id: str) -> str:
    return f"{batch_prefix(spec, batch_id)}/manifest.json"


def records_key(spec: PipelineSpec, batch_id: str, record_ids: Iterable[str]) -> str:
    digest = hashlib.sha256("\n".join(record_ids).encode()).hexdigest()[:16]
    return f"{batch_prefix(spec, batch_id)}/records-{digest}.parquet"


def opened_key(spec: PipelineSpec, batch_id: str) -> str:
    return f"{batch_prefix(spec, batch_id)}/opened.json"


def export_record_key(spec: PipelineSpec, batch_id: str) -> str:
    return f"{batch_prefix(spec, batch_id)}/export.json"


def read_json(s3: S3Client, bucket: str, key: str) -> dict[str, Any] | None:
    """A JSON object stored at `key`, or None when there is none; ManifestError when it is not JSON."""
    try:
        body = get_bytes(s3, bucket, key)
    except KeyError:
        return None
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"s3://{bucket}/{key} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"s3://{bucket}/{key} is not a JSON object")
    return data


def put_json_if_absent(s3: S3Client, bucket: str, key: str, data: dict[str, Any]) -> bool:
    body = json.dumps(data, indent=1, sort_keys=True, default=str).encode()
    return put_if_absent(s3, bucket, key, body, content_type="application/json")


def load_manifest(spec: PipelineSpec, s3: S3Client, batch_id: str) -> dict[str, Any]:
    key = manifest_key(spec, batch_id)
    manifest = read_json(s3, spec.storage.bucket, key)
    if manifest is None:
        raise ManifestError(f"batch {batch_id}: no manifest at s3://{spec.storage.bucket}/{key} (was it selected?)")
    if manifest.get("batch_id") != batch_id or manifest.get("pipeline") != spec.name:
        raise ManifestError(
            f"s3://{spec.storage.bucket}/{key}: belongs to {manifest.get('pipeline')}/{manifest.get('batch_id')}"
        )
    return manifest


def list_batches(spec: PipelineSpec, s3: S3Client) -> list[str]:
    """Ids of every batch that has a directory under the annotations prefix."""
    prefix = f"{spec.storage_prefix('annotations')}/"
    batches: list[str] = []
    token: str | None = None
    while True:
        request: dict[str, Any] = {"Bucket": spec.storage.bucket, "Prefix": prefix, "Delimiter": "/"}
        if token:
            request["ContinuationToken"] = token

        def page_of(request: dict[str, Any] = request) -> dict[str, Any]:
            page: dict[str, Any] = s3.list_objects_v2(**request)
            return page

        page = with_retries(f"list s3://{spec.storage.bucket}/{prefix}", page_of)
        batches.extend(p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", []))
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return batches


def excluded_record_ids(spec: PipelineSpec, s3: S3Client, *, skip_batch: str | None = None) -> set[str]:
    """Record ids a new batch must not take: labelled in an exported batch, or waiting in an open one.

    A batch that was exported excludes only the records it labelled (the others may be chosen
    again); a batch not exported yet excludes all its records.
    """
    bucket = spec.storage.bucket

    def ids_of(batch_id: str) -> set[str]:
        record = read_json(s3, bucket, export_record_key(spec, batch_id))
        if record is not None:
            return set(record.get("labelled_record_ids", []))
        manifest = read_json(s3, bucket, manifest_key(spec, batch_id))
        if manifest is None:
            return set()
        return {str(r["record_id"]) for r in manifest.get("records", [])}

    batches = [b for b in list_batches(spec, s3) if b != skip_batch]
    excluded: set[str] = set()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for ids in pool.map(ids_of, batches):
            excluded |= ids
    return excluded


def list_json_keys(s3: S3Client, bucket: str, prefix: str) -> list[str]:
    return [k for k in list_keys(s3, bucket, prefix) if k.endswith(".json")]
