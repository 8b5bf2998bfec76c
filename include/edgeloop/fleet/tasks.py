"""The tasks of the `fleet_health` and `config_push` DAGs: one function each, typed results across the boundary."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from edgeloop.spec import PipelineSpec
from edgeloop.xcom import JSON, XComResult

if TYPE_CHECKING:
    from edgeloop.connections import PipelineClients
    from edgeloop.contract.keys import Keyring, Signer
    from edgeloop.metrics.push import TaskMetrics


@dataclass(frozen=True)
class HealthReport(XComResult):
    """What `compute_health` wrote: the report's key, the device alerts it raised, how many groups it saw."""

    report_key: str
    alerts: list[dict[str, JSON]]
    groups: int


@dataclass(frozen=True)
class AlertsPublished(XComResult):
    """How many device alerts `publish_device_alerts` put on the alerts topic, and the report they came from."""

    alerts_published: int
    report_key: str


@dataclass(frozen=True)
class ConfigPushed(XComResult):
    """The signed assignment `publish_assignment` sent (as its dict) and when (epoch seconds): the wait reads both."""

    assignment: dict[str, JSON]
    pushed_at: float


def compute_health(
    spec: PipelineSpec, clients: PipelineClients, trusted: Keyring, *, metrics: TaskMetrics
) -> HealthReport:
    """Read heartbeats and error reports, write the health report, decide the device alerts (not sent yet)."""
    from edgeloop.fleet.health import device_alerts, fleet_status, record_fleet_metrics, write_health_report
    from edgeloop.metrics.push import push_task_metrics

    status = fleet_status(spec, clients.kafka(), trusted)
    alerts = device_alerts(spec, status)
    key = write_health_report(clients.s3(), spec, status, alerts)
    push_task_metrics(spec, metrics, lambda batch: record_fleet_metrics(batch, status))
    return HealthReport(report_key=key, alerts=cast(list[dict[str, JSON]], alerts), groups=len(status.groups))


def publish_device_alerts(spec: PipelineSpec, clients: PipelineClients, report: HealthReport) -> AlertsPublished:
    """Put the report's device alerts on the alerts topic."""
    from edgeloop.events import publish_alerts

    published = publish_alerts(clients.kafka(), spec, report.alerts)
    return AlertsPublished(alerts_published=published, report_key=report.report_key)


def publish_assignment(
    spec: PipelineSpec,
    clients: PipelineClients,
    signer: Signer,
    params: Mapping[str, Any],
    *,
    run_id: str,
    now: float,
) -> ConfigPushed:
    """Sign and publish the configuration in `params` to `params["group"]`; one assignment id per run.

    Raise ValueError when `params` has no configuration: a model goes through the rollout DAG.
    """
    from edgeloop.fleet import control

    if not params.get("config"):
        raise ValueError("params.config: no configuration to push (a model goes through the rollout DAG)")
    run_hash = hashlib.sha256(run_id.encode()).hexdigest()[:16]
    assignment = control.push_assignment(
        spec,
        clients.kafka(),
        signer,
        group=params["group"],
        config=params.get("config") or None,
        issuer="config_push",
        assignment_id=f"push-{run_hash}",
    )
    return ConfigPushed(assignment=assignment.to_dict(), pushed_at=now)


# --- the DAG's tasks: each reads its inputs from the Airflow context and calls the function above


def run_compute_health(spec: PipelineSpec, context: Mapping[str, Any]) -> HealthReport:
    from edgeloop.connections import PipelineClients, control_trusted_keys
    from edgeloop.metrics.push import TaskMetrics

    trusted, metrics = control_trusted_keys(), TaskMetrics.of_task(context)
    return compute_health(spec, PipelineClients(spec), trusted, metrics=metrics)


def run_publish_device_alerts(spec: PipelineSpec, report: object) -> AlertsPublished:
    from edgeloop.connections import PipelineClients

    return publish_device_alerts(spec, PipelineClients(spec), HealthReport.from_xcom(report))


def run_publish_assignment(spec: PipelineSpec, context: Mapping[str, Any]) -> ConfigPushed:
    from edgeloop.connections import PipelineClients, control_signer

    clients, run_id = PipelineClients(spec), context["dag_run"].run_id
    return publish_assignment(spec, clients, control_signer(), context["params"], run_id=run_id, now=time.time())
