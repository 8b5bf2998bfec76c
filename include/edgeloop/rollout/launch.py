"""Run a wave's jobs with the spec's launcher: a KubernetesPodOperator pod or a local process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from edgeloop.rollout.cli import ARTIFACT_ENV
from edgeloop.rollout.job import RolloutJobError, group_of
from edgeloop.rollout.pods import job_arguments, rollout_pod_operator
from edgeloop.spec import PipelineSpec

T = TypeVar("T")


class WaveJobs:
    """What the local jobs of one wave share, made once by the first job that needs it: the Kafka settings and
    keys (connection lookups), the pause flag's URL (an S3 client) and the version's ONNX file (the registry and
    the file). The jobs start together; made once a group, these cost more than the jobs' own work. A failure is
    not kept: the next job tries again and fails for its own group."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: dict[str, Any] = {}

    def once(self, name: str, make: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._made:
                self._made[name] = make()
            return cast(T, self._made[name])


def _job_env() -> dict[str, str]:
    """The child's Kafka config source and keys (never logged); the config itself is the spec's connection."""
    from edgeloop.connections import control_signer, control_trusted_keys
    from edgeloop.contract.keys import SIGNING_KEY_ENV, TRUSTED_KEYS_ENV

    return {
        SIGNING_KEY_ENV: control_signer().private_pem().decode(),
        TRUSTED_KEYS_ENV: " ".join(control_trusted_keys().hex_keys()),
    }


def _pause_url(spec: PipelineSpec, group: str, expires_s: int) -> str:
    from edgeloop.connections import PipelineClients
    from edgeloop.rollout.pause import pause_url

    try:
        return pause_url(PipelineClients(spec).s3(), spec, expires_s)
    except Exception as exc:  # a connection this environment does not provide
        raise RolloutJobError(
            f"group {group}: the pause flag needs the {spec.connections.s3!r} connection, not usable here: {exc}"
        ) from exc


def run_local_job(
    spec: PipelineSpec,
    group: str,
    model_version: str,
    wave: int,
    rollout_id: str,
    rollback: bool = False,
    jobs: WaveJobs | None = None,
) -> dict[str, Any]:
    """The same `edgeloop rollout-job` a pod would run, as a child process of the task; `jobs` holds what the
    wave's jobs share."""
    from edgeloop.connections import PipelineClients
    from edgeloop.rollout.job import version_artifact
    from edgeloop.rollout.pause import PAUSE_URL_ENV

    args = [sys.executable, "-m", "edgeloop.cli", *job_arguments(spec, group, model_version, wave, rollout_id)]
    if rollback:
        args.append("--rollback")
    jobs = jobs or WaveJobs()
    timeout = spec.rollout.timeout.total_seconds() + 120
    # the child needs no Airflow: it gets the Kafka config, the pause flag's URL and the version's ONNX file
    # resolved here (never logged)
    env = {
        **os.environ,
        "EDGELOOP_KAFKA_CONFIG": jobs.once("kafka", lambda: json.dumps(PipelineClients(spec).kafka())),
        **jobs.once("keys", _job_env),
    }
    if not rollback and group_of(spec, group).strategy == "kafka":  # only a kafka wave's job holds its orders
        env[PAUSE_URL_ENV] = jobs.once("pause", lambda: _pause_url(spec, group, int(timeout) + 600))
    artifact = jobs.once(f"artifact:{model_version}", lambda: version_artifact(spec, group, model_version, None))
    if artifact is not None:
        env[ARTIFACT_ENV] = json.dumps(artifact.to_dict())
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-12:])
        raise RolloutJobError(f"rollout job for group {group!r} exited {done.returncode}:\n{tail}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RolloutJobError(f"rollout job for group {group!r} printed no result")
    return dict(json.loads(lines[-1]))


def launch_group(
    spec: PipelineSpec,
    group: str,
    model_version: str,
    wave: int,
    rollout_id: str,
    context: Any,
    rollback: bool = False,
    jobs: WaveJobs | None = None,
) -> dict[str, Any]:
    from edgeloop.deployment import require_allowed

    require_allowed(spec)  # the deployment's allowlist, read now: a spec picks among its values, never invents one
    if spec.rollout.launcher == "kubernetes":
        operator = rollout_pod_operator(spec, group, model_version, wave, rollout_id)
        if rollback:
            operator.arguments = [*operator.arguments, "--rollback"]
        return dict(operator.execute(context) or {})
    return run_local_job(spec, group, model_version, wave, rollout_id, rollback, jobs)
