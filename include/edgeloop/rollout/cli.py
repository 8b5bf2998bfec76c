"""`edgeloop rollout-job`: the unit of work of a rollout wave, run in a pod or as a local process."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeloop.spec import PipelineSpec

XCOM_FILE = Path("/airflow/xcom/return.json")  # KubernetesPodOperator's xcom sidecar reads it
ARTIFACT_ENV = "EDGELOOP_ARTIFACT"  # the version's ONNX file as resolved by the launching task (a local job)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    job = sub.add_parser("rollout-job", help="apply one model version to one edge group")
    job.add_argument("--pipeline", required=True)
    job.add_argument("--group", required=True)
    job.add_argument("--model-version", required=True)
    job.add_argument("--wave", type=int, required=True)
    job.add_argument("--rollout-id", required=True)
    job.add_argument("--rollback", action="store_true", help="restore this version (a rollback)")
    job.set_defaults(func=run)
    for name, text in (("rollout-pause", "pause the pipeline's rollouts"), ("rollout-resume", "resume them")):
        flag = sub.add_parser(name, help=text)
        flag.add_argument("--pipeline", required=True)
        flag.add_argument("--by", default=os.environ.get("USER", "cli"), help="who pauses or resumes (audit)")
        flag.add_argument("--reason", required=name == "rollout-pause", default="", help="why (audit)")
        flag.set_defaults(func=run_pause)


def run_pause(args: argparse.Namespace) -> int:
    """Write or delete the pipeline's pause flag with its S3 connection (`rollout.pause`)."""
    from edgeloop.connections import PipelineClients
    from edgeloop.rollout.pause import pause_rollouts, resume_rollouts
    from edgeloop.spec import default_pipelines_dir, load_spec

    spec = load_spec(default_pipelines_dir() / f"{args.pipeline}.yaml")
    s3 = PipelineClients(spec).s3()
    if args.command == "rollout-pause":
        print(json.dumps(pause_rollouts(s3, spec, args.by, args.reason)))
    else:
        print(json.dumps(resume_rollouts(s3, spec, args.by, args.reason)))
    return 0


def run(args: argparse.Namespace) -> int:
    from edgeloop.contract.keys import BadKey, signer_from_env, trusted_from_env
    from edgeloop.kafka import kafka_config_for_job
    from edgeloop.rollout.job import run_wave_job
    from edgeloop.spec import default_pipelines_dir, load_spec

    spec = load_spec(default_pipelines_dir() / f"{args.pipeline}.yaml")
    try:
        signer = signer_from_env(os.environ)
        trusted = trusted_from_env(os.environ, signer)
    except BadKey as exc:
        raise SystemExit(f"{exc} (a Kubernetes Secret or the environment provides it)") from None
    paused = pause_check(spec, args.group, args.rollback)
    artifacts = None
    if os.environ.get(ARTIFACT_ENV):
        from edgeloop.contract.artifact import ArtifactRef

        ref = ArtifactRef.from_dict(json.loads(os.environ[ARTIFACT_ENV]))
        artifacts = lambda _version: ref  # noqa: E731 - the one version this job assigns
    result = run_wave_job(
        spec,
        kafka_config_for_job(spec.connections.kafka),
        signer,
        args.group,
        args.model_version,
        args.rollout_id,
        rollback=args.rollback,
        artifacts=artifacts,
        trusted_keys=trusted,
        wave=args.wave,
        paused=paused,
    )
    result["wave"] = args.wave
    text = json.dumps(result, sort_keys=True, default=str)
    if XCOM_FILE.parent.is_dir():
        XCOM_FILE.write_text(text)
    print(text)
    return 0


def pause_check(spec: PipelineSpec, group: str, rollback: bool) -> Callable[[], bool] | None:
    """What the job asks before each order whether the rollouts are paused (`rollout.pause`); None: never held.

    A local job reads the presigned URL its launching task hands it; a job in a pod reads the flag with
    the pipeline's S3 connection (`AIRFLOW_CONN_<ID>` from a Kubernetes Secret). A rollback and a
    `kubernetes` group's job are never held.
    """
    from edgeloop.rollout.job import group_of
    from edgeloop.rollout.pause import PAUSE_URL_ENV, paused_by_s3, paused_by_url

    if rollback or group_of(spec, group).strategy != "kafka":
        return None
    if os.environ.get(PAUSE_URL_ENV):
        return paused_by_url(os.environ[PAUSE_URL_ENV])
    from edgeloop.connections import PipelineClients

    try:
        s3 = PipelineClients(spec).s3()
    except Exception as exc:  # the connection is not in this environment: a pause could not be honoured
        raise SystemExit(
            f"the pause flag needs the {spec.connections.s3!r} connection (AIRFLOW_CONN_"
            f"{spec.connections.s3.upper()}, from the Secret in a pod), not usable here: {exc}"
        ) from None
    return paused_by_s3(s3, spec)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeloop")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
