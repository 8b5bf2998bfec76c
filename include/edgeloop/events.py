"""Alerts on the pipeline's `alerts` topic and the trigger that turns them into asset events.

Every message on `<prefix>.alerts` is one JSON object with at least `kind` and
`pipeline`. Kinds: `backlog` (a device group has buffered data: ingest now),
`drift` (a drift check or anything else saw drift: annotate and retrain),
`device` (fleet health), `rollout` (a gate failed), `annotation` (a batch missed its SLA),
`model` (a challenger was rejected). The triggerer runs one shared
Kafka consumer per alerts topic (`KafkaSharedStreamTrigger`); each asset watcher
filters the kinds it cares about, so a drift alert published by a device, an
operator or another system starts the same flow as one from the drift DAG.

This module is imported by DAG files and by the triggerer: keep it light.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.providers.apache.kafka.triggers.shared_stream import KafkaSharedStreamTrigger
from airflow.triggers.base import TriggerEvent

log = logging.getLogger(__name__)

ALERT_KINDS = ("backlog", "drift", "device", "rollout", "annotation", "model")


class AlertError(ValueError):
    """A message on an alerts topic that is not a valid alert."""


def parse_alert(value: bytes | str | None) -> dict[str, Any]:
    """Decode one alert message; raise AlertError naming what is wrong."""
    if value is None:
        raise AlertError("empty message (tombstone)")
    try:
        text = value.decode("utf-8") if isinstance(value, bytes) else value
        alert = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AlertError(f"not JSON: {exc}") from exc
    if not isinstance(alert, dict):
        raise AlertError("an alert must be a JSON object")
    kind = alert.get("kind")
    if kind not in ALERT_KINDS:
        raise AlertError(f"kind: {kind!r} is not one of {list(ALERT_KINDS)}")
    if not isinstance(alert.get("pipeline"), str):
        raise AlertError("pipeline: missing or not a string")
    return alert


def alert_matches(alert: dict[str, Any], pipeline: str, kinds: Sequence[str]) -> bool:
    return alert["pipeline"] == pipeline and alert["kind"] in kinds


class AlertTrigger(KafkaSharedStreamTrigger):
    """Fire an asset event for each alert of the given kinds for one pipeline.

    All watchers on the same alerts topic and connection share one consumer in
    the triggerer; offsets are committed only after the asset events are stored.
    Malformed messages are logged with their reason and skipped, never fatal.
    """

    def __init__(
        self,
        *,
        topics: Sequence[str],
        pipeline: str,
        kinds: Sequence[str],
        kafka_config_id: str = "edgeloop_kafka",
        poll_timeout: float = 1.0,
        dlq_topic: str | None = None,
    ) -> None:
        super().__init__(topics=topics, kafka_config_id=kafka_config_id, poll_timeout=poll_timeout, dlq_topic=dlq_topic)
        self.pipeline = pipeline
        self.kinds = sorted(kinds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            **kwargs,
            "pipeline": self.pipeline,
            "kinds": self.kinds,
        }

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        async for value in shared_stream:
            try:
                alert = parse_alert(value)
            except AlertError as exc:
                log.warning("skipping message on %s: %s", self.topics, exc)
                continue
            if alert_matches(alert, self.pipeline, self.kinds):
                yield TriggerEvent(alert)
