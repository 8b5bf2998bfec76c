"""Rollout benchmark: 10,000 simulated devices in 20 groups, edgeloop's gated waves next to naive pushes.

One run on the running stack (real Kafka, S3 and MLflow; `make stack-up`), with a pipeline spec of
its own (written to a temporary folder, own topic prefix, storage prefix and registered model, soak
20 s) and the fleet simulator as a child process (`--models rules`: every version is the rule model,
so no model download; versions 5 and 6 are injected to crash on every inference).

The registered versions are what a rollout admits: version 1 is trained, registered and judged the
way the train DAG does it (`build_dataset` on a small seed, `train_model` with a one-candidate
search, `register_challenger`, `evaluation_gate`, which promotes the first model and makes it
champion), so it has its ONNX file logged and recorded and the gate's "promote" on it; versions 2 to
7 are copies of it (`registry.register.copy_version`). Not timed. Phases, in this order:

1. edgeloop, good model (v2): the rollout DAG's own step functions driven directly, in DAG order:
   `plan_step`, per wave `apply_step` (launcher local: one `edgeloop rollout-job` process per group)
   and the `RolloutGateOperator` (its trigger run in this process, as the triggerer would), then
   `promote_step`. Overhead = total time - soak x waves.
2. naive, good model (v3): one assignment to every group at once, wait until every device reports
   it, one soak, move the alias. Overhead = total - one soak.
3. naive script, good model (v4): per group, push and wait until the group reports it (no gate,
   no soak), the way a plain script loops over groups.
4. edgeloop, crashing model (v5): canary wave, gate fails on the error rate, `rollback_step`.
5. naive, crashing model (v6): pushed to every group at once; the same fleet-status reading every
   2 s until the error rate crosses the spec's threshold; then the previous version to everyone.
6. (unless --no-dag-run) one real `<pipeline>__rollout` DAG run (v7) through the stack's Airflow:
   the spec is copied into the stack's pipelines folder for the run (the dag-processor only reads
   that folder), only its rollout DAG is unpaused, the run is triggered and timed through the REST
   API, then the spec and the DAGs are removed again.

Orders are signed with the stack's key (EDGELOOP_SIGNING_KEY), as the DAG's jobs sign them; the
simulator enrols its devices with it at start, and every reading counts only the reports of
enrolled devices (the refused ones are counted and printed). Device-side times (bad model reached,
previous version back) come from the device-state topic, tailed for the whole run. Everything the
benchmark creates (topics with the device registry, every object under its storage prefix: the
dataset, the ONNX file, the rollout records; the registered model and the MLflow experiment, the DAGs)
is removed at the end. Usage:

    PYTHONPATH=include .venv/bin/python benchmarks/bench_rollout.py [--devices 10000] [--groups 20] [--soak 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, TopicPartition

from edgeloop.contract.keys import Keyring, Signer
from edgeloop.spec import STAGES

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "include" / "pipelines" / "factory_maintenance.yaml"
SEED_RECORDS = 4000  # labelled seed records version 1 is trained on
WAVES_TARGET_S = 60  # overhead beyond the soaks, the step functions driven directly
DAG_RUN_TARGET_S = 45  # overhead beyond the soaks, one real DAG run (10,000 devices)
# registry versions of the run (all registered up front; the simulator knows 5 and 6 crash)
START, EDGELOOP_GOOD, NAIVE_ALL, NAIVE_SCRIPT, EDGELOOP_BAD, NAIVE_BAD, DAG_RUN = (str(v) for v in range(1, 8))


# --- set-up ---------------------------------------------------------------------------------------


def stack_environment() -> None:
    """Endpoints and keys from the environment, else from the running local stack's env file."""
    needed = ("EDGELOOP_KAFKA_BOOTSTRAP", "AIRFLOW_CONN_EDGELOOP_KAFKA", "EDGELOOP_SIGNING_KEY")
    if all(os.environ.get(name) for name in needed):
        return
    from edgeloop.devstack import stack

    os.environ.update(stack.read_env_file())


