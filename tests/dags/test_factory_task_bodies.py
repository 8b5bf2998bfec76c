"""Each task of the factory's DAGs hands its stage's function what the run gave it: the params, the run's id
and time, the previous task's XCom read back as its typed result, and where its metrics go.

The stage functions are replaced by recorders here; their own behaviour is tested in each stage's tests.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edgeloop.annotation import tasks as annotation_tasks
from edgeloop.drift import tasks as drift_tasks
from edgeloop.factory import stages
from edgeloop.fleet import tasks as fleet_tasks
from edgeloop.ingest import tasks as ingest_tasks
from edgeloop.metrics.push import TaskMetrics
from edgeloop.rollout import tasks as rollout_tasks
from edgeloop.spec import PipelineSpec, load_spec
from edgeloop.training import tasks as train_tasks

DEMO = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "factory_maintenance.yaml"
SPEC = load_spec(DEMO)
RUN_AFTER = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def example(cls: type) -> Any:
    """An instance of a result dataclass with a plain value in every field (enough for its XCom round trip)."""
    plain: dict[Any, Any] = {str: "x", int: 1, float: 1.5, bool: False}
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[field.name]
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint):
            values[field.name] = None
        elif origin in (list, dict):
            values[field.name] = origin()
        else:
            values[field.name] = plain[hint]
    return cls(**values)


class Recorded:
    """What a recorder returns in place of the stage's result."""

    def to_xcom(self) -> dict[str, Any]:
        return {"recorded": True}

    def asset_extra(self) -> dict[str, Any]:
        return {"recorded": True}


