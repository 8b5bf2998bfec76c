"""Acknowledged publishing: every message is confirmed by Kafka, or the error names the topic and the keys.

A consumer's config becomes a producer's (or an admin's) by one rule: consumer-only settings are left out."""

from __future__ import annotations

from typing import Any

import confluent_kafka
import pytest

from edgeloop.kafka import PublishError, client_config, publish_messages


class FakeMessage:
    def __init__(self, key: bytes | None) -> None:
        self._key = key

    def key(self) -> bytes | None:
        return self._key


class FakeProducer:
    """Records what is produced; refuses the keys in `refused` and leaves `undelivered` messages in its queue."""

    refused: frozenset[bytes] = frozenset()
    undelivered = 0
    made: list[FakeProducer] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.produced: list[tuple[str, bytes | None, bytes | None]] = []
        self.flush_timeout: float | None = None
        FakeProducer.made.append(self)

    def produce(self, topic: str, value: bytes | None, key: bytes | None, on_delivery: Any) -> None:
        self.produced.append((topic, key, value))
        on_delivery("broker refused" if key in self.refused else None, FakeMessage(key))

    def flush(self, timeout: float) -> int:
        self.flush_timeout = timeout
        return self.undelivered


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    monkeypatch.setattr(confluent_kafka, "Producer", FakeProducer)
    monkeypatch.setattr(FakeProducer, "made", [])
    return FakeProducer


def test_messages_go_out_in_order_on_an_idempotent_producer_without_consumer_settings(
    producer: type[FakeProducer],
) -> None:
    config = {"bootstrap.servers": "127.0.0.1:9092", "group.id": "reader", "auto.offset.reset": "earliest"}
    publish_messages(config, "plant.alerts", [(b"a", b"1"), (None, b"2"), (b"c", None)], timeout=5)
    (made,) = producer.made
    assert made.produced == [("plant.alerts", b"a", b"1"), ("plant.alerts", None, b"2"), ("plant.alerts", b"c", None)]
    assert made.config == {"bootstrap.servers": "127.0.0.1:9092", "enable.idempotence": True, "acks": "all"}
    assert made.flush_timeout == 5


def test_a_refused_message_fails_the_publish_naming_topic_and_key(
    producer: type[FakeProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producer, "refused", frozenset({b"dev-2"}))
    with pytest.raises(PublishError, match=r"topic plant\.health: .*dev-2: broker refused"):
        publish_messages({"bootstrap.servers": "x"}, "plant.health", [(b"dev-1", b"{}"), (b"dev-2", b"{}")])


def test_messages_still_queued_after_the_timeout_fail_the_publish(
    producer: type[FakeProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producer, "undelivered", 2)
    with pytest.raises(PublishError, match=r"topic plant\.control: 2 message\(s\) undelivered after 30 s"):
        publish_messages({"bootstrap.servers": "x"}, "plant.control", [(b"k", b"v"), (b"k", b"w")])


def test_a_consumer_config_loses_every_consumer_only_setting_and_keeps_the_rest() -> None:
    config = {
        "bootstrap.servers": "broker:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "group.id": "ingest",
        "group.instance.id": "worker-1",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    }
    assert client_config(config) == {
        "bootstrap.servers": "broker:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
    }
