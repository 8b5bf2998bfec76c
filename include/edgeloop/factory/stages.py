"""One builder per stage: the shape, schedule, assets and params of each DAG.

Each task body is one call: a `run_*` function of the stage's `tasks.py` reads the task's inputs
from the Airflow context and the previous task's XCom, and its typed result goes on as XCom
(`to_xcom()`: keys and counts). The `tasks.py` modules import their heavy libraries inside their
functions, so importing them here keeps parsing fast; ingest's package is the exception and is
imported inside its tasks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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


# --- assets: one place for the names that chain the stages ----------------------


# Asset URIs use the `x-edgeloop://` scheme on purpose: an `s3://` URI (any non `x-` scheme) makes
# Airflow load every provider's URI handlers, boto3 included, which costs more than the whole DAG file.
# The real location travels in the asset's extra.


def _asset(spec: PipelineSpec, stage: str, location: str, **kwargs: Any) -> Asset:
    return Asset(
        name=f"{spec.name}.{stage}",
        uri=f"x-edgeloop://{spec.name}/{stage}",
        group="edgeloop",
        extra={"location": location},
        **kwargs,
    )


def raw_asset(spec: PipelineSpec) -> Asset:
    return _asset(spec, "raw", spec.asset_uri("raw"))


def curated_asset(spec: PipelineSpec) -> Asset:
    return _asset(spec, "curated", spec.asset_uri("curated"))


def model_asset(spec: PipelineSpec) -> Asset:
    return _asset(spec, "model", f"models:/{spec.registry.model_name}")


def _alert_watcher(spec: PipelineSpec, kind: str) -> AssetWatcher:
    trigger = AlertTrigger(
        topics=[spec.topic("alerts")],
        pipeline=spec.name,
        kinds=[kind],
        kafka_config_id=spec.connections.kafka,
    )
    return AssetWatcher(name=f"{spec.name}_{kind}_alerts", trigger=trigger)


def drift_asset(spec: PipelineSpec) -> Asset:
    """Drift alerts on Kafka, from the drift DAG or from anyone else, become events of this asset."""
    return _asset(spec, "drift", f"kafka://{spec.topic('alerts')}", watchers=[_alert_watcher(spec, "drift")])


def backlog_asset(spec: PipelineSpec) -> Asset:
    """A device group announcing buffered data (e.g. after reconnecting) starts an ingest run."""
    return _asset(spec, "backlog", f"kafka://{spec.topic('alerts')}", watchers=[_alert_watcher(spec, "backlog")])


# --- common DAG settings -------------------------------------------------------------


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


# --- builders -------------------------------------------------------------------------


def build_ingest(spec: PipelineSpec) -> DAG:
    params = {
        "topics": Param(list(spec.topics.ingest), type="array", description="topics to ingest (short names)"),
        "max_records": Param(spec.ingest.max_records, type="integer", minimum=1, description="record budget per topic"),
        "accept_lost_offsets": Param(
            False, type="boolean", description="go on past offsets Kafka deleted (retention) before they were ingested"
        ),
    }
    schedule = AssetOrTimeSchedule(timetable=timetable(spec.ingest.schedule or "15m"), assets=[backlog_asset(spec)])
    with _dag(spec, "ingest", schedule, params) as dag:

        @task
        def plan(params: dict[str, Any] | None = None) -> list[str]:
            from edgeloop.ingest import tasks

            return tasks.plan(spec, (params or {}).get("topics"))

        @task(map_index_template="{{ task.op_kwargs['topic'] }}")
        def ingest_topic(topic: str, **context: Any) -> dict[str, Any]:
            from edgeloop.ingest import tasks

            return tasks.run_ingest_topic(spec, topic, context).to_xcom()

        @task(outlets=[raw_asset(spec)])
        def publish(results: list[dict[str, Any]]) -> Any:
            from edgeloop.ingest import tasks

            extra = tasks.run_publish(results).to_xcom()
            yield Metadata(raw_asset(spec), extra=extra)
            return extra

        publish(ingest_topic.expand(topic=plan()))
    return dag


def build_drift(spec: PipelineSpec) -> DAG:
    schedule = AssetOrTimeSchedule(timetable=timetable(spec.drift.schedule or "1h"), assets=[raw_asset(spec)])
    with _dag(spec, "drift", schedule) as dag:

        @task
        def check_drift(**context: Any) -> dict[str, Any]:
            return drift_tasks.run_check_drift(spec, context).to_xcom()

        @task
        def publish_alerts(result: dict[str, Any], **context: Any) -> dict[str, Any]:
            return drift_tasks.run_publish_alerts(spec, result, context).to_xcom()

        @task
        def render_reports(**context: Any) -> dict[str, Any]:
            """The Evidently reports of the scopes without drift, off the alert's path."""
            return drift_tasks.run_render_reports(spec, context).to_xcom()

        checked = check_drift()
        # the "Drift report" button of the task in the UI (a decorated task takes links this way)
        checked.operator.operator_extra_links = (DriftReportLink(),)  # type: ignore[attr-defined]
        publish_alerts(checked) >> render_reports()
    return dag


def build_annotate(spec: PipelineSpec) -> DAG:
    from edgeloop.annotation.sensor import AnnotationBatchSensor

    params = {
        "group": Param(None, type=["null", "string"], enum=[None, *[g.name for g in spec.groups]]),
        "size": Param(spec.annotation.batch_size, type="integer", minimum=1),
    }
    drift = drift_asset(spec)
    with _dag(spec, "annotate", [drift], params) as dag:

        @task
        def select_batch(**context: Any) -> dict[str, Any]:
            return annotation_tasks.run_select_batch(spec, _asset_events(context, drift), context).to_xcom()

        @task
        def open_batch(selection: dict[str, Any], **context: Any) -> dict[str, Any]:
            return annotation_tasks.run_open_batch(spec, selection, context).to_xcom()

        @task(outlets=[curated_asset(spec)])
        def export_dataset(waited: dict[str, Any], **context: Any) -> Any:
            result = annotation_tasks.run_export_dataset(spec, waited, context)
            yield Metadata(curated_asset(spec), extra=result.asset_extra())
            return result.to_xcom()

        opened = open_batch(select_batch())
        waited = AnnotationBatchSensor.for_spec(spec, batch=opened)
        export_dataset(waited.output)
    return dag


