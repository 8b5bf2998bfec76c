"""Kafka to object storage, exactly once: Parquet per hour, dead letters with reasons, progress in the store.

The DAG task calls `ingest_topic(spec, "telemetry", consumer_config=..., s3=...)` and
returns its result; `record_ingest_metrics(batch, result)` records its metrics, and
`edgeloop.ingest.events.raw_event_extra(results)` makes the `raw` asset event's extra.
"""

from edgeloop.ingest.decode import RecordSchema, decode_records, record_schema
from edgeloop.ingest.keys import (
    OffsetRange,
    deadletter_object_key,
    deadletter_prefix,
    flush_marker_key,
    parse_object_key,
    raw_object_key,
    raw_prefix,
)
from edgeloop.ingest.metrics import ingest_metrics, record_ingest_metrics
from edgeloop.ingest.progress import FlushMarker, PartitionProgress, read_progress
from edgeloop.ingest.run import FlushConflictError, IngestError, OffsetsLostError, ingest_topic
from edgeloop.spec import INGESTIBLE

__all__ = [
    "INGESTIBLE",
    "FlushConflictError",
    "FlushMarker",
    "IngestError",
    "OffsetRange",
    "OffsetsLostError",
    "PartitionProgress",
    "RecordSchema",
    "deadletter_object_key",
    "deadletter_prefix",
    "decode_records",
    "flush_marker_key",
    "ingest_metrics",
    "ingest_topic",
    "parse_object_key",
    "raw_object_key",
    "raw_prefix",
    "read_progress",
    "record_ingest_metrics",
    "record_schema",
]
