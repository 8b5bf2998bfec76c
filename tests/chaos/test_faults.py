"""One fault per test, into the chaos stack's own processes, at the point of the loop where it matters.

Story: given the stack, a fleet of real agents on the champion and one fault (kill -9 of a service's
process group, restarted after a pause), when the stage the fault hits runs, then the stage still ends
and what the services hold says nothing was lost, doubled or half-done.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.chaos.harness import (
    Chaos,
    FaultRow,
    descendants_running,
    freeze_service,
    kill_service,
    orders_per_target,
    record,
    restart_service,
    switches_to,
    task_in_state,
    task_states,
    wait_for,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(2400)]

# enough for several flushes per partition (batch_size 10,000): the kill lands between two writes of one run
INGEST_RECORDS = 200_000
# how long a killed service stays down before it is started again (its own start time comes on top)
PAUSE_S = 10.0
OUTAGE_S = 60.0  # a service that answers nothing for this long (SIGSTOP), then goes on


def stored_ids(s3: Any, chaos: Chaos, day: str, prefix: str) -> Counter[str]:
    """Record ids starting with `prefix` in the raw objects of the telemetry topic for one day (each object read)."""
    import pyarrow.parquet as pq

    from edgeloop.ingest import raw_prefix
    from edgeloop.storage import get_bytes, list_keys

    spec = chaos.spec
    bucket = spec.storage.bucket
    id_field = spec.field_with_role("record_id") or "record_id"
    found: Counter[str] = Counter()
    for key in list_keys(s3, bucket, f"{raw_prefix(spec, spec.topic('telemetry'))}/dt={day}/"):
        if not key.endswith(".parquet"):
            continue
        ids = pq.read_table(io.BytesIO(get_bytes(s3, bucket, key)), columns=[id_field]).column(id_field).to_pylist()
        found.update(i for i in ids if str(i).startswith(prefix))
    return found


def first_object(s3: Any, chaos: Chaos, day: str, since: datetime) -> bool:
    """Whether a raw object of `day` was written since `since` (older runs on a reused stack may share the day)."""
    from edgeloop.ingest import raw_prefix

    prefix = f"{raw_prefix(chaos.spec, chaos.spec.topic('telemetry'))}/dt={day}/"
    listed = s3.list_objects_v2(Bucket=chaos.spec.storage.bucket, Prefix=prefix).get("Contents") or []
    return any(obj["LastModified"] >= since for obj in listed)


def running_ingest(chaos: Chaos) -> str | None:
    for run in chaos.api.runs(chaos.dag("ingest"), limit=5):
        if run["state"] == "running" and task_in_state(
            chaos.api, chaos.dag("ingest"), run["dag_run_id"], "ingest_topic", ("running",)
        ):
            return str(run["dag_run_id"])
    return None


@dataclass(frozen=True)
class Applied:
    """A fault as it was applied: the pid it hit, when (monotonic), and what was done, for the report."""

    pid: int
    at: float
    said: str


def down_for(chaos: Chaos, service: str, seconds: float) -> Applied:
    """kill -9 of `service`'s process group, started again `seconds` later the way the stack starts it: an outage
    of that length (plus its start)."""
    at = time.monotonic()
    try:
        pid = kill_service(chaos.cfg, service)
        time.sleep(seconds)
    finally:  # a fault that went wrong still leaves the service up for the next test
        restart_s = restart_service(chaos.cfg, service)
    return Applied(
        pid, at, f"{service} (pid {pid}) killed, started again {seconds:.0f} s later (healthy after {restart_s:.0f} s)"
    )


def frozen(chaos: Chaos, service: str, seconds: float) -> Applied:
    at = time.monotonic()
    pid = freeze_service(chaos.cfg, service, seconds)
    return Applied(pid, at, f"{service} (pid {pid}) stopped (SIGSTOP) for {seconds:.0f} s, then continued")


def test_the_broker_killed_during_ingest_loses_and_doubles_no_record(chaos: Chaos, s3_client: Any) -> None:
    ingest_with_fault(chaos, s3_client, "kill -9 + restart of the broker", lambda: down_for(chaos, "kafka", PAUSE_S))


def test_s3_unresponsive_for_a_minute_during_ingest_loses_and_doubles_no_record(chaos: Chaos, s3_client: Any) -> None:
    ingest_with_fault(chaos, s3_client, f"S3 unresponsive {OUTAGE_S:.0f} s", lambda: frozen(chaos, "s3", OUTAGE_S))


def ingest_with_fault(chaos: Chaos, s3_client: Any, fault: str, apply: Callable[[], Applied]) -> None:
    """200,000 records produced; `apply` runs once an ingest run has written the first object of them."""
    from benchmarks.soak_ingest import make_record, produce

    spec = chaos.spec
    prefix = f"chaos-{uuid.uuid4().hex[:8]}-"
    # 2 to 6 days back: inside no drift window, younger than ingest.max_record_age (7 days)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
        days=random.Random(prefix).randint(2, 6)
    )
    rng = random.Random(25)
    records = [
        (None, json.dumps(make_record(spec, f"{prefix}{n}", start + timedelta(milliseconds=10 * n), rng)).encode())
        for n in range(INGEST_RECORDS)
    ]
    produced_at = datetime.now(UTC).replace(microsecond=0)  # S3 keeps whole seconds
    produce(chaos.env["EDGELOOP_KAFKA_BOOTSTRAP"], spec.topic("telemetry"), records)
    day = start.strftime("%Y-%m-%d")
    # the first object of these records in S3: an ingest run is writing them, its offsets not all committed
    wait_for(
        lambda: first_object(s3_client, chaos, day, produced_at), 300, "the first object of the records", every=0.3
    )
    run_id = running_ingest(chaos)
    at_fault = len(stored_ids(s3_client, chaos, day, prefix))
    applied = apply()

    def all_stored() -> Counter[str] | None:
        found = stored_ids(s3_client, chaos, day, prefix)
        return found if len(found) >= INGEST_RECORDS else None

    try:
        found = wait_for(all_stored, 900, f"{INGEST_RECORDS} records in S3", every=10)
    except AssertionError:
        found = stored_ids(s3_client, chaos, day, prefix)
    recover_s = round(time.monotonic() - applied.at, 1)
    lost = INGEST_RECORDS - len(found)
    duplicated = sum(n - 1 for n in found.values() if n > 1)
    tries = {r["dag_run_id"]: r["state"] for r in chaos.api.runs(chaos.dag("ingest"), limit=10)}
    row = FaultRow(
        fault=fault,
        stage="ingest",
        happened=(
            f"ingest run {run_id} was writing, {at_fault} of {INGEST_RECORDS} records in S3; {applied.said};"
            f" {len(found)} stored in the end"
        ),
        recover_s=recover_s,
        lost=lost,
        duplicated=duplicated,
        passed=lost == 0 and duplicated == 0,
        details={"records": INGEST_RECORDS, "run": run_id, "stored_at_fault": at_fault, "ingest_runs": tries},
    )
    record(chaos.cfg, row)
    assert lost == 0, f"{lost} of {INGEST_RECORDS} records never reached S3"
    assert duplicated == 0, f"{duplicated} records stored more than once"


def seconds_from(api: Any, dag: str, run_id: str, task: str, run: dict[str, Any]) -> float | None:
    """Seconds from `task`'s first start to the end of its run (what a fault in that task costs, with the rest)."""
    starts = [ti.get("start_date") for ti in api.task_instances(dag, run_id) if ti["task_id"] == task]
    if not starts or not starts[0] or not run.get("end_date"):
        return None
    begun, ended = datetime.fromisoformat(starts[0]), datetime.fromisoformat(run["end_date"])
    return round((ended - begun).total_seconds(), 1)


