"""Deferrable wait for an assignment to be applied: the triggerer polls device-state, no worker slot is held."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent


class AssignmentAppliedTrigger(BaseTrigger):
    """Fire when every addressed device reports the assignment (or failed it), or at the deadline."""

    def __init__(
        self,
        *,
        pipeline: str,
        assignment: dict[str, Any],
        deadline: float,
        poll_seconds: float = 2.0,
        trusted_keys: list[str] | None = None,
    ):
        super().__init__()
        self.trusted_keys = trusted_keys or []
        self.pipeline = pipeline
        self.assignment = assignment
        self.deadline = deadline
        self.poll_seconds = poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "pipeline": self.pipeline,
                "assignment": self.assignment,
                "deadline": self.deadline,
                "poll_seconds": self.poll_seconds,
                "trusted_keys": self.trusted_keys,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow.sdk import BaseHook

        from edgeloop.contract.keys import Keyring
        from edgeloop.fleet.control import apply_progress, assignment_from_dict
        from edgeloop.spec import default_pipelines_dir, load_spec

        spec = load_spec(default_pipelines_dir() / f"{self.pipeline}.yaml")
        kafka_config = dict((await BaseHook.aget_connection(spec.connections.kafka)).extra_dejson)
        assignment = assignment_from_dict(self.assignment)
        trusted = Keyring.from_text(" ".join(self.trusted_keys), "the wait's trusted keys")
        while True:
            progress = await asyncio.to_thread(apply_progress, spec, kafka_config, assignment, trusted, timeout=30.0)
            timed_out = time.time() >= self.deadline
            if progress.complete or (progress.devices and not progress.pending) or timed_out:
                yield TriggerEvent(progress.to_dict() | {"timed_out": timed_out and not progress.complete})
                return
            await asyncio.sleep(self.poll_seconds)


class WaitForAssignmentOperator(BaseOperator):
    """Defer until the group reports the assignment pushed by `push_task_id`; fail naming the devices that did not."""

    def __init__(self, *, pipeline: str, push_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.push_task_id = push_task_id

    def execute(self, context: Any) -> None:
        from edgeloop.connections import control_trusted_keys
        from edgeloop.fleet.tasks import ConfigPushed

        pushed = ConfigPushed.from_xcom(context["ti"].xcom_pull(task_ids=self.push_task_id))
        timeout = float(context["params"].get("timeout_seconds") or 600)
        self.defer(
            trigger=AssignmentAppliedTrigger(
                pipeline=self.pipeline,
                assignment=pushed.assignment,
                deadline=pushed.pushed_at + timeout,
                trusted_keys=control_trusted_keys().hex_keys(),
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        from airflow.exceptions import AirflowFailException

        if event.get("devices", 0) == 0:
            raise AirflowFailException(f"no device of target {event.get('target')} is known to the fleet")
        if event.get("failed_count") or event.get("pending_count"):
            raise AirflowFailException(
                f"{event['applied']}/{event['devices']} devices applied the assignment; "
                f"failed: {event.get('failed')}; not reported by the deadline: {event.get('pending')}"
            )
        return event
