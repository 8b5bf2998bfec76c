"""The pipeline's Kafka topics: create them (`ensure_topics`) and read a bounded slice of one.

Topic layout per pipeline (`<prefix>` = `spec.topics.prefix` or the pipeline name):

| topic | partitions | cleanup | notes |
|---|---|---|---|
| `.telemetry`, `.health`, `.errors`, `.alerts` | spec.topics.partitions | delete | key = device (alerts: group) |
| `<prefix>.profiles` | spec.topics.partitions | delete | key = device, one binary profile per device and window |
| `<prefix>.shadow` | spec.topics.partitions | delete | key = device, a shadow report per window (shadow on) |
| `<prefix>.control` | 1 | delete | one partition: every device sees assignments in one total order |
| `<prefix>.device-state` | spec.topics.partitions | compact | key = device id, desired and reported state |
| `<prefix>.devices` | 1 | compact | key = device id, the device registry (enrolments signed by the operator) |
| `<prefix>.ground-truth` | 1 | delete | simulator only: hidden true labels, read by simulated annotators |

Readers here never join a consumer group and never commit: they assign partitions,
read from a start (beginning or a time) up to the high watermark seen when they
started, and stop. They are for status and health checks, not for ingestion.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from edgeloop.spec import PipelineSpec

log = logging.getLogger(__name__)

_LEADER_ERRORS = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}

GROUND_TRUTH = "ground-truth"
COMPACTED_KINDS = ("device-state", "devices")
_COMPACTED = {
    "cleanup.policy": "compact",
    "min.cleanable.dirty.ratio": "0.1",
    "segment.ms": "3600000",
    "delete.retention.ms": "86400000",
}


class TopicMissing(LookupError):
    """A topic that a reader needs does not exist."""


class TopicReadTimeout(TimeoutError):
    """A bounded read did not reach the end of its slice in time."""


class TopicSetupError(RuntimeError):
    """Creating or configuring a topic failed; the message names the topic."""


@dataclass(frozen=True)
class TopicPlan:
    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]


def topic_plan(spec: PipelineSpec, *, ground_truth: bool = True) -> list[TopicPlan]:
    """The topics a pipeline needs, with partitions and configs (see the module docstring)."""
    replication = spec.topics.replication_factor
    plans = []
    for kind in spec.topic_kinds:
        partitions = 1 if kind in ("control", "devices") else spec.topics.partitions
        config = _COMPACTED if kind in COMPACTED_KINDS else {}
        plans.append(TopicPlan(spec.topic(kind), partitions, replication, config))
    if ground_truth:
        plans.append(TopicPlan(spec.topic(GROUND_TRUTH), 1, replication, {}))
    return plans


def ensure_topics(
    spec: PipelineSpec, admin_config: Mapping[str, Any], *, ground_truth: bool = True, timeout: float = 30.0
) -> dict[str, str]:
    """Create the pipeline's topics if missing; make sure device-state is compacted.

    Idempotent. Returns topic name -> "created" | "exists" | "compacted" (an existing
    device-state topic that was not compacted and has been switched to compaction).
    """
    admin = AdminClient(dict(admin_config))
    plans = topic_plan(spec, ground_truth=ground_truth)
    existing = set(admin.list_topics(timeout=timeout).topics)
    result: dict[str, str] = {p.name: "exists" for p in plans if p.name in existing}
    missing = [p for p in plans if p.name not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(p.name, p.partitions, p.replication_factor, config=dict(p.config)) for p in missing],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=timeout)
                result[name] = "created"
            except KafkaException as exc:
                if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    result[name] = "exists"
                else:
                    raise TopicSetupError(f"topic {name}: creation failed: {exc}") from exc
    _wait_for_leaders(admin, [p.name for p in missing], timeout)
    for kind in COMPACTED_KINDS:
        state_topic = spec.topic(kind)
        if result.get(state_topic) == "exists" and not _is_compacted(admin, state_topic, timeout):
            _make_compacted(admin, state_topic, timeout)
            result[state_topic] = "compacted"
    return result


def _wait_for_leaders(admin: AdminClient, topics: list[str], timeout: float) -> None:
    """New topics are usable once every partition has a leader; wait for that."""
    deadline = time.monotonic() + timeout
    waiting = set(topics)
    while waiting:
        metadata = admin.list_topics(timeout=timeout).topics
        for name in list(waiting):
            topic = metadata.get(name)
            if topic is not None and topic.partitions and all(p.leader >= 0 for p in topic.partitions.values()):
                waiting.discard(name)
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise TopicSetupError(f"topics {sorted(waiting)}: partitions without a leader after {timeout}s")
        time.sleep(0.2)


def watermarks(consumer: Consumer, partition: TopicPartition, timeout: float) -> tuple[int, int]:
    """Low and high watermark, retrying while a new topic's partition has no leader yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=timeout)
            return int(low), int(high)
        except KafkaException as exc:
            retriable = exc.args and exc.args[0].code() in _LEADER_ERRORS
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _is_compacted(admin: AdminClient, topic: str, timeout: float) -> bool:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout=timeout)
    policy = configs.get("cleanup.policy")
    return policy is not None and "compact" in str(policy.value)


