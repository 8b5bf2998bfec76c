"""One ingest run of one topic: Kafka -> Parquet objects, exactly once.

Order of a flush (one partition, one offset range): stage rows locally, create the
flush marker, create the objects, then commit the Kafka offset. The object store,
not the consumer group, says where to resume (see `edgeloop.ingest.progress`): a
crash at any point either left nothing, or left a marker whose range the next run
redoes to the same keys, so no record is lost and none is stored twice.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, KafkaException, Message, TopicPartition

from edgeloop.ingest.decode import Codec, JsonRecords, RecordSchema, int64_array, record_schema
from edgeloop.ingest.keys import OffsetRange, deadletter_object_key, flush_marker_key, raw_object_key
from edgeloop.ingest.progress import FlushMarker, PartitionProgress, read_progress
from edgeloop.ingest.staging import (
    OFFSET_COLUMN,
    PARTITION_COLUMN,
    PartitionStage,
    StagedFile,
    deadletter_line,
    stored_schema,
)
from edgeloop.spec import INGESTIBLE, PipelineSpec
from edgeloop.storage import DEFAULT_RETRY, RetryPolicy, get_bytes, put_if_absent

log = logging.getLogger(__name__)

# Settings that exactly-once depends on: never taken from the caller's config.
_FORCED_CONSUMER_CONFIG = {"enable.auto.commit": False, "enable.auto.offset.store": False, "enable.partition.eof": True}
# Prefetch sized for throughput within a bounded memory (messages pin whole fetch buffers).
_DEFAULT_CONSUMER_CONFIG = {
    "auto.offset.reset": "earliest",
    "queued.min.messages": 50000,
    "queued.max.messages.kbytes": 32768,
    "fetch.max.bytes": 16777216,
    "max.partition.fetch.bytes": 2097152,
}
_POLL_TIMEOUT_S = 0.2
_METADATA_TIMEOUT_S = 10.0


class IngestError(Exception):
    """Ingestion of a topic cannot go on; the message names the topic, partition or key."""


class FlushConflictError(IngestError):
    """Another run stored a different flush from the same offset (two runs at once, or changed decoding)."""


class OffsetsLostError(IngestError):
    """Kafka deleted offsets (retention) before they were ingested; the message names the range."""


StepHook = Callable[[str], None]


@dataclass
class _Partition:
    number: int
    next_offset: int
    end_offset: int
    redo: FlushMarker | None
    stage: PartitionStage | None = None
    done: bool = False


@dataclass
class _Totals:
    objects: list[str] = field(default_factory=list)
    deadletter_objects: list[str] = field(default_factory=list)
    objects_created: int = 0
    records: int = 0
    dead_letters: int = 0
    bytes: int = 0
    value_bytes: int = 0
    messages: int = 0
    flushes: int = 0
    dead_letters_by_kind: dict[str, int] = field(default_factory=dict)


def _offset_of(message: Message) -> int:
    return cast(int, message.offset())


def _partition_of(message: Message) -> int:
    return cast(int, message.partition())


def _timestamp_ms(message: Message) -> int:
    """The message's Kafka timestamp in epoch milliseconds, or -1 when the broker has none."""
    kind, value = message.timestamp()
    return int(value) if kind != TIMESTAMP_NOT_AVAILABLE else -1


def _consumer_config(spec: PipelineSpec, config: dict[str, Any], group_id: str | None) -> dict[str, Any]:
    merged = {**_DEFAULT_CONSUMER_CONFIG, "group.id": f"edgeloop.{spec.name}.ingest", **config}
    if group_id:
        merged["group.id"] = group_id
    return {**merged, **_FORCED_CONSUMER_CONFIG}


