"""What the generator can see on the Kafka cluster: topics, recent messages, edge groups.

Every read is bounded (a time budget and a message budget), never joins a consumer
group and never commits, so browsing topics from the page leaves no trace on the
cluster. Functions take a confluent-kafka client config (from the `edgeloop_kafka`
Airflow connection) as an argument.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeloop.generator.inference import SampleMessage
from edgeloop.kafka import client_config

SOURCE_KINDS = ("telemetry", "health", "errors")
PIPELINE_KINDS = ("telemetry", "health", "errors", "control", "device-state", "alerts", "devices")
MAX_SAMPLE = 500


class UnknownTopic(LookupError):
    """The topic does not exist on the cluster."""


class KafkaUnavailable(RuntimeError):
    """The cluster did not answer in time; the message names the bootstrap servers."""


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    messages: int | None
    prefix: str | None
    kind: str | None

    @property
    def is_source(self) -> bool:
        """A topic a pipeline can ingest: `<prefix>.telemetry`, `.health` or `.errors`."""
        return self.kind in SOURCE_KINDS

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "partitions": self.partitions,
            "messages": self.messages,
            "prefix": self.prefix,
            "kind": self.kind,
            "is_source": self.is_source,
        }


def split_topic(name: str) -> tuple[str | None, str | None]:
    """(`prefix`, `kind`) of a pipeline topic name, or (None, None) for any other topic."""
    prefix, dot, kind = name.rpartition(".")
    if dot and prefix and kind in PIPELINE_KINDS:
        return prefix, kind
    return None, None


def _bootstrap(config: Mapping[str, Any]) -> str:
    return str(config.get("bootstrap.servers", "?"))


def list_topics(config: Mapping[str, Any], timeout: float = 5.0) -> list[TopicInfo]:
    """Every topic that is not internal, with partitions and an approximate message count."""
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

    admin = AdminClient(client_config(dict(config)))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(f"Kafka at {_bootstrap(config)} did not answer in {timeout:.0f}s: {exc}") from exc
    topics = {
        name: sorted(t.partitions) for name, t in metadata.topics.items() if not name.startswith("__") and not t.error
    }
    partitions = [TopicPartition(name, p) for name, parts in topics.items() for p in parts]
    counts: dict[str, int | None] = dict.fromkeys(topics, 0)
    if partitions:
        try:
            high = _offsets(admin, {tp: OffsetSpec.latest() for tp in partitions}, timeout)
            low = _offsets(admin, {tp: OffsetSpec.earliest() for tp in partitions}, timeout)
        except KafkaException:
            counts = dict.fromkeys(topics)  # counts are a nicety: list the topics without them
        else:
            for (topic, partition), end in high.items():
                counts[topic] = (counts[topic] or 0) + max(0, end - low.get((topic, partition), 0))
    out = []
    for name in sorted(topics):
        prefix, kind = split_topic(name)
        out.append(TopicInfo(name, len(topics[name]), counts[name], prefix, kind))
    return out


def _offsets(admin: Any, request: Mapping[Any, Any], timeout: float) -> dict[tuple[str, int], int]:
    futures = admin.list_offsets(dict(request), request_timeout=timeout)
    return {(tp.topic, tp.partition): int(f.result(timeout=timeout).offset) for tp, f in futures.items()}


def sample_messages(
    config: Mapping[str, Any], topic: str, limit: int = 50, timeout: float = 10.0
) -> list[SampleMessage]:
    """The most recent `limit` messages of a topic (newest last); raise UnknownTopic if it does not exist."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    from edgeloop.fleet.topics import reader_config, watermarks

    limit = max(1, min(limit, MAX_SAMPLE))
    consumer = Consumer(reader_config(config))
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=min(timeout, 5.0)).topics.get(topic)
        except KafkaException as exc:
            raise KafkaUnavailable(f"Kafka at {_bootstrap(config)}: {exc}") from exc
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise UnknownTopic(f"topic '{topic}' does not exist on the cluster")
        starts: list[TopicPartition] = []
        ends: dict[int, int] = {}
        for partition in sorted(metadata.partitions):
            low, high = watermarks(consumer, TopicPartition(topic, partition), timeout)
            if high > low:
                ends[partition] = high
                starts.append(TopicPartition(topic, partition, max(low, high - limit)))
        messages: list[SampleMessage] = []
        if starts:
            consumer.assign(starts)
            remaining = set(ends)
            deadline = time.monotonic() + timeout
            while remaining and time.monotonic() < deadline:
                for message in consumer.consume(num_messages=500, timeout=0.5):
                    error = message.error()
                    partition = message.partition() or 0
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            remaining.discard(partition)
                        continue
                    offset = message.offset() or 0
                    if offset < ends.get(partition, 0):
                        messages.append(
                            SampleMessage(partition, offset, message.timestamp()[1], message.key(), message.value())
                        )
                    if offset >= ends.get(partition, 0) - 1:
                        remaining.discard(partition)
        messages.sort(key=lambda m: (m.timestamp_ms, m.partition, m.offset))
        return messages[-limit:]
    finally:
        consumer.close()


def device_state_groups(config: Mapping[str, Any], prefix: str, timeout: float = 10.0) -> dict[str, int] | None:
    """Group id -> devices from the fleet state topic `<prefix>.device-state`; None when it does not exist."""
    from edgeloop.contract.messages import BadDeviceState, parse_device_state
    from edgeloop.fleet.topics import TopicMissing, read_topic

    latest: dict[bytes, bytes | None] = {}
    try:
        for record in read_topic(config, f"{prefix}.device-state", timeout=timeout):
            if record.key is not None:
                latest[record.key] = record.value
    except TopicMissing:
        return None
    devices: dict[str, int] = {}
    for key, value in latest.items():
        if value is None:
            continue
        try:
            state = parse_device_state(key, value)
        except BadDeviceState:
            continue
        devices[state.group_id] = devices.get(state.group_id, 0) + 1
    return dict(sorted(devices.items()))
