"""`edgeloop` command line: the local stack, pipeline specs and the stage jobs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _cmd_stack(args: argparse.Namespace) -> int:
    from edgeloop.devstack import stack

    if args.action == "up":
        print("starting the edgeloop stack ...", flush=True)
        stack.up(only=args.only or None)
        _print_status(stack.status(), as_json=False)
        return 0
    if args.action == "down":
        stopped = stack.down()
        print(f"stopped: {', '.join(sorted(stopped)) or 'nothing was running'}")
        return 0
    statuses = stack.status()
    _print_status(statuses, as_json=args.json)
    return 0 if all(s.healthy for s in statuses) else 1


def _print_status(statuses: Sequence[object], as_json: bool) -> None:
    from dataclasses import asdict

    rows = [asdict(s) for s in statuses]  # type: ignore[call-overload]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'service':<24} {'pid':>7}  {'state':<9} url")
    for row in rows:
        state = "healthy" if row["healthy"] else ("starting" if row["running"] else "stopped")
        print(f"{row['name']:<24} {row['pid'] or '-':>7}  {state:<9} {row['url'] or ''}")


def _cmd_spec_validate(args: argparse.Namespace) -> int:
    """Each file as the factory loads it, then as this deployment would let it be written (allowlist, approvers)."""
    from edgeloop.airflow_users import known_user_names
    from edgeloop.deployment import DeploymentInvalid, load_deployment
    from edgeloop.generator.render import deployment_errors
    from edgeloop.spec import SpecInvalid, load_spec

    try:
        deployment = load_deployment()
    except DeploymentInvalid as exc:
        print(f"deployment settings: {exc}")
        return 1
    users = known_user_names()
    failures = 0
    for name in args.files:
        path = Path(name)
        try:
            spec = load_spec(path)
            refused = deployment_errors(spec, path, deployment, users)
            if refused:
                raise SpecInvalid(path, refused)
        except SpecInvalid as exc:
            failures += 1
            print(f"{path}: INVALID ({len(exc.errors)} error{'s' if len(exc.errors) != 1 else ''})")
            for error in exc.errors:
                print(f"  {error.location}: {error.message}")
            continue
        except OSError as exc:
            failures += 1
            print(f"{path}: cannot read: {exc}")
            continue
        print(f"{path}: ok (pipeline '{spec.name}', {len(spec.groups)} groups, topics {spec.topic('*')})")
    return 1 if failures else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from edgeloop.demo import main as demo_main

    return demo_main(args.pipeline)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeloop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    stack_p = sub.add_parser("stack", help="the local stack on loopback (Kafka, S3, MLflow, Label Studio, Airflow)")
    stack_p.add_argument("action", choices=["up", "down", "status"])
    stack_p.add_argument("--only", nargs="*", help="start only these services (and what they need)")
    stack_p.add_argument("--json", action="store_true", help="status as JSON")
    stack_p.set_defaults(func=_cmd_stack)

    demo_p = sub.add_parser("demo", help="load the demo pipeline into the running stack and print where to look")
    demo_p.add_argument(
        "--pipeline",
        help="the pipeline to run the loop with (default: EDGELOOP_DEMO_PIPELINE, else factory_maintenance); "
        "a camera pipeline (visual_inspection) gets a lighting drift on its first production group",
    )
    demo_p.set_defaults(func=_cmd_demo)

    # `edgeloop fleet ...` is dispatched to fleet_main before parsing (see main); listed here for --help.
    sub.add_parser("fleet", help="the edge fleet: simulate, status, push, health, ensure-topics")

    from edgeloop.fleet.agent_cli import add_parser as add_agent
    from edgeloop.rollout.cli import add_parser as add_rollout_job
    from edgeloop.simulator.annotate_bot import add_parser as add_annotate_bot

    add_rollout_job(sub)
    add_annotate_bot(sub)
    add_agent(sub)

    spec_p = sub.add_parser("spec", help="pipeline specs")
    spec_sub = spec_p.add_subparsers(dest="spec_command", required=True)
    validate = spec_sub.add_parser("validate", help="validate spec files; every error with its field path")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(func=_cmd_spec_validate)
    # `edgeloop spec new ...` is dispatched to edgeloop.generator.cli before parsing (see main).
    spec_sub.add_parser("new", help="propose a spec from a Kafka topic and a template")
    return parser


def fleet_main(argv: Sequence[str]) -> int:
    """`edgeloop fleet ...`: the simulator's `simulate` beside the control plane's commands; returns the exit code."""
    from edgeloop.fleet.cli import add_commands, run
    from edgeloop.simulator.cli import add_simulate

    parser = argparse.ArgumentParser(
        prog="edgeloop fleet",
        description="`edgeloop fleet ...`: simulate a fleet, show its status, push assignments, check health.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_simulate(sub)
    add_commands(sub)
    return run(parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["spec", "new"]:
        from edgeloop.generator.cli import spec_new

        return spec_new(argv[2:])
    if argv[:1] == ["fleet"]:
        return fleet_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