def _seconds(value: timedelta | float | None, default: timedelta) -> float:
    if value is None:
        return default.total_seconds()
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def ingest_topic(
    spec: PipelineSpec,
    topic: str,
    *,
    consumer_config: dict[str, Any],
    s3: Any,
    max_records: int | None = None,
    max_duration: timedelta | float | None = None,
    group_id: str | None = None,
    schema: RecordSchema | None = None,
    codec: Codec | None = None,
    spool_dir: Path | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    upload_workers: int = 4,
    on_step: StepHook | None = None,
    accept_lost_offsets: bool = False,
) -> dict[str, Any]:
    """Move new records of one of the pipeline's ingestible topics (`spec.INGESTIBLE`) to object storage.

    Reads from where the object store says the last run stopped, until the topic's end
    offsets at start are reached or the record/time budget (default: the spec's) is
    spent. `consumer_config` is a confluent-kafka config (bootstrap servers, security);
    `s3` a boto3 S3 client. Returns a small JSON-able summary: object keys, counts,
    lag per partition, duration. `on_step` is called after each durable step
    ("consumed", "marker", "object", "committed"); tests use it to crash at exact points.
    Offsets that retention deleted before they were ingested fail the run (OffsetsLostError
    naming the range) unless `accept_lost_offsets`: then the run goes on from the topic's
    first offset and `skipped_by_retention` counts what was lost.
    The record budget counts consumed messages (good and bad) and is checked between
    batches, so a run may read up to one batch (`spec.ingest.batch_size`) past it.
    `codec` turns message values into rows (default: the spec's JSON records, `schema`);
    `edgeloop.ingest.profiles.ProfileCodec` lands device profiles, `edgeloop.ingest.frames.FrameCodec`
    stores camera frames under their content addresses (the claim check) and lands a row per frame.
    """
    if topic not in INGESTIBLE:
        raise ValueError(f"topic '{topic}' is not one of the ingestible topics {list(INGESTIBLE)}")
    started = time.monotonic()
    kafka_topic = spec.topic(topic)
    codec = codec or JsonRecords(schema or record_schema(spec))
    codec.timestamp_field  # noqa: B018 - fail before connecting to anything
    record_limit = max_records if max_records is not None else spec.ingest.max_records
    deadline = started + _seconds(max_duration, spec.ingest.max_duration)
    step: StepHook = on_step or (lambda _name: None)

    consumer = Consumer(_consumer_config(spec, consumer_config, group_id))
    spool = Path(tempfile.mkdtemp(prefix="edgeloop-ingest-", dir=spool_dir))
    run = _Run(
        spec=spec,
        topic=kafka_topic,
        codec=codec,
        consumer=consumer,
        s3=s3,
        spool=spool,
        retry=retry,
        upload_workers=upload_workers,
        step=step,
        accept_lost_offsets=accept_lost_offsets,
    )
    try:
        partitions = run.plan()
        stopped = run.consume(partitions, record_limit, deadline)
        lag = run.lag(partitions)
    finally:
        for part in run.partitions.values():
            if part.stage is not None:
                part.stage.discard()
        consumer.close()
        shutil.rmtree(spool, ignore_errors=True)
    return _run_summary(spec, kafka_topic, run, lag, stopped, started)


def _run_summary(
    spec: PipelineSpec, kafka_topic: str, run: _Run, lag: dict[int, int], stopped: str, started: float
) -> dict[str, Any]:
    """What `ingest_topic` returns: object keys, counts, lag per partition, why it stopped, duration."""
    totals = run.totals
    return {
        "pipeline": spec.name,
        "topic": kafka_topic,
        "objects": totals.objects,
        "deadletter_objects": totals.deadletter_objects,
        "objects_created": totals.objects_created,
        "records": totals.records,
        "dead_letters": totals.dead_letters,
        "dead_letters_by_kind": dict(sorted(totals.dead_letters_by_kind.items())),
        "bytes": totals.bytes,
        "value_bytes": totals.value_bytes,
        "messages": totals.messages,
        "flushes": totals.flushes,
        "lag": {str(p): n for p, n in sorted(lag.items())},
        "lag_total": sum(lag.values()),
        "skipped_by_retention": {str(p): n for p, n in sorted(run.skipped.items()) if n},
        "stopped": stopped,
        "duration_s": round(time.monotonic() - started, 3),
    }


