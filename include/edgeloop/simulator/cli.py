"""`edgeloop fleet simulate`: run simulated edge devices (real device cores) against a pipeline's topics.

Endpoints and secrets come from the environment (the stack contract):
EDGELOOP_KAFKA_BOOTSTRAP, MLFLOW_TRACKING_URI (registry models) and
EDGELOOP_SIGNING_KEY (the operator's Ed25519 key: it signs orders and enrolments; the
simulated devices trust its public half and EDGELOOP_TRUSTED_KEYS).

    edgeloop fleet simulate --pipeline factory_maintenance --devices 200
    edgeloop fleet simulate --pipeline factory_maintenance --drift plant-south:vibration_rms:gain=1.8@120s
    edgeloop fleet simulate --pipeline visual_inspection --drift hall-east:lighting@120s   # cameras
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import threading
from typing import Any

from edgeloop.fleet.cli import CliError, command, kafka_of, operator_signer, spec_of, trusted_keys

_DRIFT = re.compile(
    r"^(?P<group>[^:]+):(?P<feature>[^:@]+)(?P<params>(:[a-z]+=[-+0-9.e]+)*)(@(?P<when>[0-9.]+)(?P<unit>s|r))?$"
)
_OUTAGE = re.compile(r"^(?P<group>[^:@]+)(:(?P<ratio>[0-9.]+))?@(?P<start>[0-9.]+)\+(?P<duration>[0-9.]+)$")


def parse_drift(text: str) -> Any:
    """`GROUP:FEATURE[:offset=X][:gain=Y][@120s|@5000r]` (from a time in seconds or a group record count).

    For a camera pipeline FEATURE names the camera's change (lighting, focus, lens_dirt), without parameters.
    """
    from edgeloop.training.sensors import DriftInjection

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
    from edgeloop.simulator.fleet import Outage

    match = _OUTAGE.match(text)
    if not match:
        raise CliError(f"--outage {text!r}: expected GROUP|all[:RATIO]@START+DURATION")
    group = None if match["group"] == "all" else match["group"]
    ratio = float(match["ratio"]) if match["ratio"] else 1.0
    return Outage(start_s=float(match["start"]), duration_s=float(match["duration"]), group=group, ratio=ratio)


def parse_fault(text: str) -> tuple[str, str]:
    """`VERSION=crash|bad|load_error`."""
    from edgeloop.simulator.models import MODEL_FAULTS

    version, _, fault = text.partition("=")
    if not version.isdigit() or fault not in MODEL_FAULTS:
        raise CliError(f"--fault {text!r}: expected VERSION=one of {list(MODEL_FAULTS)}")
    return version, fault


def _cmd_simulate(args: argparse.Namespace) -> int:
    from edgeloop.simulator.fleet import FleetSimulator, SimulatorOptions, check_injections
    from edgeloop.simulator.models import ModelFault, baseline_provider, camera_models, mlflow_champion, onnx_provider
    from edgeloop.training.sensors import sensor_profile

    spec = spec_of(args)
    kafka = kafka_of(args)
    on_signal = [parse_drift(d) for d in args.drift_on_signal]
    try:  # checked now: a bad one would only show when the signal comes
        check_injections(spec, on_signal)
    except ValueError as exc:
        raise CliError(f"--drift-on-signal: {exc}") from exc
    signer, trusted = operator_signer(), trusted_keys()
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


def add_simulate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `simulate` to the subcommands of `edgeloop fleet`."""
    sim = command(sub, "simulate", "run simulated edge devices")
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
