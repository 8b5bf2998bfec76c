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
    Metadata,
    Param,
    task,
)

from edgeloop.drift.link import DriftReportLink, report_url
from edgeloop.events import AlertTrigger
from edgeloop.spec import INGESTIBLE, PipelineSpec, parse_schedule

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
    "drift": "Check the recent window per edge group with Evidently's drift tests against what the champion was "
    "trained for; alert; then render the reports of the scopes without drift.",
    "annotate": "Select the samples worth labelling, open a Label Studio batch, wait, export a curated dataset.",
    "train": "Retrain with a bounded hyperparameter search, register the challenger and run the evaluation gate.",
    "rollout": "Roll the new model out to edge groups in waves with health gates and automatic rollback.",
    "fleet_health": "Compute per-group fleet health from heartbeats and error reports; alert on thresholds.",
    "config_push": "Push a configuration (models go through the rollout) to a group and wait until it is applied.",
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


def push_metrics(spec: PipelineSpec, context: Any, fill: Any, **grouping: str) -> None:
    """Push one task's metrics to the Pushgateway; any metrics problem costs a warning, not the task."""
    import logging
    import os

    from edgeloop.metrics.push import BatchMetrics, grouping_key, push_batch_metrics

    gateway = os.environ.get("EDGELOOP_PUSHGATEWAY_URL")
    if not gateway:
        return
    ti = context["ti"]
    try:
        batch = BatchMetrics(spec)
        fill(batch)
        push_batch_metrics(batch, gateway, grouping_key(spec, ti.dag_id, ti.task_id, **grouping))
    except Exception as exc:  # the work is done and durable; a metrics problem must not fail or retry it
        logging.getLogger(__name__).warning("metrics not pushed: %s", exc)


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
            topics = (params or {}).get("topics") or list(spec.topics.ingest)
            unknown = sorted(set(topics) - set(INGESTIBLE))
            if unknown:
                raise ValueError(f"params.topics: {unknown} are not ingestible topics {list(INGESTIBLE)}")
            return list(topics)

        @task(map_index_template="{{ task.op_kwargs['topic'] }}")
        def ingest_topic(topic: str, **context: Any) -> dict[str, Any]:
            from edgeloop.connections import PipelineClients, control_trusted_keys
            from edgeloop.ingest import ingest_topic as move_records
            from edgeloop.ingest.frames import frame_codec
            from edgeloop.ingest.metrics import record_ingest_metrics
            from edgeloop.ingest.profiles import profile_codec

            clients = PipelineClients(spec)
            s3 = clients.s3()
            codec: Any = None  # the spec's JSON records
            if topic == "profiles":
                codec = profile_codec(spec, clients.kafka(), control_trusted_keys())
            elif topic == "frames":  # the claim check: each frame's PNG to its content address, then its row
                codec = frame_codec(spec, s3)
            result = move_records(
                spec,
                topic,
                consumer_config=clients.kafka(),
                s3=s3,
                codec=codec,
                max_records=int(context["params"].get("max_records") or spec.ingest.max_records),
                accept_lost_offsets=bool(context["params"].get("accept_lost_offsets")),
            )
            push_metrics(spec, context, lambda batch: record_ingest_metrics(batch, result), topic=spec.topic(topic))
            return result

        @task(outlets=[raw_asset(spec)])
        def publish(results: list[dict[str, Any]]) -> Any:
            from airflow.exceptions import AirflowSkipException

            from edgeloop.ingest.events import raw_event_extra

            extra = raw_event_extra(results)
            if not extra["records"]:
                raise AirflowSkipException("no new records: no raw asset event")
            yield Metadata(raw_asset(spec), extra=extra)
            return extra

        publish(ingest_topic.expand(topic=plan()))
    return dag


