"""Agent configs from a pipeline spec: what `edgeloop agent-config` writes for a device.

The spec stays on the cloud side; a device gets only what it needs (its ids, the
pipeline's groups and telemetry schema, the Kafka client settings, where its state
lives) and never a secret: the public keys it trusts are read from a file or an
environment variable that the config names, and its own key is made by `edgeloop agent
enrol`, which also registers the device in the pipeline's device registry.
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
        "telemetry": telemetry_policy(spec),
    }
    if spec.field_with_role("image_ref") is not None and spec.storage.prefix:
        config["frame_prefix"] = spec.storage.prefix  # a camera's frame keys, as ingest stores the frames
    config.update(settings)
    return config


def telemetry_policy(spec: PipelineSpec) -> dict[str, Any]:
    """The spec's `telemetry` section as the agent config's `telemetry` mapping (`edge.config.TelemetryPolicy`)."""
    t = spec.telemetry
    return {
        "mode": t.mode,
        "window_s": t.window.total_seconds(),
        "sample_rate": t.sample_rate,
        "low_confidence": t.low_confidence,
        "drift_sample_rate": t.drift_sample_rate,
        "local_drift_threshold": t.local_drift_threshold,
        "sketch_k": t.sketch_k,
    }


def enrol_device(
    spec: PipelineSpec, kafka_config: Mapping[str, Any], operator: Any, group: str, device_id: str, key_file: Path
) -> Any:
    """Make (or keep) the device's key in `key_file` (mode 0600) and register its public half; return the key."""
    import time

    from edgeloop.contract.keys import Signer, public_hex
    from edgeloop.edge.config import ID_RE
    from edgeloop.edge.store import atomic_write
    from edgeloop.fleet.registry import enrol

    if not ID_RE.match(device_id):
        raise ValueError(f"device_id: {device_id!r} must match {ID_RE.pattern}")
    if key_file.exists():
        device_key = Signer.from_text(key_file.read_text(), str(key_file))
    else:
        device_key = Signer.generate()
        key_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(key_file, device_key.private_pem(), mode=0o600)
    enrol(spec, kafka_config, operator, [(device_id, group, public_hex(device_key.public))], now=time.time())
    return device_key
