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

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.providers.apache.kafka.triggers.shared_stream import KafkaSharedStreamTrigger
from airflow.triggers.base import TriggerEvent

from edgeloop.contract.safejson import JsonRefused, loads_bounded

log = logging.getLogger(__name__)

ALERT_KINDS = ("backlog", "drift", "device", "rollout", "annotation", "model")
MAX_ALERT_BYTES = 256 * 1024


class AlertError(ValueError):
    """A message on an alerts topic that is not a valid alert."""


def parse_alert(value: bytes | str | None) -> dict[str, Any]:
    """Decode one alert message; raise AlertError (only) naming what is wrong.

    Size and nesting are capped before decoding (anyone who can write to the topic can
    publish); `groups`, when given, is a list of strings and `window` an object.
    """
    if value is None:
        raise AlertError("empty message (tombstone)")
    try:
        alert = loads_bounded(value, max_bytes=MAX_ALERT_BYTES)
    except JsonRefused as exc:
        raise AlertError(str(exc)) from None
    if not isinstance(alert, dict):
        raise AlertError("an alert must be a JSON object")
    kind = alert.get("kind")
    if not isinstance(kind, str) or kind not in ALERT_KINDS:
        raise AlertError(f"kind: {_shown(kind)} is not one of {list(ALERT_KINDS)}")
    if not isinstance(alert.get("pipeline"), str):
        raise AlertError("pipeline: missing or not a string")
    groups = alert.get("groups")
    if groups is not None and not (isinstance(groups, list) and all(isinstance(g, str) for g in groups)):
        raise AlertError("groups: not a list of group names")
    if alert.get("window") is not None and not isinstance(alert["window"], dict):
        raise AlertError("window: not an object with start and end")
    return alert


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