def write_bench_spec(folder: Path, devices: int, groups: int, soak_s: int) -> Path:
    """The demo spec with `groups` groups of equal size: g00 the canary, then 20 % of the groups, then the rest."""
    data = yaml.safe_load(DEMO.read_text())
    name = f"bench_rollout_{uuid.uuid4().hex[:8]}"
    data["name"] = name
    data["topics"]["prefix"] = name
    data["storage"]["prefix"] = name  # the ONNX file's content-addressed key is then the benchmark's own
    data["registry"]["model_name"] = name
    # version 1 is really trained: one small candidate, and device limits a busy machine cannot miss
    # (a timing over the limit would make the gate reject it, and the rollout refuse it)
    data["training"].update(
        {
            "search_budget": 1,
            "search_space": {"n_estimators": [20], "max_depth": [6], "min_samples_leaf": [2]},
            "limits": {**data["training"]["limits"], "max_latency_ms": 1000, "max_memory_mb": 2000},
        }
    )
    data["ingest"]["schedule"] = "24h"  # only the rollout DAG is ever unpaused; the others stay quiet anyway
    data["drift"]["schedule"] = "24h"
    data["fleet_health"]["schedule"] = "24h"
    first_wave = max(1, round((groups - 1) * 0.2))
    data["groups"] = [
        {
            "name": f"g{i:02d}",
            "selector": {"edgeloop.dev/group": f"g{i:02d}"},
            "wave": 0 if i == 0 else (1 if i <= first_wave else 2),
            "devices": devices // groups,
        }
        for i in range(groups)
    ]
    data["rollout"].update({"canary_groups": ["g00"], "soak": f"{soak_s}s", "approval_required": False})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def register_versions(client: Any, s3: Any, spec: Any, count: int) -> None:
    """Versions 1 to `count` of the spec's model, each one a rollout admits (ONNX file recorded, gate "promote").

    Version 1 goes the train DAG's way: dataset, training, registration, evaluation gate (the first
    model it promotes becomes champion); the others are copies of it.
    """
    from edgeloop.registry.register import copy_version, register_challenger
    from edgeloop.training.dataset import build_dataset
    from edgeloop.training.gate import evaluation_gate
    from edgeloop.training.seed import make_seed_frame
    from edgeloop.training.train import train_model

    dataset = build_dataset(s3, spec, seed_source=lambda s: make_seed_frame(s, records=SEED_RECORDS))
    registered = register_challenger(client, spec, train_model(client, s3, spec, dataset))
    decision = evaluation_gate(client, s3, spec, registered)
    if registered["version"] != START or decision["decision"] != "promote" or not decision["champion_set"]:
        raise RuntimeError(
            f"the first version should be {START}, promoted and champion: it is version {registered['version']}, "
            f"{decision['decision']} ({decision['reason']}), champion set: {decision['champion_set']}"
        )
    for expected in range(int(START) + 1, count + 1):
        copy = copy_version(client, spec.registry.model_name, START, "bench_rollout: the same model again")
        if copy != str(expected):  # the simulator's crash faults name versions 5 and 6
            raise RuntimeError(f"the copy of version {START} became version {copy}, not {expected}")


@dataclass
class StateEvent:
    at: float  # Kafka timestamp (the simulator's wall clock), seconds
    device: str
    group: str
    version: str | None