def build_drift(spec: PipelineSpec) -> DAG:
    schedule = AssetOrTimeSchedule(timetable=timetable(spec.drift.schedule or "1h"), assets=[raw_asset(spec)])
    with _dag(spec, "drift", schedule) as dag:

        @task
        def check_drift(**context: Any) -> dict[str, Any]:
            from airflow.exceptions import AirflowSkipException

            from edgeloop.connections import PipelineClients
            from edgeloop.drift.reference import champion_reference
            from edgeloop.drift.run import run_drift_check, seed_for
            from edgeloop.registry.aliases import champion_training_data
            from edgeloop.registry.client import mlflow_client

            clients = PipelineClients(spec)
            s3, bucket, run = clients.s3(), spec.storage.bucket, context["dag_run"]
            training = champion_training_data(mlflow_client(clients.mlflow_uri()), spec)
            if training is None:
                raise AirflowSkipException("skipped: no champion model yet, so no reference data to compare with")
            reference = champion_reference(s3, spec, training, seed=seed_for(run.run_id))
            result = run_drift_check(s3, bucket, spec, run.run_id, run.run_after, reference=reference)
            if str(result["status"]).startswith("skipped"):
                raise AirflowSkipException(str(result["status"]))
            return result

        @task
        def publish_alerts(result: dict[str, Any], **context: Any) -> dict[str, Any]:
            import json
            import time

            from edgeloop.connections import PipelineClients
            from edgeloop.drift.alert_state import confirm_published
            from edgeloop.drift.metrics import record_drift_metrics
            from edgeloop.drift.publish import publish_drift_alerts

            clients = PipelineClients(spec)
            s3 = clients.s3()
            ids = publish_drift_alerts(clients.kafka(), spec, result["publish"])
            confirm_published(s3, spec.storage.bucket, spec, ids, context["dag_run"].run_after)
            summary = json.loads(s3.get_object(Bucket=spec.storage.bucket, Key=result["summary_key"])["Body"].read())

            def fill(batch: Any) -> None:
                record_drift_metrics(batch, spec, summary)
                if ids:
                    batch.set("edgeloop_drift_last_alert_timestamp_seconds", time.time())
                batch.mark_success("drift")

            push_metrics(spec, context, fill)
            # the drifted scopes' reports exist now; the others' once render_reports has run
            reports = {**(result.get("pending_reports") or {}), **(result.get("reports") or {})}
            return {
                "alert_ids": ids,
                "drifted_groups": result.get("drifted_groups"),
                "summary_key": result["summary_key"],
                "reports": reports,
                # open in the Airflow UI's host: the plugin serves reports behind the Airflow login
                "report_links": {label: report_url(spec.name, key) for label, key in reports.items()},
            }

        @task
        def render_reports(**context: Any) -> dict[str, Any]:
            """The Evidently reports of the scopes without drift, off the alert's path."""
            from edgeloop.connections import PipelineClients
            from edgeloop.drift.reports import render_pending_reports

            s3 = PipelineClients(spec).s3()
            return render_pending_reports(s3, spec.storage.bucket, spec, context["dag_run"].run_id)

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
            from datetime import UTC, datetime

            from airflow.exceptions import AirflowSkipException

            from edgeloop.annotation.selection import EmptySelection, select_batch, selection_request
            from edgeloop.connections import PipelineClients

            events = (context.get("triggering_asset_events") or {}).get(drift) or []
            alert = (events[-1].extra or {}).get("payload") if events else None
            request = selection_request(
                spec,
                now=datetime.now(UTC),
                alert=alert,
                group=context["params"].get("group"),
                size=context["params"].get("size"),
                run_id=context["dag_run"].run_id,
            )
            try:
                return select_batch(spec, PipelineClients(spec).s3(), request)
            except EmptySelection as exc:
                raise AirflowSkipException(exc.reason) from exc

        @task
        def open_batch(selection: dict[str, Any], **context: Any) -> dict[str, Any]:
            from edgeloop.annotation.batch import open_batch as open_in_backend
            from edgeloop.annotation.metrics import record_opened_batch
            from edgeloop.connections import PipelineClients

            clients = PipelineClients(spec)
            opened = open_in_backend(spec, clients.s3(), clients.annotation_backend(), selection["batch_id"])
            push_metrics(spec, context, lambda batch: record_opened_batch(batch, opened))
            return opened

        @task(outlets=[curated_asset(spec)])
        def export_dataset(waited: dict[str, Any], **context: Any) -> Any:
            from airflow.exceptions import AirflowSkipException

            from edgeloop.annotation.export import NothingToExport, export_dataset
            from edgeloop.annotation.metrics import record_exported_batch
            from edgeloop.connections import PipelineClients

            clients = PipelineClients(spec)
            try:
                result = export_dataset(
                    spec, clients.s3(), clients.annotation_backend(), waited["batch_id"], partial=waited["partial"]
                )
            except NothingToExport as exc:
                raise AirflowSkipException(str(exc)) from exc

            def fill(batch: Any) -> None:
                record_exported_batch(batch, waited, result)
                batch.mark_success("annotate")

            push_metrics(spec, context, fill)
            yield Metadata(
                curated_asset(spec),
                extra={k: result[k] for k in ("version", "uri", "rows", "batch_id", "label_distribution")},
            )
            return result

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
            from edgeloop.connections import PipelineClients
            from edgeloop.training.dataset import build_dataset as assemble

            events = (context.get("triggering_asset_events") or {}).get(curated) or []
            version = context["params"].get("dataset_version") or (
                (events[-1].extra or {}).get("version") if events else None
            )
            return assemble(PipelineClients(spec).s3(), spec, version)

        @task
        def train_model(dataset: dict[str, Any], **context: Any) -> dict[str, Any]:
            from edgeloop.connections import PipelineClients
            from edgeloop.registry.client import mlflow_client
            from edgeloop.training.metrics import record_training_metrics
            from edgeloop.training.train import train_model as fit

            clients = PipelineClients(spec)
            budget = int(context["params"].get("search_budget") or spec.training.search_budget)
            trained = fit(mlflow_client(clients.mlflow_uri()), clients.s3(), spec, dataset, search_budget=budget)
            push_metrics(spec, context, lambda batch: record_training_metrics(batch, trained))
            return trained

        @task
        def register_challenger(trained: dict[str, Any]) -> dict[str, Any]:
            from edgeloop.connections import PipelineClients
            from edgeloop.registry.client import mlflow_client
            from edgeloop.registry.register import register_challenger as register

            return register(mlflow_client(PipelineClients(spec).mlflow_uri()), spec, trained)

        @task
        def evaluation_gate(registered: dict[str, Any], **context: Any) -> dict[str, Any]:
            from edgeloop.connections import PipelineClients
            from edgeloop.fleet.health import publish_alerts
            from edgeloop.registry.client import mlflow_client
            from edgeloop.registry.gate import evaluation_gate as judge
            from edgeloop.training.metrics import record_gate_metrics

            clients = PipelineClients(spec)
            decision = judge(mlflow_client(clients.mlflow_uri()), clients.s3(), spec, registered)
            if decision.get("alert"):
                publish_alerts(spec, clients.kafka(), [decision["alert"]])

            def fill(batch: Any) -> None:
                record_gate_metrics(batch, decision)
                batch.mark_success("train")

            push_metrics(spec, context, fill)
            return decision

        @task(outlets=[model_asset(spec)])
        def announce_model(decision: dict[str, Any]) -> Any:
            from airflow.exceptions import AirflowSkipException

            from edgeloop.registry.gate import model_asset_extra

            if not decision.get("promote"):
                raise AirflowSkipException(f"no rollout: {decision.get('reason')}")
            extra = model_asset_extra(decision)
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
    waves = spec_waves(spec)
    with _dag(spec, "rollout", [model_asset(spec)], params) as dag:

        @task
        def plan(**context: Any) -> dict[str, Any]:
            from edgeloop.connections import PipelineClients
            from edgeloop.rollout.admission import RunOrigin
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
                RunOrigin.of(run),
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
                from edgeloop.rollout.approval import RolloutApprovalOperator, approvers

                approve_production = RolloutApprovalOperator(
                    task_id="approve_production",
                    subject=f"{spec.name}: roll out to production?",
                    body="Canary gate: {{ ti.xcom_pull(task_ids='gate_canary') | tojson }}",
                    defaults=RolloutApprovalOperator.REJECT,
                    response_timeout=spec.rollout.approval_timeout,
                    assigned_users=approvers(spec),
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

        def approval(context: Any) -> Any:
            """The human answer before the production waves (for the audit record), when the spec asks for one."""
            if not spec.rollout.approval_required:
                return None
            return context["ti"].xcom_pull(task_ids="approve_production", key="answer")

        @task(trigger_rule="all_done")
        def promote(plan: dict[str, Any], **context: Any) -> dict[str, Any]:
            from airflow.exceptions import AirflowSkipException

            from edgeloop.connections import PipelineClients
            from edgeloop.rollout.metrics import record_rollout_metrics
            from edgeloop.rollout.steps import all_gates_passed, promote_step, record_gate

            clients = PipelineClients(spec)
            gates = pulled(context["ti"], gate_ids)
            for gate in gates.values():
                if gate:
                    record_gate(spec, clients.s3(), plan["rollout_id"], gate)
            if not all_gates_passed(plan, gates):
                raise AirflowSkipException("not every wave passed its gate: nothing to promote")
            record = promote_step(spec, clients.s3(), clients.mlflow_uri(), plan, gates, approval=approval(context))
            applies = pulled(context["ti"], apply_ids)

            def fill(batch: Any) -> None:
                record_rollout_metrics(batch, plan, applies, gates)
                batch.mark_success("rollout")

            push_metrics(spec, context, fill)
            return {"rollout_id": plan["rollout_id"], "champion": record["champion"]}

        @task(trigger_rule="all_done")
        def rollback(plan: dict[str, Any], **context: Any) -> dict[str, Any]:
            from airflow.exceptions import AirflowFailException, AirflowSkipException

            from edgeloop.connections import PipelineClients
            from edgeloop.rollout.metrics import record_rollout_metrics
            from edgeloop.rollout.steps import all_gates_passed, record_gate, rollback_step

            clients = PipelineClients(spec)
            gates = pulled(context["ti"], gate_ids)
            if all_gates_passed(plan, gates):
                raise AirflowSkipException("every wave passed its gate: nothing to roll back")
            for gate in gates.values():
                if gate:
                    record_gate(spec, clients.s3(), plan["rollout_id"], gate)
            applies = pulled(context["ti"], apply_ids)
            record = rollback_step(
                spec, clients.s3(), clients.kafka(), plan, applies, gates, context, approval=approval(context)
            )
            rolled_back = list(record["rolled_back_groups"])
            push_metrics(spec, context, lambda batch: record_rollout_metrics(batch, plan, applies, gates, rolled_back))
            raise AirflowFailException(
                f"rollout {plan['rollout_id']} rolled back groups {record['rolled_back_groups']} "
                f"to version {record['previous_version']}: {'; '.join(record['reasons'])}"
            )

        previous >> [promote(planned), rollback(planned)]
    return dag


def build_fleet_health(spec: PipelineSpec) -> DAG:
    with _dag(spec, "fleet_health", timetable(spec.fleet_health.schedule or "5m")) as dag:

        @task
        def compute_health(**context: Any) -> dict[str, Any]:
            from edgeloop.connections import PipelineClients, control_trusted_keys
            from edgeloop.fleet.health import device_alerts, fleet_status, write_health_report

            clients = PipelineClients(spec)
            status = fleet_status(spec, clients.kafka(), control_trusted_keys())
            alerts = device_alerts(spec, status)
            key = write_health_report(clients.s3(), spec, status, alerts)
            push_metrics(spec, context, lambda batch: record_fleet_metrics(batch, status))
            return {"report_key": key, "alerts": alerts, "groups": len(status.groups)}

        @task
        def publish_device_alerts(report: dict[str, Any]) -> dict[str, Any]:
            from edgeloop.connections import PipelineClients
            from edgeloop.fleet.health import publish_alerts

            published = publish_alerts(spec, PipelineClients(spec).kafka(), report["alerts"])
            return {"alerts_published": published, "report_key": report["report_key"]}

        publish_device_alerts(compute_health())
    return dag


def record_fleet_metrics(batch: Any, status: Any) -> None:
    """Per-group fleet gauges come from the exporter; the DAG records that it ran."""
    batch.mark_success("fleet_health")


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
            import hashlib
            import time

            from edgeloop.connections import PipelineClients, control_signer
            from edgeloop.fleet.control import push_assignment

            params = context["params"]
            if not params.get("config"):
                raise ValueError("params.config: no configuration to push (a model goes through the rollout DAG)")
            run_hash = hashlib.sha256(context["dag_run"].run_id.encode()).hexdigest()[:16]
            assignment = push_assignment(
                spec,
                PipelineClients(spec).kafka(),
                control_signer(),
                group=params["group"],
                config=params.get("config") or None,
                issuer="config_push",
                assignment_id=f"push-{run_hash}",
            )
            return {"assignment": assignment.to_dict(), "pushed_at": time.time()}

        pushed = publish_assignment()
        pushed >> WaitForAssignmentOperator(
            task_id="wait_until_applied", pipeline=spec.name, push_task_id="publish_assignment"
        )
    return dag
