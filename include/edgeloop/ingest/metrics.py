"""Prometheus metrics of one ingest run, recorded into edgeloop's metric catalog (edgeloop.metrics)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from edgeloop.metrics.push import BatchMetrics
from edgeloop.spec import PipelineSpec

# Dead-letter kinds of the decoder -> the bounded `reason` label of edgeloop_ingest_deadletter_records_total.
DEADLETTER_REASON = {
    "undecodable": "decode",
    "invalid_json": "decode",
    "schema": "schema",
    "field": "field",
    "oversized": "too_large",
    "empty": "other",
}


def record_ingest_metrics(batch: BatchMetrics, result: dict[str, Any]) -> None:
    """Record one `ingest_topic` result: records, bytes, Parquet files, dead letters by reason, duration.

    Per-partition consumer lag is not pushed: the exporter reads it from the consumer group,
    whose offsets each run commits after every durable flush.
    """
    topic = str(result["topic"])
    batch.inc("edgeloop_ingest_records_total", float(result["records"]), topic=topic)
    batch.inc("edgeloop_ingest_bytes_total", float(result["value_bytes"]), topic=topic)
    batch.inc("edgeloop_ingest_files_total", float(len(result["objects"])), topic=topic)
    by_reason = dict.fromkeys(sorted(set(DEADLETTER_REASON.values())), 0)
    for kind, count in result["dead_letters_by_kind"].items():
        by_reason[DEADLETTER_REASON.get(kind, "other")] += int(count)
    for reason, count in by_reason.items():
        batch.inc("edgeloop_ingest_deadletter_records_total", float(count), topic=topic, reason=reason)
    batch.set("edgeloop_ingest_run_duration_seconds", float(result["duration_s"]), topic=topic)
    batch.mark_success("ingest")


def ingest_metrics(spec: PipelineSpec, result: dict[str, Any]) -> CollectorRegistry:
    """A registry of its own holding one run's metrics (for a push or a test)."""
    batch = BatchMetrics(spec)
    record_ingest_metrics(batch, result)
    return batch.registry
