"""The rollout's approval path through the real api-server, scheduler, dag-processor and triggerer.

A pipeline of its own (the demo spec made small: a canary group and two production groups of four
simulated devices, soak 15 s, `approval_required: true`, own topics and registered model) is written
into the stack's pipelines folder for this module and removed at the end, with its DAGs, topics,
objects and registered model. Its fleet simulator runs from a private state folder, so it is not the
demo's `fleet-simulator` process.

Story 1: the first model is trained on seed data (one manual `__train` run, as `make demo` does); the
`model` asset starts the rollout, the canary wave passes its gate, and the run waits in the UI: the
`approve_production` task awaits input, and its Human-in-the-loop detail shows the canary gate's
readings while production devices still run the baseline. Approve: production, then promote.
Story 2: a second version, rolled out by hand, waits at the same place. Reject: the canary goes
back to the champion, production devices never receive the new version, the champion stays.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from edgeloop.demo import DemoSettings, champion, fleet_versions, start_fleet
from edgeloop.devstack.config import StackConfig
from edgeloop.devstack.pipelines import remove_pipeline, write_pipeline
from edgeloop.devstack.stack import read_env_file, stop_process
from edgeloop.registry.register import copy_version
from edgeloop.spec import PipelineSpec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CANARY, PRODUCTION = "canary", ("prod-east", "prod-west")
DEVICES_PER_GROUP = 4
APPROVAL_TASK = "approve_production"


def approval_spec(name: str) -> dict[str, Any]:
    """The demo spec, small: three groups of four devices, a short soak, approval before production."""
    demo = StackConfig.from_env().pipelines_dir / "factory_maintenance.yaml"
    data: dict[str, Any] = yaml.safe_load(demo.read_text())
    data["name"] = name
    data["description"] = "e2e test of the rollout's approval path (removed when the test ends)"
    data["topics"].update({"prefix": name, "partitions": 1})
    data["registry"]["model_name"] = name
    for stage in ("ingest", "drift", "fleet_health"):
        data[stage]["schedule"] = "24h"  # only train and rollout are unpaused; nothing else should run
    data["training"].update(
        {"search_budget": 1, "search_space": {"n_estimators": [30], "max_depth": [8], "min_samples_leaf": [2]}}
    )
    data["groups"] = [
        {"name": group, "selector": {"edgeloop.dev/group": group}, "wave": wave, "devices": DEVICES_PER_GROUP}
        for group, wave in ((CANARY, 0), (PRODUCTION[0], 1), (PRODUCTION[1], 1))
    ]
    data["rollout"].update(
        {"canary_groups": [CANARY], "soak": "15s", "approval_required": True, "approvers": ["admin"]}
    )
    return data


@dataclasses.dataclass
class Pipeline:
    spec: PipelineSpec
    env: dict[str, str]
    api: Any

    def dag(self, stage: str) -> str:
        return f"{self.spec.name}__{stage}"

    @property
    def kafka(self) -> dict[str, str]:
        return {"bootstrap.servers": self.env["EDGELOOP_KAFKA_BOOTSTRAP"]}


@pytest.fixture(scope="module")
def pipeline(airflow_api: Any, s3_client: Any) -> Iterator[Pipeline]:
    stack_cfg = StackConfig.from_env()
    env = read_env_file(stack_cfg)
    name = f"approval_e2e_{uuid.uuid4().hex[:6]}"
    target, spec = write_pipeline(stack_cfg.pipelines_dir, approval_spec(name))
    private = Path(tempfile.mkdtemp(prefix="rollout-approval-"))
    fleet_cfg = dataclasses.replace(stack_cfg, state_dir=private)  # its own pid file and log
    try:
        start_fleet(fleet_cfg, spec, DemoSettings(pipeline=name, devices=3 * DEVICES_PER_GROUP, drift=()), env)
        airflow_api.wait_for_dags({f"{name}__train", f"{name}__rollout"}, timeout=240)
        for stage in ("train", "rollout"):
            airflow_api.patch(f"/dags/{name}__{stage}", {"is_paused": False})
        yield Pipeline(spec, env, airflow_api)
    finally:
        stop_process("fleet-simulator", fleet_cfg)
        target.unlink(missing_ok=True)
        remove_pipeline(airflow_api, s3_client, spec, env)
        shutil.rmtree(private, ignore_errors=True)


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def hitl_path(p: Pipeline, run_id: str) -> str:
    return f"/dags/{p.dag('rollout')}/dagRuns/{run_id}/taskInstances/{APPROVAL_TASK}/-1/hitlDetails"


def wait_for_approval_request(p: Pipeline, run_id: str, timeout: float = 240) -> dict[str, Any]:
    """The approval task's Human-in-the-loop detail, once the task awaits input; fail fast if the run ends."""

    def waiting() -> dict[str, Any] | None:
        run = p.api.get(f"/dags/{p.dag('rollout')}/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            raise AssertionError(f"rollout run {run_id} ended ({run['state']}) before asking for approval")
        try:
            detail = dict(p.api.get(hitl_path(p, run_id)))
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return None  # the task has not asked yet
            raise
        return detail if detail["task_instance"]["state"] == "awaiting_input" else None

    detail = dict(wait_for(waiting, timeout, f"{APPROVAL_TASK} to await input in {run_id}"))
    # A person answers seconds later. An answer within the second between the task pausing and the
    # scheduler booking its worker's exit re-queues the task first, and Airflow 3.3 then fails that try
    # ("finished with state success, but the task instance's state is queued") and asks again.
    time.sleep(5)
    return detail


def task_states(p: Pipeline, run_id: str) -> dict[str, str]:
    found = p.api.get(f"/dags/{p.dag('rollout')}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {t["task_id"]: t["state"] for t in found}


def xcom(p: Pipeline, dag_id: str, run_id: str, task_id: str) -> Any:
    return p.api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")["value"]


def audit_record(s3: Any, p: Pipeline, run_id: str) -> dict[str, Any]:
    from edgeloop.rollout.audit import audit_key

    rollout_id = xcom(p, p.dag("rollout"), run_id, "plan")["rollout_id"]
    body = s3.get_object(Bucket=p.spec.storage.bucket, Key=audit_key(p.spec, rollout_id))["Body"].read()
    return dict(json.loads(body))


def groups_on(p: Pipeline, expected: dict[str, str]) -> dict[str, dict[str, int]] | None:
    """The reported versions per group when every device of each group in `expected` reports its version."""
    versions = fleet_versions(p.env, p.spec)
    for group, version in expected.items():
        counts = versions.get(group, {})
        if counts.get(version, 0) != DEVICES_PER_GROUP or sum(counts.values()) != DEVICES_PER_GROUP:
            return None
    return versions


def model_assignments(p: Pipeline, version: str) -> set[str]:
    """The targets of every assignment of `version` ever published on the control topic."""
    from edgeloop.fleet.topics import read_topic

    targets = set()
    for record in read_topic(p.kafka, p.spec.topic("control"), timeout=30):
        body = json.loads(record.value or b"{}")
        if body.get("model_version") == version:
            targets.add(f"{body['target']['kind']}:{body['target'].get('id')}")
    return targets


def test_the_rollout_waits_for_approval_before_production_and_approve_promotes(
    pipeline: Pipeline, s3_client: Any
) -> None:
    p = pipeline
    train_run = f"manual__e2e_first_model_{int(time.time())}"
    p.api.trigger(p.dag("train"), train_run, note="e2e: first model on seed data")
    assert p.api.wait_for_run(p.dag("train"), train_run, timeout=300)["state"] == "success"
    version = str(xcom(p, p.dag("train"), train_run, "evaluation_gate")["version"])

    # the model asset starts the rollout; the canary passes its gate, then the run asks a human
    rollout = wait_for(lambda: p.api.runs(p.dag("rollout"), limit=5), 90, "the asset-triggered rollout run")[0]
    run_id = rollout["dag_run_id"]
    assert rollout["run_type"] == "asset_triggered"
    request = wait_for_approval_request(p, run_id)
    assert request["options"] == ["Approve", "Reject"]
    assert request["response_received"] is False
    assert p.spec.name in request["subject"]
    canary_gate = json.loads(request["body"].split("Canary gate: ", 1)[1])
    assert canary_gate["state"] == "pass"
    assert [r["group"] for r in canary_gate["readings"]] == [CANARY]
    # the UI's list of pending actions shows it too
    pending = p.api.get("/dags/~/dagRuns/~/hitlDetails", dag_id_pattern=p.spec.name, response_received=False)
    assert [(d["task_instance"]["dag_run_id"], d["task_instance"]["task_id"]) for d in pending["hitl_details"]] == [
        (run_id, APPROVAL_TASK)
    ]
    states = task_states(p, run_id)
    assert states["gate_canary"] == "success"
    assert states["apply_wave_1"] is None  # nothing of production runs while the human decides
    versions = fleet_versions(p.env, p.spec)
    assert versions[CANARY] == {version: DEVICES_PER_GROUP}, versions
    for group in PRODUCTION:
        assert version not in versions[group], versions

    answer = p.api.patch(hitl_path(p, run_id), {"chosen_options": ["Approve"]})
    assert answer["chosen_options"] == ["Approve"]
    assert answer["responded_by"]["name"] == "admin"

    run = p.api.wait_for_run(p.dag("rollout"), run_id, timeout=240)
    states = task_states(p, run_id)
    assert run["state"] == "success", states
    assert states[APPROVAL_TASK] == "success"
    assert states["apply_wave_1"] == states["gate_wave_1"] == states["promote"] == "success"
    assert states["rollback"] == "skipped"
    assert champion(p.env, p.spec) == version
    everyone = dict.fromkeys((CANARY, *PRODUCTION), version)
    wait_for(lambda: groups_on(p, everyone), 30, f"every device on version {version}")
    record = audit_record(s3_client, p, run_id)
    assert record["outcome"] == "promoted"
    steps = [s["step"] for s in record["steps"]]
    assert steps == ["plan", "apply-wave-0", "gate-wave-0", "approval", "apply-wave-1", "gate-wave-1", "promote"]
    assert record["approval"]["decision"] == "approved"
    assert record["approval"]["responded_by"], record["approval"]  # who answered is on record


def test_reject_at_the_approval_rolls_back_the_canary_and_leaves_production_untouched(
    pipeline: Pipeline, s3_client: Any
) -> None:
    from mlflow import MlflowClient

    p = pipeline
    good = champion(p.env, p.spec)
    assert good, "the first story leaves a champion"
    assert groups_on(p, dict.fromkeys((CANARY, *PRODUCTION), good)), "every device starts on the champion"
    client = MlflowClient(tracking_uri=p.env["MLFLOW_TRACKING_URI"])
    candidate = copy_version(client, p.spec.registry.model_name, good, "to be rejected at the approval")

    run_id = f"manual__e2e_reject_{candidate}_{int(time.time())}"
    p.api.trigger(p.dag("rollout"), run_id, conf={"model_version": candidate}, note="e2e: rejected at approval")
    wait_for_approval_request(p, run_id)
    versions = fleet_versions(p.env, p.spec)
    assert versions[CANARY] == {candidate: DEVICES_PER_GROUP}, versions

    answer = p.api.patch(hitl_path(p, run_id), {"chosen_options": ["Reject"]})
    assert answer["chosen_options"] == ["Reject"]

    run = p.api.wait_for_run(p.dag("rollout"), run_id, timeout=240)
    states = task_states(p, run_id)
    assert run["state"] == "failed", states  # the rollback task fails the run on purpose: nothing was promoted
    assert states[APPROVAL_TASK] == "success"  # a human answer is a success of the task, whatever it says
    assert states["apply_wave_1"] == states["gate_wave_1"] == states["promote"] == "skipped"
    assert states["rollback"] == "failed"
    assert champion(p.env, p.spec) == good
    versions = wait_for(
        lambda: groups_on(p, dict.fromkeys((CANARY, *PRODUCTION), good)), 60, f"the canary back on version {good}"
    )
    assert all(candidate not in counts for counts in versions.values()), versions
    # production devices were never told about the rejected version: only the canary got an assignment
    assert model_assignments(p, candidate) == {f"group:{CANARY}"}
    record = audit_record(s3_client, p, run_id)
    assert record["outcome"] == "rolled_back"
    assert record["rolled_back_groups"] == [CANARY]
    assert record["previous_version"] == good
    assert "apply-wave-1" not in [s["step"] for s in record["steps"]]
    assert record["approval"]["decision"] == "rejected"
    assert record["reasons"][0].startswith("production waves rejected at approval")