def fault_free_seconds(api: Any, dag: str, task: str) -> float | None:
    """The same span in the newest successful rollout run without a fault (the fleet fixture's, or an earlier one)."""
    for run in api.runs(dag, limit=20):
        if run["state"] == "success" and "chaos" not in run["dag_run_id"]:
            return seconds_from(api, dag, run["dag_run_id"], task, run)
    return None


def rollout_with_fault(
    chaos: Chaos,
    fleet: dict[str, Any],
    s3_client: Any,
    service: str,
    task: str,
    when: tuple[str, ...] = ("deferred",),
    apply: Callable[[], Applied] | None = None,
    fault: str | None = None,
) -> None:
    """A rollout of a copy of the champion; while `task` is in a state of `when`, `apply` runs (by default
    `service` killed -9, then restarted)."""
    from mlflow import MlflowClient

    from edgeloop.demo import all_devices_on, champion, fleet_versions
    from edgeloop.registry.register import copy_version
    from edgeloop.rollout.audit import audit_key

    api, spec, env = chaos.api, chaos.spec, chaos.env
    before = champion(env, spec)
    assert before, "the fleet fixture leaves a champion"
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    version = copy_version(client, spec.registry.model_name, before, f"chaos: fault in {service} at {task}")
    dag = chaos.dag("rollout")
    baseline_s = fault_free_seconds(api, dag, task)
    started_ms = int(time.time() * 1000)
    run_id = f"manual__chaos_{service}_{int(time.time())}"
    api.trigger(dag, run_id, conf={"model_version": version}, note=f"chaos: fault in {service} at {task}")
    wait_for(lambda: task_in_state(api, dag, run_id, task, when), 900, f"{task} {'/'.join(when)}", every=0.5)
    applied = (apply or (lambda: down_for(chaos, service, PAUSE_S)))()
    run = api.wait_for_run(dag, run_id, timeout=1200)
    recover_s = round(time.monotonic() - applied.at, 1)
    states = task_states(api, dag, run_id)
    now = champion(env, spec)

    # every device on the new version, each switched to it once, each order published once
    bootstrap = env["EDGELOOP_KAFKA_BOOTSTRAP"]
    devices = int(fleet["devices"])
    with contextlib.suppress(AssertionError):  # said below, with the groups and versions
        wait_for(lambda: all_devices_on(fleet_versions(env, spec), version, devices), 180, "every device", every=5)
    versions = fleet_versions(env, spec)
    off = {g: {v: n for v, n in c.items() if v != version} for g, c in versions.items()}
    off = {g: c for g, c in off.items() if c}
    switches = switches_to(bootstrap, spec.topic("device-state"), version, since_ms=started_ms)
    plan = api.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances/plan/xcomEntries/return_value")["value"]
    audit = json.loads(
        s3_client.get_object(Bucket=spec.storage.bucket, Key=audit_key(spec, plan["rollout_id"]))["Body"].read()
    )
    steps = {step["step"]: step for step in audit["steps"]}
    assignment_ids = {
        str(a) for name, step in steps.items() if name.startswith("apply-") for a in step["assignment_ids"].values()
    }
    orders = orders_per_target(bootstrap, spec.topic("control"), assignment_ids)
    doubled_orders = {f"{target} {ident}": n for (target, ident), n in orders.items() if n > 1}
    doubled_switches = {d: n for d, n in switches.items() if n > 1}
    gates = [s for name, s in steps.items() if name.startswith("gate-")]
    last_gate = max(float(g["decided_at"]) for g in gates) if gates else None
    promoted_at = steps.get("promote", {}).get("finished_at")
    promoted_after_gates = bool(
        last_gate and promoted_at and datetime.fromisoformat(promoted_at).timestamp() >= last_gate
    )
    problems = []
    if run["state"] != "success":
        problems.append(f"run {run['state']}: {states}")
    if now != version:
        problems.append(f"champion is {now}, not {version}")
    if off:
        problems.append(f"devices not on {version}: {off}")
    if doubled_switches:
        problems.append(f"devices that switched to {version} more than once: {doubled_switches}")
    expected = {"plan", "apply-wave-0", "gate-wave-0", "apply-wave-1", "gate-wave-1", "promote"}
    if audit.get("outcome") != "promoted" or not expected <= set(steps):
        problems.append(f"audit record: outcome {audit.get('outcome')}, steps {sorted(steps)}")
    if not promoted_after_gates:
        problems.append(f"champion moved at {promoted_at}, last gate decided at {last_gate}")
    row = FaultRow(
        fault=fault or f"kill -9 + restart of the {service.removeprefix('airflow-')}",
        stage=f"rollout, {task} {'/'.join(when)}",
        happened=(
            f"{applied.said}, with {task} {'/'.join(when)}; run {run['state']}; from the fault to the run's end"
            f" {recover_s} s, in a fault-free run from {task}'s start to the end {baseline_s} s; "
            + ("; ".join(problems) or "gates, promotion and audit as without fault")
        ),
        recover_s=recover_s,
        lost=sum(sum(c.values()) for c in off.values()),
        duplicated=sum(n - 1 for n in switches.values()),
        passed=not problems,
        details={
            "run": run_id,
            "version": version,
            "devices": devices,
            "orders": len(orders),
            # a retried job publishes the same assignment id again; devices apply an id once (checked above)
            "orders_published_again": doubled_orders,
            "tries": {ti["task_id"]: ti.get("try_number") for ti in api.task_instances(dag, run_id)},
            "fault_free_task_to_end_s": baseline_s,
        },
    )
    record(chaos.cfg, row)
    assert not problems, problems