def _make_compacted(admin: AdminClient, topic: str, timeout: float) -> None:
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in _COMPACTED.items()]
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
    try:
        admin.incremental_alter_configs([resource])[resource].result(timeout=timeout)
    except KafkaException as exc:
        raise TopicSetupError(f"topic {topic}: could not switch to cleanup.policy=compact: {exc}") from exc
    log.warning("topic %s was not compacted; switched it to cleanup.policy=compact", topic)


# --- bounded readers ------------------------------------------------------------------


@dataclass(frozen=True)
class TopicRecord:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


def reader_config(kafka_config: Mapping[str, Any]) -> dict[str, Any]:
    """A consumer config for group-less, commit-less reads built from a client config."""
    config = {k: v for k, v in kafka_config.items() if not k.startswith(("group.", "enable.auto"))}
    config.update(
        {
            "group.id": f"edgeloop-reader-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    return config


def topic_partitions(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    """The partition numbers of a topic; raise TopicMissing if it does not exist."""
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise TopicMissing(f"topic {topic} does not exist")
    return sorted(metadata.partitions)


def read_assigned(
    consumer: Consumer,
    topic: str,
    starts: Mapping[int, int],
    ends: Mapping[int, int],
    *,
    deadline: float,
    batch: int = 5000,
) -> Generator[TopicRecord, None, None]:
    """Yield records of `topic` from each partition's start offset up to (not including) its end offset.

    Stop iterating whenever you have enough; raise TopicReadTimeout at `deadline` (monotonic time).
    """
    remaining = {p for p in starts if starts[p] < ends[p]}
    if not remaining:
        return
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(remaining)])
    try:
        while remaining:
            if time.monotonic() > deadline:
                unfinished = sorted(remaining)
                raise TopicReadTimeout(f"topic {topic}: partitions {unfinished} not read to their end in time")
            for message in consumer.consume(num_messages=batch, timeout=0.5):
                partition = message.partition()
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(partition)
                        continue
                    raise KafkaException(error)
                offset = message.offset() or 0
                if partition not in remaining or offset >= ends[partition]:
                    remaining.discard(partition)
                    continue
                if offset >= ends[partition] - 1:
                    remaining.discard(partition)
                yield TopicRecord(partition, offset, message.timestamp()[1], message.key(), message.value())
    finally:
        consumer.unassign()


def read_bounds(
    consumer: Consumer,
    topic: str,
    timeout: float,
    *,
    since_ms: int | None = None,
    after: Mapping[int, int] | None = None,
) -> tuple[dict[int, int], dict[int, int]]:
    """Per partition, the offset a read starts at and its end (the high watermark now).

    The start is the partition's first record, or its first at or after `since_ms`, or the offset in `after`
    where a follower stopped (never below the partition's low watermark). Raise TopicMissing.
    """
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    for partition in topic_partitions(consumer, topic, min(timeout, 10.0)):
        low, ends[partition] = watermarks(consumer, TopicPartition(topic, partition), timeout)
        starts[partition] = max(low, after.get(partition, low)) if after is not None else low
    if since_ms is not None and after is None:
        wanted = [TopicPartition(topic, p, since_ms) for p in starts]
        for tp in consumer.offsets_for_times(wanted, timeout=timeout):
            # no record at or after since_ms (offset -1): nothing to read in that partition
            starts[tp.partition] = tp.offset if tp.offset >= 0 else ends[tp.partition]
    return starts, ends


def read_topic(
    kafka_config: Mapping[str, Any],
    topic: str,
    *,
    since_ms: int | None = None,
    timeout: float = 60.0,
    batch: int = 5000,
) -> Iterator[TopicRecord]:
    """Yield a topic's records from the beginning (or from `since_ms`) to its current end.

    The end is the high watermark of each partition when the read starts, so a busy
    topic still ends. Raise TopicMissing if the topic does not exist and
    TopicReadTimeout if the end is not reached within `timeout` seconds.
    """
    consumer = Consumer(reader_config(kafka_config))
    deadline = time.monotonic() + timeout
    try:
        starts, ends = read_bounds(consumer, topic, timeout, since_ms=since_ms)
        yield from read_assigned(consumer, topic, starts, ends, deadline=deadline, batch=batch)
    finally:
        consumer.close()


class _Follower:
    """A topic read once and then followed: each `_read_new` reads only what was published since the last one."""

    def __init__(self, kafka_config: Mapping[str, Any], topic: str) -> None:
        self.kafka_config = kafka_config
        self.topic = topic
        self._next: dict[int, int] | None = None  # per partition, the offset the next read starts at

    def _read_new(self, timeout: float, since_ms: int | None = None) -> list[TopicRecord]:
        """Raise TopicMissing if the topic does not exist, TopicReadTimeout if its end is not reached in time."""
        consumer = Consumer(reader_config(self.kafka_config))
        deadline = time.monotonic() + timeout
        try:
            starts, ends = read_bounds(consumer, self.topic, timeout, since_ms=since_ms, after=self._next)
            records = list(read_assigned(consumer, self.topic, starts, ends, deadline=deadline))
            self._next = ends
            return records
        finally:
            consumer.close()


class CompactedFollower(_Follower):
    """A compacted topic read to its end once, then followed: each `refresh` reads only what was published
    since the last one. `history` holds each key's (offset, value) records, oldest first (None: a tombstone).

    Readers walk a key's records from the newest back to the newest one they accept, so that a
    record they refuse (forged, unreadable) neither counts nor hides the good one before it.
    """

    def __init__(self, kafka_config: Mapping[str, Any], topic: str) -> None:
        super().__init__(kafka_config, topic)
        self.history: dict[bytes, list[tuple[int, bytes | None]]] = {}

    def refresh(self, *, timeout: float = 60.0) -> set[bytes]:
        """Read the records published since the last refresh; return the keys they changed (see `_read_new`)."""
        changed: set[bytes] = set()
        for record in self._read_new(timeout):
            if record.key is not None:
                self.history.setdefault(record.key, []).append((record.offset, record.value))
                changed.add(record.key)
        return changed


class TopicTail(_Follower):
    """A topic's recent records, read once from a moment on and then followed."""

    def __init__(self, kafka_config: Mapping[str, Any], topic: str) -> None:
        super().__init__(kafka_config, topic)
        self.records: list[TopicRecord] = []
        self._since: int | None = None

    def read(self, since_ms: int, *, timeout: float = 60.0) -> list[TopicRecord]:
        """The records from `since_ms` to the topic's end now; reads only what is new unless asked further back
        than before. Raise TopicMissing, TopicReadTimeout (see `_read_new`)."""
        if self._since is None or since_ms < self._since:
            self._next, self.records = None, []
        self.records.extend(self._read_new(timeout, since_ms))
        self._since = since_ms
        self.records = [r for r in self.records if r.timestamp_ms >= since_ms]
        return self.records


class NewRecords(_Follower):
    """A topic's records published after a moment: `start` marks the topic's end now, and each `read` returns
    what was published since the last one (from the mark on). Nothing from before the mark is ever read."""

    def start(self, *, timeout: float = 60.0) -> None:
        """Mark the topic's end now (a topic that does not exist yet is read from its first record)."""
        consumer = Consumer(reader_config(self.kafka_config))
        try:
            _, self._next = read_bounds(consumer, self.topic, timeout)
        except TopicMissing:
            self._next = {}
        finally:
            consumer.close()

    def read(self, *, timeout: float = 60.0) -> list[TopicRecord]:
        """The records published since the last read; raise TopicMissing, TopicReadTimeout (see `_read_new`)."""
        if self._next is None:
            raise RuntimeError(f"topic {self.topic}: read before start")
        return self._read_new(timeout)


def records_by_key(
    kafka_config: Mapping[str, Any], topic: str, *, timeout: float = 60.0
) -> dict[bytes, list[tuple[int, bytes | None]]]:
    """A compacted topic read to its end: each key's (offset, value) records, oldest first (see CompactedFollower).

    Raise TopicMissing if the topic does not exist.
    """
    follower = CompactedFollower(kafka_config, topic)
    follower.refresh(timeout=timeout)
    return follower.history
