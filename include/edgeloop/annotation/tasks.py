"""The tasks of the `annotate` DAG: one function each, typed results across the boundary.

Between `open_batch` and `export_dataset` the DAG waits with `sensor.AnnotationBatchSensor`; its
result is read here as a `BatchWaited`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

from edgeloop.spec import PipelineSpec
from edgeloop.xcom import JSON, XComResult, plain, xcom_fields

if TYPE_CHECKING:
    from edgeloop.connections import PipelineClients
    from edgeloop.metrics.push import BatchMetrics, TaskMetrics

# what the `curated` asset event carries of an export
CURATED_EVENT_KEYS = ("version", "uri", "rows", "batch_id", "label_distribution")


@dataclass(frozen=True)
class BatchSelected(XComResult):
    """The batch `select_batch` chose (`annotation.selection.select_batch`): its id, size, strategy and manifest."""

    batch_id: str
    alert_id: str
    groups: list[str]
    size: int
    requested_size: int
    strategy: list[str]
    strategy_notes: dict[str, JSON]
    candidates: int
    excluded_already_selected: int
    devices: int
    source_objects: int
    manifest_key: str
    created: bool


@dataclass(frozen=True)
class BatchOpened(XComResult):
    """The batch as opened in the annotation tool (`annotation.batch.open_batch`): project, link, tasks, deadline."""

    batch_id: str
    backend: str
    project_id: int
    project_title: str
    project_url: str
    url: str | None
    expected: int
    tasks: int
    imported: int
    reused: int
    opened_at: str
    deadline: str


@dataclass(frozen=True)
class BatchWaited:
    """How the wait ended (`annotation.trigger.wait_outcome`): complete, or past the SLA with a partial export."""

    batch_id: str
    project_id: int
    progress: dict[str, JSON]
    status: str
    partial: bool
    action: str | None = None

    def to_xcom(self) -> dict[str, JSON]:
        return plain(self, omit_none=("action",))

    @classmethod
    def from_xcom(cls, data: object) -> Self:
        return cls(**xcom_fields(cls, data))


@dataclass(frozen=True)
class DatasetExported:
    """The curated version `export_dataset` published (`annotation.export.export_dataset`): keys, rows, labels."""

    batch_id: str
    version: str
    data_key: str
    lineage_key: str
    uri: str
    rows: int
    label_distribution: dict[str, int]
    left_out: dict[str, int]
    partial: bool
    created: bool

    def to_xcom(self) -> dict[str, JSON]:
        return plain(self)

    def asset_extra(self) -> dict[str, JSON]:
        """The `curated` asset event's extra: the version, where it is, its size and labels, the batch."""
        data = self.to_xcom()
        return {key: data[key] for key in CURATED_EVENT_KEYS}

    @classmethod
    def from_xcom(cls, data: object) -> Self:
        return cls(**xcom_fields(cls, data))


def alert_of(events: Sequence[Any]) -> Mapping[str, Any] | None:
    """The drift alert of the newest triggering asset event (its `payload` extra), or None for a manual run."""
    return (events[-1].extra or {}).get("payload") if events else None


def select_batch(
    spec: PipelineSpec,
    clients: PipelineClients,
    *,
    alert: Mapping[str, Any] | None,
    group: str | None,
    size: int | None,
    run_id: str,
    now: datetime,
) -> BatchSelected:
    """Choose the records worth labelling for the alert (or the run's params); skip the task when there are none."""
    from airflow.exceptions import AirflowSkipException

    from edgeloop.annotation import selection

    request = selection.selection_request(spec, now=now, alert=alert, group=group, size=size, run_id=run_id)
    try:
        return BatchSelected.from_xcom(selection.select_batch(spec, clients.s3(), request))
    except selection.EmptySelection as exc:
        raise AirflowSkipException(exc.reason) from exc


def open_batch(
    spec: PipelineSpec, clients: PipelineClients, selected: BatchSelected, *, metrics: TaskMetrics
) -> BatchOpened:
    """Open the selected batch in the annotation tool (once: a re-run finds the opened batch)."""
    from edgeloop.annotation import batch
    from edgeloop.annotation.metrics import record_opened_batch
    from edgeloop.metrics.push import push_task_metrics

    opened = batch.open_batch(spec, clients.s3(), clients.annotation_backend(), selected.batch_id)
    push_task_metrics(spec, metrics, lambda sink: record_opened_batch(sink, opened))
    return BatchOpened.from_xcom(opened)


def export_dataset(
    spec: PipelineSpec, clients: PipelineClients, waited: BatchWaited, *, metrics: TaskMetrics
) -> DatasetExported:
    """Export the batch's labels as a curated dataset version; skip the task when nothing can be exported."""
    from airflow.exceptions import AirflowSkipException

    from edgeloop.annotation import export
    from edgeloop.annotation.metrics import record_exported_batch
    from edgeloop.metrics.push import push_task_metrics

    try:
        result = export.export_dataset(
            spec, clients.s3(), clients.annotation_backend(), waited.batch_id, partial=waited.partial
        )
    except export.NothingToExport as exc:
        raise AirflowSkipException(str(exc)) from exc

    def fill(sink: BatchMetrics) -> None:
        record_exported_batch(sink, waited.to_xcom(), result)
        sink.mark_success("annotate")

    push_task_metrics(spec, metrics, fill)
    return DatasetExported.from_xcom(result)


# --- the DAG's tasks: each reads its inputs from the Airflow context and calls the function above


def run_select_batch(spec: PipelineSpec, events: Sequence[Any], context: Mapping[str, Any]) -> BatchSelected:
    """`select_batch` for the drift alert among `events` (the run's triggering events) or the run's params."""
    from edgeloop.connections import PipelineClients

    params = context["params"]
    return select_batch(
        spec,
        PipelineClients(spec),
        alert=alert_of(events),
        group=params.get("group"),
        size=params.get("size"),
        run_id=context["dag_run"].run_id,
        now=datetime.now(UTC),
    )


def run_open_batch(spec: PipelineSpec, selection: object, context: Mapping[str, Any]) -> BatchOpened:
    from edgeloop.connections import PipelineClients
    from edgeloop.metrics.push import TaskMetrics

    selected = BatchSelected.from_xcom(selection)
    return open_batch(spec, PipelineClients(spec), selected, metrics=TaskMetrics.of_task(context))


def run_export_dataset(spec: PipelineSpec, waited: object, context: Mapping[str, Any]) -> DatasetExported:
    from edgeloop.connections import PipelineClients
    from edgeloop.metrics.push import TaskMetrics

    done = BatchWaited.from_xcom(waited)
    return export_dataset(spec, PipelineClients(spec), done, metrics=TaskMetrics.of_task(context))
