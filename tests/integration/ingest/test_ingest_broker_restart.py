"""Kafka restarted in the middle of an ingest run: the run carries on or the next one does; nothing lost or doubled."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from benchmarks.soak_ingest import create_topic, ingest_spec, make_record, produce, read_back
from private_broker import PrivateBroker

from edgeloop.ingest import ingest_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    from edgeloop.devstack.config import StackConfig

    libs = StackConfig.from_env().kafka_libs
    if not any(libs.glob("kafka_2.13-*.jar")):
        pytest.skip(f"no Kafka jars in {libs} (make kafka-libs)")
    private = PrivateBroker(libs, tmp_path)
    private.start()
    try:
        yield private
    finally:
        private.stop()


def test_a_broker_restart_mid_run_loses_and_duplicates_nothing(
    broker: PrivateBroker, stack_env: dict[str, str], s3_client: Any
) -> None:
    run = uuid.uuid4().hex[:8]
    spec = ingest_spec(
        bucket=stack_env.get("EDGELOOP_BUCKET", "edgeloop"),
        topic_prefix=f"it_restart_{run}",
        storage_prefix=f"it/restart/{run}",
        partitions=2,
        batch_size=200,
        file_max_records=400,
    )
    topic = spec.topic("telemetry")
    create_topic(broker.bootstrap, topic, 2)
    rng = random.Random(9)
    start = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    produce(
        broker.bootstrap,
        topic,
        [
            (n % 2, json.dumps(make_record(spec, f"k-{n}", start + timedelta(seconds=n), rng)).encode())
            for n in range(20_000)
        ],
    )

    flushed = threading.Event()
    slow_down = threading.Event()

    def on_step(step: str) -> None:
        if step == "committed":
            flushed.set()
        if slow_down.is_set():
            time.sleep(0.05)  # keep the run going across the restart

    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def ingest() -> None:
        try:
            results.append(
                ingest_topic(
                    spec,
                    "telemetry",
                    consumer_config={"bootstrap.servers": broker.bootstrap},
                    s3=s3_client,
                    max_duration=120,
                    on_step=on_step,
                )
            )
        except BaseException as exc:
            errors.append(exc)

    slow_down.set()
    worker = threading.Thread(target=ingest)
    worker.start()
    assert flushed.wait(60), "the run never flushed"
    assert worker.is_alive(), "the restart must happen in the middle of the run"
    broker.stop()
    time.sleep(2)
    broker.start()
    slow_down.clear()
    worker.join(180)
    assert not worker.is_alive()

    # The interrupted run either finished through the restart or failed; either way a re-run completes the topic.
    final = ingest_topic(spec, "telemetry", consumer_config={"bootstrap.servers": broker.bootstrap}, s3=s3_client)
    assert final["lag_total"] == 0
    written = sum(r["records"] for r in results) + final["records"]
    stored = read_back(s3_client, spec, topic)
    assert len(stored.record_ids) == 20_000 and set(stored.record_ids.values()) == {1}
    assert written >= 20_000 - 400 * 2, "records are written once, redone flushes aside"
    assert results or errors
    if results:
        assert results[0]["records"] + final["records"] == 20_000, "the run went on after the restart"
