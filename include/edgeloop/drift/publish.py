"""Put drift alerts on the pipeline's `alerts` topic, one JSON message each, keyed by alert id.

Delivery is confirmed before returning (idempotent producer, acks from all replicas);
only then should `alert_state.confirm_published` mark the alerts published.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from edgeloop.events import parse_alert
from edgeloop.kafka import client_config
from edgeloop.spec import PipelineSpec


class AlertPublishError(RuntimeError):
    """An alert could not be delivered to Kafka."""


def publish_drift_alerts(
    kafka_config: dict[str, Any], spec: PipelineSpec, alerts: Sequence[dict[str, Any]], *, timeout: float = 30.0
) -> list[str]:
    """Deliver each alert to `<prefix>.alerts`; return the alert ids delivered (all of them, or raise)."""
    from confluent_kafka import Producer

    if not alerts:
        return []
    topic = spec.topic("alerts")
    for alert in alerts:
        parse_alert(json.dumps(alert))  # never publish what the watchers would reject
    producer = Producer({**client_config(kafka_config), "enable.idempotence": True, "acks": "all"})
    failures: list[str] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            key = message.key().decode("utf-8") if message.key() else "?"
            failures.append(f"{key}: {error}")

    for alert in alerts:
        producer.produce(
            topic,
            key=str(alert["alert_id"]).encode("utf-8"),
            value=json.dumps(alert, sort_keys=True).encode("utf-8"),
            on_delivery=delivered,
        )
    remaining = producer.flush(timeout)
    if remaining:
        failures.append(f"{remaining} message(s) still undelivered after {timeout:.0f} s")
    if failures:
        raise AlertPublishError(f"topic {topic}: " + "; ".join(failures))
    return [str(a["alert_id"]) for a in alerts]
