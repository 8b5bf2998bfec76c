"""Waiting for a batch without holding a worker: a deferrable trigger and the SLA policy.

An annotation tool need not have a "batch complete" webhook (Label Studio has none), so
`BatchCompletionTrigger` polls the batch's progress through the backend protocol from the
triggerer (for Label Studio three cheap count queries per poll, run in a thread) and fires once:

- `{"status": "complete", ...}` when the batch's done ratio reaches the spec's completion ratio,
- `{"status": "sla_missed", ...}` when the SLA deadline passes first,
- `{"status": "error", ...}` when the tool keeps failing (after each poll's own retries) or
  refuses the request for good (deleted project, bad token).

`wait_outcome` turns that event into the task's result under the spec's `on_sla` policy:
export what is labelled and continue, or fail with an alert.

This module is imported by the triggerer and by DAG files: keep it light.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from airflow.triggers.base import BaseTrigger, TriggerEvent

from edgeloop.annotation.backend import (
    AnnotationBackend,
    BackendError,
    BackendUnavailable,
    ProjectRef,
)
from edgeloop.annotation.backends import backend_from_connection

OnSla = Literal["export_partial", "fail"]


class AnnotationSlaMissed(Exception):
    """The batch missed its SLA and the spec says to fail; `alert` is the alert to raise about it."""

    def __init__(self, message: str, alert: dict[str, Any]) -> None:
        super().__init__(message)
        self.alert = alert


def sla_alert(pipeline: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """The alert describing a missed annotation SLA (kind `annotation`)."""
    progress = event.get("progress") or {}
    return {
        "kind": "annotation",
        "pipeline": pipeline,
        "batch_id": event.get("batch_id"),
        "reason": "sla_missed",
        "deadline": event.get("deadline"),
        "progress": progress,
        "url": event.get("url"),
        "created_at": datetime.now(UTC).isoformat(),
        "source": "edgeloop.annotation",
    }


def wait_outcome(event: Mapping[str, Any], *, on_sla: OnSla, pipeline: str) -> dict[str, Any]:
    """The waiting task's result for a trigger event, applying the SLA policy.

    complete -> {status: complete, partial: False}; sla_missed with `export_partial` ->
    {status: sla_missed, partial: True}; sla_missed with `fail` -> AnnotationSlaMissed;
    error -> BackendUnavailable with the trigger's message.
    """
    status = event.get("status")
    progress = dict(event.get("progress") or {})
    base = {"batch_id": event.get("batch_id"), "project_id": event.get("project_id"), "progress": progress}
    if status == "complete":
        return {**base, "status": "complete", "partial": False}
    if status == "sla_missed":
        if on_sla == "export_partial":
            return {**base, "status": "sla_missed", "partial": True, "action": "export_partial"}
        message = (
            f"annotation batch {event.get('batch_id')} missed its SLA ({event.get('deadline')}): "
            f"{progress.get('labelled', 0)} of {progress.get('expected', '?')} tasks labelled "
            f"(ratio {progress.get('ratio', 0)}, needed {event.get('completion_ratio')}); "
            "spec.annotation.on_sla is 'fail'"
        )
        raise AnnotationSlaMissed(message, sla_alert(pipeline, event))
    if status == "error":
        raise BackendUnavailable(f"waiting for batch {event.get('batch_id')}: {event.get('message')}")
    raise ValueError(f"unknown trigger event status {status!r} in {dict(event)}")


class BatchCompletionTrigger(BaseTrigger):
    """Poll the annotation tool until a batch is done enough or its SLA deadline passes.

    Only ids and numbers are serialized: the token is read from the Airflow connection
    `conn_id` when the trigger runs, never stored with the trigger.
    """

    def __init__(
        self,
        *,
        conn_id: str,
        project_id: int,
        batch_id: str,
        expected: int,
        completion_ratio: float,
        deadline: str,
        poll_interval: float = 30.0,
        max_failures: int = 5,
        url: str | None = None,
        backend: str = "label_studio",
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.project_id = int(project_id)
        self.batch_id = batch_id
        self.expected = int(expected)
        self.completion_ratio = float(completion_ratio)
        self.deadline = deadline
        self.poll_interval = float(poll_interval)
        self.max_failures = int(max_failures)
        self.url = url
        self.backend = backend  # the spec's `annotation.backend`: which tool `conn_id` points at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "conn_id": self.conn_id,
            "project_id": self.project_id,
            "batch_id": self.batch_id,
            "expected": self.expected,
            "completion_ratio": self.completion_ratio,
            "deadline": self.deadline,
            "poll_interval": self.poll_interval,
            "max_failures": self.max_failures,
            "url": self.url,
            "backend": self.backend,
        }

    async def make_backend(self) -> AnnotationBackend:
        """The `backend` tool's client for `conn_id` (the connection is read through Airflow's secrets backends)."""
        from airflow.sdk.bases.hook import BaseHook

        conn = await BaseHook.aget_connection(self.conn_id)
        return backend_from_connection(self.backend, conn)

    def _event(self, status: str, progress: dict[str, Any] | None, **extra: Any) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "batch_id": self.batch_id,
                "project_id": self.project_id,
                "deadline": self.deadline,
                "completion_ratio": self.completion_ratio,
                "url": self.url,
                "progress": progress or {"expected": self.expected},
                **extra,
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = datetime.fromisoformat(self.deadline)
        project = ProjectRef(id=self.project_id, title="", url="")
        try:
            backend = await self.make_backend()
        except Exception as exc:
            yield self._event("error", None, message=f"cannot reach the annotation tool: {type(exc).__name__}: {exc}")
            return
        failures = 0
        last: dict[str, Any] | None = None
        while True:
            try:
                progress = await asyncio.to_thread(backend.progress, project, self.batch_id)
            except BackendUnavailable as exc:
                failures += 1
                self.log.warning("batch %s: poll %d failed: %s", self.batch_id, failures, exc)
                if failures >= self.max_failures:
                    yield self._event("error", last, message=f"{failures} polls in a row failed; last: {exc}")
                    return
            except BackendError as exc:
                yield self._event("error", last, message=str(exc))
                return
            else:
                failures = 0
                last = progress.as_dict(self.expected)
                if progress.done_ratio(self.expected) >= self.completion_ratio:
                    yield self._event("complete", last)
                    return
                self.log.info("batch %s: %s", self.batch_id, last)
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                yield self._event("sla_missed", last)
                return
            await asyncio.sleep(min(self.poll_interval, remaining))
