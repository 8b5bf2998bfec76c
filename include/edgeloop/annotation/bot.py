"""A simulated annotator for the demo and the tests: never part of a pipeline unless asked for.

It labels open tasks of a pipeline's project with the hidden true label of each record
(a callable, e.g. backed by the fleet simulator's ground-truth topic), flipping a share
`noise` of them to another label, and waits `delay` seconds between tasks to look like a
person (with no delay it labels in bulk). Its annotations are made from predictions with
model version `edgeloop-annotate-bot` (counted as `from_prediction` in the lineage); run
it with its own user's token to see it as a separate annotator.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edgeloop.annotation.backend import BOT_MODEL_VERSION, AnnotationBackend, BackendError, OpenTask
from edgeloop.spec import PipelineSpec

log = logging.getLogger(__name__)

BULK_CHUNK = 500

TrueLabel = Callable[[str], str | None]
TrueLabels = Callable[[Sequence[str]], Mapping[str, str]]  # bulk: record ids -> labels found


def truth_from_mapping(labels: Mapping[str, str]) -> TrueLabel:
    """A true-label callable over a dict (e.g. the result of the simulator's bulk reader)."""
    return labels.get


def noisy_label(truth: str, labels: Sequence[str], noise: float, rng: random.Random) -> tuple[str, bool]:
    """The label the bot gives: the truth, or with probability `noise` another label of the set."""
    others = [label for label in labels if label != truth]
    if others and rng.random() < noise:
        return rng.choice(others), True
    return truth, False


def annotate_bot(
    spec: PipelineSpec,
    backend: AnnotationBackend,
    true_label: TrueLabel | None = None,
    *,
    true_labels: TrueLabels | None = None,
    noise: float = 0.0,
    delay: float = 0.0,
    batch_id: str | None = None,
    max_tasks: int | None = None,
    seed: int = 0,
    annotator: str = BOT_MODEL_VERSION,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Label the open tasks of the pipeline's project (optionally of one batch) once.

    The truth comes from `true_label(record_id)` or, in one call for all open tasks, from
    `true_labels(record_ids)` (e.g. `lambda ids: simulator.groundtruth.true_labels(spec, kafka, ids)`).
    Records whose true label is unknown are left open. Returns counts: open tasks seen,
    labelled, labelled with noise, without a true label, failed.
    """
    if (true_label is None) == (true_labels is None):
        raise ValueError("give exactly one of true_label (per record) and true_labels (bulk)")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be between 0 and 1, not {noise}")
    if delay < 0:
        raise ValueError(f"delay must not be negative, not {delay}")
    project = backend.ensure_project(spec)
    tasks = backend.open_tasks(project, batch_id, limit=max_tasks)
    if true_labels is not None:
        lookup = truth_from_mapping(true_labels([t.record_id for t in tasks]))
    elif true_label is not None:
        lookup = true_label
    rng = random.Random(seed)
    plan: list[tuple[OpenTask, str]] = []
    counts = {"open_tasks": len(tasks), "labelled": 0, "noisy": 0, "no_truth": 0, "failed": 0}
    for task in tasks:
        truth = lookup(task.record_id)
        if truth is None:
            counts["no_truth"] += 1
            continue
        label, flipped = noisy_label(truth, spec.annotation.labels, noise, rng)
        counts["noisy"] += int(flipped)
        plan.append((task, label))
    step = 1 if delay > 0 else BULK_CHUNK
    for start in range(0, len(plan), step):
        chunk = plan[start : start + step]
        try:
            counts["labelled"] += backend.submit_labels(
                project, {t.task_id: lbl for t, lbl in chunk}, annotator=annotator
            )
        except BackendError as exc:
            counts["failed"] += len(chunk)
            log.warning("annotate bot: %d tasks not labelled: %s", len(chunk), exc)
        if delay > 0 and start + step < len(plan):
            sleep(delay)
    log.info("annotate bot on project %s: %s", project.id, counts)
    return counts
