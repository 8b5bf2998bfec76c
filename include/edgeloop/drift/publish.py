"""Put drift alerts on the pipeline's `alerts` topic, one JSON message each, keyed by alert id.

Delivery is confirmed before returning (idempotent producer, acks from all replicas);
only then should `alert_state.confirm_published` mark the alerts published.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from edgeloop.events import parse_alert
from edgeloop.kafka import publish_messages
from edgeloop.spec import PipelineSpec


def publish_drift_alerts(
    kafka_config: dict[str, Any], spec: PipelineSpec, alerts: Sequence[dict[str, Any]], *, timeout: float = 30.0
) -> list[str]:
    """Deliver each alert to `<prefix>.alerts`; return the alert ids delivered (all of them, or raise PublishError)."""
    if not alerts:
        return []
    for alert in alerts:
        parse_alert(json.dumps(alert))  # never publish what the watchers would reject
    messages = [
        (str(alert["alert_id"]).encode("utf-8"), json.dumps(alert, sort_keys=True).encode("utf-8")) for alert in alerts
    ]
    publish_messages(kafka_config, spec.topic("alerts"), messages, timeout=timeout)
    return [str(a["alert_id"]) for a in alerts]
