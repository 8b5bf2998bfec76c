"""Agent configs from a pipeline spec: what `edgeloop agent-config` writes for a device.

The spec stays on the cloud side; a device gets only what it needs (its ids, the
pipeline's groups and telemetry schema, the Kafka client settings, where its state
lives) and never a secret: the public keys it trusts are read from a file or an
environment variable that the config names, and its own key is made by `edgeloop agent
enrol`, which also registers the device in the pipeline's device registry.
"""

from __future__ import annotations

import argparse
import os
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


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`edgeloop agent config|manifests`: what to install on a gateway, or apply for a Kubernetes group."""
    agent = sub.add_parser("agent", help="the edge agent: its config for a gateway, its Kubernetes objects")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True)
    config = agent_sub.add_parser("config", help="print an agent.yaml for one device")
    config.add_argument("--pipeline", required=True)
    config.add_argument("--group", required=True)
    config.add_argument("--device-id", required=True)
    config.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers as the device reaches them")
    config.add_argument("--state-dir", default="/var/lib/edgeloop-agent")
    config.add_argument("--trusted-keys-file", default="/etc/edgeloop/trusted.pem")
    config.add_argument(
        "--source",
        default="stdin",
        help="stdin, replay:PATH (a JSON-lines file of readings) or, for a camera, images:DIR (its PNG frames)",
    )
    config.add_argument("--http-port", type=int, default=9464, help="/healthz, /readyz, /metrics on 127.0.0.1")
    config.set_defaults(func=_cmd_config)
    enrol = agent_sub.add_parser(
        "enrol",
        help="make a device's own key (mode 0600) and register it, signed with $EDGELOOP_SIGNING_KEY",
    )
    enrol.add_argument("--pipeline", required=True)
    enrol.add_argument("--group", required=True)
    enrol.add_argument("--device-id", required=True)
    enrol.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers (the operator's view)")
    enrol.add_argument("--kafka-config", help="a JSON file of further client settings (SASL, TLS)")
    enrol.add_argument("--key-file", required=True, help="where the device's key goes (kept if it exists)")
    enrol.set_defaults(func=_cmd_enrol)
    manifests = agent_sub.add_parser("manifests", help="print the agent ConfigMap and DaemonSet of a kubernetes group")
    manifests.add_argument("--pipeline", required=True)
    manifests.add_argument("--group", required=True)
    manifests.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers as the edge nodes reach them")
    manifests.add_argument("--image", help="the agent image (default: the spec's rollout.agent_image)")
    manifests.set_defaults(func=_cmd_manifests)


def _spec(name: str) -> PipelineSpec:
    from edgeloop.spec import default_pipelines_dir, load_spec

    return load_spec(default_pipelines_dir() / f"{name}.yaml")


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    kind, _, path = args.source.partition(":")
    source = {"kind": kind, "path": path} if kind in ("replay", "images") else {"kind": kind}
    config = agent_config(
        _spec(args.pipeline),
        args.group,
        args.device_id,
        {"bootstrap.servers": args.bootstrap},
        args.state_dir,
        trusted_keys_file=args.trusted_keys_file,
        source=source,
        http={"host": "127.0.0.1", "port": args.http_port},
    )
    from edgeloop.edge.config import ConfigError, parse_config

    try:
        parse_config(config)  # what the agent will check at start, checked now
    except ConfigError as exc:
        raise SystemExit(f"agent config: {exc}") from None
    print(yaml.safe_dump(config, sort_keys=False), end="")
    return 0


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


def _cmd_enrol(args: argparse.Namespace) -> int:
    from edgeloop.contract.keys import BadKey, signer_from_env

    try:
        operator = signer_from_env(os.environ)
    except BadKey as exc:
        raise SystemExit(str(exc)) from None
    spec = _spec(args.pipeline)
    kafka = {"bootstrap.servers": args.bootstrap}
    if args.kafka_config:
        import json

        kafka = {**json.loads(Path(args.kafka_config).read_text()), **kafka}
    device_key = enrol_device(spec, kafka, operator, args.group, args.device_id, Path(args.key_file))
    print(f"enrolled {args.device_id} in {spec.name}/{args.group} with key {device_key.key_id} ({args.key_file})")
    return 0


def _cmd_manifests(args: argparse.Namespace) -> int:
    import yaml

    from edgeloop.contract.keys import trusted_from_env
    from edgeloop.rollout.manifests import agent_configmap, agent_daemonset

    spec = _spec(args.pipeline)
    group = next((g for g in spec.groups if g.name == args.group), None)
    if group is None:
        raise SystemExit(f"group: {args.group!r} is not a group of {spec.name}")
    kafka = {"bootstrap.servers": args.bootstrap}
    objects = [
        agent_configmap(spec, group.name, kafka, trusted_from_env(os.environ)),
        agent_daemonset(spec, group.name, group.selector, image=args.image),
    ]
    print(yaml.safe_dump_all(objects, sort_keys=False), end="")
    return 0
