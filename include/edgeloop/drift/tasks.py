"""The tasks of the `drift` DAG: one function each, typed results across the boundary."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self

from edgeloop.spec import PipelineSpec
from edgeloop.xcom import JSON, XComResult, plain, xcom_fields

if TYPE_CHECKING:
    from edgeloop.connections import PipelineClients
    from edgeloop.metrics.push import BatchMetrics, TaskMetrics

# counts a `profiles` window has besides `rows`; absent (not None) from a `raw` window's XCom
_PROFILE_COUNTS = ("profiles", "records", "sampled_records")


@dataclass(frozen=True)
class DriftCheck:
    """One drift check (`drift.run.run_drift_check`): the verdict, the summary and report keys, the alerts to send.

    `reports` are the drifted scopes' reports (written), `pending_reports` the others' (for
    `render_reports`); `publish` holds the alert messages for the alerts topic.
    """

    status: str
    summary_key: str
    reports: dict[str, str]
    pending_reports: dict[str, str]
    telemetry: str
    rows: int
    corrupt_objects: int
    drifted_groups: list[str]
    publish: list[dict[str, JSON]]
    opened: list[str]
    updated: list[str]
    expired: list[str]
    seconds: dict[str, float]
    profiles: int | None = None
    records: int | None = None
    sampled_records: int | None = None

    def to_xcom(self) -> dict[str, JSON]:
        return plain(self, omit_none=_PROFILE_COUNTS)

    @classmethod
    def from_xcom(cls, data: object) -> Self:
        return cls(**xcom_fields(cls, data))


@dataclass(frozen=True)
class DriftAlertsPublished(XComResult):
    """The alerts `publish_alerts` sent, the drifted groups, and every report of the run with its link in the UI."""

    alert_ids: list[str]
    drifted_groups: list[str]
    summary_key: str
    reports: dict[str, str]
    report_links: dict[str, str]


@dataclass(frozen=True)
class ReportsRendered(XComResult):
    """The reports `render_reports` wrote ({scope label: key}) and the scopes where Evidently disagreed."""

    reports: dict[str, str]
    disagreements: list[str]


def check_drift(spec: PipelineSpec, clients: PipelineClients, *, run_id: str, now: datetime) -> DriftCheck:
    """Check the current window against the champion's training data; skip the task without a champion or data."""
    from airflow.exceptions import AirflowSkipException

    from edgeloop.drift.reference import champion_reference
    from edgeloop.drift.run import run_drift_check, seed_for
    from edgeloop.registry.aliases import champion_training_data
    from edgeloop.registry.client import mlflow_client

    s3 = clients.s3()
    training = champion_training_data(mlflow_client(clients.mlflow_uri()), spec)
    if training is None:
        raise AirflowSkipException("skipped: no champion model yet, so no reference data to compare with")
    reference = champion_reference(s3, spec, training, seed=seed_for(run_id))
    result = run_drift_check(s3, spec.storage.bucket, spec, run_id, now, reference=reference)
    if str(result["status"]).startswith("skipped"):
        raise AirflowSkipException(str(result["status"]))
    return DriftCheck.from_xcom(result)


def publish_alerts(
    spec: PipelineSpec, clients: PipelineClients, check: DriftCheck, *, now: datetime, metrics: TaskMetrics
) -> DriftAlertsPublished:
    """Send the check's alerts, mark them sent, push the drift metrics of the run's summary."""
    from edgeloop.drift.alert_state import confirm_published
    from edgeloop.drift.link import report_url
    from edgeloop.drift.metrics import record_drift_metrics
    from edgeloop.drift.publish import publish_drift_alerts
    from edgeloop.metrics.push import push_task_metrics

    s3 = clients.s3()
    ids = publish_drift_alerts(clients.kafka(), spec, check.publish)
    confirm_published(s3, spec.storage.bucket, spec, ids, now)
    summary = json.loads(s3.get_object(Bucket=spec.storage.bucket, Key=check.summary_key)["Body"].read())

    def fill(batch: BatchMetrics) -> None:
        record_drift_metrics(batch, spec, summary)
        if ids:
            batch.set("edgeloop_drift_last_alert_timestamp_seconds", time.time())
        batch.mark_success("drift")

    push_task_metrics(spec, metrics, fill)
    # the drifted scopes' reports exist now; the others' once render_reports has run
    reports = {**check.pending_reports, **check.reports}
    return DriftAlertsPublished(
        alert_ids=ids,
        drifted_groups=check.drifted_groups,
        summary_key=check.summary_key,
        reports=reports,
        # open in the Airflow UI's host: the plugin serves reports behind the Airflow login
        report_links={label: report_url(spec.name, key) for label, key in reports.items()},
    )


def render_reports(spec: PipelineSpec, clients: PipelineClients, *, run_id: str) -> ReportsRendered:
    """The Evidently reports of the scopes without drift, off the alert's path."""
    from edgeloop.drift.reports import render_pending_reports

    rendered: dict[str, Any] = render_pending_reports(clients.s3(), spec.storage.bucket, spec, run_id)
    return ReportsRendered.from_xcom(rendered)


# --- the DAG's tasks: each reads its inputs from the Airflow context and calls the function above


def run_check_drift(spec: PipelineSpec, context: Mapping[str, Any]) -> DriftCheck:
    from edgeloop.connections import PipelineClients

    run = context["dag_run"]
    return check_drift(spec, PipelineClients(spec), run_id=run.run_id, now=run.run_after)


def run_publish_alerts(spec: PipelineSpec, checked: object, context: Mapping[str, Any]) -> DriftAlertsPublished:
    from edgeloop.connections import PipelineClients
    from edgeloop.metrics.push import TaskMetrics

    check, now = DriftCheck.from_xcom(checked), context["dag_run"].run_after
    return publish_alerts(spec, PipelineClients(spec), check, now=now, metrics=TaskMetrics.of_task(context))


def run_render_reports(spec: PipelineSpec, context: Mapping[str, Any]) -> ReportsRendered:
    from edgeloop.connections import PipelineClients

    return render_reports(spec, PipelineClients(spec), run_id=context["dag_run"].run_id)