@pytest.fixture
def record(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any, str], list[tuple[tuple[Any, ...], dict[str, Any]]]]:
    """Replace `module.name` with a recorder; the list it returns holds each call's args and kwargs."""

    def replace(module: Any, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

        def recorder(*args: Any, **kwargs: Any) -> Recorded:
            calls.append((args, kwargs))
            return Recorded()

        monkeypatch.setattr(module, name, recorder)
        return calls

    return replace


class FakeTI:
    def __init__(self, dag_id: str, task_id: str) -> None:
        self.dag_id, self.task_id = dag_id, task_id

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return None


class FakeRun:
    run_id = "manual__1"
    run_after = RUN_AFTER


def context(dag: Any, task_id: str, params: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"params": params or {}, "dag_run": FakeRun(), "ti": FakeTI(dag.dag_id, task_id), **extra}


def run_task(dag: Any, task_id: str, *upstream: Any, **kwargs: Any) -> Any:
    """Call the task's body as Airflow would; a body that yields asset events is run to its end."""
    out = dag.get_task(task_id).python_callable(*upstream, **kwargs)
    if isinstance(out, Iterator):
        try:
            while True:
                next(out)
        except StopIteration as stop:
            return stop.value
    return out


def metrics_of(dag: Any, task_id: str) -> TaskMetrics:
    return TaskMetrics(gateway=None, dag_id=dag.dag_id, task_id=task_id)


@pytest.fixture(autouse=True)
def no_pushgateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGELOOP_PUSHGATEWAY_URL", raising=False)


def spec_of(args: tuple[Any, ...]) -> PipelineSpec:
    spec: PipelineSpec = args[0]
    return spec


def test_ingest_topic_reads_its_budget_and_the_lost_offsets_choice_from_the_params(record: Any) -> None:
    calls = record(ingest_tasks, "ingest_topic")
    dag = stages.build_ingest(SPEC)
    params = {"max_records": 7, "accept_lost_offsets": 1}
    assert run_task(dag, "ingest_topic", topic="telemetry", **context(dag, "ingest_topic", params)) == {
        "recorded": True
    }
    [(args, kwargs)] = calls
    assert spec_of(args) is SPEC and args[2] == "telemetry"
    assert kwargs == {"max_records": 7, "accept_lost_offsets": True, "metrics": metrics_of(dag, "ingest_topic")}


def test_ingest_publish_reads_every_topics_result(record: Any) -> None:
    calls = record(ingest_tasks, "publish")
    dag = stages.build_ingest(SPEC)
    result = example(ingest_tasks.TopicIngested)
    assert run_task(dag, "publish", [result.to_xcom(), result.to_xcom()]) == {"recorded": True}
    [(args, _)] = calls
    assert list(args[0]) == [result, result]


def test_the_drift_tasks_hand_on_the_run_and_the_check(record: Any) -> None:
    checks, publishes, renders = (
        record(drift_tasks, "check_drift"),
        record(drift_tasks, "publish_alerts"),
        record(drift_tasks, "render_reports"),
    )
    dag = stages.build_drift(SPEC)
    run_task(dag, "check_drift", **context(dag, "check_drift"))
    check = example(drift_tasks.DriftCheck)
    run_task(dag, "publish_alerts", check.to_xcom(), **context(dag, "publish_alerts"))
    run_task(dag, "render_reports", **context(dag, "render_reports"))
    assert checks[0][1] == {"run_id": "manual__1", "now": RUN_AFTER}
    assert publishes[0][0][2] == check
    assert publishes[0][1] == {"now": RUN_AFTER, "metrics": metrics_of(dag, "publish_alerts")}
    assert renders[0][1] == {"run_id": "manual__1"}


def test_the_annotate_tasks_read_the_alert_the_params_and_the_wait(record: Any) -> None:
    selects, opens, exports = (
        record(annotation_tasks, "select_batch"),
        record(annotation_tasks, "open_batch"),
        record(annotation_tasks, "export_dataset"),
    )
    dag = stages.build_annotate(SPEC)
    drift = stages.stage_asset(SPEC, "drift")
    event = types.SimpleNamespace(extra={"payload": {"alert_id": "a1"}})
    events = {"triggering_asset_events": {drift: [event]}}
    run_task(dag, "select_batch", **context(dag, "select_batch", {"group": "line-canary", "size": 5}, **events))
    selected, waited = example(annotation_tasks.BatchSelected), example(annotation_tasks.BatchWaited)
    run_task(dag, "open_batch", selected.to_xcom(), **context(dag, "open_batch"))
    assert run_task(dag, "export_dataset", waited.to_xcom(), **context(dag, "export_dataset")) == {"recorded": True}
    kwargs = selects[0][1]
    assert kwargs["alert"] == {"alert_id": "a1"} and kwargs["group"] == "line-canary" and kwargs["size"] == 5
    assert kwargs["run_id"] == "manual__1"
    assert opens[0][0][2] == selected and opens[0][1] == {"metrics": metrics_of(dag, "open_batch")}
    assert exports[0][0][2] == waited and exports[0][1] == {"metrics": metrics_of(dag, "export_dataset")}


def test_the_train_tasks_read_the_version_the_budget_and_each_previous_result(record: Any) -> None:
    builds, trains, registers, gates, announces = (
        record(train_tasks, "build_dataset"),
        record(train_tasks, "train_model"),
        record(train_tasks, "register_challenger"),
        record(train_tasks, "evaluation_gate"),
        record(train_tasks, "announce_model"),
    )
    dag = stages.build_train(SPEC)
    curated = stages.stage_asset(SPEC, "curated")
    events = {"triggering_asset_events": {curated: [types.SimpleNamespace(extra={"version": "v9"})]}}
    run_task(dag, "build_dataset", **context(dag, "build_dataset", {"dataset_version": None}, **events))
    built = example(train_tasks.DatasetBuilt)
    run_task(dag, "train_model", built.to_xcom(), **context(dag, "train_model", {"search_budget": 3}))
    trained, registered = example(train_tasks.ModelTrained), example(train_tasks.ChallengerRegistered)
    run_task(dag, "register_challenger", trained.to_xcom())
    run_task(dag, "evaluation_gate", registered.to_xcom(), **context(dag, "evaluation_gate"))
    decision = example(train_tasks.GateDecision)
    assert run_task(dag, "announce_model", decision.to_xcom()) == {"recorded": True}
    assert builds[0][0][2] == "v9"
    assert trains[0][0][2] == built
    assert trains[0][1] == {"search_budget": 3, "metrics": metrics_of(dag, "train_model")}
    assert registers[0][0][2] == trained
    assert gates[0][0][2] == registered and gates[0][1] == {"metrics": metrics_of(dag, "evaluation_gate")}
    assert announces[0][0][0] == decision


def test_the_rollout_tasks_read_the_plan_and_the_run(record: Any) -> None:
    plans, applies, promotes, rollbacks = (
        record(rollout_tasks, "plan"),
        record(rollout_tasks, "apply_wave"),
        record(rollout_tasks, "promote"),
        record(rollout_tasks, "rollback"),
    )
    dag = stages.build_rollout(SPEC)
    params = {"model_version": "4"}
    plan_context = context(dag, "plan", params, triggering_asset_events={"e": 1})
    run_task(dag, "plan", **plan_context)
    planned = example(rollout_tasks.RolloutPlanned)
    apply_context = context(dag, "apply_wave_1")
    run_task(dag, "apply_wave_1", planned.to_xcom(), **apply_context)
    run_task(dag, "promote", planned.to_xcom(), **context(dag, "promote"))
    assert run_task(dag, "rollback", planned.to_xcom(), **context(dag, "rollback")) is None
    assert plans[0][0][2] == params and plans[0][1] == {"run": plan_context["dag_run"], "events": {"e": 1}}
    assert applies[0][0][2:] == (planned, 1) and applies[0][1]["context"] == apply_context
    assert promotes[0][0][2] == planned and promotes[0][1] == {"metrics": metrics_of(dag, "promote")}
    assert rollbacks[0][0][2] == planned and rollbacks[0][1]["metrics"] == metrics_of(dag, "rollback")


def test_the_fleet_health_tasks_hand_on_the_report(record: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeloop import connections

    computes, publishes = record(fleet_tasks, "compute_health"), record(fleet_tasks, "publish_device_alerts")
    monkeypatch.setattr(connections, "control_trusted_keys", lambda: "trusted")
    dag = stages.build_fleet_health(SPEC)
    run_task(dag, "compute_health", **context(dag, "compute_health"))
    report = example(fleet_tasks.HealthReport)
    run_task(dag, "publish_device_alerts", report.to_xcom())
    assert computes[0][0][2] == "trusted" and computes[0][1] == {"metrics": metrics_of(dag, "compute_health")}
    assert publishes[0][0][2] == report
