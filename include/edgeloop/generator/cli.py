"""`edgeloop spec new`: the wizard's proposal from the command line.

    edgeloop spec new --from-topic plant1.telemetry --template predictive_maintenance \\
        --name plant1 --groups line-a line-b --preset cautious --approvers alice

Samples the topic, infers the schema and roles, takes the edge groups from the fleet
state topic (or `--groups`), renders and validates the spec (with the deployment's
allowlist, EDGELOOP_DEPLOYMENT, and Airflow's users for the approvers) and writes
`<pipelines folder>/<name>.yaml` atomically (or prints it with `--dry-run`). The
Kafka cluster is `--bootstrap-servers`, else EDGELOOP_KAFKA_BOOTSTRAP, else the
Airflow connection `--kafka-conn` (default edgeloop_kafka).

Exit codes: 0 written (or printed), 1 the spec is invalid (errors listed with their
field paths), 2 bad arguments or the topic/cluster is not usable, 3 the pipeline exists.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from edgeloop.generator.presets import PRESET_IDS, GroupChoice, group_name_from_id, pick_canary
from edgeloop.generator.templates import TEMPLATE_IDS

if TYPE_CHECKING:
    from edgeloop.generator.propose import Proposal
    from edgeloop.generator.render import Draft

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_EXISTS = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeloop spec new",
        description="Propose a pipeline spec from a Kafka topic and a template, validate it and write it.",
    )
    parser.add_argument("--from-topic", required=True, metavar="TOPIC", help="a <prefix>.telemetry topic")
    parser.add_argument("--template", required=True, choices=TEMPLATE_IDS)
    parser.add_argument("--name", help="pipeline name (default: from the topic prefix)")
    parser.add_argument(
        "--groups",
        nargs="+",
        metavar="GROUP",
        help="edge groups (names or name=devices; commas work too); default: from the fleet state or the samples",
    )
    parser.add_argument("--preset", choices=PRESET_IDS, default="standard", help="rollout preset")
    parser.add_argument("--canary", help="canary group (default: the smallest group)")
    parser.add_argument(
        "--approvers", nargs="+", default=[], metavar="USER", help="Airflow users who may approve (cautious preset)"
    )
    parser.add_argument("--labels", nargs="+", help="annotation labels (default: predicted values or the template's)")
    parser.add_argument("--description", default="")
    parser.add_argument("--owner", default="edgeloop")
    parser.add_argument("--bucket", help="storage bucket (default: EDGELOOP_BUCKET or edgeloop)")
    parser.add_argument(
        "--folder", type=Path, help="pipelines folder (default: EDGELOOP_PIPELINES_DIR or the bundle's)"
    )
    parser.add_argument("--samples", type=int, default=50, help="recent messages to sample (default 50)")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers")
    parser.add_argument("--kafka-conn", default="edgeloop_kafka", help="Airflow connection of the Kafka cluster")
    parser.add_argument("--dry-run", action="store_true", help="print the spec instead of writing it")
    return parser


def _groups(values: Sequence[str]) -> list[tuple[str, int]]:
    out = []
    for item in (part.strip() for value in values for part in value.split(",")):
        if not item:
            continue
        name, _, devices = item.partition("=")
        out.append((name.strip(), int(devices) if devices.strip().isdigit() else 0))
    return out


def _kafka_config(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    bootstrap = args.bootstrap_servers or environ.get("EDGELOOP_KAFKA_BOOTSTRAP")
    if bootstrap:
        return {"bootstrap.servers": bootstrap}
    from edgeloop.kafka import kafka_config_from_connection

    return kafka_config_from_connection(args.kafka_conn)


def spec_new(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run `edgeloop spec new` with these arguments; return the exit code."""
    from edgeloop.generator.discovery import KafkaUnavailable, UnknownTopic
    from edgeloop.generator.propose import NotASourceTopic
    from edgeloop.generator.render import Draft
    from edgeloop.generator.store import StoreError, check_name
    from edgeloop.spec import default_pipelines_dir

    environ = os.environ if environ is None else environ
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    if args.name is not None:
        try:
            check_name(args.name)
        except StoreError as exc:
            print(f"--name: {exc}", file=err)
            return EXIT_USAGE
    folder: Path = args.folder or default_pipelines_dir()
    try:
        proposal = _proposal_from_topic(args, environ, folder)
    except (UnknownTopic, KafkaUnavailable, NotASourceTopic, ValueError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    updates = _draft_updates(args, err)
    if updates is None:
        return EXIT_USAGE
    draft = Draft.model_validate(proposal.draft).model_copy(update=updates)
    for note in [*proposal.notes, *proposal.inference.problems, *proposal.inference.skipped_fields]:
        print(f"note: {note}", file=err)
    return _check_and_write(args, environ, folder, draft, out, err)


def _proposal_from_topic(args: argparse.Namespace, environ: Mapping[str, str], folder: Path) -> Proposal:
    """Sample `--from-topic` and propose a draft for it (raises what discovery and propose raise)."""
    from edgeloop.generator.discovery import UnknownTopic, device_state_groups, list_topics, sample_messages
    from edgeloop.generator.propose import propose
    from edgeloop.generator.store import list_spec_files
    from edgeloop.generator.templates import get_template

    template = get_template(args.template)
    config = _kafka_config(args, environ)
    topics = list_topics(config)
    info = next((t for t in topics if t.name == args.from_topic), None)
    if info is None:
        raise UnknownTopic(f"topic '{args.from_topic}' does not exist on the cluster")
    samples = sample_messages(config, args.from_topic, args.samples)
    state = device_state_groups(config, info.prefix) if info.prefix else None
    taken = [s.name for s in list_spec_files(folder)]
    return propose(
        info,
        topics,
        samples,
        state,
        template,
        taken,
        bucket=args.bucket or environ.get("EDGELOOP_BUCKET", "edgeloop"),
        preset=args.preset,
    )


def _draft_updates(args: argparse.Namespace, err: TextIO) -> dict[str, Any] | None:
    """What the command line changes in the proposed draft; None (after saying why) for a bad `--groups`."""
    from edgeloop.generator.render import DraftGroup

    updates: dict[str, Any] = {"description": args.description, "owner": args.owner}
    if args.name:
        updates["name"] = args.name
    if args.labels:
        updates["labels"] = list(args.labels)
    if args.groups:
        groups = []
        for raw, devices in _groups(args.groups):
            name = group_name_from_id(raw)
            if name is None:
                print(f"--groups: '{raw}' cannot be a group name (lower case letters, digits, '-')", file=err)
                return None
            groups.append(DraftGroup(name=name, devices=devices))
        updates["groups"] = groups
        updates["canary"] = pick_canary([GroupChoice(g.name, g.devices) for g in groups])
    if args.canary:
        updates["canary"] = args.canary
    if args.approvers:
        updates["approvers"] = list(args.approvers)
    return updates


def _check_and_write(
    args: argparse.Namespace, environ: Mapping[str, str], folder: Path, draft: Draft, out: TextIO, err: TextIO
) -> int:
    """Render the draft, check it against the deployment and Airflow's users, then print or write it."""
    from edgeloop.airflow_users import known_user_names
    from edgeloop.deployment import DeploymentInvalid, load_deployment, usual_choices
    from edgeloop.generator.render import check_spec_text, dag_ids, render_spec, render_yaml
    from edgeloop.generator.store import PipelineExists, StoreError, create_spec_file

    try:
        deployment = load_deployment(environ)
        rendered = render_spec(draft)
        rendered["rollout"].update(usual_choices(deployment))
        text = render_yaml(rendered, draft.template)
    except (ValueError, DeploymentInvalid) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_INVALID
    result = check_spec_text(text, draft.name, deployment=deployment, users=known_user_names())
    if not result.ok:
        print(f"{draft.name}.yaml: INVALID ({len(result.errors)} errors)", file=err)
        for error in result.errors:
            print(f"  {error.location}: {error.message}", file=err)
        if args.dry_run:
            out.write(text)
        return EXIT_INVALID
    if args.dry_run:
        out.write(text)
        return EXIT_OK
    try:
        stored = create_spec_file(folder, draft.name, text)
    except PipelineExists as exc:
        print(f"error: {exc}", file=err)
        return EXIT_EXISTS
    except (StoreError, OSError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    print(f"wrote {stored.path} (version {stored.version})", file=out)
    print(f"DAGs after the next parse: {', '.join(dag_ids(draft.name))}", file=out)
    return EXIT_OK


def main() -> int:
    return spec_new(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
