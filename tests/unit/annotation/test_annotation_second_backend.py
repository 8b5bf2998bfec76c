"""The annotation stage works through the backend protocol only: a camera batch end to end on a second tool.

Story: the lamp of hall-east failed and the drift alert names the hall. The annotate DAG's task functions
select the hall's frames, open the batch in an annotation tool that is not Label Studio (an in-memory
`AnnotationBackend`, nothing but the protocol's methods), the wait's trigger polls its progress until the
simulated annotator has labelled every task, and the export publishes a curated version whose rows carry
each frame's content address and the label given in that tool. Object storage is moto's in-process S3.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws
from tests.helpers.camera_models import vision_spec
from tests.helpers.camera_records import camera_records

from edgeloop.annotation import tasks as annotate_tasks
from edgeloop.annotation.backend import (
    AnnotationBackend,
    AnnotationResult,
    BackendError,
    BatchProgress,
    OpenTask,
    ProjectRef,
    TaskPayload,
    TaskResult,
)
from edgeloop.annotation.backends import backend_connection_id, backend_from_connection
from edgeloop.annotation.bot import annotate_bot
from edgeloop.annotation.trigger import BatchCompletionTrigger, wait_outcome
from edgeloop.ingest.keys import OffsetRange, raw_object_key
from edgeloop.metrics.push import TaskMetrics
from edgeloop.spec import PipelineSpec

NOW = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
NO_METRICS = TaskMetrics(gateway=None, dag_id="visual_inspection__annotate", task_id="annotate")


@dataclass
class _Task:
    id: int
    project: int
    payload: TaskPayload
    annotations: list[AnnotationResult] = field(default_factory=list)


class MemoryTool:
    """A second annotation tool: projects, tasks and annotations in dicts, only the protocol's methods."""

    kind = "memory"

    def __init__(self) -> None:
        self.projects: dict[str, ProjectRef] = {}
        self.labels: dict[int, list[str]] = {}
        self.tasks: dict[int, _Task] = {}

    def ensure_project(self, spec: PipelineSpec) -> ProjectRef:
        if spec.name not in self.projects:
            number = len(self.projects) + 1
            self.projects[spec.name] = ProjectRef(number, spec.name, f"memory://projects/{number}")
            self.labels[number] = list(spec.annotation.labels)
        return self.projects[spec.name]

    def _of(self, project: ProjectRef, batch_id: str | None = None) -> list[_Task]:
        return [
            t
            for t in self.tasks.values()
            if t.project == project.id and (batch_id is None or t.payload.batch_id == batch_id)
        ]

    def batch_tasks(self, project: ProjectRef, batch_id: str) -> dict[str, int]:
        return {t.payload.record_id: t.id for t in self._of(project, batch_id)}

    def import_tasks(self, project: ProjectRef, tasks: Sequence[TaskPayload]) -> dict[str, int]:
        created = {}
        for payload in tasks:
            task = _Task(len(self.tasks) + 1, project.id, payload)
            self.tasks[task.id] = task
            created[payload.record_id] = task.id
        return created

    def progress(self, project: ProjectRef, batch_id: str) -> BatchProgress:
        tasks = self._of(project, batch_id)
        labelled = sum(any(not a.cancelled for a in t.annotations) for t in tasks)
        skipped = sum(bool(t.annotations) and all(a.cancelled for a in t.annotations) for t in tasks)
        return BatchProgress(tasks=len(tasks), labelled=labelled, skipped=skipped)

    def fetch_results(self, project: ProjectRef, task_ids: Sequence[int]) -> list[TaskResult]:
        return [
            TaskResult(t.id, t.payload.record_id, t.payload.batch_id, tuple(t.annotations))
            for t in (self.tasks.get(i) for i in task_ids)
            if t is not None and t.project == project.id
        ]

    def open_tasks(self, project: ProjectRef, batch_id: str | None = None, limit: int | None = None) -> list[OpenTask]:
        found = [OpenTask(t.id, t.payload.record_id, t.payload.batch_id) for t in self._of(project, batch_id)]
        return [t for t in found if not self.tasks[t.task_id].annotations][:limit]

    def submit_labels(self, project: ProjectRef, labels: Mapping[int, str], *, annotator: str) -> int:
        for task_id, label in labels.items():
            if label not in self.labels[project.id]:
                raise BackendError(f"label {label!r} is not in project {project.id}")
            annotations = self.tasks[task_id].annotations
            annotations.append(AnnotationResult(len(annotations) + 1, annotator, (label,)))
        return len(labels)

    def batch_url(self, project: ProjectRef, batch_id: str) -> str:
        return f"{project.url}/batches/{batch_id}"


class MemoryClients:
    """What the task functions ask `PipelineClients` for: the S3 client and the annotation backend."""

    def __init__(self, s3: Any, backend: AnnotationBackend) -> None:
        self._s3, self._backend = s3, backend

    def s3(self) -> Any:
        return self._s3

    def annotation_backend(self) -> AnnotationBackend:
        return self._backend


