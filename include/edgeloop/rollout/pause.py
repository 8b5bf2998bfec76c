"""Pause and resume a pipeline's rollouts: one object in the pipeline's storage, `rollouts/<pipeline>/paused.json`.

While it exists, a rollout job sends no further device order (a paced or share wave holds its
next batch; the time paused delays the rest of the schedule) and a wave's gate does not pass
(it still fails on the abort criteria and the thresholds). Deleting it resumes them. The flag is
independent of the spec, so pausing needs no spec change: `edgeloop rollout-pause` and
`edgeloop rollout-resume`, or anything that writes the object with the pipeline's S3 connection.

A job launched as a local process reads the flag through a presigned GET URL the launching task
hands it (`PAUSE_URL_ENV`); a job in a pod gets none (its pod spec holds no credential), so there
only the gate holds a paused rollout.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from edgeloop.rollout.audit import now_iso
from edgeloop.spec import PipelineSpec

PAUSE_URL_ENV = "EDGELOOP_PAUSE_URL"  # presigned GET of the pause object, for a local job


def pause_key(spec: PipelineSpec) -> str:
    return f"{spec.storage_prefix('rollouts')}/paused.json"


def pause_rollouts(s3: Any, spec: PipelineSpec, by: str, reason: str) -> dict[str, Any]:
    """Pause the pipeline's rollouts (again: the newer reason wins); return the flag as written."""
    if not reason.strip():
        raise ValueError("reason: say why the rollouts are paused")
    flag = {"paused": True, "by": by, "reason": reason.strip(), "at": now_iso()}
    s3.put_object(
        Bucket=spec.storage.bucket, Key=pause_key(spec), Body=json.dumps(flag).encode(), ContentType="application/json"
    )
    return flag


def resume_rollouts(s3: Any, spec: PipelineSpec) -> None:
    """Resume the pipeline's rollouts (nothing happens when they were not paused)."""
    s3.delete_object(Bucket=spec.storage.bucket, Key=pause_key(spec))


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
