"""Waiting: the trigger's polling decisions, the SLA policy, the sensor's deferral, the bot's noise."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edgeloop.annotation.backend import BackendError, BackendUnavailable, BatchProgress, OpenTask, ProjectRef
from edgeloop.annotation.bot import annotate_bot, noisy_label
from edgeloop.annotation.sensor import AnnotationBatchSensor, LabelStudioBatchLink
from edgeloop.annotation.trigger import AnnotationSlaMissed, BatchCompletionTrigger, wait_outcome
from edgeloop.spec import load_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"


class ScriptedBackend:
    """Answers progress() from a script of BatchProgress values or exceptions (a fake: unit tests only)."""

    kind = "fake"

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.polls = 0

    def progress(self, project: ProjectRef, batch_id: str) -> BatchProgress:
        self.polls += 1
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, BatchProgress)
        return step


def run(trigger: BatchCompletionTrigger, backend: ScriptedBackend) -> dict[str, Any]:
    async def make_backend() -> Any:
        return backend

    trigger.make_backend = make_backend  # type: ignore[method-assign]

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    return asyncio.run(asyncio.wait_for(first(), timeout=10))


def trigger(deadline: datetime, **kw: Any) -> BatchCompletionTrigger:
    args: dict[str, Any] = {
        "conn_id": "ls",
        "project_id": 3,
        "batch_id": "b1",
        "expected": 10,
        "completion_ratio": 0.9,
        "deadline": deadline.isoformat(),
        "poll_interval": 0.01,
        "max_failures": 3,
    }
    return BatchCompletionTrigger(**(args | kw))


def later(seconds: float = 60) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_fires_complete_once_the_ratio_is_reached() -> None:
    backend = ScriptedBackend([BatchProgress(10, 3, 0), BatchProgress(10, 8, 0), BatchProgress(9, 8, 0)])
    event = run(trigger(later()), backend)
    assert event["status"] == "complete" and backend.polls == 3  # 8 labelled + 1 deleted = 0.9
    assert event["progress"] == {"expected": 10, "tasks": 9, "labelled": 8, "skipped": 0, "deleted": 1, "ratio": 0.9}


def test_fires_sla_missed_when_the_deadline_passes_first() -> None:
    event = run(trigger(later(0.2)), ScriptedBackend([BatchProgress(10, 2, 0)]))
    assert event["status"] == "sla_missed" and event["progress"]["labelled"] == 2


def test_keeps_polling_through_a_few_failures_then_reports_an_error() -> None:
    down = BackendUnavailable("gave up after 6 attempts")
    event = run(trigger(later()), ScriptedBackend([down, down, BatchProgress(10, 10, 0)]))
    assert event["status"] == "complete"
    event = run(trigger(later()), ScriptedBackend([down]))
    assert event["status"] == "error" and "3 polls in a row failed" in event["message"]
    event = run(trigger(later()), ScriptedBackend([BackendError("HTTP 404: project gone")]))
    assert event["status"] == "error" and "project gone" in event["message"]


def test_trigger_serializes_to_plain_values_without_secrets() -> None:
    original = trigger(later(), url="http://ls/projects/3/data?tab=1")
    path, kwargs = original.serialize()
    assert path == "edgeloop.annotation.trigger.BatchCompletionTrigger"
    assert BatchCompletionTrigger(**kwargs).serialize() == (path, kwargs)
    assert set(kwargs) == {
        "conn_id",
        "project_id",
        "batch_id",
        "expected",
        "completion_ratio",
        "deadline",
        "poll_interval",
        "max_failures",
        "url",
        "backend",
    }


def event(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "status": status,
        "batch_id": "b1",
        "project_id": 3,
        "deadline": "2026-01-01T00:00:00+00:00",
        "completion_ratio": 0.95,
        "progress": {"expected": 10, "labelled": 4, "ratio": 0.4},
        **extra,
    }


def test_sla_policy() -> None:
    assert wait_outcome(event("complete"), on_sla="fail", pipeline="p")["partial"] is False
    partial = wait_outcome(event("sla_missed"), on_sla="export_partial", pipeline="p")
    assert partial["partial"] is True and partial["status"] == "sla_missed"
    with pytest.raises(AnnotationSlaMissed, match=r"batch b1 missed its SLA .*4 of 10 tasks labelled") as raised:
        wait_outcome(event("sla_missed"), on_sla="fail", pipeline="p")
    assert raised.value.alert["kind"] == "annotation" and raised.value.alert["pipeline"] == "p"
    with pytest.raises(BackendUnavailable, match="waiting for batch b1: boom"):
        wait_outcome(event("error", message="boom"), on_sla="export_partial", pipeline="p")


class FakeTI:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_sensor_defers_to_the_trigger_with_the_spec_settings() -> None:
    from airflow.sdk.exceptions import TaskDeferred

    spec = load_spec(DEMO)
    deadline = later(3600)
    batch = {"batch_id": "b1", "project_id": 3, "expected": 200, "deadline": deadline.isoformat(), "url": "http://ls/x"}
    sensor = AnnotationBatchSensor.for_spec(spec, batch=batch)
    ti = FakeTI()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ti": ti})
    trig = deferred.value.trigger
    assert isinstance(trig, BatchCompletionTrigger)
    assert (trig.backend, trig.conn_id, trig.completion_ratio, trig.poll_interval) == (
        "label_studio",
        "edgeloop_label_studio",
        0.95,
        spec.annotation.poll_interval.total_seconds(),
    )
    assert (trig.batch_id, trig.expected, trig.deadline) == ("b1", 200, deadline.isoformat())
    assert deferred.value.method_name == "execute_complete"
    assert timedelta(minutes=69) < deferred.value.timeout <= timedelta(minutes=70)
    assert ti.pushed == {LabelStudioBatchLink().xcom_key: "http://ls/x"}
    assert sensor.execute_complete({}, event("sla_missed"))["partial"] is True  # the demo spec exports partial


def test_sensor_refuses_a_batch_that_is_not_open_batch_output() -> None:
    sensor = AnnotationBatchSensor.for_spec(load_spec(DEMO), batch={"batch_id": "b1"})
    with pytest.raises(ValueError, match=r"missing \['project_id', 'expected', 'deadline'\]"):
        sensor.execute({"ti": FakeTI()})


def test_noise_flips_about_the_requested_share_to_another_label() -> None:
    rng = random.Random(1)
    results = [noisy_label("wear", ["normal", "wear", "fault"], 0.2, rng) for _ in range(5000)]
    flipped = [label for label, noisy in results if noisy]
    assert 0.17 < len(flipped) / 5000 < 0.23
    assert set(flipped) == {"normal", "fault"}
    assert noisy_label("wear", ["wear"], 1.0, rng) == ("wear", False)


class BotBackend:
    kind = "fake"

    def __init__(self, tasks: list[OpenTask]) -> None:
        self.tasks = tasks
        self.submitted: list[dict[int, str]] = []

    def ensure_project(self, spec: Any) -> ProjectRef:
        return ProjectRef(1, "p", "http://ls/projects/1")

    def open_tasks(self, project: ProjectRef, batch_id: str | None = None, limit: int | None = None) -> list[OpenTask]:
        return self.tasks[:limit] if limit else self.tasks

    def submit_labels(self, project: ProjectRef, labels: Mapping[int, str], *, annotator: str) -> int:
        self.submitted.append(dict(labels))
        return len(labels)


def test_bot_labels_with_the_truth_waits_between_tasks_and_skips_unknown_records() -> None:
    spec = load_spec(DEMO)
    tasks = [OpenTask(i, f"r{i}", "b") for i in range(4)]
    backend = BotBackend(tasks)
    pauses: list[float] = []
    truth = {"r0": "wear", "r1": "fault", "r3": "normal"}
    counts = annotate_bot(spec, backend, truth.get, delay=0.5, sleep=pauses.append)  # type: ignore[arg-type]
    assert counts == {"open_tasks": 4, "labelled": 3, "noisy": 0, "no_truth": 1, "failed": 0}
    assert backend.submitted == [{0: "wear"}, {1: "fault"}, {3: "normal"}]
    assert pauses == [0.5, 0.5]
    fast = BotBackend(tasks)
    annotate_bot(spec, fast, truth.get)  # type: ignore[arg-type]
    assert fast.submitted == [{0: "wear", 1: "fault", 3: "normal"}]
    bulk = BotBackend(tasks)
    asked: list[list[str]] = []
    counts = annotate_bot(spec, bulk, true_labels=lambda ids: asked.append(list(ids)) or truth)  # type: ignore[arg-type]
    assert asked == [["r0", "r1", "r2", "r3"]] and counts["labelled"] == 3 and counts["no_truth"] == 1
    with pytest.raises(ValueError, match="exactly one of true_label"):
        annotate_bot(spec, bulk)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise must be between 0 and 1"):
        annotate_bot(spec, fast, truth.get, noise=1.5)  # type: ignore[arg-type]