@pytest.fixture
def spec() -> PipelineSpec:
    spec = vision_spec()
    return spec.model_copy(update={"annotation": spec.annotation.model_copy(update={"batch_size": 24})})


@pytest.fixture
def s3(spec: PipelineSpec) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=spec.storage.bucket)
        yield client


def ingested(spec: PipelineSpec, s3: Any) -> pd.DataFrame:
    """The window's camera records in the raw layout, hall-east's lamp failed; their frames stored."""
    records = camera_records(spec, s3, pd.Timestamp("2026-03-01T12:27:00Z"), 40, failed_lamp="hall-east")
    records["config_version"] = "c1"
    for partition, (_, part) in enumerate(records.groupby("group_id")):
        key = raw_object_key(spec, spec.topic("telemetry"), NOW.replace(minute=0), OffsetRange(partition, 0, 39))
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), sink)
        s3.put_object(Bucket=spec.storage.bucket, Key=key, Body=sink.getvalue())
    return records


def wait_for_labels(opened: annotate_tasks.BatchOpened, tool: MemoryTool, spec: PipelineSpec) -> dict[str, Any]:
    """The deferred wait: the trigger polls the tool's progress through the protocol until the batch is done."""
    trigger = BatchCompletionTrigger(
        conn_id="memory",
        project_id=opened.project_id,
        batch_id=opened.batch_id,
        expected=opened.expected,
        completion_ratio=spec.annotation.completion_ratio,
        deadline=opened.deadline,
        poll_interval=0.01,
        backend=tool.kind,
    )

    async def make_backend() -> AnnotationBackend:
        return tool

    trigger.make_backend = make_backend  # type: ignore[method-assign]

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger fired no event")

    return asyncio.run(asyncio.wait_for(first(), timeout=10))


def test_a_camera_batch_is_opened_waited_for_and_exported_through_the_protocol_only(
    spec: PipelineSpec, s3: Any
) -> None:
    records = ingested(spec, s3)
    tool = MemoryTool()
    assert isinstance(tool, AnnotationBackend)
    clients: Any = MemoryClients(s3, tool)
    alert = {"kind": "drift", "pipeline": spec.name, "alert_id": "drift-hall-east-1", "groups": ["hall-east"]}

    selected = annotate_tasks.select_batch(spec, clients, alert=alert, group=None, size=None, run_id="r1", now=NOW)
    opened = annotate_tasks.open_batch(spec, clients, selected, metrics=NO_METRICS)

    assert (selected.size, selected.groups) == (24, ["hall-east"])
    assert (opened.backend, opened.expected, opened.tasks) == ("memory", 24, 24)
    assert opened.url == f"memory://projects/{opened.project_id}/batches/{selected.batch_id}"
    shown = [t.payload for t in tool.tasks.values()]
    by_record = records.set_index("record_id")
    for payload in shown:  # each task shows its frame by a presigned URL of its content address
        assert payload.image_url is not None and by_record.loc[payload.record_id, "frame_key"] in payload.image_url
        assert payload.prediction == by_record.loc[payload.record_id, "prediction"]
    assert annotate_tasks.open_batch(spec, clients, selected, metrics=NO_METRICS).imported == 0  # opened once
    assert tool.progress(tool.ensure_project(spec), selected.batch_id) == BatchProgress(24, 0, 0)

    truth = dict(zip(records["record_id"], records["prediction"], strict=True))
    bot = annotate_bot(spec, tool, truth.get, batch_id=selected.batch_id, annotator="inspector@plant")
    event = wait_for_labels(opened, tool, spec)
    waited = annotate_tasks.BatchWaited.from_xcom(
        wait_outcome(event, on_sla=spec.annotation.on_sla, pipeline=spec.name)
    )
    exported = annotate_tasks.export_dataset(spec, clients, waited, metrics=NO_METRICS)

    assert bot["labelled"] == 24 and event["status"] == "complete" and waited.partial is False
    assert exported.rows == 24 and sum(exported.label_distribution.values()) == 24
    body = s3.get_object(Bucket=spec.storage.bucket, Key=exported.data_key)["Body"].read()
    curated = pq.read_table(pa.BufferReader(body)).to_pandas()
    assert set(curated["group_id"]) == {"hall-east"}
    assert (curated["label"] == curated["record_id"].map(truth)).all()
    assert (curated["frame_key"] == curated["record_id"].map(by_record["frame_key"])).all()


def test_the_backend_is_chosen_by_the_spec_through_one_factory() -> None:
    spec = vision_spec()
    assert (spec.annotation.backend, backend_connection_id(spec)) == ("label_studio", "edgeloop_label_studio")

    class Connection:
        conn_id, host, port, schema, password, extra_dejson = "edgeloop_label_studio", "ls:8080", None, None, "t", {}

    assert backend_from_connection("label_studio", Connection()).kind == "label_studio"
    with pytest.raises(BackendError, match="no annotation backend 'cvat'"):
        backend_from_connection("cvat", Connection())