class _Run:
    def __init__(
        self,
        *,
        spec: PipelineSpec,
        topic: str,
        codec: Codec,
        consumer: Consumer,
        s3: Any,
        spool: Path,
        retry: RetryPolicy,
        upload_workers: int,
        step: StepHook,
        accept_lost_offsets: bool = False,
    ) -> None:
        self.spec = spec
        self.topic = topic
        self.codec = codec
        self.arrow_schema = stored_schema(codec.arrow)
        self.timestamp_field = codec.timestamp_field
        self.consumer = consumer
        self.s3 = s3
        self.bucket = spec.storage.bucket
        self.spool = spool
        self.retry = retry
        self.upload_workers = upload_workers
        self.step = step
        self.accept_lost_offsets = accept_lost_offsets
        self.partitions: dict[int, _Partition] = {}
        self.skipped: dict[int, int] = {}
        self.totals = _Totals()

    # --- where to start -------------------------------------------------------------

    def _watermarks(self, partition: int) -> tuple[int, int]:
        marks = self.consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), timeout=_METADATA_TIMEOUT_S, cached=False
        )
        if marks is None:
            raise IngestError(f"{self.topic} [{partition}]: no watermark offsets within {_METADATA_TIMEOUT_S}s")
        return int(marks[0]), int(marks[1])

    def plan(self) -> dict[int, _Partition]:
        metadata = self.consumer.list_topics(self.topic, timeout=_METADATA_TIMEOUT_S)
        topic_md = metadata.topics.get(self.topic)
        if topic_md is None or topic_md.error is not None or not topic_md.partitions:
            reason = topic_md.error if topic_md is not None else "not in the cluster metadata"
            raise IngestError(f"topic {self.topic}: {reason}")
        assignment = []
        for number in sorted(topic_md.partitions):
            low, high = self._watermarks(number)
            progress: PartitionProgress = read_progress(self.s3, self.spec, self.topic, number, policy=self.retry)
            start = low if progress.next_offset is None else progress.next_offset
            if start > high:
                raise IngestError(
                    f"{self.topic} [{number}]: storage holds offsets up to {start - 1} but the topic ends at "
                    f"{high}: was the topic recreated? Move the old objects away before ingesting it again."
                )
            if start < low:
                if progress.redo is not None:
                    raise IngestError(
                        f"{self.topic} [{number}]: an interrupted flush from offset {start} cannot be "
                        f"redone, the topic now starts at {low} (retention)"
                    )
                lost = f"{self.topic} [{number}]: offsets {start}..{low - 1} ({low - start} records)"
                if not self.accept_lost_offsets:
                    raise OffsetsLostError(
                        f"{lost} were deleted by retention before they were ingested; run ingest with "
                        f"accept_lost_offsets to go on from offset {low}"
                    )
                log.error("%s were deleted by retention before they were ingested (accepted)", lost)
                self.skipped[number] = low - start
                start = low
            part = _Partition(number, start, high, progress.redo)
            self.partitions[number] = part
            if start < high:
                assignment.append(TopicPartition(self.topic, number, start))
            else:
                part.done = True
        if assignment:
            self.consumer.assign(assignment)
        return self.partitions

    # --- the consume loop ---------------------------------------------------------------

    def consume(self, partitions: dict[int, _Partition], record_limit: int, deadline: float) -> str:
        batch_size = self.spec.ingest.batch_size
        stopped = "caught_up"
        while any(not p.done for p in partitions.values()):
            redoing = any(p.redo is not None and not p.done for p in partitions.values())
            if not redoing:
                if self.totals.messages >= record_limit:
                    stopped = "max_records"
                    break
                if time.monotonic() >= deadline:
                    stopped = "max_duration"
                    break
            messages = self.consumer.consume(num_messages=batch_size, timeout=_POLL_TIMEOUT_S)
            by_partition: dict[Any, list[Message]] = {}
            ended: list[int] = []
            for message in messages:
                error = message.error()
                if error is None:
                    by_partition.setdefault(message.partition(), []).append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    ended.append(_partition_of(message))
                elif error.fatal():
                    raise KafkaException(error)
                else:
                    log.warning("%s: consumer reported %s; librdkafka retries by itself", self.topic, error)
            for number, batch in by_partition.items():
                self._take(partitions[number], batch)
            for number in ended:
                self._finish(partitions[number])
            if messages:
                self.step("consumed")
        for part in partitions.values():
            self._flush(part)
        return stopped

    def _take(self, part: _Partition, batch: list[Message]) -> None:
        if _offset_of(batch[0]) < part.next_offset:  # a stale prefetch after a seek
            batch = [m for m in batch if _offset_of(m) >= part.next_offset]
        file_limit = self.spec.ingest.file_max_records
        while batch:
            if part.redo is not None:
                # Redo exactly the interrupted range so that every key comes out the same.
                cut = next((i for i, m in enumerate(batch) if _offset_of(m) > part.redo.last_offset), len(batch))
            else:
                staged = part.stage.messages if part.stage is not None else 0
                cut = min(len(batch), file_limit - staged)
            segment, batch = batch[:cut], batch[cut:]
            if part.redo is not None and not segment and part.stage is None:
                raise IngestError(
                    f"{self.topic} [{part.number}]: the interrupted flush "
                    f"{part.redo.first_offset}..{part.redo.last_offset} cannot be redone, offset "
                    f"{_offset_of(batch[0])} follows offset {part.next_offset - 1}"
                )
            if segment:
                self._stage(part, segment)
                part.next_offset = _offset_of(segment[-1]) + 1
            redo_done = part.redo is not None and (batch or part.next_offset > part.redo.last_offset)
            if redo_done or (part.stage is not None and part.stage.messages >= file_limit):
                self._flush(part)
        if part.next_offset >= part.end_offset:
            self._finish(part)

    def _finish(self, part: _Partition) -> None:
        if part.done:
            return
        if part.redo is not None and part.next_offset <= part.redo.last_offset:
            raise IngestError(
                f"{self.topic} [{part.number}]: the partition ends at offset {part.next_offset} before "
                f"the end {part.redo.last_offset} of the interrupted flush that must be redone"
            )
        self._flush(part)
        part.done = True
        self.consumer.pause([TopicPartition(self.topic, part.number)])

    def _stage(self, part: _Partition, messages: list[Message]) -> None:
        if part.stage is None:
            part.stage = PartitionStage(part.number, self.arrow_schema, self.spool)
        stage = part.stage
        values = [m.value() for m in messages]
        offsets = cast(list[int], [m.offset() for m in messages])
        stage.note_offsets(offsets[0], offsets[-1], len(messages))
        self.totals.messages += len(messages)
        self.totals.value_bytes += sum(map(len, filter(None, values)))
        decoded = self.codec.decode(values, [_timestamp_ms(m) for m in messages])
        if decoded.table.num_rows:
            rows = decoded.table.num_rows
            offset_column = int64_array(offsets).take(decoded.indices)
            partition_column = pa.Array.from_buffers(
                pa.int32(), rows, [None, pa.py_buffer(np.full(rows, part.number, dtype=np.int32))]
            )
            table = (
                decoded.table.append_column(PARTITION_COLUMN, partition_column)
                .append_column(OFFSET_COLUMN, offset_column)
                .cast(self.arrow_schema)
            )
            stage.add_rows(table, self._hours(table, messages, decoded.indices))
        by_kind = self.totals.dead_letters_by_kind
        for bad in decoded.bad:
            by_kind[bad.kind] = by_kind.get(bad.kind, 0) + 1
            message = messages[bad.position]
            timestamp_ms = message.timestamp()[1]
            stage.add_dead_letter(
                deadletter_line(
                    topic=self.topic,
                    partition=part.number,
                    offset=_offset_of(message),
                    timestamp_ms=timestamp_ms,
                    key=message.key(),
                    value=message.value(),
                    kind=bad.kind,
                    reason=bad.reason,
                ),
                timestamp_ms,
            )

    def _hours(self, table: pa.Table, messages: list[Message], indices: pa.Array) -> pa.ChunkedArray:
        """Start of each row's UTC hour in epoch microseconds: from its timestamp field, else the Kafka timestamp."""
        stamps = table.column(self.timestamp_field)
        if stamps.null_count:
            kafka_us = int64_array([messages[i].timestamp()[1] * 1000 for i in indices.to_pylist()])
            stamps = pc.coalesce(stamps, kafka_us.cast(stamps.type))
        return pc.cast(pc.floor_temporal(stamps, unit="hour"), pa.int64())

    # --- durable steps ------------------------------------------------------------------

    def _flush(self, part: _Partition) -> None:
        stage = part.stage
        if stage is None or stage.first_offset is None or stage.last_offset is None:
            return
        files = stage.finish()
        offsets = OffsetRange(part.number, stage.first_offset, stage.last_offset)
        keyed: list[tuple[str, StagedFile]] = []
        for staged in files:
            make_key = raw_object_key if staged.kind == "raw" else deadletter_object_key
            keyed.append((make_key(self.spec, self.topic, staged.hour, offsets), staged))
        marker = FlushMarker(
            topic=self.topic,
            partition=part.number,
            first_offset=offsets.first,
            last_offset=offsets.last,
            objects=tuple(key for key, _ in keyed),
            records=stage.records,
            dead_letters=stage.dead_letters,
        )
        marker_key = flush_marker_key(self.spec, self.topic, part.number, offsets.first)
        if not put_if_absent(
            self.s3, self.bucket, marker_key, marker.to_json(), content_type="application/json", policy=self.retry
        ):
            stored = FlushMarker.from_json(get_bytes(self.s3, self.bucket, marker_key, policy=self.retry), marker_key)
            if (stored.last_offset, sorted(stored.objects)) != (marker.last_offset, sorted(marker.objects)):
                raise FlushConflictError(
                    f"{marker_key} records offsets {stored.first_offset}..{stored.last_offset} with objects "
                    f"{list(stored.objects)}, this run made {offsets.first}..{offsets.last} with "
                    f"{list(marker.objects)}: is another ingest of {self.topic} running?"
                )
        self.step("marker")

        def upload(item: tuple[str, StagedFile]) -> bool:
            key, staged = item
            content_type = "application/vnd.apache.parquet" if staged.kind == "raw" else "application/x-ndjson"
            created = put_if_absent(
                self.s3, self.bucket, key, staged.path, content_type=content_type, policy=self.retry
            )
            self.step("object")
            return created

        with ThreadPoolExecutor(max_workers=max(1, min(self.upload_workers, len(keyed)))) as pool:
            created = list(pool.map(upload, keyed))
        try:
            # Monitoring only: the object store is what the next run resumes from.
            self.consumer.commit(offsets=[TopicPartition(self.topic, part.number, offsets.last + 1)], asynchronous=True)
        except KafkaException as exc:
            log.warning("%s [%d]: offset commit failed (%s); storage holds the progress", self.topic, part.number, exc)
        self.step("committed")

        totals = self.totals
        for (key, staged), was_created in zip(keyed, created, strict=True):
            (totals.objects if staged.kind == "raw" else totals.deadletter_objects).append(key)
            totals.objects_created += int(was_created)
            totals.bytes += staged.size
        totals.records += stage.records
        totals.dead_letters += stage.dead_letters
        totals.flushes += 1
        stage.discard()
        part.stage = None
        part.redo = None

    def lag(self, partitions: dict[int, _Partition]) -> dict[int, int]:
        lag = {}
        for number, part in partitions.items():
            try:
                _, high = self._watermarks(number)
            except (IngestError, KafkaException):
                high = part.end_offset
            lag[number] = max(0, high - part.next_offset)
        return lag
