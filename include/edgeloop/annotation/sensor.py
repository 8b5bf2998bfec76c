"""`AnnotationBatchSensor`: the `wait_for_labels` task of the annotate DAG.

Deferrable by default: `execute` hands the wait to `BatchCompletionTrigger` in the triggerer
and no worker slot is held until the batch is done or its SLA passes; `execute_complete`
applies the spec's SLA policy and returns a small dict for the export task. With
`deferrable=False` it pokes in `reschedule` mode instead (also without holding a slot).
The batch's link in the annotation tool is stored for the task's extra link "Label Studio batch"
(named after the one backend shipped: an operator link's name is fixed when the DAG is serialized).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperatorLink, BaseSensorOperator, PokeReturnValue

from edgeloop.annotation.backends import backend_connection_id
from edgeloop.annotation.trigger import BatchCompletionTrigger, OnSla, wait_outcome
from edgeloop.spec import PipelineSpec

DEFER_GRACE = timedelta(minutes=10)


class LabelStudioBatchLink(BaseOperatorLink):
    """Extra link to the batch's tab in the annotation tool (stored in XCom by the sensor)."""

    @property
    def name(self) -> str:
        return "Label Studio batch"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(key=self.xcom_key, ti_key=ti_key)
        return str(value) if value else ""


class AnnotationBatchSensor(BaseSensorOperator):
    """Wait until an opened batch reaches the completion ratio or its SLA deadline.

    `batch` is the dict `open_batch` returns (an XComArg in the DAG): batch_id, project_id,
    expected, deadline, url.
    """

    template_fields = ("batch",)
    operator_extra_links = (LabelStudioBatchLink(),)
    ui_color = "#f3e8ff"

    def __init__(
        self,
        *,
        batch: Any,
        pipeline: str,
        conn_id: str,
        completion_ratio: float,
        on_sla: OnSla,
        poll_interval: float = 30.0,
        deferrable: bool = True,
        max_failures: int = 5,
        backend: str = "label_studio",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("mode", "poke" if deferrable else "reschedule")
        super().__init__(poke_interval=poll_interval, **kwargs)
        self.batch = batch
        self.pipeline = pipeline
        self.conn_id = conn_id
        self.completion_ratio = completion_ratio
        self.on_sla: OnSla = on_sla
        self.poll = poll_interval
        self.deferrable = deferrable
        self.max_failures = max_failures
        self.backend = backend

    @classmethod
    def for_spec(cls, spec: PipelineSpec, *, batch: Any, **kwargs: Any) -> AnnotationBatchSensor:
        """The sensor with the spec's completion ratio, SLA policy, poll interval, backend and its connection
        (overridable)."""
        settings: dict[str, Any] = {
            "task_id": "wait_for_labels",
            "pipeline": spec.name,
            "backend": spec.annotation.backend,
            "conn_id": backend_connection_id(spec),
            "completion_ratio": spec.annotation.completion_ratio,
            "on_sla": spec.annotation.on_sla,
            "poll_interval": spec.annotation.poll_interval.total_seconds(),
        }
        return cls(batch=batch, **(settings | kwargs))

    def _batch(self) -> Mapping[str, Any]:
        batch: Mapping[str, Any] = self.batch
        missing = [
            k
            for k in ("batch_id", "project_id", "expected", "deadline")
            if not isinstance(batch, Mapping) or k not in batch
        ]
        if missing:
            raise ValueError(f"{self.task_id}: batch must be the dict open_batch returns; missing {missing}")
        return batch

    def trigger(self) -> BatchCompletionTrigger:
        batch = self._batch()
        return BatchCompletionTrigger(
            conn_id=self.conn_id,
            project_id=int(batch["project_id"]),
            batch_id=str(batch["batch_id"]),
            expected=int(batch["expected"]),
            completion_ratio=self.completion_ratio,
            deadline=str(batch["deadline"]),
            poll_interval=self.poll,
            max_failures=self.max_failures,
            url=batch.get("url"),
            backend=self.backend,
        )

    def execute(self, context: Any) -> Any:
        batch = self._batch()
        if batch.get("url"):
            context["ti"].xcom_push(key=LabelStudioBatchLink().xcom_key, value=batch["url"])
        if not self.deferrable:
            return super().execute(context)
        deadline = datetime.fromisoformat(str(batch["deadline"]))
        timeout = max(timedelta(0), deadline - datetime.now(UTC)) + DEFER_GRACE
        self.defer(trigger=self.trigger(), method_name="execute_complete", timeout=timeout)

    def execute_complete(self, context: Any, event: Mapping[str, Any]) -> dict[str, Any]:
        return wait_outcome(event, on_sla=self.on_sla, pipeline=self.pipeline)

    def poke(self, context: Any) -> bool | PokeReturnValue:
        """One synchronous check (reschedule mode): done, SLA passed, or not yet."""
        from airflow.sdk.bases.hook import BaseHook

        from edgeloop.annotation.backend import ProjectRef
        from edgeloop.annotation.backends import backend_from_connection

        batch = self._batch()
        trigger = self.trigger()
        backend = backend_from_connection(self.backend, BaseHook.get_connection(self.conn_id))
        progress = backend.progress(ProjectRef(int(batch["project_id"]), "", ""), str(batch["batch_id"]))
        expected = int(batch["expected"])
        status = None
        if progress.done_ratio(expected) >= self.completion_ratio:
            status = "complete"
        elif datetime.now(UTC) >= datetime.fromisoformat(str(batch["deadline"])):
            status = "sla_missed"
        if status is None:
            return False
        event = trigger._event(status, progress.as_dict(expected)).payload
        return PokeReturnValue(is_done=True, xcom_value=wait_outcome(event, on_sla=self.on_sla, pipeline=self.pipeline))
