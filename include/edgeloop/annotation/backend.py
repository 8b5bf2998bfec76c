"""The small interface every annotation tool backend implements (Label Studio now, CVAT later).

The stage logic (open a batch, wait, export, the simulated annotator) talks only to this
interface and to the plain data classes below. A backend knows how its tool stores a
project, a task, a prediction and an annotation; it does not know about selection,
manifests, S3 or dataset versions. Keep it this small: a CVAT backend maps a project to
a CVAT project, a batch to a CVAT task (or a job filter), and a label to a tag.

`annotation.backends.backend_from_connection` is the one place a backend is built, from the spec's
`annotation.backend` and the Airflow connection `backend_connection_id` names; the DAG's
tasks, the wait's trigger and its reschedule-mode poke all go through it.

This module is imported by the triggerer: keep it free of heavy imports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from edgeloop.spec import PipelineSpec

# the simulated annotator's name (`bot.annotate_bot`): a backend records its annotations under it
BOT_MODEL_VERSION = "edgeloop-annotate-bot"


class BackendError(Exception):
    """The annotation tool refused a request for good (bad request, missing project, bad config)."""


class BackendUnavailable(BackendError):
    """The annotation tool did not answer usefully after every retry (down, slow, 5xx, 429)."""


@dataclass(frozen=True)
class ProjectRef:
    """Where a pipeline's batches live in the tool."""

    id: int
    title: str
    url: str


@dataclass(frozen=True)
class TaskPayload:
    """One record to label, as the stage hands it to a backend.

    `fields` are shown to the annotator as a table; `image_url` (if the record points to
    an image) is shown as an image; `prediction` becomes the pre-annotation.
    """

    record_id: str
    batch_id: str
    fields: Mapping[str, Any]
    prediction: str | None = None
    confidence: float | None = None
    model_version: str | None = None
    image_url: str | None = None


@dataclass(frozen=True)
class BatchProgress:
    """How far one batch is, counted by the tool (tasks of the batch that still exist)."""

    tasks: int  # tasks of the batch that exist in the tool now
    labelled: int  # tasks with at least one submitted (not skipped) annotation
    skipped: int  # tasks whose annotations were all skipped/cancelled

    def done_ratio(self, expected: int) -> float:
        """Share of the batch a human has dealt with: labelled, skipped, or deleted on purpose.

        Deleted tasks count as dealt with: a user removed them, nobody will label them.
        """
        if expected <= 0:
            return 1.0
        deleted = max(0, expected - self.tasks)
        return min(1.0, (self.labelled + self.skipped + deleted) / expected)

    def as_dict(self, expected: int) -> dict[str, Any]:
        return {
            "expected": expected,
            "tasks": self.tasks,
            "labelled": self.labelled,
            "skipped": self.skipped,
            "deleted": max(0, expected - self.tasks),
            "ratio": round(self.done_ratio(expected), 6),
        }


@dataclass(frozen=True)
class AnnotationResult:
    """One annotation of one task, in tool-neutral terms."""

    annotation_id: int
    annotator: str
    labels: tuple[str, ...]  # the label values chosen (normally exactly one)
    cancelled: bool = False  # skipped by the annotator
    rejected: bool = False  # rejected in review
    from_prediction: bool = False  # started from a prediction (a pre-annotation accepted, or a simulated annotator)


@dataclass(frozen=True)
class TaskResult:
    """A task of a batch with every annotation it has."""

    task_id: int
    record_id: str
    batch_id: str
    annotations: tuple[AnnotationResult, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class OpenTask:
    """A task nobody has annotated yet (what a simulated annotator works on)."""

    task_id: int
    record_id: str
    batch_id: str


@runtime_checkable
class AnnotationBackend(Protocol):
    """What the annotation stage needs from a labelling tool."""

    kind: str

    def ensure_project(self, spec: PipelineSpec) -> ProjectRef:
        """The pipeline's project (one per pipeline), created with the spec's label set if missing."""
        ...

    def batch_tasks(self, project: ProjectRef, batch_id: str) -> dict[str, int]:
        """Record id -> task id of every task of a batch that exists in the project."""
        ...

    def import_tasks(self, project: ProjectRef, tasks: Sequence[TaskPayload]) -> dict[str, int]:
        """Create the tasks (with their pre-annotations); record id -> new task id."""
        ...

    def progress(self, project: ProjectRef, batch_id: str) -> BatchProgress:
        """Counts of the batch's tasks: existing, labelled, skipped."""
        ...

    def fetch_results(self, project: ProjectRef, task_ids: Sequence[int]) -> list[TaskResult]:
        """The tasks (of those ids) that still exist, with all their annotations."""
        ...

    def open_tasks(self, project: ProjectRef, batch_id: str | None = None, limit: int | None = None) -> list[OpenTask]:
        """Tasks without any annotation, optionally of one batch."""
        ...

    def submit_labels(self, project: ProjectRef, labels: Mapping[int, str], *, annotator: str) -> int:
        """Annotate tasks (task id -> label) as `annotator`; returns how many were annotated."""
        ...

    def batch_url(self, project: ProjectRef, batch_id: str) -> str:
        """A link a person can open to see the batch in the tool."""
        ...
