"""`edgeloop fleet ...`: simulate a fleet, show its status, push assignments, check health.

Endpoints and secrets come from the environment (the stack contract):
EDGELOOP_KAFKA_BOOTSTRAP, MLFLOW_TRACKING_URI (registry models) and
EDGELOOP_SIGNING_KEY (the operator's Ed25519 key: it signs orders and enrolments; the
simulated devices trust its public half and EDGELOOP_TRUSTED_KEYS).

    edgeloop fleet simulate --pipeline factory_maintenance --devices 200
    edgeloop fleet simulate --pipeline factory_maintenance --drift plant-south:vibration_rms:gain=1.8@120s
    edgeloop fleet simulate --pipeline visual_inspection --drift hall-east:lighting@120s   # cameras
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
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeloop.spec import PipelineSpec, SpecInvalid, load_all, load_spec

KAFKA_ENV = "EDGELOOP_KAFKA_BOOTSTRAP"


class CliError(Exception):
    """A usage error the CLI reports in one line with exit code 2."""


def _spec(args: argparse.Namespace) -> PipelineSpec:
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


def _kafka(args: argparse.Namespace) -> dict[str, Any]:
    bootstrap = args.bootstrap or os.environ.get(KAFKA_ENV)
    if not bootstrap:
        raise CliError(f"no Kafka bootstrap: pass --bootstrap or set {KAFKA_ENV}")
    return {"bootstrap.servers": bootstrap}


def _signer() -> Any:
    from edgeloop.contract.keys import BadKey, signer_from_env

    try:
        return signer_from_env(os.environ)
    except BadKey as exc:
        raise CliError(str(exc)) from None


def _trusted() -> Any:
    from edgeloop.contract.keys import BadKey, trusted_from_env

    try:
        return trusted_from_env(os.environ)
    except BadKey as exc:
        raise CliError(str(exc)) from None


_DRIFT = re.compile(
    r"^(?P<group>[^:]+):(?P<feature>[^:@]+)(?P<params>(:[a-z]+=[-+0-9.e]+)*)(@(?P<when>[0-9.]+)(?P<unit>s|r))?$"
)
_OUTAGE = re.compile(r"^(?P<group>[^:@]+)(:(?P<ratio>[0-9.]+))?@(?P<start>[0-9.]+)\+(?P<duration>[0-9.]+)$")


def parse_drift(text: str) -> Any:
    """`GROUP:FEATURE[:offset=X][:gain=Y][@120s|@5000r]` (from a time in seconds or a group record count).

    For a camera pipeline FEATURE names the camera's change (lighting, focus, lens_dirt), without parameters.
    """
    from edgeloop.fleet.sensors import DriftInjection

    match = _DRIFT.match(text)
    if not match:
        raise CliError(f"--drift {text!r}: expected GROUP:FEATURE[:offset=X][:gain=Y][@120s|@5000r]")
    params = dict(p.split("=", 1) for p in match["params"].split(":") if p)
    unknown = sorted(set(params) - {"offset", "gain"})
    if unknown:
        raise CliError(f"--drift {text!r}: unknown parameters {unknown} (offset, gain)")
    when = float(match["when"]) if match["when"] else None
    return DriftInjection(
        group=match["group"],
        feature=match["feature"],
        offset=float(params.get("offset", 0.0)),
        gain=float(params.get("gain", 1.0)),
        at_s=when if match["unit"] == "s" else None,
        after_records=int(when) if when is not None and match["unit"] == "r" else None,
    )


def parse_outage(text: str) -> Any:
    """`GROUP|all[:RATIO]@START+DURATION` in seconds from the simulator's start."""
    from edgeloop.fleet.simulator import Outage

    match = _OUTAGE.match(text)
    if not match:
        raise CliError(f"--outage {text!r}: expected GROUP|all[:RATIO]@START+DURATION")
    group = None if match["group"] == "all" else match["group"]
    ratio = float(match["ratio"]) if match["ratio"] else 1.0
    return Outage(start_s=float(match["start"]), duration_s=float(match["duration"]), group=group, ratio=ratio)


def parse_fault(text: str) -> tuple[str, str]:
    """`VERSION=crash|bad|load_error`."""
    from edgeloop.fleet.models import MODEL_FAULTS

    version, _, fault = text.partition("=")
    if not version.isdigit() or fault not in MODEL_FAULTS:
        raise CliError(f"--fault {text!r}: expected VERSION=one of {list(MODEL_FAULTS)}")
    return version, fault


