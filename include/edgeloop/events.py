"""Alerts on the pipeline's `alerts` topic and the trigger that turns them into asset events.

Every message on `<prefix>.alerts` is one JSON object with at least `kind` and
`pipeline`. Kinds: `backlog` (a device group has buffered data: ingest now),
`drift` (a drift check or anything else saw drift: annotate and retrain),
`device` (fleet health), `rollout` (a gate failed), `annotation` (a batch missed its SLA),
`model` (a challenger was rejected). The triggerer runs one shared
Kafka consumer per alerts topic (`KafkaSharedStreamTrigger`); each asset watcher
filters the kinds it cares about, so a drift alert published by a device, an
operator or another system starts the same flow as one from the drift DAG.
edgeloop's own writers go through `publish_alerts`: each alert checked by `parse_alert`
before it is sent, keys sorted, one key rule (`alert_key`).

This module is imported by DAG files and by the triggerer: keep it light.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.apache.kafka.triggers.shared_stream import KafkaSharedStreamTrigger
from airflow.triggers.base import TriggerEvent

from edgeloop.contract.safejson import JsonRefused, loads_bounded

if TYPE_CHECKING:
    from edgeloop.spec import PipelineSpec

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


def alert_key(alert: Mapping[str, Any]) -> bytes:
    """The one key rule of the alerts topic: the group the alert is about, else the pipeline.

    `group`, or the only entry of `groups`; an alert about several groups or none is keyed by its
    pipeline. Alerts about one group stay in order on one partition.
    """
    group = alert.get("group")
    groups = alert.get("groups")
    if group is None and isinstance(groups, list) and len(groups) == 1:
        group = groups[0]
    return str(group if isinstance(group, str) and group else alert["pipeline"]).encode("utf-8")


def alert_message(spec: PipelineSpec, alert: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The (key, value) of one alert on the spec's alerts topic, checked as the watchers will check it.

    Raise AlertError naming what is wrong, or when the alert names another pipeline.
    """
    value = json.dumps(alert, sort_keys=True).encode("utf-8")
    checked = parse_alert(value)
    if checked["pipeline"] != spec.name:
        raise AlertError(f"pipeline: {_shown(checked['pipeline'])} on the alerts topic of {spec.name!r}")
    return alert_key(checked), value


def publish_alerts(
    kafka_config: Mapping[str, Any], spec: PipelineSpec, alerts: Sequence[Mapping[str, Any]], *, timeout: float = 30.0
) -> int:
    """Put alerts on `<prefix>.alerts`, one JSON object each (keys sorted), keyed by `alert_key`; return how many.

    Every alert is checked before any is sent (AlertError); delivery is acknowledged or PublishError is raised.
    """
    from edgeloop.kafka import publish_messages

    messages = [alert_message(spec, alert) for alert in alerts]
    if messages:
        publish_messages(kafka_config, spec.topic("alerts"), messages, timeout=timeout)
    return len(messages)


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