class DeviceStateTail(threading.Thread):
    """Follows `<prefix>.device-state` from its end: every reported model version, with its time."""

    def __init__(self, kafka: dict[str, Any], topic: str) -> None:
        super().__init__(daemon=True)
        from edgeloop.fleet.topics import reader_config, topic_partitions, watermarks

        self.consumer = Consumer(reader_config(kafka))
        partitions = topic_partitions(self.consumer, topic, 30)
        self.consumer.assign(
            [TopicPartition(topic, p, watermarks(self.consumer, TopicPartition(topic, p), 30)[1]) for p in partitions]
        )
        self.events: list[StateEvent] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for message in self.consumer.consume(num_messages=5000, timeout=0.2):
                if message.error() is not None or not message.value():
                    continue
                body = json.loads(message.value() or b"{}")
                reported = body.get("reported") or {}
                event = StateEvent(
                    message.timestamp()[1] / 1000, body["device_id"], body["group_id"], reported.get("model_version")
                )
                with self.lock:
                    self.events.append(event)
        self.consumer.close()

    def since(self, start: float) -> list[StateEvent]:
        with self.lock:
            return [e for e in self.events if e.at >= start]

    def wait_all_on(self, devices: dict[str, str], version: str, since: float, timeout: float) -> float:
        """Wall time when the last of `devices` (id -> group) reported `version` after `since`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest: dict[str, StateEvent] = {}
            for event in self.since(since):
                if event.device in devices:
                    latest[event.device] = event
            on = [e for e in latest.values() if e.version == version]
            if len(on) == len(devices):
                return max(e.at for e in on)
            time.sleep(0.5)
        raise TimeoutError(f"not every device reported version {version} within {timeout:.0f}s")


def start_simulator(
    spec_path: Path, devices: int, log: Path, faults: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """The fleet simulator as a child process; `faults` maps versions to injected faults (default: 5 and 6 crash)."""
    faults = {EDGELOOP_BAD: "crash", NAIVE_BAD: "crash"} if faults is None else faults
    command = [
        sys.executable, "-m", "edgeloop.cli", "fleet", "simulate", "--spec", str(spec_path),
        "--devices", str(devices), "--models", "rules", "--model-version", START, "--no-ground-truth",
        *(arg for version, fault in faults.items() for arg in ("--fault", f"{version}={fault}")),
    ]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))


def wait_for_fleet(spec: Any, kafka: dict[str, Any], trusted: Keyring, devices: int, timeout: float) -> None:
    """Every device enrolled, registered and seen online (one signed heartbeat each)."""
    from edgeloop.fleet.health import fleet_status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = fleet_status(spec, kafka, trusted, window_s=30, timeout=60)
        if sum(g.devices for g in status.groups) >= devices and sum(g.online for g in status.groups) >= devices:
            return
        time.sleep(3)
    raise TimeoutError(f"the simulated fleet of {devices} devices is not online after {timeout:.0f}s")


# --- edgeloop: the DAG's step functions ----------------------------------------------------------


class _TaskInstance:
    """What RolloutGateOperator needs from `context["ti"]`: the apply task's XCom, and a place to push."""

    def __init__(self, applied: dict[str, Any]) -> None:
        self.applied = applied
        self.pushed: dict[str, Any] = {}

    def xcom_pull(self, task_ids: str) -> dict[str, Any]:
        return self.applied

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event
    raise RuntimeError("the gate trigger ended without an event")


def run_gate(spec: Any, applied: dict[str, Any]) -> dict[str, Any]:
    """The wave's RolloutGateOperator: execute (defers), its trigger until it fires; a pass ends there, with the
    gate's record as the task's XCom (as the triggerer ends it), a fail in execute_complete."""
    from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
    from airflow.triggers.base import TaskSuccessEvent

    from edgeloop.rollout.operators import RolloutGateOperator

    wave = int(applied["wave"])
    operator = RolloutGateOperator(
        task_id=f"gate_{wave}",
        pipeline=spec.name,
        wave_index=wave,
        apply_task_id=f"apply_{wave}",
        soak_seconds=spec.rollout.soak.total_seconds(),
    )
    ti = _TaskInstance(applied)
    context = {"ti": ti}
    try:
        operator.execute(context)
    except TaskDeferred as deferred:
        event = asyncio.run(_first_event(deferred.trigger))
    else:
        raise RuntimeError("the gate operator did not defer")
    if isinstance(event, TaskSuccessEvent):
        return dict((event.xcoms or {})["return_value"])
    try:
        return dict(operator.execute_complete(context, dict(event.payload)))
    except AirflowFailException:
        return dict(ti.pushed["return_value"])


@dataclass
class EdgeloopRun:
    started: float = 0.0
    finished: float = 0.0
    plan_s: float = 0.0
    waves: list[dict[str, Any]] = field(default_factory=list)
    final_s: float = 0.0
    outcome: str = ""
    failed_gate_at: float | None = None
    rollback_done_at: float | None = None

    @property
    def total_s(self) -> float:
        return self.finished - self.started


def edgeloop_rollout(spec: Any, s3: Any, tracking_uri: str, kafka: dict[str, Any], version: str) -> EdgeloopRun:
    from edgeloop.rollout.admission import RunOrigin
    from edgeloop.rollout.steps import apply_step, plan_step, promote_step, record_gate, rollback_step

    run = EdgeloopRun(started=time.time())
    origin = RunOrigin("benchmark")
    plan = plan_step(spec, s3, tracking_uri, f"bench__{uuid.uuid4().hex[:8]}", {"model_version": version}, None, origin)
    run.plan_s = time.time() - run.started
    applies: dict[int, Any] = {}
    gates: dict[int, Any] = {}
    for wave in plan["waves"]:
        if not wave["groups"]:
            continue
        index = int(wave["index"])
        apply_started = time.time()
        applies[index] = apply_step(spec, s3, plan, index, None)
        apply_done = time.time()
        gate = run_gate(spec, applies[index])
        gate_done = time.time()
        gates[index] = gate
        run.waves.append(
            {
                "wave": index,
                "groups": len(wave["groups"]),
                "apply_started": apply_started,
                "apply_s": apply_done - apply_started,
                "gate_s": gate_done - apply_done,
                "gate_after_soak_s": gate_done
                - float(applies[index]["applied_at"])
                - spec.rollout.soak.total_seconds(),
                "state": gate["state"],
                "reasons": gate.get("reasons", []),
            }
        )
        if gate["state"] != "pass":
            run.failed_gate_at = gate_done
            break
    final_started = time.time()
    for gate in gates.values():
        record_gate(spec, s3, plan["rollout_id"], gate)
    if run.failed_gate_at is None:
        promote_step(spec, s3, tracking_uri, plan, gates)
        run.outcome = "promoted"
    else:
        rollback_step(spec, s3, kafka, plan, applies, gates, None)
        run.outcome = "rolled back"
        run.rollback_done_at = time.time()
    run.finished = time.time()
    run.final_s = run.finished - final_started
    return run


