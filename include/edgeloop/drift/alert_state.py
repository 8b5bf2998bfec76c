"""The open drift alerts of a pipeline as one JSON object in S3, changed only with conditional puts.

Every change is read-modify-write: read the object and its ETag, compute the new state
with a pure function from `alerts`, and put it with `If-Match: <etag>` (or
`If-None-Match: *` when it does not exist yet). When another writer got there first the
put fails with 412 and the change is computed again on the fresh state, so two drift
runs (or a drift run and the training flow closing an alert) never lose each other's update.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from edgeloop.drift.alerts import AlertPlan, close_alerts, mark_published, plan_drift_alerts
from edgeloop.drift.results import drift_reports_prefix
from edgeloop.drift.window import S3Client
from edgeloop.spec import PipelineSpec

T = TypeVar("T")
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


class AlertStateConflict(RuntimeError):
    """The state changed between read and write more often than we were willing to retry."""


class AlertStateUnreadable(ValueError):
    """The state object exists but is not a JSON object."""


def alert_state_key(spec: PipelineSpec) -> str:
    """`reports/drift/<pipeline>/open_alerts.json`."""
    return f"{drift_reports_prefix(spec)}/open_alerts.json"


def load_alert_state(s3: S3Client, bucket: str, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """The state and its ETag; (None, None) when there is none yet."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except s3.exceptions.NoSuchKey:
        return None, None
    body = response["Body"].read()
    try:
        state = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AlertStateUnreadable(f"s3://{bucket}/{key}: not JSON: {exc}") from exc
    if not isinstance(state, dict):
        raise AlertStateUnreadable(f"s3://{bucket}/{key}: not a JSON object")
    return state, str(response["ETag"])


def _is_conflict(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code in _CONFLICT_CODES or status in {"412", "409"}


def save_alert_state(s3: S3Client, bucket: str, key: str, state: dict[str, Any], etag: str | None) -> str:
    """Put the state only if it is still the version read (`etag`), or absent when `etag` is None.

    Raises `AlertStateConflict` when someone else changed it; returns the new ETag.
    """
    from botocore.exceptions import ClientError

    condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
    body = json.dumps(state, indent=1, sort_keys=True).encode("utf-8")
    try:
        response = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **condition)
    except ClientError as exc:
        if _is_conflict(exc):
            raise AlertStateConflict(f"s3://{bucket}/{key} changed since it was read") from exc
        raise
    return str(response["ETag"])


def change_alert_state(
    s3: S3Client,
    bucket: str,
    key: str,
    change: Callable[[dict[str, Any] | None], tuple[dict[str, Any] | None, T]],
    *,
    attempts: int = 8,
    backoff: float = 0.05,
) -> T:
    """Apply a pure `change(state) -> (new_state, result)` with optimistic concurrency; return `result`.

    Nothing is written when the new state equals the old one or is None.
    """
    for attempt in range(attempts):
        state, etag = load_alert_state(s3, bucket, key)
        new_state, result = change(state)
        if new_state is None or new_state == state:
            return result
        try:
            save_alert_state(s3, bucket, key, new_state, etag)
        except AlertStateConflict:
            time.sleep(backoff * (2**attempt))
            continue
        return result
    raise AlertStateConflict(f"s3://{bucket}/{key}: still changing after {attempts} attempts")


def record_drift_result(
    s3: S3Client,
    bucket: str,
    spec: PipelineSpec,
    summary: dict[str, Any],
    now: datetime,
    *,
    max_open_age: timedelta | None = None,
) -> AlertPlan:
    """Fold one run's summary into the open alerts; the plan's `publish` lists messages to send."""

    def change(state: dict[str, Any] | None) -> tuple[dict[str, Any] | None, AlertPlan]:
        plan = plan_drift_alerts(state, summary, now, max_open_age=max_open_age)
        nothing_to_keep = state is None and not plan.state["open"]
        return (None if nothing_to_keep else plan.state), plan

    return change_alert_state(s3, bucket, alert_state_key(spec), change)


def confirm_published(s3: S3Client, bucket: str, spec: PipelineSpec, alert_ids: list[str], now: datetime) -> None:
    """Mark alerts published once their messages are on Kafka (so later runs do not resend them)."""

    def change(state: dict[str, Any] | None) -> tuple[dict[str, Any] | None, None]:
        return (None if state is None else mark_published(state, alert_ids, now)), None

    if alert_ids:
        change_alert_state(s3, bucket, alert_state_key(spec), change)


def close_drift_alerts(
    s3: S3Client,
    bucket: str,
    spec: PipelineSpec,
    now: datetime,
    *,
    reason: str,
    alert_ids: list[str] | None = None,
    groups: list[str] | None = None,
) -> list[str]:
    """Close open alerts (retraining finished, or an operator's decision); return the ids closed."""

    def change(state: dict[str, Any] | None) -> tuple[dict[str, Any] | None, list[str]]:
        if state is None:
            return None, []
        return close_alerts(state, spec.name, now, reason=reason, alert_ids=alert_ids, groups=groups)

    return change_alert_state(s3, bucket, alert_state_key(spec), change)
