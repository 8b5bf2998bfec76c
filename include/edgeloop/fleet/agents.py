"""Agent configs from a pipeline spec: what `edgeloop agent-config` writes for a device.

The spec stays on the cloud side; a device gets only what it needs (its ids, the
pipeline's groups and telemetry schema, the Kafka client settings, where its state
lives) and never a secret: the control key is read from a file or an environment
variable that the config names.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeloop.spec import PipelineSpec


def agent_config(
    spec: PipelineSpec,
    group: str,
    device_id: str,
    kafka_config: Mapping[str, Any],
    state_dir: Path | str,
    **settings: Any,
) -> dict[str, Any]:
    """The config of one device's agent, as a plain mapping (`edgeloop.edge.config.parse_config` reads it)."""
    groups = [g.name for g in spec.groups]
    if group not in groups:
        raise ValueError(f"group: {group!r} is not a group of {spec.name} ({groups})")
    config: dict[str, Any] = {
        "device_id": device_id,
        "group_id": group,
        "pipeline": spec.name,
        "topic_prefix": spec.topics.prefix or spec.name,
        "groups": groups,
        "schema": [{"name": f.name, "role": f.role} for f in spec.schema_],
        "kafka": {k: v for k, v in kafka_config.items() if not k.startswith(("group.", "enable.auto", "auto.offset"))},
        "state_dir": str(state_dir),
    }
    config.update(settings)
    return config