# --- naive baselines -------------------------------------------------------------------------------


def wait_applied(spec: Any, kafka: dict[str, Any], trusted: Keyring, assignment: Any, timeout: float) -> None:
    from edgeloop.fleet.control import apply_progress

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = apply_progress(spec, kafka, assignment, trusted, timeout=60)
        if progress.devices and not progress.pending:
            return
        time.sleep(1.0)
    raise TimeoutError(f"assignment {assignment.id} not applied within {timeout:.0f}s")


def naive_all_at_once(
    spec: Any, kafka: dict[str, Any], signer: Signer, trusted: Keyring, tracking_uri: str, version: str
) -> float:
    """One assignment to every device, wait until all report it, one soak, look once, move the alias."""
    from edgeloop.fleet.control import push_assignment
    from edgeloop.fleet.health import fleet_status
    from edgeloop.registry.aliases import set_champion
    from edgeloop.registry.client import mlflow_client

    started = time.time()
    assignment = push_assignment(spec, kafka, signer, model_version=version, issuer="naive")
    wait_applied(spec, kafka, trusted, assignment, timeout=300)
    time.sleep(spec.rollout.soak.total_seconds())
    fleet_status(spec, kafka, trusted, window_s=spec.rollout.soak.total_seconds(), timeout=60)
    set_champion(mlflow_client(tracking_uri), spec, version)
    return time.time() - started


def naive_script(
    spec: Any, kafka: dict[str, Any], signer: Signer, trusted: Keyring, tracking_uri: str, version: str
) -> float:
    """For each group: push, wait until the group reports it; no gate, no soak; then move the alias."""
    from edgeloop.fleet.control import push_assignment
    from edgeloop.registry.aliases import set_champion
    from edgeloop.registry.client import mlflow_client

    started = time.time()
    for group in spec.groups:
        assignment = push_assignment(spec, kafka, signer, group=group.name, model_version=version, issuer="script")
        wait_applied(spec, kafka, trusted, assignment, timeout=300)
    set_champion(mlflow_client(tracking_uri), spec, version)
    return time.time() - started


@dataclass
class NaiveFailure:
    started: float
    detected: float
    restore_pushed: float


def naive_bad_push(
    spec: Any, kafka: dict[str, Any], signer: Signer, trusted: Keyring, version: str, previous: str
) -> NaiveFailure:
    """The bad version to every device at once; the gate's reading of the whole fleet every 2 s; restore all."""
    from edgeloop.fleet.control import push_assignment
    from edgeloop.rollout.job import read_group_readings

    started = time.time()
    push_assignment(spec, kafka, signer, model_version=version, issuer="naive")
    groups = [g.name for g in spec.groups]
    limit = spec.rollout.thresholds.max_error_rate
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        readings, _ = read_group_readings(
            spec, kafka, groups, version, {}, window_s=time.time() - started, trusted=trusted
        )
        if any(r.error_rate is not None and r.error_rate > limit for r in readings):
            break
        time.sleep(2.0)
    else:
        raise TimeoutError("the crashing version was never detected")
    detected = time.time()
    push_assignment(spec, kafka, signer, model_version=previous, issuer="naive")
    return NaiveFailure(started, detected, time.time())


# --- one real DAG run -------------------------------------------------------------------------------


