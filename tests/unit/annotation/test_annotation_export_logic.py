"""Resolving one label per record from a batch's annotations, and the left-out reasons."""

from __future__ import annotations

from edgeloop.annotation.backend import AnnotationResult, BatchProgress, TaskResult
from edgeloop.annotation.export import format_version, resolve_labels

LABELS = ["normal", "wear", "fault"]


def task(task_id: int, record: str, *annotations: AnnotationResult) -> TaskResult:
    return TaskResult(task_id=task_id, record_id=record, batch_id="b", annotations=annotations)


def vote(label: str, who: str = "ann@x", **flags: bool) -> AnnotationResult:
    return AnnotationResult(annotation_id=0, annotator=who, labels=(label,) if label else (), **flags)


def test_each_record_gets_its_majority_label_or_a_reason() -> None:
    records = ["ok", "majority", "tie", "skipped", "rejected", "unknown", "open", "deleted", "empty", "mixed"]
    tasks = {r: i for i, r in enumerate(records)}
    results = [
        task(0, "ok", vote("wear")),
        task(1, "majority", vote("fault", "a"), vote("fault", "b"), vote("wear", "c")),
        task(2, "tie", vote("wear", "a"), vote("fault", "b")),
        task(3, "skipped", vote("", cancelled=True)),
        task(4, "rejected", vote("normal", rejected=True)),
        task(5, "unknown", vote("broken")),
        task(6, "open"),
        # 7 ("deleted") is not returned by the tool
        task(8, "empty", vote("")),
        task(9, "mixed", vote("", cancelled=True), vote("normal", "d", from_prediction=True)),
    ]
    resolution = resolve_labels(records, tasks, results, LABELS)
    assert resolution.labels["ok"] == ("wear", 1.0, 1, 0)
    assert resolution.labels["majority"][:3] == ("fault", 2 / 3, 3)
    assert resolution.labels["mixed"][0] == "normal"
    assert resolution.left_out == {
        "tie": "no_majority",
        "skipped": "skipped",
        "rejected": "rejected",
        "unknown": "unknown_label",
        "open": "not_annotated",
        "deleted": "task_deleted",
        "empty": "unknown_label",
    }
    assert resolution.left_out_counts() == {
        "task_deleted": 1,
        "not_annotated": 1,
        "skipped": 1,
        "rejected": 1,
        "unknown_label": 2,
        "no_majority": 1,
    }
    assert resolution.agreements == [2 / 3]  # only records labelled by several annotations
    assert resolution.annotators == {"ann@x": 1, "a": 2, "b": 2, "c": 1, "d": 1}
    assert resolution.annotations["total"] == 12
    assert (resolution.annotations["skipped"], resolution.annotations["rejected"]) == (2, 1)
    assert resolution.annotations["from_prediction"] == 1


def test_a_record_without_an_opened_task_counts_as_deleted() -> None:
    resolution = resolve_labels(["r1"], {}, [task(1, "r1", vote("wear"))], LABELS)
    assert resolution.left_out == {"r1": "task_deleted"}


def test_done_ratio_counts_labelled_skipped_and_deleted_tasks() -> None:
    progress = BatchProgress(tasks=8, labelled=5, skipped=1)
    assert progress.done_ratio(10) == 0.8  # 5 labelled + 1 skipped + 2 deleted
    assert progress.as_dict(10) == {"expected": 10, "tasks": 8, "labelled": 5, "skipped": 1, "deleted": 2, "ratio": 0.8}
    assert BatchProgress(0, 0, 0).done_ratio(0) == 1.0


def test_versions_sort_in_creation_order() -> None:
    versions = [format_version(n) for n in (10, 2, 1, 100)]
    assert sorted(versions) == ["v000001", "v000002", "v000010", "v000100"]
