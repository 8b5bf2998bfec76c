"""`edgeloop fleet status|push|health|ensure-topics`: the control plane's commands.

Endpoints and secrets come from the environment (the stack contract):
EDGELOOP_KAFKA_BOOTSTRAP and EDGELOOP_SIGNING_KEY (the operator's Ed25519 key: it signs
orders and enrolments) and EDGELOOP_TRUSTED_KEYS (the device keys' signers a reader trusts).
`edgeloop.cli` assembles `edgeloop fleet` from these and the simulator's `simulate`
(`edgeloop.simulator.cli`), which shares the helpers here.

    edgeloop fleet status --pipeline factory_maintenance [--json]
    edgeloop fleet push --pipeline factory_maintenance --group plant-north --model-version 3 --wait 60
    edgeloop fleet health --pipeline factory_maintenance [--no-publish]
    edgeloop fleet ensure-topics --pipeline factory_maintenance
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from edgeloop.spec import PipelineSpec, SpecInvalid, load_all, load_spec

KAFKA_ENV = "EDGELOOP_KAFKA_BOOTSTRAP"


class CliError(Exception):
    """A usage error the CLI reports in one line with exit code 2."""


def spec_of(args: argparse.Namespace) -> PipelineSpec:
    if args.spec:
        try:
            return load_spec(Path(args.spec))
        except SpecInvalid as exc:
            raise CliError(f"spec {args.spec} is invalid:\n{exc}") from exc
    loaded = load_all()
    for spec in loaded.specs:
        if spec.name == args.pipeline:
            return spec
    known = sorted(s.name for s in loaded.specs)
    raise CliError(f"--pipeline {args.pipeline!r}: no such valid pipeline spec (known: {known})")


def kafka_of(args: argparse.Namespace) -> dict[str, Any]:
    bootstrap = args.bootstrap or os.environ.get(KAFKA_ENV)
    if not bootstrap:
        raise CliError(f"no Kafka bootstrap: pass --bootstrap or set {KAFKA_ENV}")
    return {"bootstrap.servers": bootstrap}


def operator_signer() -> Any:
    from edgeloop.contract.keys import BadKey, signer_from_env

    try:
        return signer_from_env(os.environ)
    except BadKey as exc:
        raise CliError(str(exc)) from None


def trusted_keys() -> Any:
    from edgeloop.contract.keys import BadKey, trusted_from_env

    try:
        return trusted_from_env(os.environ)
    except BadKey as exc:
        raise CliError(str(exc)) from None


def command(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """A `edgeloop fleet` subcommand with the options every one has: which pipeline, which Kafka."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--pipeline", help="name of a spec in the pipelines folder")
    which.add_argument("--spec", help="path of a spec file")
    parser.add_argument("--bootstrap", help=f"Kafka bootstrap servers (default: ${KAFKA_ENV})")
    return parser


def _cmd_status(args: argparse.Namespace) -> int:
    from edgeloop.fleet.health import fleet_status, render_status_json, render_status_text

    status = fleet_status(spec_of(args), kafka_of(args), trusted_keys(), window_s=args.window)
    print(render_status_json(status) if args.json else render_status_text(status))
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from edgeloop.fleet.control import apply_progress, push_assignment

    spec = spec_of(args)
    kafka = kafka_of(args)
    try:
        config = json.loads(args.config) if args.config else None
    except json.JSONDecodeError as exc:
        raise CliError(f"--config: not JSON: {exc}") from exc
    if config is not None and not isinstance(config, dict):
        raise CliError("--config: must be a JSON object")
    try:
        assignment = push_assignment(
            spec,
            kafka,
            operator_signer(),
            group=args.group,
            device=args.device,
            model_version=args.model_version,
            config=config,
            issuer=args.issuer,
            assignment_id=args.id,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    print(json.dumps(assignment.to_dict(), sort_keys=True))
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.wait
    while True:
        progress = apply_progress(spec, kafka, assignment, trusted_keys())
        if progress.complete or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    print(json.dumps(progress.to_dict(), sort_keys=True))
    return 0 if progress.complete else 1


def _cmd_health(args: argparse.Namespace) -> int:
    from edgeloop.fleet.health import run_fleet_health

    summary = run_fleet_health(spec_of(args), kafka_of(args), trusted_keys(), publish=not args.no_publish)
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def _cmd_ensure_topics(args: argparse.Namespace) -> int:
    from edgeloop.fleet.topics import ensure_topics

    print(json.dumps(ensure_topics(spec_of(args), kafka_of(args)), indent=2, sort_keys=True))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `status`, `push`, `health` and `ensure-topics` to the subcommands of `edgeloop fleet`."""
    status = command(sub, "status", "per-group fleet status")
    status.add_argument("--json", action="store_true")
    status.add_argument("--window", type=float, default=None, help="seconds (default: fleet_health.stale_after)")
    status.set_defaults(func=_cmd_status)

    push = command(sub, "push", "publish a model/config assignment")
    target = push.add_mutually_exclusive_group(required=True)
    target.add_argument("--group")
    target.add_argument("--device")
    target.add_argument("--all", action="store_true")
    push.add_argument("--model-version")
    push.add_argument("--config", help="JSON object, e.g. '{\"telemetry_interval_s\": 2}'")
    push.add_argument("--id", help="assignment id (re-using one is idempotent)")
    push.add_argument("--issuer", default="cli")
    push.add_argument("--wait", type=float, default=0.0, help="seconds to wait until all addressed devices apply it")
    push.set_defaults(func=_cmd_push)

    health = command(sub, "health", "evaluate fleet health and publish device alerts")
    health.add_argument("--no-publish", action="store_true")
    health.set_defaults(func=_cmd_health)

    topics = command(sub, "ensure-topics", "create the pipeline's topics (device-state compacted)")
    topics.set_defaults(func=_cmd_ensure_topics)


def run(args: argparse.Namespace) -> int:
    """Run a parsed `edgeloop fleet` command; a CliError is one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
    except CliError as exc:
        print(f"edgeloop fleet: {exc}", file=sys.stderr)
        return 2
    return code