@contextmanager
def spec_in_stack(spec_path: Path, folder: Path, api: Any) -> Iterator[Path]:
    """The spec in the stack's pipelines folder for the duration; then its DAGs paused, deleted, the file gone."""
    target = folder / spec_path.name
    staging = folder / f".{spec_path.name}.tmp"  # not *.yaml: the dag-processor never sees a partial file
    shutil.copyfile(spec_path, staging)
    staging.replace(target)
    name = spec_path.stem
    try:
        yield target
    finally:
        target.unlink(missing_ok=True)
        for stage in STAGES:
            dag_id = f"{name}__{stage}"
            try:
                api.patch(f"/dags/{dag_id}", {"is_paused": True})
                for run in api.runs(dag_id, limit=20):
                    if run["state"] not in ("success", "failed"):
                        api.patch(f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}", {"state": "failed"})
                api.session.delete(f"{api.base_url}/api/v2/dags/{dag_id}", timeout=30)
            except Exception as exc:  # cleanup of one DAG must not stop the others
                print(f"  cleanup of {dag_id}: {exc}", file=sys.stderr)


def _seconds(start: str | None, end: str | None) -> float:
    from datetime import datetime

    if not start or not end:
        return float("nan")
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def dag_run(spec_path: Path, stack_pipelines: Path, spec: Any, version: str, timeout: float) -> dict[str, Any]:
    """Trigger `<pipeline>__rollout` through the REST API; its duration and its tasks' durations."""
    from edgeloop.airflow_api import AirflowApi

    api = AirflowApi.login(os.environ["EDGELOOP_AIRFLOW_URL"], "admin", os.environ["AIRFLOW_ADMIN_PASSWORD"])
    dag_id = f"{spec.name}__rollout"
    with spec_in_stack(spec_path, stack_pipelines, api):
        loaded = time.monotonic()
        api.wait_for_dags({dag_id}, timeout=300)
        load_s = time.monotonic() - loaded
        api.patch(f"/dags/{dag_id}", {"is_paused": False})
        run_id = f"manual__bench_{uuid.uuid4().hex[:8]}"
        api.trigger(dag_id, run_id, conf={"model_version": version}, note="bench_rollout")
        run = api.wait_for_run(dag_id, run_id, timeout=timeout)
        tis = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {
        "state": run["state"],
        "load_s": load_s,
        "queued_to_end_s": _seconds(run.get("queued_at"), run["end_date"]),
        "run_s": _seconds(run["start_date"], run["end_date"]),
        "tasks": task_timings(run, tis),
    }


@dataclass
class TaskTiming:
    task: str
    state: str
    waited_s: float | None  # from the end of the task before it (the run's queueing for the first) to its start
    duration_s: float | None


def task_timings(run: dict[str, Any], tis: list[dict[str, Any]]) -> list[TaskTiming]:
    """The run's tasks in start order (skipped ones last): how long each waited to start, and ran.

    The rollout DAG is a chain, so what a task waited for is the scheduler and the executor
    (the task before it had ended): the task start latency.
    """
    ran = sorted((t for t in tis if t["state"] != "skipped" and t.get("start_date")), key=lambda t: t["start_date"])
    timings, previous_end = [], run.get("queued_at")
    for ti in ran:
        timings.append(
            TaskTiming(
                ti["task_id"],
                ti["state"],
                _seconds(previous_end, ti["start_date"]),
                _seconds(ti["start_date"], ti.get("end_date")),
            )
        )
        previous_end = ti.get("end_date")
    timings.append(TaskTiming("(run end after the last task)", "-", _seconds(previous_end, run.get("end_date")), None))
    timings += [TaskTiming(t["task_id"], t["state"], None, None) for t in tis if t not in ran]
    return timings


# --- clean-up ----------------------------------------------------------------------------------------


def cleanup(spec: Any, kafka: dict[str, Any], s3: Any, tracking_uri: str) -> None:
    from confluent_kafka.admin import AdminClient
    from mlflow import MlflowClient

    from edgeloop.devstack.pipelines import forget_pushed_metrics
    from edgeloop.kafka import client_config
    from edgeloop.training.tracking import experiment_name

    admin = AdminClient(client_config(kafka))
    try:
        for future in admin.delete_topics(spec.all_topics, operation_timeout=30).values():
            future.result(timeout=30)
    except Exception as exc:  # report and go on with the rest of the clean-up
        print(f"  topics not deleted: {exc}", file=sys.stderr)
    # everything under the benchmark's own storage prefix: dataset, ONNX file, rollout records, reports
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=spec.storage.bucket, Prefix=f"{spec.storage.prefix}/"
    ):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=spec.storage.bucket, Delete={"Objects": keys})
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        client.delete_registered_model(spec.registry.model_name)
    except Exception as exc:
        print(f"  registered model not deleted: {exc}", file=sys.stderr)
    experiment = client.get_experiment_by_name(experiment_name(spec))
    if experiment is not None and experiment.lifecycle_stage == "active":
        client.delete_experiment(experiment.experiment_id)
    forget_pushed_metrics(spec, dict(os.environ))  # the DAG run's task metrics


