"""The audit trail of a rollout: `rollouts/<pipeline>/<rollout id>.json`.

Each step writes its own part (`rollouts/<pipeline>/<rollout id>/<nn>-<step>.json`, the same
content on a retry), and `assemble_audit` joins the parts into the one record, so the record
is complete even when a step was retried or the run stopped half-way.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from edgeloop.spec import PipelineSpec


def audit_key(spec: PipelineSpec, rollout_id: str) -> str:
    return f"{spec.storage_prefix('rollouts')}/{rollout_id}.json"


def part_key(spec: PipelineSpec, rollout_id: str, order: int, step: str) -> str:
    return f"{spec.storage_prefix('rollouts')}/{rollout_id}/{order:02d}-{step}.json"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def write_part(s3: Any, spec: PipelineSpec, rollout_id: str, order: int, step: str, body: dict[str, Any]) -> str:
    key = part_key(spec, rollout_id, order, step)
    record = {"step": step, "order": order, **body}
    s3.put_object(
        Bucket=spec.storage.bucket,
        Key=key,
        Body=json.dumps(record, sort_keys=True, default=str).encode(),
        ContentType="application/json",
    )
    return key


def assemble_audit(s3: Any, spec: PipelineSpec, rollout_id: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Join every part of a rollout into `rollouts/<pipeline>/<id>.json` and return the record."""
    prefix = f"{spec.storage_prefix('rollouts')}/{rollout_id}/"
    parts = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=spec.storage.bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=spec.storage.bucket, Key=obj["Key"])["Body"].read()
            parts.append(json.loads(body))
    parts.sort(key=lambda p: (p["order"], p["step"]))
    record = {"pipeline": spec.name, "rollout_id": rollout_id, **summary, "steps": parts}
    s3.put_object(
        Bucket=spec.storage.bucket,
        Key=audit_key(spec, rollout_id),
        Body=json.dumps(record, indent=2, sort_keys=True, default=str).encode(),
        ContentType="application/json",
    )
    return record
