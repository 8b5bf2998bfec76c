"""Run a wave's jobs with the spec's launcher: a KubernetesPodOperator pod or a local process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.rollout.cli import ARTIFACT_ENV
from edgeloop.rollout.job import RolloutJobError, group_of
from edgeloop.rollout.pods import job_arguments, rollout_pod_operator
from edgeloop.spec import PipelineSpec


class WaveArtifact:
    """A version's ONNX file, resolved by the first local job of a wave and shared with the wave's other jobs:
    they start together, and each resolution reads the registry and the file. A failed resolution is not kept
    (the next job tries again and fails for its own group)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._resolved: dict[str, ArtifactRef | None] = {}

    def get(self, spec: PipelineSpec, group: str, model_version: str) -> ArtifactRef | None:
        from edgeloop.rollout.job import version_artifact

        with self._lock:
            if model_version not in self._resolved:
                self._resolved[model_version] = version_artifact(spec, group, model_version, None)
            return self._resolved[model_version]


def run_local_job(
    spec: PipelineSpec,
    group: str,
    model_version: str,
    wave: int,
    rollout_id: str,
    rollback: bool = False,
    artifact: WaveArtifact | None = None,
) -> dict[str, Any]:
    """The same `edgeloop rollout-job` a pod would run, as a child process of the task."""
    args = [sys.executable, "-m", "edgeloop.cli", *job_arguments(spec, group, model_version, wave, rollout_id)]
    if rollback:
        args.append("--rollback")
    from edgeloop.connections import PipelineClients, control_signer, control_trusted_keys
    from edgeloop.contract.keys import SIGNING_KEY_ENV, TRUSTED_KEYS_ENV
    from edgeloop.rollout.pause import PAUSE_URL_ENV, pause_url

    timeout = spec.rollout.timeout.total_seconds() + 120
    # the child needs no Airflow: it gets the Kafka config, the pause flag's URL and the version's ONNX file
    # resolved here (never logged)
    env = {
        **os.environ,
        "EDGELOOP_KAFKA_CONFIG": json.dumps(PipelineClients(spec).kafka()),
        SIGNING_KEY_ENV: control_signer().private_pem().decode(),
        TRUSTED_KEYS_ENV: " ".join(control_trusted_keys().hex_keys()),
    }
    if not rollback and group_of(spec, group).strategy == "kafka":  # only a kafka wave's job holds its orders
        try:
            env[PAUSE_URL_ENV] = pause_url(PipelineClients(spec).s3(), spec, int(timeout) + 600)
        except Exception as exc:  # a connection this environment does not provide
            raise RolloutJobError(
                f"group {group}: the pause flag needs the {spec.connections.s3!r} connection, not usable here: {exc}"
            ) from exc
    resolved = (artifact or WaveArtifact()).get(spec, group, model_version)
    if resolved is not None:
        env[ARTIFACT_ENV] = json.dumps(resolved.to_dict())
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
    artifact: WaveArtifact | None = None,
) -> dict[str, Any]:
    from edgeloop.deployment import require_allowed

    require_allowed(spec)  # the deployment's allowlist, read now: a spec picks among its values, never invents one
    if spec.rollout.launcher == "kubernetes":
        operator = rollout_pod_operator(spec, group, model_version, wave, rollout_id)
        if rollback:
            operator.arguments = [*operator.arguments, "--rollback"]
        return dict(operator.execute(context) or {})
    return run_local_job(spec, group, model_version, wave, rollout_id, rollback, artifact)