# --- report ------------------------------------------------------------------------------------------


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|")
    for row in rows:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        print("| " + " | ".join(cells) + " |")


def phase(name: str, action: Callable[[], Any]) -> Any:
    print(f"  {time.strftime('%H:%M:%S')} {name} ...", file=sys.stderr, flush=True)
    return action()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--soak", type=int, default=20, help="soak seconds per wave")
    parser.add_argument("--no-dag-run", action="store_true", help="skip the real DAG run through the stack's Airflow")
    args = parser.parse_args(argv)
    stack_environment()
    import boto3

    from edgeloop.connections import PipelineClients
    from edgeloop.contract.keys import signer_from_env, trusted_from_env
    from edgeloop.devstack.config import StackConfig
    from edgeloop.fleet.control import FleetView, read_device_states
    from edgeloop.fleet.registry import read_registry
    from edgeloop.registry.client import mlflow_client
    from edgeloop.rollout.job import read_group_readings
    from edgeloop.spec import load_spec

    signer = signer_from_env(os.environ)  # the stack's key: the DAG run's jobs sign with it
    trusted = trusted_from_env(os.environ, signer)
    tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
    s3 = boto3.client("s3", endpoint_url=os.environ["EDGELOOP_S3_ENDPOINT"])
    registry_client = mlflow_client(tracking_uri)
    folder = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    spec_path = write_bench_spec(folder, args.devices, args.groups, args.soak)
    spec = load_spec(spec_path)
    stack_pipelines = StackConfig.from_env().pipelines_dir  # the folder the stack's Airflow reads
    os.environ["EDGELOOP_PIPELINES_DIR"] = str(folder)  # rollout jobs and the gate trigger load the spec here
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "include"), os.environ.get("PYTHONPATH")]))
    kafka = PipelineClients(spec).kafka()
    soak = float(args.soak)
    waves = sorted({g.wave for g in spec.groups})
    simulator: subprocess.Popen[bytes] | None = None
    tail: DeviceStateTail | None = None
    results: dict[str, Any] = {}
    try:
        phase(
            "training and registering the versions", lambda: register_versions(registry_client, s3, spec, int(DAG_RUN))
        )
        launched = time.monotonic()
        simulator = start_simulator(spec_path, args.devices, folder / "simulator.log")
        phase("fleet coming online", lambda: wait_for_fleet(spec, kafka, trusted, args.devices, timeout=300))
        results["fleet_up_s"] = time.monotonic() - launched
        tail = DeviceStateTail(kafka, spec.topic("device-state"))
        tail.start()
        registry = read_registry(spec, kafka, trusted, timeout=60)
        states = read_device_states(spec, kafka, timeout=60, registry=registry)
        everyone = {s.device_id: s.group_id for s in states.devices.values()}
        canary = {device: group for device, group in everyone.items() if group in spec.rollout.canary_groups}

        results["edgeloop_good"] = phase(
            f"edgeloop waves, v{EDGELOOP_GOOD}",
            lambda: edgeloop_rollout(spec, s3, tracking_uri, kafka, EDGELOOP_GOOD),
        )
        view = FleetView(spec, kafka, trusted)
        started = time.monotonic()
        readings, refused = read_group_readings(
            spec, kafka, [g.name for g in spec.groups], EDGELOOP_GOOD, {}, window_s=soak, trusted=trusted, view=view
        )
        results["reading_s"] = time.monotonic() - started
        time.sleep(2.0)  # a gate's poll interval: the next reading takes what the fleet sent meanwhile
        started = time.monotonic()
        read_group_readings(
            spec, kafka, [g.name for g in spec.groups], EDGELOOP_GOOD, {}, window_s=soak, trusted=trusted, view=view
        )
        results["followed_reading_s"] = time.monotonic() - started
        results["reading_devices"] = sum(r.devices for r in readings)
        results["reading_refused"] = refused
        results["naive_all"] = phase(
            f"naive push to all, v{NAIVE_ALL}",
            lambda: naive_all_at_once(spec, kafka, signer, trusted, tracking_uri, NAIVE_ALL),
        )
        results["naive_script"] = phase(
            f"naive per-group script, v{NAIVE_SCRIPT}",
            lambda: naive_script(spec, kafka, signer, trusted, tracking_uri, NAIVE_SCRIPT),
        )

        bad = phase(
            f"edgeloop, crashing v{EDGELOOP_BAD}",
            lambda: edgeloop_rollout(spec, s3, tracking_uri, kafka, EDGELOOP_BAD),
        )
        results["edgeloop_bad"] = bad
        bad_start = bad.waves[0]["apply_started"]
        results["edgeloop_bad_restored"] = tail.wait_all_on(canary, NAIVE_SCRIPT, bad_start, timeout=120)
        results["edgeloop_bad_exposed"] = {e.device for e in tail.since(bad_start) if e.version == EDGELOOP_BAD}
        time.sleep(12)  # a heartbeat interval: the error counters of the rolled-back canary settle

        naive = phase(
            f"naive, crashing v{NAIVE_BAD} to all",
            lambda: naive_bad_push(spec, kafka, signer, trusted, NAIVE_BAD, previous=NAIVE_SCRIPT),
        )
        results["naive_bad"] = naive
        results["naive_bad_restored"] = tail.wait_all_on(everyone, NAIVE_SCRIPT, naive.started, timeout=300)
        results["naive_bad_exposed"] = {e.device for e in tail.since(naive.started) if e.version == NAIVE_BAD}

        if not args.no_dag_run:
            time.sleep(12)  # as above, before the next rollout is gated on errors
            timeout = len(waves) * (soak + 300)
            try:
                results["dag"] = phase(
                    f"real DAG run, v{DAG_RUN}",
                    lambda: dag_run(spec_path, stack_pipelines, spec, DAG_RUN, timeout=timeout),
                )
            except Exception as exc:  # the function-driven figures are still worth printing
                results["dag_error"] = f"{type(exc).__name__}: {exc}"

    finally:
        if tail is not None:
            tail.stop.set()
            tail.join(timeout=10)
        if simulator is not None:
            simulator.terminate()
            try:
                simulator.wait(timeout=60)
            except subprocess.TimeoutExpired:
                simulator.kill()
        cleanup(spec, kafka, s3, tracking_uri)
        shutil.rmtree(folder, ignore_errors=True)

    report(args, spec, soak, waves, results)
    return 0