def _cmd_simulate(args: argparse.Namespace) -> int:
    from edgeloop.fleet.models import ModelFault, baseline_provider, camera_models, mlflow_champion, onnx_provider
    from edgeloop.fleet.sensors import sensor_profile
    from edgeloop.fleet.simulator import FleetSimulator, SimulatorOptions, check_injections

    spec = _spec(args)
    kafka = _kafka(args)
    on_signal = [parse_drift(d) for d in args.drift_on_signal]
    try:  # checked now: a bad one would only show when the signal comes
        check_injections(spec, on_signal)
    except ValueError as exc:
        raise CliError(f"--drift-on-signal: {exc}") from exc
    signer, trusted = _signer(), _trusted()
    profile = sensor_profile(spec)
    cameras = camera_models(spec)  # a camera pipeline's devices take frames and start on the image baseline
    faults: dict[str, ModelFault] = {}
    for text in args.fault:
        version, fault = parse_fault(text)
        faults[version] = fault  # type: ignore[assignment]
    if args.models == "registry":
        # Devices get ONNX files as agents do: from the signed assignment, or for the version they start
        # on (the champion), from the registry's record of that version's file (resolved lazily).
        from edgeloop.rollout.job import artifact_resolver

        resolver: list[Any] = []

        def resolve(version: str) -> Any:
            if not resolver:
                resolver.append(artifact_resolver(spec))
            return resolver[0](version)

        provider = onnx_provider(
            profile,
            resolve=resolve,
            default=mlflow_champion(spec.registry.model_name, os.environ.get("MLFLOW_TRACKING_URI")),
            faults=faults,
            cameras=cameras,
        )
    else:
        every_version = args.models == "rules"
        provider = baseline_provider(profile, faults=faults, every_version=every_version, cameras=cameras)
    options = SimulatorOptions(
        devices=args.devices,
        telemetry_interval_s=args.telemetry_interval,
        heartbeat_interval_s=args.heartbeat_interval,
        model_version=args.model_version,
        drift=[parse_drift(d) for d in args.drift],
        bad_record_ratio=args.bad_records,
        outages=[parse_outage(o) for o in args.outage],
        clock_skew_s=args.clock_skew,
        seed=args.seed,
        id_prefix=args.id_prefix,
        ground_truth=not args.no_ground_truth,
    )
    try:
        simulator = FleetSimulator(spec, kafka, provider, trusted, options, profile=profile, operator=signer)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if on_signal:
        signal.signal(signal.SIGUSR1, lambda *_: simulator.inject_drift(on_signal))
    print(f"simulating {simulator.n} devices of {spec.name} ({', '.join(simulator.groups)}); Ctrl-C stops", flush=True)
    stats = simulator.run(args.duration, stop)
    print(json.dumps(stats.to_dict(), indent=2))
    return 0 if stats.delivery_failures == 0 else 1


def _cmd_status(args: argparse.Namespace) -> int:
    from edgeloop.fleet.health import fleet_status, render_status_json, render_status_text

    status = fleet_status(_spec(args), _kafka(args), _trusted(), window_s=args.window)
    print(render_status_json(status) if args.json else render_status_text(status))
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from edgeloop.fleet.control import apply_progress, push_assignment

    spec = _spec(args)
    kafka = _kafka(args)
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
            _signer(),
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
        progress = apply_progress(spec, kafka, assignment, _trusted())
        if progress.complete or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    print(json.dumps(progress.to_dict(), sort_keys=True))
    return 0 if progress.complete else 1


def _cmd_health(args: argparse.Namespace) -> int:
    from edgeloop.fleet.health import run_fleet_health

    summary = run_fleet_health(_spec(args), _kafka(args), _trusted(), publish=not args.no_publish)
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def _cmd_ensure_topics(args: argparse.Namespace) -> int:
    from edgeloop.fleet.topics import ensure_topics

    print(json.dumps(ensure_topics(_spec(args), _kafka(args)), indent=2, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeloop fleet", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(name: str, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text)
        which = command.add_mutually_exclusive_group(required=True)
        which.add_argument("--pipeline", help="name of a spec in the pipelines folder")
        which.add_argument("--spec", help="path of a spec file")
        command.add_argument("--bootstrap", help=f"Kafka bootstrap servers (default: ${KAFKA_ENV})")
        return command

    sim = common("simulate", "run simulated edge devices")
    sim.add_argument("--devices", type=int, default=200, help="total devices, split over the spec's groups")
    sim.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    sim.add_argument("--telemetry-interval", type=float, default=1.0)
    sim.add_argument("--heartbeat-interval", type=float, default=10.0)
    sim.add_argument(
        "--models",
        choices=["registry", "baseline", "rules"],
        default="registry",
        help="registry: MLflow; baseline: only version 0; rules: every version is the rule model",
    )
    sim.add_argument("--model-version", help="start version (default: the champion alias, else the baseline 0)")
    sim.add_argument(
        "--drift",
        action="append",
        default=[],
        help="GROUP:FEATURE[:offset=X][:gain=Y][@120s|@5000r]; cameras: GROUP:lighting|focus|lens_dirt[@120s]",
    )
    sim.add_argument(
        "--drift-on-signal",
        action="append",
        default=[],
        help="GROUP:FEATURE[:offset=X][:gain=Y] (cameras: GROUP:lighting|focus|lens_dirt) started on SIGUSR1",
    )
    sim.add_argument("--fault", action="append", default=[], help="VERSION=crash|bad|load_error")
    sim.add_argument("--bad-records", type=float, default=0.0, help="share of malformed telemetry records")
    sim.add_argument("--outage", action="append", default=[], help="GROUP|all[:RATIO]@START+DURATION (seconds)")
    sim.add_argument("--clock-skew", type=float, default=0.0, help="max clock skew (s) of 10%% of devices")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--id-prefix", default="", help="prefix of device ids (to run several simulators)")
    sim.add_argument("--no-ground-truth", action="store_true", help="do not write hidden true labels")
    sim.set_defaults(func=_cmd_simulate)

    status = common("status", "per-group fleet status")
    status.add_argument("--json", action="store_true")
    status.add_argument("--window", type=float, default=None, help="seconds (default: fleet_health.stale_after)")
    status.set_defaults(func=_cmd_status)

    push = common("push", "publish a model/config assignment")
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

    health = common("health", "evaluate fleet health and publish device alerts")
    health.add_argument("--no-publish", action="store_true")
    health.set_defaults(func=_cmd_health)

    topics = common("ensure-topics", "create the pipeline's topics (device-state compacted)")
    topics.set_defaults(func=_cmd_ensure_topics)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for `edgeloop fleet ...`; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
    except CliError as exc:
        print(f"edgeloop fleet: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
