"""Grafana dashboards for edgeloop, as code: the loop overview and one dashboard per stage.

Run ``python monitoring/grafana/build_dashboards.py`` after changing a panel; it rewrites
``monitoring/grafana/dashboards/*.json`` (committed, provisioned by Grafana as they are).
``tests/unit/monitoring/test_monitoring.py`` fails when the JSON files are not what this script builds.

Every panel queries the Prometheus datasource chosen in the ``datasource`` variable and is
filtered by the ``pipeline`` variable (and ``group`` where it applies).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
P = 'pipeline=~"$pipeline"'
PG = 'pipeline=~"$pipeline", group=~"$group"'

Panel = dict[str, Any]
Steps = list[tuple[float | None, str]]
RED_FROM_ONE: Steps = [(None, "green"), (1, "red")]
ORANGE_FROM_ONE: Steps = [(None, "green"), (1, "orange")]


def _target(expr: str, legend: str, ref: int) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + ref)}


def timeseries(title: str, targets: list[tuple[str, str]], unit: str = "short", description: str = "") -> Panel:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"lineWidth": 2, "fillOpacity": 10}}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]}},
        "targets": [_target(expr, legend, i) for i, (expr, legend) in enumerate(targets)],
        "_size": (12, 8),
    }


def stat(
    title: str,
    expr: str,
    unit: str = "short",
    legend: str = "",
    thresholds: list[tuple[float | None, str]] | None = None,
) -> Panel:
    steps = [{"color": color, "value": value} for value, color in (thresholds or [(None, "green")])]
    return {
        "type": "stat",
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
        },
        "targets": [_target(expr, legend, 0)],
        "_size": (6, 4),
    }


def bargauge(title: str, expr: str, legend: str, unit: str = "percentunit") -> Panel:
    return {
        "type": "bargauge",
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "max": 1,
                "thresholds": {
                    "mode": "absolute",
                    "steps": [
                        {"color": "red", "value": None},
                        {"color": "orange", "value": 0.5},
                        {"color": "green", "value": 0.95},
                    ],
                },
            },
            "overrides": [],
        },
        "options": {
            "orientation": "horizontal",
            "displayMode": "gradient",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
        "targets": [_target(expr, legend, 0)],
        "_size": (12, 8),
    }


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def _layout(panels: list[Panel]) -> list[Panel]:
    """Left to right, top to bottom, with unique ids."""
    x = y = row_height = 0
    out = []
    for panel_id, panel in enumerate(panels, start=1):
        width, height = panel.pop("_size")
        if x + width > 24 or panel["type"] == "row":
            x, y, row_height = 0, y + row_height, 0
        panel["gridPos"] = {"x": x, "y": y, "w": width, "h": height}
        panel["id"] = panel_id
        out.append(panel)
        x += width
        row_height = max(row_height, height)
        if panel["type"] == "row":
            x, y, row_height = 0, y + height, 0
    return out


def _variable(name: str, query: str, label: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard(uid: str, title: str, description: str, panels: list[Panel], with_group: bool = True) -> dict[str, Any]:
    variables: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        },
        _variable("pipeline", "label_values(edgeloop_spec_limit, pipeline)", "Pipeline"),
    ]
    if with_group:
        variables.append(
            _variable("group", 'label_values(edgeloop_fleet_devices{pipeline=~"$pipeline"}, group)', "Edge group")
        )
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["edgeloop"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": [
            {"type": "dashboards", "tags": ["edgeloop"], "asDropdown": True, "title": "edgeloop", "includeVars": True}
        ],
        "panels": _layout(panels),
    }


# --- the dashboards ---------------------------------------------------------------------------


def overview() -> dict[str, Any]:
    panels = [
        stat(
            "Firing edgeloop alerts",
            'count(ALERTS{alertname=~"Edgeloop.*", alertstate="firing"}) or vector(0)',
            thresholds=RED_FROM_ONE,
        ),
        stat("Records ingested / s", f"sum(edgeloop:ingest_records:rate30m{{{P}}})", unit="rps"),
        stat(
            "Open drift alerts",
            f"sum(edgeloop_drift_alerts_open{{{P}}}) or vector(0)",
            thresholds=ORANGE_FROM_ONE,
        ),
        stat(
            "Fleet online",
            f"sum(edgeloop_fleet_devices_online{{{P}}}) / sum(edgeloop_fleet_devices{{{P}}})",
            unit="percentunit",
            thresholds=[(None, "red"), (0.8, "orange"), (0.95, "green")],
        ),
        timeseries(
            "Drift score per group (max over columns)",
            [(f"edgeloop:drift_score:max{{{PG}}}", "{{pipeline}} {{group}}")],
            description="Highest per-column drift score of each group in each check.",
        ),
        bargauge(
            "Rollout progress by wave",
            f"max by (pipeline, wave, group) (edgeloop_rollout_devices_applied_ratio{{{PG}}})",
            "{{pipeline}} wave {{wave}} {{group}}",
        ),
        timeseries(
            "Model version per group",
            [
                (f"max by (pipeline, group) (edgeloop_rollout_model_version{{{PG}}})", "{{pipeline}} {{group}}"),
                (f"max by (pipeline) (edgeloop_registry_champion_version{{{P}}})", "{{pipeline}} champion"),
            ],
            description="Registry version each group was last rolled out to, next to the champion.",
        ),
        timeseries(
            "Version skew per group",
            [(f"max by (pipeline, group) (edgeloop_fleet_version_skew_ratio{{{PG}}})", "{{pipeline}} {{group}}")],
            unit="percentunit",
        ),
        timeseries("Consumer lag", [(f"edgeloop:ingest_consumer_lag_records:sum{{{P}}}", "{{topic}}")]),
        timeseries(
            "Time since the last successful run, per stage",
            [(f"edgeloop:pipeline_last_success_age_seconds{{{P}}}", "{{pipeline}} {{stage}}")],
            unit="s",
        ),
        row("Airflow"),
        timeseries(
            "DAG run duration (p50)",
            [('airflow_dagrun_duration{dag_id=~"${pipeline}__.*", quantile="0.5"}', "{{dag_id}}")],
            unit="ms",
        ),
        timeseries(
            "Failed DAG runs / h",
            [('sum by (dag_id) (increase(airflow_dagrun_failed_count{dag_id=~"${pipeline}__.*"}[1h]))', "{{dag_id}}")],
        ),
        timeseries("Scheduler heartbeats / min", [("sum(rate(airflow_scheduler_heartbeat[5m])) * 60", "heartbeats")]),
        timeseries(
            "Running triggers",
            [("sum(airflow_triggers_running)", "triggers")],
            description="Deferred tasks and asset watchers (Kafka alerts) held by the triggerer.",
        ),
    ]
    return dashboard(
        "edgeloop-overview",
        "edgeloop / Loop overview",
        "The whole loop on one screen: ingest, drift, training, rollout and fleet.",
        panels,
    )


def ingest() -> dict[str, Any]:
    panels = [
        timeseries("Records / s by topic", [(f"edgeloop:ingest_records:rate30m{{{P}}}", "{{topic}}")], unit="rps"),
        timeseries(
            "Bytes / s by topic",
            [(f"sum by (topic) (rate(edgeloop_ingest_bytes_total{{{P}}}[30m]))", "{{topic}}")],
            unit="Bps",
        ),
        timeseries(
            "Dead-letter share", [(f"edgeloop:ingest_deadletter_ratio:rate30m{{{P}}}", "{{topic}}")], unit="percentunit"
        ),
        timeseries(
            "Dead-letter records / h by reason",
            [
                (
                    f"sum by (topic, reason) (increase(edgeloop_ingest_deadletter_records_total{{{P}}}[1h]))",
                    "{{topic}} {{reason}}",
                )
            ],
        ),
        timeseries(
            "Consumer lag by partition", [(f"edgeloop_ingest_consumer_lag_records{{{P}}}", "{{topic}}/{{partition}}")]
        ),
        timeseries(
            "Run duration", [(f"max by (topic) (edgeloop_ingest_run_duration_seconds{{{P}}})", "{{topic}}")], unit="s"
        ),
        timeseries(
            "Parquet objects / h", [(f"sum by (topic) (increase(edgeloop_ingest_files_total{{{P}}}[1h]))", "{{topic}}")]
        ),
    ]
    return dashboard(
        "edgeloop-ingest", "edgeloop / Ingest", "Kafka to object storage, exactly once.", panels, with_group=False
    )


def drift() -> dict[str, Any]:
    panels = [
        stat(
            "Groups drifting",
            f"sum(max by (pipeline, group) (edgeloop_drift_detected{{{PG}}})) or vector(0)",
            thresholds=RED_FROM_ONE,
        ),
        stat(
            "Open drift alerts",
            f"sum(edgeloop_drift_alerts_open{{{PG}}}) or vector(0)",
            thresholds=ORANGE_FROM_ONE,
        ),
        stat(
            "Last drift alert",
            f"max(edgeloop_drift_last_alert_timestamp_seconds{{{P}}}) * 1000",
            unit="dateTimeFromNow",
        ),
        stat(
            "Drift share threshold", f'max(edgeloop_spec_limit{{{P}, limit="drift_share_ratio"}})', unit="percentunit"
        ),
        timeseries(
            "Drifted column share per group",
            [(f"max by (pipeline, group) (edgeloop_drift_share_ratio{{{PG}}})", "{{group}}")],
            unit="percentunit",
        ),
        timeseries(
            "Drift score per group and column",
            [(f"max by (group, column) (edgeloop_drift_score{{{PG}}})", "{{group}} {{column}}")],
        ),
        timeseries("Rows checked per group", [(f"max by (group) (edgeloop_drift_sample_rows{{{PG}}})", "{{group}}")]),
    ]
    return dashboard("edgeloop-drift", "edgeloop / Drift", "Evidently drift checks per edge group.", panels)


def annotation() -> dict[str, Any]:
    panels = [
        timeseries(
            "Labelled share of the open batch",
            [(f"max by (group) (edgeloop_annotation_labelled_ratio{{{PG}}})", "{{group}}")],
            unit="percentunit",
        ),
        timeseries("SLA time left", [(f"edgeloop:annotation_sla_remaining_seconds{{{PG}}}", "{{group}}")], unit="s"),
        timeseries(
            "Tasks in the open batch", [(f"max by (group) (edgeloop_annotation_batch_tasks{{{PG}}})", "{{group}}")]
        ),
        timeseries(
            "Records in the last exported dataset",
            [(f"max by (group) (edgeloop_annotation_export_records{{{PG}}})", "{{group}}")],
        ),
    ]
    return dashboard("edgeloop-annotation", "edgeloop / Annotation", "Label Studio batches and their SLA.", panels)


def training() -> dict[str, Any]:
    panels = [
        stat("Champion version", f"max(edgeloop_registry_champion_version{{{P}}})"),
        stat("Challenger version", f"max(edgeloop_registry_challenger_version{{{P}}})"),
        stat(
            "Champion moved",
            f"max(edgeloop_registry_champion_updated_timestamp_seconds{{{P}}}) * 1000",
            unit="dateTimeFromNow",
        ),
        stat(
            "Last gate decision",
            f"max by (decision) (edgeloop_training_gate_decision{{{P}}}) == 1",
            legend="{{decision}}",
        ),
        timeseries(
            "Best validation score",
            [(f"max by (metric) (edgeloop_training_best_score{{{P}}})", "{{metric}}")],
            unit="percentunit",
        ),
        timeseries(
            "Gate decisions / day",
            [(f"sum by (decision) (increase(edgeloop_training_gate_decisions_total{{{P}}}[1d]))", "{{decision}}")],
        ),
        timeseries(
            "Trials and training time",
            [
                (f"max(edgeloop_training_trials{{{P}}})", "trials"),
                (f"max(edgeloop_training_duration_seconds{{{P}}})", "seconds"),
            ],
        ),
        timeseries(
            "Edge fitness: inference latency",
            [(f"max(edgeloop_training_inference_latency_seconds{{{P}}})", "p95 latency")],
            unit="s",
        ),
        timeseries(
            "Edge fitness: size and memory",
            [
                (f"max(edgeloop_training_model_size_bytes{{{P}}})", "model size"),
                (f"max(edgeloop_training_model_memory_bytes{{{P}}})", "memory estimate"),
            ],
            unit="bytes",
        ),
    ]
    return dashboard(
        "edgeloop-training",
        "edgeloop / Training and registry",
        "Retraining, the evaluation gate and the registry.",
        panels,
        with_group=False,
    )


def rollout() -> dict[str, Any]:
    panels = [
        stat("Wave reached", f"max(edgeloop_rollout_wave{{{P}}})"),
        stat(
            "Failed gates (24h)",
            f"sum(increase(edgeloop_rollout_gate_failures_total{{{PG}}}[1d])) or vector(0)",
            thresholds=RED_FROM_ONE,
        ),
        stat(
            "Rollbacks (24h)",
            f"sum(increase(edgeloop_rollout_rollbacks_total{{{PG}}}[1d])) or vector(0)",
            thresholds=ORANGE_FROM_ONE,
        ),
        stat(
            "Min applied ratio (spec)",
            f'max(edgeloop_spec_limit{{{P}, limit="rollout_min_applied_ratio"}})',
            unit="percentunit",
        ),
        bargauge(
            "Devices applied by wave and group",
            f"max by (wave, group) (edgeloop_rollout_devices_applied_ratio{{{PG}}})",
            "wave {{wave}} {{group}}",
        ),
        timeseries(
            "Health gate (1 passed, 0 failed)",
            [(f"min by (group, wave) (edgeloop_rollout_gate_passed{{{PG}}})", "wave {{wave}} {{group}}")],
        ),
        timeseries(
            "Rollout duration",
            [(f"max by (group, wave) (edgeloop_rollout_duration_seconds{{{PG}}})", "wave {{wave}} {{group}}")],
            unit="s",
        ),
        timeseries(
            "Model version per group", [(f"max by (group) (edgeloop_rollout_model_version{{{PG}}})", "{{group}}")]
        ),
    ]
    return dashboard("edgeloop-rollout", "edgeloop / Rollout", "Waves, health gates and rollbacks.", panels)


def fleet() -> dict[str, Any]:
    panels = [
        timeseries(
            "Devices online / known",
            [
                (f"sum by (group) (edgeloop_fleet_devices_online{{{PG}}})", "{{group}} online"),
                (f"sum by (group) (edgeloop_fleet_devices{{{PG}}})", "{{group}} known"),
            ],
        ),
        timeseries(
            "Offline share",
            [
                (f"edgeloop:fleet_offline_ratio{{{PG}}}", "{{group}}"),
                (f'max(edgeloop_spec_limit{{{P}, limit="fleet_max_offline_ratio"}})', "limit"),
            ],
            unit="percentunit",
        ),
        timeseries(
            "Error share",
            [
                (f"max by (group) (edgeloop_fleet_error_ratio{{{PG}}})", "{{group}}"),
                (f'max(edgeloop_spec_limit{{{P}, limit="fleet_max_error_ratio"}})', "limit"),
            ],
            unit="percentunit",
        ),
        timeseries(
            "Version skew",
            [
                (f"max by (group) (edgeloop_fleet_version_skew_ratio{{{PG}}})", "{{group}}"),
                (f'max(edgeloop_spec_limit{{{P}, limit="fleet_max_version_skew_ratio"}})', "limit"),
            ],
            unit="percentunit",
        ),
        timeseries("Stale devices", [(f"sum by (group) (edgeloop_fleet_devices_stale{{{PG}}})", "{{group}}")]),
        timeseries("Exporter readers up", [("min by (reader) (edgeloop_exporter_reader_up)", "{{reader}}")]),
    ]
    return dashboard("edgeloop-fleet", "edgeloop / Fleet", "Device health per edge group, from device state.", panels)


DASHBOARDS = {
    "edgeloop-overview.json": overview,
    "edgeloop-ingest.json": ingest,
    "edgeloop-drift.json": drift,
    "edgeloop-annotation.json": annotation,
    "edgeloop-training.json": training,
    "edgeloop-rollout.json": rollout,
    "edgeloop-fleet.json": fleet,
}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {name: json.dumps(build(), indent=2, sort_keys=True) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT_DIR / name).write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote {len(DASHBOARDS)} dashboards to {OUT_DIR}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
