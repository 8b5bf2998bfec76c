"""The few charts of the Pipelines page, read from Prometheus and shaped for the page's own SVG.

One pipeline at a time: drift per group, rollout progress by wave, model version per group
(with the registry's champion) and the share of devices not on their desired model. Each chart
is one or two PromQL range queries over the pipeline's metrics (see edgeloop.metrics); every
series is named by bounded labels only (group, wave), so a chart never has more lines than the
spec has groups. Prometheus being absent or down is an answer too: the page shows a message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from edgeloop.metrics.catalogue import OVERALL_GROUP
from edgeloop.metrics.promql import PrometheusQueryError, PrometheusUnavailable, promql_string
from edgeloop.spec import PipelineSpec

DISTANCE_METHODS = frozenset({"psi", "wasserstein", "jensenshannon", "kl_div"})
"""Drift methods whose score grows with drift (a column drifted above the threshold)."""
P_VALUE_METHODS = frozenset({"ks", "z"})
"""Drift methods whose score is a p-value (a column drifted below the threshold)."""

RANGE_HOURS = (1, 6, 24, 168)
"""Time ranges the page offers."""
MAX_POINTS = 240
"""At most this many points per series: the step grows with the range."""
STEPS_S = (15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)
MAX_SERIES = 24
"""Safety cap per chart; bounded labels keep real charts far below it."""

Unit = Literal["ratio", "score", "version"]
RangeQuery = Callable[[str, float, float, float], list[dict[str, Any]]]
"""(expr, start, end, step) -> Prometheus matrix; edgeloop.metrics.query_range with the URL bound."""


@dataclass(frozen=True)
class Threshold:
    value: float
    label: str


@dataclass(frozen=True)
class ChartQuery:
    """One chart: its PromQL, how its series are named, and what the numbers mean."""

    id: str
    title: str
    description: str
    exprs: tuple[str, ...]
    legend: tuple[str, ...]
    unit: Unit
    threshold: Threshold | None = None
    y_min: float | None = 0.0
    y_max: float | None = None
    steps: bool = False


def _selector(spec: PipelineSpec) -> str:
    return f"{{pipeline={promql_string(spec.name)}}}"


def drift_chart(spec: PipelineSpec) -> ChartQuery:
    """Drift per group: the worst column score for a fixed method, else the share of drifted columns."""
    sel = _selector(spec)
    method, threshold = spec.drift.method, spec.drift.threshold
    produced = f"pushed by each run of {spec.name}__drift"
    if method in DISTANCE_METHODS:
        return ChartQuery(
            id="drift",
            title=f"Drift score per group (highest {method} of the features)",
            description=f"The most drifted feature column of each group in each check; {produced}.",
            exprs=(f"max by (group) (edgeloop_drift_score{sel})",),
            legend=("group",),
            unit="score",
            threshold=Threshold(threshold, f"column drift above {threshold:g}") if threshold is not None else None,
        )
    if method in P_VALUE_METHODS:
        return ChartQuery(
            id="drift",
            title=f"Drift score per group (lowest {method} p-value of the features)",
            description=f"The most drifted feature column of each group (lower is more drift); {produced}.",
            exprs=(f"min by (group) (edgeloop_drift_score{sel})",),
            legend=("group",),
            unit="score",
            threshold=Threshold(threshold, f"column drift below {threshold:g}") if threshold is not None else None,
            y_max=1.0,
        )
    # `auto` lets each check pick its statistic, so raw scores of two checks are not comparable
    return ChartQuery(
        id="drift",
        title="Drift per group (share of drifted features)",
        description=f"Share of the checked feature columns that drifted; {produced}.",
        exprs=(f"max by (group) (edgeloop_drift_share_ratio{sel})",),
        legend=("group",),
        unit="ratio",
        threshold=Threshold(spec.drift.drift_share, f"dataset drift at {spec.drift.drift_share:.0%}"),
        y_max=1.0,
    )


def pipeline_charts(spec: PipelineSpec) -> list[ChartQuery]:
    """The charts of one pipeline, in page order."""
    sel = _selector(spec)
    applied = spec.rollout.thresholds.min_applied_ratio
    skew = spec.fleet_health.max_version_skew
    return [
        drift_chart(spec),
        ChartQuery(
            id="rollout",
            title="Rollout progress by wave",
            description=(
                f"Share of each group's devices that report the new model applied; pushed by {spec.name}__rollout."
            ),
            exprs=(f"max by (wave, group) (edgeloop_rollout_devices_applied_ratio{sel})",),
            legend=("wave", "group"),
            unit="ratio",
            threshold=Threshold(applied, f"health gate: {applied:.0%} applied"),
            y_max=1.0,
        ),
        ChartQuery(
            id="versions",
            title="Model version per group",
            description="Registry version each group was last rolled out to, and the registry's champion.",
            exprs=(
                f"max by (group) (edgeloop_rollout_model_version{sel})",
                f'label_replace(max(edgeloop_registry_champion_version{sel}), "group", "champion", "", "")',
            ),
            legend=("group",),
            unit="version",
            y_min=None,
            steps=True,
        ),
        ChartQuery(
            id="skew",
            title="Devices not on their desired model",
            description="Share of each group's devices whose reported model differs from the one asked for (exporter).",
            exprs=(f"max by (group) (edgeloop_fleet_version_skew_ratio{sel})",),
            legend=("group",),
            unit="ratio",
            threshold=Threshold(skew, f"fleet health limit {skew:.0%}"),
            y_max=1.0,
        ),
    ]


def step_seconds(range_s: float, max_points: int = MAX_POINTS) -> int:
    """The smallest step of STEPS_S that keeps a series of `range_s` seconds at `max_points` points or fewer."""
    for step in STEPS_S:
        if range_s / step <= max_points:
            return step
    return math.ceil(range_s / max_points)


def series_name(labels: Mapping[str, str], legend: Sequence[str]) -> str:
    """`plant-north`, `wave 1 · plant-north`, `whole fleet` for the `_all` group."""
    parts = []
    for label in legend:
        value = labels.get(label, "")
        if label == "group" and value == OVERALL_GROUP:
            parts.append("whole fleet")
        elif label == "wave":
            parts.append(f"wave {value}" if value else "wave ?")
        elif value:
            parts.append(value)
    return " · ".join(parts) or "value"


def _order_key(labels: Mapping[str, str], legend: Sequence[str], groups: Mapping[str, int]) -> tuple[Any, ...]:
    key: list[Any] = []
    for label in legend:
        value = labels.get(label, "")
        if label == "wave":
            key.append(int(value) if value.isdigit() else 1_000_000)
        elif label == "group":
            key.append((groups.get(value, len(groups)), value))
        else:
            key.append(value)
    return tuple(key)


def shape_series(
    matrix: Sequence[Mapping[str, Any]],
    legend: Sequence[str],
    group_order: Sequence[str] = (),
    max_series: int = MAX_SERIES,
) -> list[dict[str, Any]]:
    """Prometheus matrix rows as page series: ``{"name", "labels", "points": [[t, v], ...]}``.

    Only the legend's labels are kept; NaN and infinite values are dropped (a gap on the chart);
    series come in spec order (groups as the spec lists them, then the whole fleet, waves
    ascending); at most `max_series`.
    """
    order = {name: i for i, name in enumerate(group_order)}
    order.setdefault(OVERALL_GROUP, len(order))
    out: list[dict[str, Any]] = []
    for row in matrix:
        metric = row.get("metric") or {}
        labels = {label: str(metric[label]) for label in legend if label in metric}
        points = []
        for t, raw in row.get("values") or []:
            try:
                value = float(raw)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                points.append([float(t), value])
        if points:
            out.append({"name": series_name(labels, legend), "labels": labels, "points": points})
    out.sort(key=lambda s: _order_key(s["labels"], legend, order))
    return out[:max_series]


def chart_data(spec: PipelineSpec, query: RangeQuery | None, *, end: float, hours: float) -> dict[str, Any]:
    """Every chart of `spec` over the last `hours` before `end`, ready for the page.

    `query` None means no Prometheus is configured. When Prometheus cannot be reached the
    answer says so once (``available`` false) instead of failing; an error of one query is
    reported on its chart and the other charts still come.
    """
    start = end - hours * 3600
    step = step_seconds(end - start)
    charts = pipeline_charts(spec)
    body: dict[str, Any] = {
        "pipeline": spec.name,
        "available": query is not None,
        "message": None if query is not None else "Prometheus is not configured (EDGELOOP_PROMETHEUS_URL is not set).",
        "start": start,
        "end": end,
        "step": step,
        "hours": hours,
        "charts": [],
    }
    groups = [g.name for g in spec.groups]
    for chart in charts:
        entry: dict[str, Any] = {
            "id": chart.id,
            "title": chart.title,
            "description": chart.description,
            "unit": chart.unit,
            "threshold": {"value": chart.threshold.value, "label": chart.threshold.label} if chart.threshold else None,
            "y_min": chart.y_min,
            "y_max": chart.y_max,
            "steps": chart.steps,
            "series": [],
            "error": None,
        }
        body["charts"].append(entry)
        if query is None or not body["available"]:
            continue
        try:
            rows = [row for expr in chart.exprs for row in query(expr, start, end, step)]
        except PrometheusUnavailable as exc:
            body["available"] = False
            body["message"] = f"Charts unavailable: {exc}"
            continue
        except PrometheusQueryError as exc:
            entry["error"] = str(exc)
            continue
        entry["series"] = shape_series(rows, chart.legend, groups)
    return body
