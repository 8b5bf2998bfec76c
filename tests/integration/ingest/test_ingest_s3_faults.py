"""S3 failing and stalling under the ingest stage: retried, nothing lost, nothing stored twice."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from benchmarks.soak_ingest import make_record, produce, read_back
from benchmarks.soak_ingest import s3_client as make_s3_client
from faulty_s3_proxy import FaultyS3Proxy

from edgeloop.ingest import ingest_topic
from edgeloop.spec import PipelineSpec
from edgeloop.storage import RetryPolicy

pytestmark = pytest.mark.integration


def test_injected_5xx_and_slow_answers_are_retried_without_loss_or_duplicates(
    make_spec: Callable[..., PipelineSpec], stack_env: dict[str, str], kafka_config: dict[str, str], s3_client: Any
) -> None:
    spec = make_spec(partitions=2, batch_size=100, file_max_records=150)
    topic = spec.topic("telemetry")
    rng = random.Random(5)
    start = datetime(2026, 3, 1, 9, 50, tzinfo=UTC)
    messages: list[tuple[int | None, bytes | None]] = [
        (n % 2, json.dumps(make_record(spec, f"f-{n}", start + timedelta(seconds=3 * n), rng)).encode())
        for n in range(1500)
    ]
    messages[77] = (1, b"not json")  # a dead letter goes through the faults too
    produce(kafka_config["bootstrap.servers"], topic, messages)

    with FaultyS3Proxy(stack_env["EDGELOOP_S3_ENDPOINT"], fault_rate=0.3, slow_seconds=1.5, max_slow=4) as proxy:
        # botocore's own retries off: every fault reaches edgeloop's retry loop.
        faulty = make_s3_client(proxy.url, read_timeout=1, connect_timeout=1, retries={"total_max_attempts": 1})
        retry = RetryPolicy(attempts=12, base_delay=0.01, max_delay=0.1)
        first = ingest_topic(spec, "telemetry", consumer_config=kafka_config, s3=faulty, retry=retry)
        again = ingest_topic(spec, "telemetry", consumer_config=kafka_config, s3=faulty, retry=retry)

    assert {"error_before", "error_after", "slow_after"} <= set(proxy.faults), proxy.faults
    assert (first["records"], first["dead_letters"], again["records"]) == (1499, 1, 0)
    stored = read_back(s3_client, spec, topic)
    assert len(stored.record_ids) == 1499 and set(stored.record_ids.values()) == {1}
    assert list(stored.deadletter_offsets.values()) == [1]
