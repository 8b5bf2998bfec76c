"""One builder per stage: the shape, schedule, assets and params of each DAG.

Each task body is one call: a `run_*` function of the stage's `tasks.py` reads the task's inputs
from the Airflow context and the previous task's XCom, and its typed result goes on as XCom
(`to_xcom()`: keys and counts). The `tasks.py` modules import their heavy libraries inside their
functions, so importing them here keeps parsing fast; ingest's package is the exception and is
imported inside its tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from importlib import import_module
from typing import Any

from airflow.sdk import (
    DAG,
    Asset,
    AssetOrTimeSchedule,
    AssetWatcher,
    CronTriggerTimetable,
    DeltaTriggerTimetable,
    Metadata,
    Param,
    task,
)

from edgeloop.annotation import tasks as annotation_tasks
from edgeloop.drift import tasks as drift_tasks
from edgeloop.drift.link import DriftReportLink
from edgeloop.events import AlertTrigger
from edgeloop.fleet import tasks as fleet_tasks
from edgeloop.rollout import tasks as rollout_tasks
from edgeloop.spec import STAGE_SUMMARIES, PipelineSpec, parse_schedule
from edgeloop.training import tasks as train_tasks

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
INGEST_TASKS = "edgeloop.ingest.tasks"  # imported when an ingest task runs: its package is heavy to import


def stage_asset(spec: PipelineSpec, stage: str) -> Asset:
    """The asset named `<pipeline>.<stage>`: `raw`, `curated` and `model` are what a stage made; `drift` and
    `backlog` are alerts of that kind on Kafka (from the pipeline's DAGs, devices or anyone else), watched.

    URIs use the `x-edgeloop://` scheme on purpose: an `s3://` URI (any non `x-` scheme) makes Airflow load
    every provider's URI handlers, boto3 included, which costs more than the whole DAG file. The real
    location travels in the asset's extra.
    """
    watchers = []
    if stage in ("drift", "backlog"):
        alerts = spec.topic("alerts")
        trigger = AlertTrigger(
            topics=[alerts], pipeline=spec.name, kinds=[stage], kafka_config_id=spec.connections.kafka
        )
        watchers.append(AssetWatcher(name=f"{spec.name}_{stage}_alerts", trigger=trigger))
        location = f"kafka://{alerts}"
    else:
        location = f"models:/{spec.registry.model_name}" if stage == "model" else spec.asset_uri(stage)
    name, uri = f"{spec.name}.{stage}", f"x-edgeloop://{spec.name}/{stage}"
    return Asset(name, uri, group="edgeloop", extra={"location": location}, watchers=watchers)


def timetable(schedule: str) -> CronTriggerTimetable | DeltaTriggerTimetable:
    parsed = parse_schedule(schedule)
    if isinstance(parsed, timedelta):
        return DeltaTriggerTimetable(parsed)
    return CronTriggerTimetable(parsed, timezone="UTC")


def _dag(spec: PipelineSpec, stage: str, schedule: Any, params: dict[str, Param] | None = None, **kwargs: Any) -> DAG:
    doc = f"### {spec.name}: {stage}\n\n{STAGE_SUMMARIES[stage]}\n\n{spec.description}".strip()
    return DAG(
        dag_id=f"{spec.name}__{stage}",
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["edgeloop", spec.name, stage],
        doc_md=doc,
        description=STAGE_SUMMARIES[stage],
        params=params or {},
        default_args={"owner": spec.owner, "retries": spec.retries, "retry_delay": spec.retry_delay},
        **kwargs,
    )


def _asset_events(context: Any, asset: Asset) -> list[Any]:
    """The events of `asset` that triggered this run (none for a manual or timed run)."""
    return list((context.get("triggering_asset_events") or {}).get(asset) or [])


def _named(body: Callable[..., Any], task_id: str, **decorator: Any) -> Any:
    body.__name__ = body.__qualname__ = task_id
    return task(task_id=task_id, **decorator)(body)


def _call_task(
    spec: PipelineSpec, run: Callable[..., Any], *args: Any, ctx: bool = True, events: Asset | None = None, **kw: Any
) -> Any:
    """A `@task` (id: `run`'s name without `run_`, or `task_id`) whose body is one call and returns its XCom (a dict,
    so `multiple_outputs` as before): `run(spec, *upstream, *args[, the run's events of `events`][, context if ctx])`.
    """

    def body(*upstream: Any, **airflow_context: Any) -> dict[str, Any]:
        inputs = [*upstream, *args, *([_asset_events(airflow_context, events)] if events is not None else [])]
        xcom: dict[str, Any] = run(spec, *inputs, *([airflow_context] if ctx else [])).to_xcom()
        return xcom

    return _named(body, kw.pop("task_id", run.__name__.removeprefix("run_")), **kw)


def _outlet_task(task_id: str, asset: Asset, call: Callable[[Any, Any], Any], extra: str = "to_xcom") -> Any:
    """A `@task` making `asset`: `call(previous XCom, context)`; the result's `extra()` (by name) is the event extra."""

    def body(previous: Any, **context: Any) -> Any:
        result = call(previous, context)
        yield Metadata(asset, extra=getattr(result, extra)())
        return result.to_xcom()

    return _named(body, task_id, outlets=[asset])


def build_ingest(spec: PipelineSpec) -> DAG:
    params = {
        "topics": Param(list(spec.topics.ingest), type="array", description="topics to ingest (short names)"),
        "max_records": Param(spec.ingest.max_records, type="integer", minimum=1, description="record budget per topic"),
        "accept_lost_offsets": Param(
            False, type="boolean", description="go on past offsets Kafka deleted (retention) before they were ingested"
        ),
    }
    backlog, raw = stage_asset(spec, "backlog"), stage_asset(spec, "raw")
    schedule = AssetOrTimeSchedule(timetable=timetable(spec.ingest.schedule or "15m"), assets=[backlog])
    with _dag(spec, "ingest", schedule, params) as dag:

        @task
        def plan(params: dict[str, Any] | None = None) -> list[str]:
            from edgeloop.ingest import tasks

            return tasks.plan(spec, (params or {}).get("topics"))

        @task(map_index_template="{{ task.op_kwargs['topic'] }}")
        def ingest_topic(topic: str, **context: Any) -> dict[str, Any]:
            from edgeloop.ingest import tasks

            return tasks.run_ingest_topic(spec, topic, context).to_xcom()

        publish = _outlet_task("publish", raw, lambda results, _: import_module(INGEST_TASKS).run_publish(results))
        publish(ingest_topic.expand(topic=plan()))
    return dag


def build_drift(spec: PipelineSpec) -> DAG:
    schedule = AssetOrTimeSchedule(timetable=timetable(spec.drift.schedule or "1h"), assets=[stage_asset(spec, "raw")])
    with _dag(spec, "drift", schedule) as dag:
        checked = _call_task(spec, drift_tasks.run_check_drift)()
        # the "Drift report" button of the task in the UI (a decorated task takes links this way)
        checked.operator.operator_extra_links = (DriftReportLink(),)
        doc = "The Evidently reports of the scopes without drift, off the alert's path."
        published = _call_task(spec, drift_tasks.run_publish_alerts)(checked)
        published >> _call_task(spec, drift_tasks.run_render_reports, doc_md=doc)()
    return dag


def build_annotate(spec: PipelineSpec) -> DAG:
    from edgeloop.annotation.sensor import AnnotationBatchSensor

    params = {
        "group": Param(None, type=["null", "string"], enum=[None, *[g.name for g in spec.groups]]),
        "size": Param(spec.annotation.batch_size, type="integer", minimum=1),
    }
    drift, curated = stage_asset(spec, "drift"), stage_asset(spec, "curated")
    with _dag(spec, "annotate", [drift], params) as dag:
        selected = _call_task(spec, annotation_tasks.run_select_batch, events=drift)()
        opened = _call_task(spec, annotation_tasks.run_open_batch)(selected)
        waited = AnnotationBatchSensor.for_spec(spec, batch=opened)
        export = partial(annotation_tasks.run_export_dataset, spec)
        _outlet_task("export_dataset", curated, export, extra="asset_extra")(waited.output)
    return dag


def build_train(spec: PipelineSpec) -> DAG:
    params = {
        "dataset_version": Param(None, type=["null", "string"], description="curated version; default: newest"),
        "search_budget": Param(spec.training.search_budget, type="integer", minimum=1, maximum=500),
    }
    curated = stage_asset(spec, "curated")
    with _dag(spec, "train", [curated], params) as dag:
        built = _call_task(spec, train_tasks.run_build_dataset, events=curated)()
        trained = _call_task(spec, train_tasks.run_train_model)(built)
        registered = _call_task(spec, train_tasks.run_register_challenger, ctx=False)(trained)
        decision = _call_task(spec, train_tasks.run_evaluation_gate)(registered)
        model = stage_asset(spec, "model")
        _outlet_task("announce_model", model, lambda d, _: train_tasks.run_announce_model(d))(decision)
    return dag


def build_rollout(spec: PipelineSpec) -> DAG:
    from edgeloop.rollout.operators import RolloutGateOperator
    from edgeloop.rollout.plan import spec_waves

    reason = "an admin's manual run, with a reason"
    params = {
        "model_version": Param(None, type=["null", "string"], description="registry version; default: from the event"),
        "groups": Param([g.name for g in spec.groups], type="array"),
        "skip_canary_reason": Param("", type="string", description=f"leaving out the canary wave: {reason}"),
        "override_reason": Param(
            "", type="string", description=f"rolling out a version the evaluation gate did not pass: {reason}"
        ),
    }
    tasks = rollout_tasks
    with _dag(spec, "rollout", [stage_asset(spec, "model")], params) as dag:
        planned = _call_task(spec, tasks.run_plan)()
        shadow = _call_task(spec, tasks.run_shadow, task_id=tasks.SHADOW_TASK_ID)
        previous: Any = shadow(planned) if spec.rollout.shadow.enabled else planned
        approval_pending = spec.rollout.approval_required
        for wave in spec_waves(spec):
            if approval_pending and not wave.canary:
                from edgeloop.rollout.approval import RolloutApprovalOperator

                approval_pending, previous = False, previous >> RolloutApprovalOperator.for_spec(spec)
            apply = _call_task(
                spec, tasks.run_apply_wave, wave.index, task_id=tasks.apply_task_id(wave), trigger_rule="none_failed"
            )
            previous = previous >> apply(planned) >> RolloutGateOperator.for_wave(spec, wave)

        @task(trigger_rule="all_done")
        def rollback(plan: dict[str, Any], **context: Any) -> None:
            tasks.run_rollback(spec, plan, context)

        previous >> [_call_task(spec, tasks.run_promote, trigger_rule="all_done")(planned), rollback(planned)]
    return dag


def build_fleet_health(spec: PipelineSpec) -> DAG:
    with _dag(spec, "fleet_health", timetable(spec.fleet_health.schedule or "5m")) as dag:
        report = _call_task(spec, fleet_tasks.run_compute_health)()
        _call_task(spec, fleet_tasks.run_publish_device_alerts, ctx=False)(report)
    return dag


def build_config_push(spec: PipelineSpec) -> DAG:
    from edgeloop.fleet.waiting import WaitForAssignmentOperator

    params = {
        "group": Param(spec.groups[0].name, type="string", enum=[g.name for g in spec.groups]),
        "config": Param({}, type="object", description="configuration to assign to the group"),
        "timeout_seconds": Param(600, type="integer", minimum=10),
    }
    with _dag(spec, "config_push", None, params) as dag:
        pushed = _call_task(spec, fleet_tasks.run_publish_assignment)()
        pushed >> WaitForAssignmentOperator(
            task_id="wait_until_applied", pipeline=spec.name, push_task_id="publish_assignment"
        )
    return dag
