"""The simulator's hidden true labels, and the reader that only simulated annotators use.

Where: the Kafka topic `<prefix>.ground-truth` (one partition, created by
`ensure_topics`), which no pipeline stage ingests. Each message holds the labels
of every record one simulator step produced:
`{"from_ms": 1767225600000, "to_ms": 1767225600000, "labels": {"<record id>": "wear", ...}}`
with the message timestamp set to `to_ms`.

Record ids are `<device id>-<generation time in epoch ms>-<sequence>`, so a reader
can seek by time (`offsets_for_times`) straight to the few messages that hold the
labels it wants instead of scanning the topic. Labels are written when a reading
is generated, even if the device is offline and sends the record hours later.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from contextlib import closing
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from edgeloop.fleet.topics import GROUND_TRUTH, read_assigned, reader_config, topic_partitions, watermarks
from edgeloop.spec import PipelineSpec

_CLUSTER_GAP_MS = 30_000
_CHUNK = 5000


def record_id(device_id: str, generated_ms: int, seq: int) -> str:
    return f"{device_id}-{generated_ms}-{seq}"


def generated_ms(rid: str) -> int | None:
    """The generation time encoded in a simulator record id, or None for other ids."""
    parts = rid.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return int(parts[1])


def truth_messages(labels: list[tuple[str, str]], from_ms: int, to_ms: int) -> list[bytes]:
    """Ground-truth message values for one step's records, in chunks of at most 5000 labels."""
    return [
        json.dumps({"from_ms": from_ms, "to_ms": to_ms, "labels": dict(labels[i : i + _CHUNK])}).encode()
        for i in range(0, len(labels), _CHUNK)
    ]


def _clusters(times: Mapping[str, int]) -> list[tuple[int, int, set[str]]]:
    ordered = sorted(times.items(), key=lambda item: item[1])
    clusters: list[tuple[int, int, set[str]]] = []
    for rid, ms in ordered:
        if clusters and ms - clusters[-1][1] <= _CLUSTER_GAP_MS:
            start, _, ids = clusters[-1]
            ids.add(rid)
            clusters[-1] = (start, ms, ids)
        else:
            clusters.append((ms, ms, {rid}))
    return clusters


def true_labels(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    record_ids: Iterable[str],
    *,
    timeout: float = 60.0,
    slack_ms: int = 120_000,
) -> dict[str, str]:
    """The hidden true label of each simulated record id that the ground-truth topic holds.

    Ids that are not simulator ids, or whose labels are not found, are left out of
    the result (the caller counts them). Raise TopicMissing when no simulator has
    written ground truth for this pipeline. Only simulated annotators may call this.
    """
    topic = spec.topic(GROUND_TRUTH)
    times = {rid: ms for rid in set(record_ids) if (ms := generated_ms(rid)) is not None}
    found: dict[str, str] = {}
    if not times:
        return found
    consumer = Consumer(reader_config(kafka_config))
    deadline = time.monotonic() + timeout
    try:
        partitions = topic_partitions(consumer, topic, min(timeout, 10.0))
        for start_ms, end_ms, wanted in _clusters(times):
            window = (start_ms, end_ms + slack_ms)
            _read_cluster(consumer, topic, partitions, window, wanted, found=found, deadline=deadline)
    finally:
        consumer.close()
    return found


def _read_cluster(
    consumer: Consumer,
    topic: str,
    partitions: list[int],
    window: tuple[int, int],
    wanted: set[str],
    *,
    found: dict[str, str],
    deadline: float,
) -> None:
    start_ms, stop_ms = window
    seeks = consumer.offsets_for_times([TopicPartition(topic, p, start_ms) for p in partitions], timeout=10.0)
    starts, ends = {}, {}
    for tp in seeks:
        _, high = watermarks(consumer, TopicPartition(topic, tp.partition), 10.0)
        if 0 <= tp.offset < high:
            starts[tp.partition], ends[tp.partition] = tp.offset, high
    missing = set(wanted)
    passed: set[int] = set()  # partitions already past the cluster's time window
    with closing(read_assigned(consumer, topic, starts, ends, deadline=deadline, batch=500)) as stream:
        for record in stream:
            if record.partition in passed:
                continue
            try:
                body = json.loads(record.value or b"{}")
            except json.JSONDecodeError:
                continue
            if not isinstance(body, dict) or not isinstance(body.get("labels"), dict):
                continue
            if int(body.get("from_ms", 0)) > stop_ms:
                passed.add(record.partition)
            labels = body["labels"]
            for rid in [r for r in missing if r in labels]:
                found[rid] = str(labels[rid])
                missing.discard(rid)
            if not missing or passed == set(starts):
                return