def report_dag_tasks(dag: dict[str, Any], soak: float, n_waves: int) -> None:
    """The DAG run's tasks, and its overhead split into task start latency, gates beyond the soak, the rest."""

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    timings: list[TaskTiming] = dag["tasks"]
    rows = [
        [
            t.task,
            t.state,
            seconds(t.waited_s),
            seconds(t.duration_s),
            seconds(t.duration_s - soak) if t.task.startswith("gate_") and t.duration_s is not None else "-",
        ]
        for t in timings
    ]
    table(
        f"The real DAG run (DAG parsed {dag['load_s']:.0f} s after the spec was copied in; not counted)",
        ["task", "state", "waited to start s", "ran s", "beyond the soak s"],
        rows,
    )
    waited = sum(t.waited_s or 0.0 for t in timings)
    gates = sum((t.duration_s or 0.0) - soak for t in timings if t.task.startswith("gate_"))
    applies = sum(t.duration_s or 0.0 for t in timings if t.task.startswith("apply_"))
    others = dag["queued_to_end_s"] - n_waves * soak - waited - gates - applies
    started = sum(1 for t in timings if t.duration_s is not None)
    print(
        f"\n  where the {dag['queued_to_end_s'] - n_waves * soak:.1f} s beyond the soaks went: {waited:.1f} s waiting "
        f"for the {started} tasks to start (and for the run to end after the last), {gates:.1f} s in the gates "
        f"beyond their soaks, {applies:.1f} s in the apply tasks, {others:.1f} s in plan, promote and the rest"
    )


