"""Hostile messages on the real broker: ingest keeps running, dead-letters each with its reason, stores the rest.

The messages a device (or anyone who can write to the topic) could send that took stages
down or slipped through: a lone `null` first in its partition (it crashed Arrow's JSON
reader with SIGSEGV), 100 KB of nested brackets, timestamps in year 1 and 9999, a
confidence of 7.5, a prediction that is a script, a group of another pipeline, device ids
with NUL, U+202E, `../` or 900 KB long, invalid UTF-8 and a lone surrogate escape. And
offsets Kafka deleted before they were ingested fail the run with the range named.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from benchmarks.soak_ingest import make_record, produce, read_back

from edgeloop.ingest import OffsetsLostError, ingest_topic
from edgeloop.spec import PipelineSpec

pytestmark = pytest.mark.integration

DEEP = b"[" * 50_000 + b"]" * 50_000


def ingest(spec: PipelineSpec, kafka_config: dict[str, str], s3: Any, **kwargs: Any) -> dict[str, Any]:
    return ingest_topic(spec, "telemetry", consumer_config=kafka_config, s3=s3, **kwargs)


def hostile_messages(good: dict[str, Any]) -> dict[str, bytes]:
    """Each hostile value with (part of) the reason its dead letter must give."""

    def like_good(**fields: Any) -> bytes:
        return json.dumps({**good, **fields}).encode()

    return {
        "schema: expected a JSON object, got null": b"null",
        "invalid JSON: nested more than the limit of 32 levels deep": b'{"record_id": "deep", "x": ' + DEEP + b"}",
        "field: 'ts' (timestamp): 0001-01-01T00:00:00+00:00 is": like_good(ts="0001-01-01T00:00:00Z"),
        "field: 'ts' (timestamp): 9999-12-31T23:59:59+00:00 is": like_good(ts="9999-12-31T23:59:59Z"),
        "field: 'confidence' (confidence): 7.5 is outside [0, 1]": like_good(confidence=7.5),
        "field: 'prediction' (prediction): \"</script><script>alert(1)</script>\" is not one of the labels": (
            like_good(prediction="</script><script>alert(1)</script>")
        ),
        "field: 'group_id' (group_id): \"mars\" is not one of the groups": like_good(group_id="mars"),
        "field: 'device_id' (device_id): \"dev\\u0000one\"": like_good(device_id="dev\x00one"),
        "field: 'device_id' (device_id): \"dev\\u202eeno\"": like_good(device_id="dev\u202eeno"),
        "field: 'device_id' (device_id): \"../../etc/passwd\"": like_good(device_id="../../etc/passwd"),
        "(900000 characters) does not match": like_good(device_id="d" * 900_000),
        "undecodable: not UTF-8": b'{"record_id": "\xc3\x28"}',
        "lone UTF-16 surrogate": like_good(device_id="\ud800"),
        "invalid JSON: Extra data": like_good() + b" null",
    }


def test_hostile_messages_are_dead_lettered_with_reasons_beside_the_good_records(
    make_spec: Callable[..., PipelineSpec], kafka_config: dict[str, str], s3_client: Any
) -> None:
    spec = make_spec(partitions=1, max_record_age=timedelta(days=7))
    topic = spec.topic("telemetry")
    rng = random.Random(21)
    now = datetime.now(UTC)
    good = make_record(spec, "template", now, rng)
    hostile = hostile_messages(good)
    messages: list[tuple[int | None, bytes | None]] = []
    for n, value in enumerate(hostile.values()):  # the null first: the partition's first batch starts with it
        messages.append((0, value))
        messages.append((0, json.dumps(make_record(spec, f"good-{n}", now, rng)).encode()))
    offsets = produce(kafka_config["bootstrap.servers"], topic, messages)

    result = ingest(spec, kafka_config, s3_client)

    assert (result["records"], result["dead_letters"], result["stopped"]) == (len(hostile), len(hostile), "caught_up")
    assert result["dead_letters_by_kind"] == {"field": 9, "invalid_json": 3, "schema": 1, "undecodable": 1}
    stored = read_back(s3_client, spec, topic)
    assert set(stored.record_ids) == {f"good-{n}" for n in range(len(hostile))}
    for n, reason in enumerate(hostile):
        assert reason in stored.deadletter_reasons[offsets[2 * n]], (reason, stored.deadletter_reasons[offsets[2 * n]])
    again = ingest(spec, kafka_config, s3_client)
    assert (again["records"], again["dead_letters"]) == (0, 0), "a re-run stores nothing twice"


def test_offsets_deleted_by_retention_before_ingest_fail_the_run_naming_the_range(
    make_spec: Callable[..., PipelineSpec], kafka_config: dict[str, str], s3_client: Any
) -> None:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    spec = make_spec(partitions=1)
    topic = spec.topic("telemetry")
    rng = random.Random(3)
    now = datetime.now(UTC)

    def records(first: int, count: int) -> list[tuple[int | None, bytes | None]]:
        return [(0, json.dumps(make_record(spec, f"r-{n}", now, rng)).encode()) for n in range(first, first + count)]

    bootstrap = kafka_config["bootstrap.servers"]
    produce(bootstrap, topic, records(0, 10))
    assert ingest(spec, kafka_config, s3_client)["records"] == 10
    produce(bootstrap, topic, records(10, 10))
    # What retention does: the log now starts at offset 15, offsets 10..14 were never ingested.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    (future,) = admin.delete_records([TopicPartition(topic, 0, 15)]).values()
    future.result(30)

    with pytest.raises(OffsetsLostError, match=r"\[0\]: offsets 10\.\.14 \(5 records\) were deleted by retention"):
        ingest(spec, kafka_config, s3_client)
    accepted = ingest(spec, kafka_config, s3_client, accept_lost_offsets=True)
    assert (accepted["records"], accepted["skipped_by_retention"]) == (5, {"0": 5})
    assert set(read_back(s3_client, spec, topic).record_ids) == {f"r-{n}" for n in (*range(10), *range(15, 20))}
