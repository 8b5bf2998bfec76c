"""Drift results as Prometheus values (names defined in `edgeloop.metrics`).

Only groups of the spec become label values (a group id seen in data but not in the
spec is in the summary, never a label); the fleet is the `_all` group.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from edgeloop.spec import PipelineSpec


class GaugeSink(Protocol):
    """What `edgeloop.metrics.BatchMetrics` offers for gauges."""

    def set(self, name: str, value: float, **labels: str | int) -> None: ...


def drift_metric_values(spec: PipelineSpec, summary: dict[str, Any]) -> list[tuple[str, float, dict[str, str]]]:
    """(metric name, value, labels) for each scope the run checked (skipped scopes only report rows)."""
    from edgeloop.metrics.catalogue import OVERALL_GROUP

    known = {g.name for g in spec.groups}
    scopes = [(OVERALL_GROUP, summary["overall"])]
    scopes += [(name, view) for name, view in sorted(summary["groups"].items()) if name in known]
    out: list[tuple[str, float, dict[str, str]]] = []
    for group, view in scopes:
        out.append(("edgeloop_drift_sample_rows", float(view["sample_size"]["current"]), {"group": group}))
        if str(view["status"]).startswith("skipped"):
            continue
        out.append(("edgeloop_drift_detected", 1.0 if view["status"] == "drift" else 0.0, {"group": group}))
        if view["drift_share"] is not None:
            out.append(("edgeloop_drift_share_ratio", float(view["drift_share"]), {"group": group}))
        for column, verdict in sorted(view["columns"].items()):
            if verdict["score"] is not None and column in spec.features:
                out.append(("edgeloop_drift_score", float(verdict["score"]), {"group": group, "column": column}))
    return out


def record_drift_metrics(metrics: GaugeSink, spec: PipelineSpec, summary: dict[str, Any]) -> int:
    """Set the drift gauges of one run on a `BatchMetrics`; return how many values were set."""
    values = drift_metric_values(spec, summary)
    for name, value, labels in values:
        metrics.set(name, value, **labels)
    return len(values)


def open_alerts_by_group(state: dict[str, Any] | None) -> dict[str, int]:
    """Open drift alerts per group (for the exporter's `edgeloop_drift_alerts_open`); `*` is the whole fleet."""
    counts: Counter[str] = Counter()
    for record in (state or {}).get("open", {}).values():
        counts.update(record["groups"])
    return dict(counts)
