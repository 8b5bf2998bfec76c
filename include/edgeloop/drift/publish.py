"""Put drift alerts on the pipeline's `alerts` topic through `edgeloop.events.publish_alerts`.

Delivery is confirmed before returning (idempotent producer, acks from all replicas);
only then should `alert_state.confirm_published` mark the alerts published.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgeloop.events import publish_alerts
from edgeloop.spec import PipelineSpec


def publish_drift_alerts(
    kafka_config: dict[str, Any], spec: PipelineSpec, alerts: Sequence[dict[str, Any]], *, timeout: float = 30.0
) -> list[str]:
    """Deliver each alert to `<prefix>.alerts`; return the alert ids delivered (all of them, or raise PublishError)."""
    publish_alerts(kafka_config, spec, alerts, timeout=timeout)
    return [str(a["alert_id"]) for a in alerts]
