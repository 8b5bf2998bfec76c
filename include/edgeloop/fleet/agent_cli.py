"""`edgeloop agent config|enrol|manifests`: what to install on a gateway, or apply for a Kubernetes group.

The commands around `edgeloop.fleet.agents` (a device's config, its enrolment) and
`edgeloop.rollout.manifests` (a kubernetes group's objects), kept apart from both so that
neither imports the other back.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from edgeloop.fleet.agents import agent_config, enrol_device
from edgeloop.spec import PipelineSpec


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
