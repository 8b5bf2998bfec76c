"""One builder per stage: the shape, schedule, assets and params of each DAG.

Task bodies are thin: they import the stage's logic inside the function (so that
parsing stays fast), call one function, and return a small dict of keys and counts.
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
    Param,
    task,
)

from edgeloop.events import AlertTrigger
from edgeloop.spec import PipelineSpec, parse_schedule

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


_STAGE_DOCS = {
    "ingest": "Move device records from Kafka into object storage as Parquet, exactly once.",
    "drift": "Check the recent window against the champion's training data with Evidently, per edge group.",
    "annotate": "Select the samples worth labelling, open a Label Studio batch, wait, export a curated dataset.",
    "train": "Retrain with a bounded hyperparameter search, register the challenger and run the evaluation gate.",
    "rollout": "Roll the new model out to edge groups in waves with health gates and automatic rollback.",
    "fleet_health": "Compute per-group fleet health from heartbeats and error reports; alert on thresholds.",
    "config_push": "Push a config or model assignment to a group and wait until its devices report it applied.",
}


def _dag(spec: PipelineSpec, stage: str, schedule: Any, params: dict[str, Param] | None = None, **kwargs: Any) -> DAG:
    doc = f"### {spec.name}: {stage}\n\n{_STAGE_DOCS[stage]}\n\n{spec.description}".strip()
    return DAG(
        dag_id=f"{spec.name}__{stage}",
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["edgeloop", spec.name, stage],
        doc_md=doc,
        description=_STAGE_DOCS[stage],
        params=params or {},
        default_args={"owner": spec.owner, "retries": spec.retries, "retry_delay": spec.retry_delay},
        **kwargs,
    )


def _not_built(stage: str) -> dict[str, Any]:
    """Stages that have no logic yet end as skipped with a reason, never as a fake success."""
    from airflow.exceptions import AirflowSkipException

    raise AirflowSkipException(f"the {stage} stage is not built in this version of edgeloop")


# --- builders -------------------------------------------------------------------------


def build_ingest(spec: PipelineSpec) -> DAG:
    params = {
        "topics": Param(list(spec.topics.ingest), type="array", description="topics to ingest (short names)"),
        "max_records": Param(spec.ingest.max_records, type="integer", minimum=1, description="record budget per topic"),
    }
    schedule = AssetOrTimeSchedule(timetable=timetable(spec.ingest.schedule or "15m"), assets=[backlog_asset(spec)])
    with _dag(spec, "ingest", schedule, params) as dag:

        @task
        def plan(params: dict[str, Any] | None = None) -> list[str]:
            topics = (params or {}).get("topics") or list(spec.topics.ingest)
            unknown = sorted(set(topics) - {"telemetry", "health", "errors"})
            if unknown:
                raise ValueError(f"params.topics: {unknown} are not ingestible topics (telemetry, health, errors)")
            return list(topics)

        @task(map_index_template="{{ task.op_kwargs['topic'] }}")
        def ingest_topic(topic: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
            return _not_built("ingest")

        @task(outlets=[raw_asset(spec)], trigger_rule="all_done")
        def publish(results: list[dict[str, Any]]) -> dict[str, Any]:
            return _not_built("ingest")

        publish(ingest_topic.expand(topic=plan()))
    return dag


def build_drift(spec: PipelineSpec) -> DAG:
    schedule = AssetOrTimeSchedule(timetable=timetable(spec.drift.schedule or "1h"), assets=[raw_asset(spec)])
    with _dag(spec, "drift", schedule) as dag:

        @task
        def check_drift() -> dict[str, Any]:
            return _not_built("drift")

        @task
        def publish_alerts(result: dict[str, Any]) -> dict[str, Any]:
            return _not_built("drift")

        publish_alerts(check_drift())
    return dag


def build_annotate(spec: PipelineSpec) -> DAG:
    params = {
        "group": Param(None, type=["null", "string"], enum=[None, *[g.name for g in spec.groups]]),
        "size": Param(spec.annotation.batch_size, type="integer", minimum=1),
    }
    with _dag(spec, "annotate", [drift_asset(spec)], params) as dag:

        @task
        def select_batch() -> dict[str, Any]:
            return _not_built("annotate")

        @task
        def open_batch(selection: dict[str, Any]) -> dict[str, Any]:
            return _not_built("annotate")

        @task
        def wait_for_labels(batch: dict[str, Any]) -> dict[str, Any]:
            return _not_built("annotate")

        @task(outlets=[curated_asset(spec)])
        def export_dataset(batch: dict[str, Any]) -> dict[str, Any]:
            return _not_built("annotate")

        export_dataset(wait_for_labels(open_batch(select_batch())))
    return dag


def build_train(spec: PipelineSpec) -> DAG:
    params = {
        "dataset_version": Param(None, type=["null", "string"], description="curated version; default: newest"),
        "search_budget": Param(spec.training.search_budget, type="integer", minimum=1, maximum=500),
    }
    with _dag(spec, "train", [curated_asset(spec)], params) as dag:

        @task
        def build_dataset() -> dict[str, Any]:
            return _not_built("train")

        @task
        def train_model(dataset: dict[str, Any]) -> dict[str, Any]:
            return _not_built("train")

        @task
        def register_challenger(run: dict[str, Any]) -> dict[str, Any]:
            return _not_built("train")

        @task(outlets=[model_asset(spec)])
        def evaluation_gate(version: dict[str, Any]) -> dict[str, Any]:
            return _not_built("train")

        evaluation_gate(register_challenger(train_model(build_dataset())))
    return dag


def build_rollout(spec: PipelineSpec) -> DAG:
    from edgeloop.rollout.operators import RolloutGateOperator
    from edgeloop.rollout.plan import spec_waves

    params = {
        "model_version": Param(None, type=["null", "string"], description="registry version; default: from the event"),
        "groups": Param([g.name for g in spec.groups], type="array"),
        "skip_canary_reason": Param("", type="string", description="leaving out the canary wave needs a reason"),
    }
    waves = spec_waves(spec)
    with _dag(spec, "rollout", [model_asset(spec)], params) as dag:

        @task
        def plan(**context: Any) -> dict[str, Any]:
            from edgeloop.connections import PipelineClients
            from edgeloop.rollout.steps import model_version_from_events, plan_step

            clients = PipelineClients(spec)
            run = context["dag_run"]
            return plan_step(
                spec,
                clients.s3(),
                clients.mlflow_uri(),
                run.run_id,
                context["params"],
                model_version_from_events(context.get("triggering_asset_events")),
                started_by=f"{run.run_type}",
            )

        def apply_task(index: int, name: str) -> Any:
            @task(task_id=f"apply_{name}", trigger_rule="none_failed")
            def apply(plan: dict[str, Any], **context: Any) -> dict[str, Any]:
                from airflow.exceptions import AirflowSkipException

                from edgeloop.connections import PipelineClients
                from edgeloop.rollout.steps import apply_step

                wave = next((w for w in plan["waves"] if w["index"] == index), None)
                if not wave or not wave["groups"]:
                    raise AirflowSkipException(f"no group of wave {index} is in this rollout")
                return apply_step(spec, PipelineClients(spec).s3(), plan, index, context)

            return apply

        planned = plan()
        previous: Any = planned
        gate_ids = []
        apply_ids = []
        for wave in waves:
            if (
                spec.rollout.approval_required
                and not wave.canary
                and not any("approve" in t for t in (dag.task_ids or []))
            ):
                from airflow.providers.standard.operators.hitl import ApprovalOperator

                approve_production = ApprovalOperator(
                    task_id="approve_production",
                    subject=f"{spec.name}: roll out to production?",
                    body="Canary gate: {{ ti.xcom_pull(task_ids='gate_canary') | tojson }}",
                    trigger_rule="none_failed",
                )
                previous >> approve_production
                previous = approve_production
            applied = apply_task(wave.index, wave.name)(planned)
            gate = RolloutGateOperator(
                task_id=f"gate_{wave.name}",
                pipeline=spec.name,
                wave_index=wave.index,
                apply_task_id=f"apply_{wave.name}",
                soak_seconds=spec.rollout.soak.total_seconds(),
                trigger_rule="none_failed",
            )
            previous >> applied >> gate
            previous = gate
            gate_ids.append((wave.index, gate.task_id))
            apply_ids.append((wave.index, f"apply_{wave.name}"))

        def pulled(ti: Any, ids: list[tuple[int, str]]) -> dict[int, Any]:
            return {index: ti.xcom_pull(task_ids=task_id) for index, task_id in ids}

        @task(trigger_rule="all_done")
        def promote(plan: dict[str, Any], **context: Any) -> dict[str, Any]:
            from airflow.exceptions import AirflowSkipException

            from edgeloop.connections import PipelineClients
            from edgeloop.rollout.steps import all_gates_passed, promote_step, record_gate

            clients = PipelineClients(spec)
            gates = pulled(context["ti"], gate_ids)
            for gate in gates.values():
                if gate:
                    record_gate(spec, clients.s3(), plan["rollout_id"], gate)
            if not all_gates_passed(plan, gates):
                raise AirflowSkipException("not every wave passed its gate: nothing to promote")
            record = promote_step(spec, clients.s3(), clients.mlflow_uri(), plan, gates)
            return {"rollout_id": plan["rollout_id"], "champion": record["champion"]}

        @task(trigger_rule="all_done")
        def rollback(plan: dict[str, Any], **context: Any) -> dict[str, Any]:
            from airflow.exceptions import AirflowFailException, AirflowSkipException

            from edgeloop.connections import PipelineClients
            from edgeloop.rollout.steps import all_gates_passed, record_gate, rollback_step

            clients = PipelineClients(spec)
            gates = pulled(context["ti"], gate_ids)
            if all_gates_passed(plan, gates):
                raise AirflowSkipException("every wave passed its gate: nothing to roll back")
            for gate in gates.values():
                if gate:
                    record_gate(spec, clients.s3(), plan["rollout_id"], gate)
            record = rollback_step(
                spec, clients.s3(), clients.kafka(), plan, pulled(context["ti"], apply_ids), gates, context
            )
            raise AirflowFailException(
                f"rollout {plan['rollout_id']} rolled back groups {record['rolled_back_groups']} "
                f"to version {record['previous_version']}: {'; '.join(record['reasons'])}"
            )

        previous >> [promote(planned), rollback(planned)]
    return dag


def build_fleet_health(spec: PipelineSpec) -> DAG:
    with _dag(spec, "fleet_health", timetable(spec.fleet_health.schedule or "5m")) as dag:

        @task
        def compute_health() -> dict[str, Any]:
            return _not_built("fleet_health")

        @task
        def publish_device_alerts(report: dict[str, Any]) -> dict[str, Any]:
            return _not_built("fleet_health")

        publish_device_alerts(compute_health())
    return dag


def build_config_push(spec: PipelineSpec) -> DAG:
    params = {
        "group": Param(spec.groups[0].name, type="string", enum=[g.name for g in spec.groups]),
        "config": Param({}, type="object", description="configuration to assign to the group"),
        "timeout_seconds": Param(600, type="integer", minimum=10),
    }
    with _dag(spec, "config_push", None, params) as dag:

        @task
        def publish_assignment() -> dict[str, Any]:
            return _not_built("config_push")

        @task
        def wait_until_applied(assignment: dict[str, Any]) -> dict[str, Any]:
            return _not_built("config_push")

        wait_until_applied(publish_assignment())
    return dag