def report(args: argparse.Namespace, spec: Any, soak: float, waves: list[int], results: dict[str, Any]) -> None:
    good: EdgeloopRun = results["edgeloop_good"]
    n_waves = len(waves)
    per_wave = [sum(1 for g in spec.groups if g.wave == w) for w in waves]
    el_overhead = good.total_s - n_waves * soak
    naive_all_overhead = results["naive_all"] - soak
    print(
        f"\nedgeloop rollout benchmark: {args.devices:,} simulated devices in {args.groups} groups "
        f"(waves of {', '.join(map(str, per_wave))} groups), soak {soak:.0f} s per wave, "
        f"{os.cpu_count()} cores shared with the stack; fleet online after {results['fleet_up_s']:.0f} s"
    )
    print(
        f"one gate reading (registry + device-state + heartbeats + errors of {results['reading_devices']:,} devices): "
        f"{results['reading_s']:.1f} s, the next one 2 s later {results['followed_reading_s']:.1f} s "
        f"(only what is new); reports refused: {dict(sorted(results['reading_refused'].items())) or 0}"
    )
    rows = [
        [
            "edgeloop waves: the DAG's step functions driven directly",
            f"{good.total_s:.1f}",
            f"{n_waves} x {soak:.0f}",
            f"{el_overhead:.1f}",
            f"<= {WAVES_TARGET_S}",
            f"{el_overhead / max(naive_all_overhead, 1e-9):.1f}x",
        ]
    ]
    dag = results.get("dag")
    if results.get("dag_error"):
        print(f"the real DAG run failed: {results['dag_error']}")
    if dag:
        dag_overhead = dag["queued_to_end_s"] - n_waves * soak
        rows.append(
            [
                f"edgeloop waves: one real DAG run ({dag['state']}), REST API, queued to end",
                f"{dag['queued_to_end_s']:.1f}",
                f"{n_waves} x {soak:.0f}",
                f"{dag_overhead:.1f}",
                f"<= {DAG_RUN_TARGET_S}",
                f"{dag_overhead / max(naive_all_overhead, 1e-9):.1f}x",
            ]
        )
    rows += [
        [
            "naive: one push to every group, wait, one soak (no gate per wave)",
            f"{results['naive_all']:.1f}",
            f"1 x {soak:.0f}",
            f"{naive_all_overhead:.1f}",
            "-",
            "1.0x",
        ],
        [
            "naive script: push and wait group by group (no gate, no soak)",
            f"{results['naive_script']:.1f}",
            "0",
            f"{results['naive_script']:.1f}",
            "-",
            f"{results['naive_script'] / max(naive_all_overhead, 1e-9):.1f}x",
        ],
    ]
    table(
        "Good model to the whole fleet",
        ["rollout", "total s", "soak s", "overhead s", "target s", "overhead vs naive push"],
        rows,
    )
    wave_rows = [
        [
            f"wave {w['wave']} ({w['groups']} groups)",
            f"{w['apply_s']:.1f}",
            f"{w['gate_s']:.1f}",
            f"{w['gate_after_soak_s']:.1f}",
            w["state"],
        ]
        for w in good.waves
    ]
    wave_rows.insert(0, ["plan (registry, audit part)", f"{good.plan_s:.1f}", "-", "-", "-"])
    wave_rows.append(["promote (alias, audit record)", f"{good.final_s:.1f}", "-", "-", "-"])
    table(
        "edgeloop waves, step by step (apply: one rollout-job process per group until its devices report)",
        ["step", "apply s", "gate s", "gate beyond soak s", "gate"],
        wave_rows,
    )
    if dag:
        report_dag_tasks(dag, soak, n_waves)

    bad: EdgeloopRun = results["edgeloop_bad"]
    naive: NaiveFailure = results["naive_bad"]
    bad_start = bad.waves[0]["apply_started"]
    assert bad.failed_gate_at is not None
    el_detect = bad.failed_gate_at - bad_start
    el_restored = results["edgeloop_bad_restored"] - bad_start
    nv_detect = naive.detected - naive.started
    nv_restored = results["naive_bad_restored"] - naive.started
    table(
        "Failing canary: a model that crashes on every inference (edgeloop: step functions driven directly)",
        ["", "edgeloop canary + gate", "naive push to all", "target"],
        [
            [
                "devices that ran the bad model",
                f"{len(results['edgeloop_bad_exposed']):,}",
                f"{len(results['naive_bad_exposed']):,}",
                "canary only",
            ],
            ["push to failure detected (s)", f"{el_detect:.1f}", f"{nv_detect:.1f}", "-"],
            [
                "detected to previous version on every affected device (s)",
                f"{results['edgeloop_bad_restored'] - bad.failed_gate_at:.1f}",
                f"{results['naive_bad_restored'] - naive.detected:.1f}",
                "-",
            ],
            [
                "push to every affected device restored (s)",
                f"{el_restored:.1f}",
                f"{nv_restored:.1f}",
                f"<= {soak + 15:.0f}",
            ],
        ],
    )
    print(f"\n  edgeloop gate reasons: {'; '.join(bad.waves[0]['reasons'])[:300]}")


if __name__ == "__main__":
    sys.exit(main())
