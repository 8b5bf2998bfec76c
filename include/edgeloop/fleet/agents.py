"""Agent configs from a pipeline spec: what `edgeloop agent-config` writes for a device.

The spec stays on the cloud side; a device gets only what it needs (its ids, the
pipeline's groups and telemetry schema, the Kafka client settings, where its state
lives) and never a secret: the control key is read from a file or an environment
variable that the config names.
"""

from __future__ import annotations

import argparse
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
    config.add_argument("--control-key-file", default="/etc/edgeloop/control.key")
    config.add_argument("--source", default="stdin", help="stdin, or replay:PATH (a JSON-lines file of readings)")
    config.add_argument("--http-port", type=int, default=9464, help="/healthz, /readyz, /metrics on 127.0.0.1")
    config.set_defaults(func=_cmd_config)
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
    source = {"kind": "replay", "path": path} if kind == "replay" else {"kind": kind}
    config = agent_config(
        _spec(args.pipeline),
        args.group,
        args.device_id,
        {"bootstrap.servers": args.bootstrap},
        args.state_dir,
        control_key_file=args.control_key_file,
        source=source,
        http={"host": "127.0.0.1", "port": args.http_port},
    )
    from edgeloop.edge.config import parse_config

    parse_config(config)  # what the agent will check at start, checked now
    print(yaml.safe_dump(config, sort_keys=False), end="")
    return 0


def _cmd_manifests(args: argparse.Namespace) -> int:
    import yaml

    from edgeloop.rollout.manifests import agent_configmap, agent_daemonset

    spec = _spec(args.pipeline)
    group = next((g for g in spec.groups if g.name == args.group), None)
    if group is None:
        raise SystemExit(f"group: {args.group!r} is not a group of {spec.name}")
    kafka = {"bootstrap.servers": args.bootstrap}
    objects = [
        agent_configmap(spec, group.name, kafka),
        agent_daemonset(spec, group.name, group.selector, image=args.image),
    ]
    print(yaml.safe_dump_all(objects, sort_keys=False), end="")
    return 0