def build_train(spec: PipelineSpec) -> DAG:
    params = {
        "dataset_version": Param(None, type=["null", "string"], description="curated version; default: newest"),
        "search_budget": Param(spec.training.search_budget, type="integer", minimum=1, maximum=500),
    }
    curated = curated_asset(spec)
    with _dag(spec, "train", [curated], params) as dag:

        @task
        def build_dataset(**context: Any) -> dict[str, Any]:
            return train_tasks.run_build_dataset(spec, _asset_events(context, curated), context).to_xcom()

        @task
        def train_model(dataset: dict[str, Any], **context: Any) -> dict[str, Any]:
            return train_tasks.run_train_model(spec, dataset, context).to_xcom()

        @task
        def register_challenger(trained: dict[str, Any]) -> dict[str, Any]:
            return train_tasks.run_register_challenger(spec, trained).to_xcom()

        @task
        def evaluation_gate(registered: dict[str, Any], **context: Any) -> dict[str, Any]:
            return train_tasks.run_evaluation_gate(spec, registered, context).to_xcom()

        @task(outlets=[model_asset(spec)])
        def announce_model(decision: dict[str, Any]) -> Any:
            extra = train_tasks.run_announce_model(decision).to_xcom()
            yield Metadata(model_asset(spec), extra=extra)
            return extra

        announce_model(evaluation_gate(register_challenger(train_model(build_dataset()))))
    return dag


def build_rollout(spec: PipelineSpec) -> DAG:
    from edgeloop.rollout.operators import RolloutGateOperator
    from edgeloop.rollout.plan import spec_waves

    params = {
        "model_version": Param(None, type=["null", "string"], description="registry version; default: from the event"),
        "groups": Param([g.name for g in spec.groups], type="array"),
        "skip_canary_reason": Param(
            "", type="string", description="leaving out the canary wave: an admin's manual run, with a reason"
        ),
        "override_reason": Param(
            "",
            type="string",
            description="rolling out a version the evaluation gate did not pass: an admin's manual run, with a reason",
        ),
    }
    tasks = rollout_tasks
    with _dag(spec, "rollout", [model_asset(spec)], params) as dag:

        @task
        def plan(**context: Any) -> dict[str, Any]:
            return tasks.run_plan(spec, context).to_xcom()

        @task(task_id=tasks.SHADOW_TASK_ID)
        def shadow(plan: dict[str, Any], **context: Any) -> dict[str, Any]:
            return tasks.run_shadow(spec, plan, context).to_xcom()

        def apply(index: int, task_id: str) -> Any:
            @task(task_id=task_id, trigger_rule="none_failed")
            def apply_wave(plan: dict[str, Any], **context: Any) -> dict[str, Any]:
                return tasks.run_apply_wave(spec, plan, index, context).to_xcom()

            return apply_wave

        @task(trigger_rule="all_done")
        def promote(plan: dict[str, Any], **context: Any) -> dict[str, Any]:
            return tasks.run_promote(spec, plan, context).to_xcom()

        @task(trigger_rule="all_done")
        def rollback(plan: dict[str, Any], **context: Any) -> None:
            tasks.run_rollback(spec, plan, context)

        planned = plan()
        previous: Any = shadow(planned) if spec.rollout.shadow.enabled else planned
        approval_pending = spec.rollout.approval_required
        for wave in spec_waves(spec):
            if approval_pending and not wave.canary:
                from edgeloop.rollout.approval import RolloutApprovalOperator

                approval_pending, previous = False, previous >> RolloutApprovalOperator.for_spec(spec)
            gate = RolloutGateOperator.for_wave(spec, wave)
            previous = previous >> apply(wave.index, tasks.apply_task_id(wave))(planned) >> gate
        previous >> [promote(planned), rollback(planned)]
    return dag


def build_fleet_health(spec: PipelineSpec) -> DAG:
    with _dag(spec, "fleet_health", timetable(spec.fleet_health.schedule or "5m")) as dag:

        @task
        def compute_health(**context: Any) -> dict[str, Any]:
            return fleet_tasks.run_compute_health(spec, context).to_xcom()

        @task
        def publish_device_alerts(report: dict[str, Any]) -> dict[str, Any]:
            return fleet_tasks.run_publish_device_alerts(spec, report).to_xcom()

        publish_device_alerts(compute_health())
    return dag


def build_config_push(spec: PipelineSpec) -> DAG:
    from edgeloop.fleet.waiting import WaitForAssignmentOperator

    params = {
        "group": Param(spec.groups[0].name, type="string", enum=[g.name for g in spec.groups]),
        "config": Param({}, type="object", description="configuration to assign to the group"),
        "timeout_seconds": Param(600, type="integer", minimum=10),
    }
    with _dag(spec, "config_push", None, params) as dag:

        @task
        def publish_assignment(**context: Any) -> dict[str, Any]:
            return fleet_tasks.run_publish_assignment(spec, context).to_xcom()

        pushed = publish_assignment()
        pushed >> WaitForAssignmentOperator(
            task_id="wait_until_applied", pipeline=spec.name, push_task_id="publish_assignment"
        )
    return dag