def test_the_scheduler_killed_while_a_rollout_gate_is_deferred(
    chaos: Chaos, fleet_on_champion: dict[str, Any], s3_client: Any
) -> None:
    rollout_with_fault(chaos, fleet_on_champion, s3_client, "airflow-scheduler", "gate_canary")


def test_the_triggerer_killed_while_a_rollout_gate_is_deferred(
    chaos: Chaos, fleet_on_champion: dict[str, Any], s3_client: Any
) -> None:
    rollout_with_fault(chaos, fleet_on_champion, s3_client, "airflow-triggerer", "gate_wave_1")


def test_the_api_server_killed_while_a_wave_is_applied(
    chaos: Chaos, fleet_on_champion: dict[str, Any], s3_client: Any
) -> None:
    """Task processes report to the api-server (Airflow 3's execution API): it goes away under a running apply."""
    rollout_with_fault(chaos, fleet_on_champion, s3_client, "airflow-api-server", "apply_wave_1", ("running",))


def test_the_dag_processor_killed_while_a_rollout_runs(
    chaos: Chaos, fleet_on_champion: dict[str, Any], s3_client: Any
) -> None:
    rollout_with_fault(chaos, fleet_on_champion, s3_client, "airflow-dag-processor", "gate_canary")


def test_a_rollout_job_killed_in_the_middle_of_a_wave(
    chaos: Chaos, fleet_on_champion: dict[str, Any], s3_client: Any
) -> None:
    """A wave's job process (the pod's `edgeloop rollout-job`, run by the apply task) dies as an evicted pod does."""

    def kill_a_job() -> Applied:
        pids = wait_for(
            lambda: descendants_running(chaos.cfg, "airflow-scheduler", "rollout-job"), 300, "a rollout job", every=0.2
        )
        at = time.monotonic()
        os.kill(pids[0], signal.SIGKILL)
        return Applied(pids[0], at, f"the rollout job (pid {pids[0]}) of the wave killed -9")

    rollout_with_fault(
        chaos,
        fleet_on_champion,
        s3_client,
        "rollout-job",
        "apply_wave_1",
        ("running",),
        apply=kill_a_job,
        fault="kill -9 of a rollout job process",
    )


