"""Annotation batches as Prometheus values (names defined in `edgeloop.metrics`); the group label is `_all`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol


class GaugeSink(Protocol):
    """What `edgeloop.metrics.BatchMetrics` offers for gauges."""

    def set(self, name: str, value: float, **labels: str | int) -> None: ...


def record_opened_batch(sink: GaugeSink, opened: Mapping[str, Any]) -> None:
    """A batch just opened: when its SLA ends (size and progress come with the export)."""
    if opened.get("deadline"):
        deadline = datetime.fromisoformat(str(opened["deadline"]))
        sink.set("edgeloop_annotation_sla_deadline_timestamp_seconds", deadline.timestamp(), group="_all")


def record_exported_batch(sink: GaugeSink, waited: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    """A batch exported: how far it was labelled and how many labelled records the dataset got."""
    progress: Mapping[str, Any] = waited.get("progress") or {}
    sink.set("edgeloop_annotation_batch_tasks", float(progress.get("expected", 0)), group="_all")
    sink.set("edgeloop_annotation_labelled_ratio", float(progress.get("ratio", 0.0)), group="_all")
    sink.set("edgeloop_annotation_export_records", float(result.get("rows", 0)), group="_all")
