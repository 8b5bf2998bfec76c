"""The rollout job: apply one model version to one edge group, and read back what the devices did.

`edgeloop rollout-job` runs `run_wave_job` either in a pod (KubernetesPodOperator) or as a
local process; the code is the same. Strategies per group:
- `kafka`: publish a signed assignment on the `control` topic, wait for reported state;
- `kubernetes`: put the signed assignment in a ConfigMap, point the group's agent DaemonSet at it
  and wait for its rollout status (see `edgeloop.rollout.manifests`).
Both are idempotent: the assignment id and the patch are derived from the rollout id, the
group and the version, so a retried job re-publishes the same assignment or re-applies the
same patch.

A kafka assignment of a model version (any but the on-device baseline "0") carries the
version's ONNX file as an `ArtifactRef` (`registry.artifacts.publish_edge_artifact`): the
job reaches S3 and MLflow through the pipeline's connections, as the environment
provides them (`AIRFLOW_CONN_<ID>` variables in the job's process or pod). A version
without an ONNX file fails the job with the reason. On a retry the reference differs
only in the presigned URL's signature; devices apply an assignment id once.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.contract.keys import Keyring, Signer
from edgeloop.rollout.gate import GroupReading
from edgeloop.spec import EdgeGroup, PipelineSpec

if TYPE_CHECKING:
    from edgeloop.fleet.control import FleetView

ArtifactResolver = Callable[[str], ArtifactRef]  # model version -> where its ONNX file is


class RolloutJobError(RuntimeError):
    """The job could not apply the version to the group."""


def rollout_id_for(pipeline: str, run_id: str) -> str:
    """A short stable id for one rollout (one DAG run): retries of the run share it."""
    return "ro-" + hashlib.sha256(f"{pipeline}/{run_id}".encode()).hexdigest()[:12]


def assignment_id_for(rollout_id: str, group: str, model_version: str, rollback: bool = False) -> str:
    return f"{rollout_id}.{group}.{'rb' if rollback else 'v'}{model_version}"


def group_of(spec: PipelineSpec, name: str) -> EdgeGroup:
    for group in spec.groups:
        if group.name == name:
            return group
    raise RolloutJobError(f"group: {name!r} is not a group of {spec.name}")


def artifact_resolver(spec: PipelineSpec) -> ArtifactResolver:
    """Publish-and-reference a version's ONNX file with the pipeline's S3 and MLflow connections."""
    from edgeloop.connections import PipelineClients
    from edgeloop.registry.artifacts import publish_edge_artifact
    from edgeloop.registry.client import mlflow_client

    clients = PipelineClients(spec)
    s3, client = clients.s3(), mlflow_client(clients.mlflow_uri())
    return lambda version: publish_edge_artifact(client, s3, spec, version)


def version_artifact(
    spec: PipelineSpec, group: str, model_version: str, artifacts: ArtifactResolver | None
) -> ArtifactRef | None:
    """The ONNX file to assign with `model_version` (None for the baseline); RolloutJobError when it has none."""
    from edgeloop.contract.messages import BASELINE_VERSION
    from edgeloop.registry.errors import RegistryError

    if model_version == BASELINE_VERSION:
        return None
    if artifacts is None:
        try:
            artifacts = artifact_resolver(spec)
        except Exception as exc:  # a connection the job's environment does not provide
            raise RolloutJobError(
                f"group {group}: model version {model_version} needs its ONNX file, but the connections "
                f"{spec.connections.s3!r} and {spec.connections.mlflow!r} are not usable here: {exc}"
            ) from exc
    try:
        return artifacts(model_version)
    except RegistryError as exc:
        raise RolloutJobError(f"group {group}: model version {model_version} cannot be assigned: {exc}") from exc


def run_kafka_wave(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    signer: Signer,
    group: str,
    model_version: str,
    assignment_id: str,
    *,
    timeout_s: float,
    poll_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    artifacts: ArtifactResolver | None = None,
    trusted_keys: Keyring | None = None,
    share: float | None = None,
    rollout_id: str | None = None,
    paused: Callable[[], bool] | None = None,
    paced: bool = True,
) -> dict[str, Any]:
    """Order a group's devices and wait until they report the version, fail it, time out, or time runs out.

    With a `share`, or a `rollout.rate` in the spec, the devices are ordered one by one
    (`rollout.orders`): a share of the group's members, or all of them and then the group. Without,
    the group is ordered at once. `artifacts` resolves the version's ONNX file (default:
    `artifact_resolver(spec)`); device reports count when their devices are enrolled under a
    `trusted_keys` key (default: the signer's); `paced=False` orders the group at once whatever the
    rate (a rollback). While `paused()` (the pipeline's pause flag,
    `rollout.pause`) says so, no order is sent.
    """
    from edgeloop.fleet.control import FleetView, push_assignment
    from edgeloop.rollout.orders import PacedWave, WaveExecutions, ordered_one_by_one, progress_record, run_paced_wave

    artifact = version_artifact(spec, group, model_version, artifacts)
    trusted = trusted_keys or Keyring.of([signer.public])
    view = FleetView(spec, kafka_config, trusted, groups=[group])
    executions = WaveExecutions(model_version, assignment_id, spec.rollout.device_timeout)
    wave = PacedWave(
        spec, kafka_config, signer, view, group, executions, artifact, sleep=sleep, poll_s=poll_s, paused=paused
    )

    def order_group() -> dict[str, Any]:
        return push_assignment(
            spec,
            kafka_config,
            signer,
            group=group,
            model_version=model_version,
            issuer="rollout",
            assignment_id=assignment_id,
            artifact=artifact,
        ).to_dict()

    if ordered_one_by_one(spec, share, paced):
        record, whole_group = run_paced_wave(wave, rollout_id or assignment_id.partition(".")[0], share, timeout_s)
        assignment = order_group() if whole_group else {"id": assignment_id, "model_version": model_version}
        return {"strategy": "kafka", "assignment": assignment, **record}
    if wave.hold(time.monotonic() + timeout_s) is None:
        return {"strategy": "kafka", "assignment": None, "pauses": wave.pauses, "stopped": True}
    wave.mark()
    assignment = order_group()
    executions.group, executions.group_ordered_at = group, time.time()
    found, tally, stopped = wave.wait(time.monotonic() + timeout_s)
    progress = progress_record(found, tally)
    return {
        "strategy": "kafka",
        "assignment": assignment,
        "progress": progress,
        "abort": wave.abort,
        "stopped": stopped,
        "pauses": wave.pauses,
    }


def run_kubernetes_wave(
    spec: PipelineSpec,
    group: str,
    model_version: str,
    *,
    image: str,
    timeout_s: float,
    signer: Signer,
    assignment_id: str,
    apps_api: Any | None = None,
    core_api: Any | None = None,
    artifacts: ArtifactResolver | None = None,
    poll_s: float = 2.0,
) -> dict[str, Any]:
    """Order the group's agents through their DaemonSet and follow the rollout until every pod is updated and ready.

    The signed assignment goes into its own ConfigMap (`rollout.manifests`); the patch points
    the pod template at it, so the DaemonSet's rolling update paces the model over the nodes and
    a pod is available only once its agent verified, loaded and self-tested the model.
    """
    from edgeloop.contract.messages import Target, new_assignment
    from edgeloop.rollout.manifests import assignment_configmap, daemonset_patch
    from edgeloop.spec import daemonset_name

    if apps_api is None or core_api is None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        apps_api = apps_api or client.AppsV1Api()
        core_api = core_api or client.CoreV1Api()
    assignment = new_assignment(
        Target("group", group),
        model_version=model_version,
        issuer="rollout",
        assignment_id=assignment_id,
        artifact=version_artifact(spec, group, model_version, artifacts),
        pipeline=spec.name,
    )
    orders = assignment_configmap(spec, group, assignment.id, assignment.to_wire(signer))
    apply_configmap(core_api, orders)
    name = daemonset_name(spec, group)
    namespace = spec.rollout.namespace
    patch = daemonset_patch(spec, group, model_version, image, orders["metadata"]["name"], assignment.id)
    apps_api.patch_namespaced_daemon_set(name, namespace, patch)
    deadline = time.monotonic() + timeout_s
    while True:
        ds = apps_api.read_namespaced_daemon_set(name, namespace)
        status = ds.status
        wanted = status.desired_number_scheduled or 0
        done = (
            (status.observed_generation or 0) >= (ds.metadata.generation or 0)
            and (status.updated_number_scheduled or 0) >= wanted
            and (status.number_available or 0) >= wanted
        )
        result = {
            "strategy": "kubernetes",
            "assignment": assignment.to_dict(),
            "daemonset": f"{namespace}/{name}",
            "desired": wanted,
            "updated": status.updated_number_scheduled or 0,
            "available": status.number_available or 0,
        }
        if done:
            return result | {"complete": True}
        if time.monotonic() >= deadline:
            return result | {"complete": False}
        time.sleep(poll_s)


def apply_configmap(core_api: Any, manifest: Mapping[str, Any]) -> None:
    """Create the ConfigMap, or replace it when it exists (a retried wave re-signs the same order)."""
    from kubernetes.client.exceptions import ApiException

    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    try:
        core_api.create_namespaced_config_map(namespace, manifest)
    except ApiException as exc:
        if exc.status != 409:
            raise
        core_api.replace_namespaced_config_map(name, namespace, manifest)


def read_group_readings(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    groups: list[str],
    model_version: str,
    assignment_ids: Mapping[str, str],
    window_s: float,
    trusted: Keyring,
    view: FleetView | None = None,
    devices: Mapping[str, Sequence[str]] | None = None,
    device_timeout_s: float | None = None,
) -> tuple[list[GroupReading], dict[str, int]]:
    """What the enrolled devices of each group report: applied version, failures, refusals, offline,
    errors, confidence; and the reports left out because their device did not sign them, by reason.

    `devices` names, for a group a share wave reached, the only devices of it that are read. A device
    that refused its order (`rollout.orders.order_outcome`: a signed `bad_control` report naming it
    within `window_s`, or a refused status) counts as rejected. With `device_timeout_s`, once
    `window_s` (the time since the wave's orders) passed it, a device that has neither applied,
    failed nor refused counts as timed out. A gate that reads again and again passes the same
    `view`: each reading then re-checks only new records.
    """
    from edgeloop.fleet.control import FleetView
    from edgeloop.fleet.health import fleet_status
    from edgeloop.rollout.orders import order_ids_of, order_outcome, refused_orders

    view = view or FleetView(spec, kafka_config, trusted, groups=groups)
    registry, states = view.refresh(timeout=30)
    # Device-state is read once per reading, only the wave's devices' feedback is parsed, and heartbeats
    # only back to stale_after: a device silent for longer counts as offline either way, and the gate
    # needs no list of newly stale devices.
    status = fleet_status(
        spec,
        kafka_config,
        trusted,
        registry=registry,
        window_s=max(window_s, 5.0),
        timeout=30,
        states=states,
        view=view,
        lookback_s=spec.fleet_health.stale_after.total_seconds(),
        groups=groups,
    )
    late = device_timeout_s is not None and window_s > device_timeout_s

    def ids_of(device: str) -> set[str]:
        ids = assignment_ids.get(states.devices[device].group_id) if device in states.devices else None
        return order_ids_of(ids, device) if ids is not None else set()

    since_ms = int((time.time() - max(window_s, 5.0)) * 1000)  # as fleet_status read them: nothing read again
    refusals = refused_orders(view.error_reports(since_ms, timeout=30), registry, ids_of)
    readings = []
    for group in groups:
        members = states.in_group(group)
        if devices is not None and group in devices:
            wanted = set(devices[group])
            members = [s for s in members if s.device_id in wanted]
        outcomes = Counter(
            order_outcome(s, model_version, ids_of(s.device_id), refusals.get(s.device_id))[0] for s in members
        )
        applied, failed, rejected = outcomes["applied"], outcomes["failed"], outcomes["rejected"]
        health = status.group(group)
        readings.append(
            GroupReading(
                group=group,
                devices=len(members),
                applied=applied,
                failed=failed,
                offline_ratio=health.offline_ratio,
                error_rate=health.error_rate,
                mean_confidence=health.mean_confidence,
                timed_out=len(members) - applied - failed - rejected if late else 0,
                rejected=rejected,
            )
        )
    return readings, status.refused_reports


def run_wave_job(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    signer: Signer,
    group: str,
    model_version: str,
    rollout_id: str,
    *,
    rollback: bool = False,
    artifacts: ArtifactResolver | None = None,
    trusted_keys: Keyring | None = None,
    wave: int = -1,
    paused: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """One group, one version: the unit of work of a rollout wave (and of a rollback).

    `wave` is the policy wave's number: a wave with a share orders only that share of the group's
    devices. `paused` holds the wave's orders while it says so (`rollout.pause`). A rollback orders
    the whole group at once: never paced, never held.
    """
    from edgeloop.rollout.orders import wave_share

    edge_group = group_of(spec, group)
    timeout_s = spec.rollout.timeout.total_seconds()
    started = time.time()
    if edge_group.strategy == "kubernetes":
        result = run_kubernetes_wave(
            spec,
            group,
            model_version,
            image=spec.rollout.agent_image,
            timeout_s=timeout_s,
            signer=signer,
            assignment_id=assignment_id_for(rollout_id, group, model_version, rollback),
            artifacts=artifacts,
        )
    else:
        result = run_kafka_wave(
            spec,
            kafka_config,
            signer,
            group,
            model_version,
            assignment_id_for(rollout_id, group, model_version, rollback),
            timeout_s=timeout_s,
            artifacts=artifacts,
            trusted_keys=trusted_keys,
            share=None if rollback else wave_share(spec, wave, group),
            rollout_id=rollout_id,
            paused=None if rollback else paused,
            paced=not rollback,
        )
    return {
        "group": group,
        "model_version": model_version,
        "rollback": rollback,
        "started_at": started,
        "duration_s": round(time.time() - started, 2),
        **result,
    }