def test_s3_unresponsive_for_a_minute_while_a_wave_is_applied(
    chaos: Chaos, fleet_on_champion: dict[str, Any], s3_client: Any
) -> None:
    """The devices fetch the model from S3 by presigned URL, and the wave's audit part goes there."""
    rollout_with_fault(
        chaos,
        fleet_on_champion,
        s3_client,
        "s3",
        "apply_wave_1",
        ("running",),
        apply=lambda: frozen(chaos, "s3", OUTAGE_S),
        fault=f"S3 unresponsive {OUTAGE_S:.0f} s",
    )


def test_mlflow_down_for_a_minute_during_a_rollout(
    chaos: Chaos, fleet_on_champion: dict[str, Any], s3_client: Any
) -> None:
    """The next wave resolves the version's ONNX file in the registry, and the promotion moves its alias."""
    rollout_with_fault(
        chaos,
        fleet_on_champion,
        s3_client,
        "mlflow",
        "gate_canary",
        apply=lambda: down_for(chaos, "mlflow", OUTAGE_S),
        fault=f"MLflow down {OUTAGE_S:.0f} s (kill -9, then restart)",
    )


def test_broker_unresponsive_for_a_minute_while_a_rollout_gate_reads(
    chaos: Chaos, fleet_on_champion: dict[str, Any], s3_client: Any
) -> None:
    rollout_with_fault(
        chaos,
        fleet_on_champion,
        s3_client,
        "kafka",
        "gate_canary",
        apply=lambda: frozen(chaos, "kafka", OUTAGE_S),
        fault=f"broker unresponsive {OUTAGE_S:.0f} s",
    )


