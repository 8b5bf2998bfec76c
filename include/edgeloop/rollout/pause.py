"""Pause and resume a pipeline's rollouts: one object in the pipeline's storage, `rollouts/<pipeline>/paused.json`.

While it exists, a rollout job sends no further device order (a paced or share wave holds its
next batch; the time paused delays the rest of the schedule) and a wave's gate does not pass
(it still fails on the abort criteria and the thresholds). Deleting it resumes them. The flag is
independent of the spec, so pausing needs no spec change: `edgeloop rollout-pause` and
`edgeloop rollout-resume`, the Pipelines page of the Airflow UI, or anything that writes the object
with the pipeline's S3 connection. The flag says who paused and why; each pause and resume given the
ids of the running rollouts is also a part of their audit records (`PAUSE_AUDIT_ORDER`).

A job launched as a local process reads the flag through a presigned GET URL the launching task
hands it (`PAUSE_URL_ENV`); a job in a pod reads it with the pipeline's S3 connection, which its
pod gets from a Kubernetes Secret (`rollout.pods.job_secrets`; the pod spec holds no credential).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from edgeloop.rollout.audit import now_iso, write_part
from edgeloop.spec import PipelineSpec

PAUSE_URL_ENV = "EDGELOOP_PAUSE_URL"  # presigned GET of the pause object, for a local job
PAUSE_AUDIT_ORDER = 80  # a pause or resume part sorts after the waves' parts, before promote (90) and rollback (95)


def pause_key(spec: PipelineSpec) -> str:
    return f"{spec.storage_prefix('rollouts')}/paused.json"


def pause_rollouts(
    s3: Any, spec: PipelineSpec, by: str, reason: str, rollout_ids: Sequence[str] = ()
) -> dict[str, Any]:
    """Pause the pipeline's rollouts (again: the newer reason wins); return the flag as written.

    `rollout_ids` (the rollouts running now) each get the pause as a part of their audit record.
    """
    if not reason.strip():
        raise ValueError("reason: say why the rollouts are paused")
    flag = {"paused": True, "by": by, "reason": reason.strip(), "at": now_iso()}
    s3.put_object(
        Bucket=spec.storage.bucket, Key=pause_key(spec), Body=json.dumps(flag).encode(), ContentType="application/json"
    )
    record_pause_event(s3, spec, "pause", flag, rollout_ids)
    return flag


def resume_rollouts(
    s3: Any, spec: PipelineSpec, by: str | None = None, reason: str = "", rollout_ids: Sequence[str] = ()
) -> dict[str, Any]:
    """Resume the pipeline's rollouts (nothing changes when they were not paused); return who resumed them,
    why, and the flag that was removed (`was`, None when they were not paused).

    `rollout_ids` (the rollouts running now) each get the resume as a part of their audit record.
    """
    was = pause_state(s3, spec)
    s3.delete_object(Bucket=spec.storage.bucket, Key=pause_key(spec))
    event = {"paused": False, "by": by, "reason": reason.strip(), "at": now_iso(), "was": was}
    record_pause_event(s3, spec, "resume", event, rollout_ids)
    return event


def record_pause_event(
    s3: Any, spec: PipelineSpec, action: str, event: dict[str, Any], rollout_ids: Sequence[str]
) -> list[str]:
    """Write a pause or resume into the audit record of each rollout in `rollout_ids`; the part keys."""
    stamp = re.sub(r"[^0-9]", "", str(event["at"]))[:17]  # yyyymmddHHMMSSmmm: one part per event
    step = f"{action}-{stamp}"
    return [write_part(s3, spec, rid, PAUSE_AUDIT_ORDER, step, {"action": action, **event}) for rid in rollout_ids]


def pause_state(s3: Any, spec: PipelineSpec) -> dict[str, Any] | None:
    """The pause flag, or None when the rollouts are not paused."""
    from botocore.exceptions import ClientError

    try:
        body = s3.get_object(Bucket=spec.storage.bucket, Key=pause_key(spec))["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    return dict(json.loads(body))


def pause_url(s3: Any, spec: PipelineSpec, expires_s: int) -> str:
    """A presigned GET of the pause object (404 while not paused), for a job without the S3 connection."""
    params = {"Bucket": spec.storage.bucket, "Key": pause_key(spec)}
    return str(s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s))


def paused_by_s3(s3: Any, spec: PipelineSpec) -> Callable[[], bool]:
    """The check a job with the pipeline's S3 connection calls before each batch: True while the flag exists.

    As with `paused_by_url`, an answer other than found or not found holds the orders.
    """

    def paused() -> bool:
        try:
            return pause_state(s3, spec) is not None
        except Exception:  # an S3 error or no answer: cannot tell, so hold (bounded by the job's timeout)
            return True

    return paused


def paused_by_url(url: str, timeout: float = 10.0) -> Callable[[], bool]:
    """A check the job calls before each batch: True while the pause object exists.

    Not found is not paused; any other answer, or none, holds the orders (a rollout that cannot
    tell whether it is paused waits, bounded by the job's timeout).
    """

    def paused() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - the presigned S3 URL
                return True
        except urllib.error.HTTPError as exc:
            return exc.code not in (403, 404)  # S3 answers 403 for a missing key without list rights
        except (urllib.error.URLError, OSError):
            return True

    return paused