def wait_for_follow_on_runs(chaos: Chaos, stages: tuple[str, ...]) -> None:
    """Let the runs a finished stage started (train after a dataset, rollout after a champion) end before the next
    fault: each test starts from a quiet pipeline."""
    for stage in stages:
        for run in chaos.api.runs(chaos.dag(stage), limit=3):
            if run["state"] in ("queued", "running"):
                chaos.api.wait_for_run(chaos.dag(stage), run["dag_run_id"], timeout=1200)


def test_label_studio_killed_when_an_annotation_batch_is_due(
    chaos: Chaos, fleet_on_champion: dict[str, Any], s3_client: Any
) -> None:
    """Label Studio is gone (kill -9) as an annotate run opens its batch, and back a little later."""
    from edgeloop.annotation.export import lineage_key, list_versions
    from edgeloop.annotation.label_studio import LabelStudioBackend, LabelStudioSettings
    from edgeloop.annotation.manifest import read_json
    from edgeloop.demo import DemoSettings, start_bot
    from edgeloop.devstack.stack import stop_process

    api, spec, env = chaos.api, chaos.spec, chaos.env
    dag = chaos.dag("annotate")
    versions_before = set(list_versions(spec, s3_client))
    run_id = f"manual__chaos_label_studio_{int(time.time())}"
    at = time.monotonic()
    pid = kill_service(chaos.cfg, "label-studio")
    api.trigger(dag, run_id, conf={"group": spec.groups[0].name, "size": 40}, note="chaos: Label Studio down")
    wait_for(
        lambda: (
            task_in_state(api, dag, run_id, "open_batch", ("running", "up_for_retry", "failed"))
            or task_in_state(api, dag, run_id, "select_batch", ("skipped", "failed"))
        ),
        600,
        "the batch due in Label Studio",
        every=0.5,
    )
    time.sleep(PAUSE_S)
    restart_s = restart_service(chaos.cfg, "label-studio")
    start_bot(chaos.cfg, spec, DemoSettings(devices=int(fleet_on_champion["devices"])), {**env})
    try:
        run = api.wait_for_run(dag, run_id, timeout=1200)
    finally:
        stop_process("annotate-bot", chaos.cfg)
    recover_s = round(time.monotonic() - at, 1)
    states = task_states(api, dag, run_id)
    selected = api.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances/select_batch/xcomEntries/return_value")["value"]
    batch_id, size = str(selected["batch_id"]), int(selected["size"])
    backend = LabelStudioBackend.connect(
        LabelStudioSettings(env["EDGELOOP_LABEL_STUDIO_URL"], env["EDGELOOP_LABEL_STUDIO_TOKEN"])
    )
    project = backend.ensure_project(spec)
    tasks_in_tool = backend.progress(project, batch_id).tasks
    records_with_task = len(backend.batch_tasks(project, batch_id))
    new_versions = sorted(set(list_versions(spec, s3_client)) - versions_before)
    of_batch = [
        v
        for v in new_versions
        if (read_json(s3_client, spec.storage.bucket, lineage_key(spec, v)) or {}).get("batch_id") == batch_id
    ]
    tries = {ti["task_id"]: ti.get("try_number") for ti in api.task_instances(dag, run_id)}
    problems = []
    if run["state"] != "success":
        problems.append(f"run {run['state']}: {states}")
    if tasks_in_tool != size or records_with_task != size:
        problems.append(f"{tasks_in_tool} tasks for {records_with_task} records in Label Studio, batch of {size}")
    if len(of_batch) != 1:
        problems.append(f"{len(of_batch)} curated dataset versions for the one batch: {of_batch}")
    row = FaultRow(
        fault="kill -9 + restart of Label Studio",
        stage="annotation: open_batch",
        happened=(
            f"Label Studio (pid {pid}) killed before the batch was due, started again with open_batch tried"
            f" ({PAUSE_S:.0f} s later, healthy after {restart_s:.0f} s); tries {tries}; run {run['state']}; "
            + ("; ".join(problems) or f"{size} tasks, one each, one dataset version {of_batch}")
        ),
        recover_s=recover_s,
        lost=max(0, size - records_with_task),
        duplicated=max(0, tasks_in_tool - records_with_task) + max(0, len(of_batch) - 1),
        passed=not problems,
        details={"run": run_id, "batch": batch_id, "versions": of_batch},
    )
    record(chaos.cfg, row)
    wait_for_follow_on_runs(chaos, ("train", "rollout"))
    assert not problems, problems


def test_mlflow_down_for_a_minute_while_the_model_is_registered(
    chaos: Chaos, fleet_on_champion: dict[str, Any], s3_client: Any
) -> None:
    training_with_fault(
        chaos,
        "register_challenger",
        f"MLflow down {OUTAGE_S:.0f} s (kill -9, then restart)",
        lambda: down_for(chaos, "mlflow", OUTAGE_S),
    )


def test_s3_unresponsive_for_a_minute_while_the_model_is_trained(
    chaos: Chaos, fleet_on_champion: dict[str, Any], s3_client: Any
) -> None:
    training_with_fault(
        chaos, "train_model", f"S3 unresponsive {OUTAGE_S:.0f} s", lambda: frozen(chaos, "s3", OUTAGE_S)
    )


def training_with_fault(chaos: Chaos, task: str, fault: str, apply: Callable[[], Applied]) -> None:
    """A train run of its own (search budget 3: a candidate and a version of its own); `apply` runs once `task`
    is due (register_challenger) or running (train_model). One registry version for the candidate, whatever
    the tries."""
    from mlflow import MlflowClient

    from edgeloop.registry.register import candidate_versions

    api, spec, env = chaos.api, chaos.spec, chaos.env
    dag = chaos.dag("train")
    run_id = f"manual__chaos_train_{int(time.time())}"
    api.trigger(dag, run_id, conf={"search_budget": 3}, note=f"chaos: {fault} at {task}")
    registering = task == "register_challenger"

    def due() -> bool:
        if registering and task_in_state(api, dag, run_id, "train_model", ("success",)):
            return True
        return task_in_state(
            api, dag, run_id, task, ("scheduled", "queued", "running") if registering else ("running",)
        )

    wait_for(due, 1200, f"{task} due", every=0.5)
    applied = apply()
    run = api.wait_for_run(dag, run_id, timeout=1200)
    recover_s = round(time.monotonic() - applied.at, 1)
    states = task_states(api, dag, run_id)
    trained = api.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances/train_model/xcomEntries/return_value")["value"]
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    versions = candidate_versions(client, spec.registry.model_name, str(trained["candidate"]))
    tries = {
        ti["task_id"]: ti.get("try_number")
        for ti in api.task_instances(dag, run_id)
        if ti["task_id"] in ("train_model", "register_challenger", "evaluation_gate")
    }
    problems = []
    if run["state"] != "success":
        problems.append(f"run {run['state']}: {states}")
    if len(versions) != 1:
        problems.append(f"{len(versions)} versions for the one candidate: {[v.version for v in versions]}")
    row = FaultRow(
        fault=fault,
        stage=f"training: {task}",
        happened=(
            f"{applied.said}, with {task} {'due' if registering else 'running'}; tries {tries};"
            f" run {run['state']}; " + ("; ".join(problems) or "one version for the candidate")
        ),
        recover_s=recover_s,
        lost=0 if versions else 1,
        duplicated=max(0, len(versions) - 1),
        passed=not problems,
        details={"run": run_id, "versions": [v.version for v in versions]},
    )
    record(chaos.cfg, row)
    wait_for_follow_on_runs(chaos, ("rollout",))  # a promoted challenger starts a rollout
    assert not problems, problems
