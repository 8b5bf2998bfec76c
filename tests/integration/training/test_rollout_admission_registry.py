"""The rollout's plan step on the real MLflow registry and S3: only what the evaluation gate promoted rolls out.

One pipeline for the module: the first model is trained on seed data and promoted by the real gate
(no champion yet); a deliberately weak challenger is trained and rejected by the real gate. Then the
function the rollout's `plan` task calls (`plan_step`) is asked, as a manual run would ask it, to roll
each of them out: the first model passes, the rejected challenger and a version the gate never judged
are refused with the recorded decision, and an admin's override is planned and recorded in S3.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from training_testkit import cleanup_pipeline, small_spec, unique_name

from edgeloop.registry.register import register_challenger
from edgeloop.rollout.admission import RolloutRefused, RunOrigin
from edgeloop.rollout.audit import part_key
from edgeloop.rollout.job import rollout_id_for
from edgeloop.rollout.steps import plan_step
from edgeloop.rollout.tasks import RolloutPlanned
from edgeloop.spec import PipelineSpec
from edgeloop.training.dataset import build_dataset
from edgeloop.training.gate import evaluation_gate
from edgeloop.training.train import train_model

pytestmark = pytest.mark.integration

STACK_USERS = "admin:admin,viewer:viewer"  # the local stack's simple auth manager users (devstack)


@pytest.fixture(scope="module")
def spec(mlflow_client: Any, s3_client: Any) -> Iterator[PipelineSpec]:
    spec = small_spec(unique_name("gate_rollout"))
    yield spec
    cleanup_pipeline(mlflow_client, s3_client, spec)
    prefix = f"{spec.storage_prefix('rollouts')}/"
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=spec.storage.bucket, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3_client.delete_objects(Bucket=spec.storage.bucket, Delete={"Objects": keys})


@pytest.fixture(scope="module")
def judged(mlflow_client: Any, s3_client: Any, spec: PipelineSpec) -> dict[str, dict[str, Any]]:
    """The real gate's decisions: the first model (promoted) and a weak challenger (rejected)."""
    dataset = build_dataset(s3_client, spec)
    first = evaluation_gate(
        mlflow_client,
        s3_client,
        spec,
        register_challenger(mlflow_client, spec, train_model(mlflow_client, s3_client, spec, dataset)),
    )
    weak = spec.model_copy(
        update={
            "training": spec.training.model_copy(
                update={"estimator": "logistic_regression", "params": {"C": 1e-5}, "search_space": {}}
            )
        }
    )
    trained = train_model(mlflow_client, s3_client, weak, dataset)
    rejected = evaluation_gate(mlflow_client, s3_client, weak, register_challenger(mlflow_client, weak, trained))
    return {"first": first, "rejected": rejected}


@pytest.fixture
def stack_users(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's configuration as the stack's Airflow has it (who is an admin)."""
    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER", "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    )
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", STACK_USERS)


def plan_manual(
    spec: PipelineSpec, s3: Any, uri: str, run_id: str, params: dict[str, Any], user: str
) -> dict[str, Any]:
    """What the rollout's `plan` task does for a run triggered by hand (the UI's "Trigger" with a version)."""
    return plan_step(spec, s3, uri, run_id, params, None, RunOrigin("manual", user))


def plan_written(s3: Any, spec: PipelineSpec, run_id: str) -> bool:
    key = part_key(spec, rollout_id_for(spec.name, run_id), 0, "plan")
    listing = s3.list_objects_v2(Bucket=spec.storage.bucket, Prefix=key)
    return bool(listing.get("Contents"))


def test_the_gate_promotes_the_first_model_and_rejects_the_weak_challenger(judged: dict[str, Any]) -> None:
    assert judged["first"]["decision"] == "promote" and judged["first"]["first_run"]
    assert judged["rejected"]["decision"] == "reject"


def test_the_first_model_is_planned_from_its_model_event(
    s3_client: Any, stack_env: dict[str, str], spec: PipelineSpec, judged: dict[str, Any]
) -> None:
    version = judged["first"]["version"]
    run_id = "asset_triggered__first_model"
    plan = plan_step(
        spec, s3_client, stack_env["MLFLOW_TRACKING_URI"], run_id, {}, version, RunOrigin("asset_triggered")
    )
    assert plan["model_version"] == version and plan["overrides"] == []
    assert plan["gate"]["decision"] == "promote"
    assert plan["previous_version"] == "0"  # the first model rolls back to the on-device baseline
    assert plan_written(s3_client, spec, run_id)
    assert RolloutPlanned.from_xcom(plan).to_xcom() == plan  # the plan task's typed result holds it all


def test_a_rejected_challenger_cannot_be_planned_by_a_manual_run(
    s3_client: Any, stack_env: dict[str, str], spec: PipelineSpec, judged: dict[str, Any], stack_users: None
) -> None:
    rejected = judged["rejected"]
    uri = stack_env["MLFLOW_TRACKING_URI"]
    for user, params in [
        ("viewer", {"model_version": rejected["version"]}),
        ("admin", {"model_version": rejected["version"]}),  # an admin, but no reason
        ("viewer", {"model_version": rejected["version"], "override_reason": "it looks fine to me"}),
    ]:
        run_id = f"manual__{user}_{len(params)}"
        with pytest.raises(RolloutRefused) as refused:
            plan_manual(spec, s3_client, uri, run_id, params, user)
        message = str(refused.value)
        assert f"{spec.registry.model_name} version {rejected['version']}" in message
        assert "'reject'" in message and "does not beat the champion" in message
        assert not plan_written(s3_client, spec, run_id), "a refused rollout leaves no plan"


def test_a_version_the_gate_never_judged_cannot_be_planned(
    mlflow_client: Any, s3_client: Any, stack_env: dict[str, str], spec: PipelineSpec, judged: dict[str, Any]
) -> None:
    first = mlflow_client.get_model_version(spec.registry.model_name, judged["first"]["version"])
    model_id = getattr(first, "model_id", None) or str(first.source).removeprefix("models:/")
    unjudged = mlflow_client.create_model_version(
        spec.registry.model_name, first.source, run_id=first.run_id, tags={"note": "by hand"}, model_id=model_id
    )
    with pytest.raises(RolloutRefused, match="the evaluation gate recorded no decision on it"):
        plan_manual(
            spec,
            s3_client,
            stack_env["MLFLOW_TRACKING_URI"],
            "manual__unjudged",
            {"model_version": unjudged.version},
            "admin",
        )


def test_an_admins_override_is_planned_and_recorded_in_the_audit_part(
    s3_client: Any, stack_env: dict[str, str], spec: PipelineSpec, judged: dict[str, Any], stack_users: None
) -> None:
    rejected = judged["rejected"]
    run_id = "manual__admin_override"
    params = {"model_version": rejected["version"], "override_reason": "INC-7: gate evaluated on a broken split"}
    plan = plan_manual(spec, s3_client, stack_env["MLFLOW_TRACKING_URI"], run_id, params, "admin")
    [override] = plan["overrides"]
    assert (override["param"], override["by"]) == ("override_reason", "admin")
    assert RolloutPlanned.from_xcom(plan).overrides == [override]
    key = part_key(spec, plan["rollout_id"], 0, "plan")
    stored = json.loads(s3_client.get_object(Bucket=spec.storage.bucket, Key=key)["Body"].read())
    assert stored["overrides"] == [override]
    assert stored["gate"] == {"version": rejected["version"], "decision": "reject", "reason": rejected["reason"]}


def test_a_shadow_decision_is_kept_with_the_model_version_and_in_the_audit_record(
    mlflow_client: Any, s3_client: Any, spec: PipelineSpec, judged: dict[str, Any]
) -> None:
    """What the rollout's shadow task records: tags on the version, the decision on its run, an audit part;
    a retry writes the same again."""
    from edgeloop.rollout.shadow import ShadowDecision
    from edgeloop.rollout.shadow_wave import SHADOW_PART, record_shadow

    version = judged["first"]["version"]
    decision = ShadowDecision("fail", version, 8, 3, 240, 0.25, -0.12, 1.1, 0.0, ["agreement 0.25 < 0.95"])
    record = {**decision.to_dict(), "groups": ["line-canary"], "champion_version": "0"}
    rollout_id = "ro-shadow0test"
    for _ in range(2):  # a retried task
        record_shadow(spec, s3_client, mlflow_client, rollout_id, decision, record)
    found = mlflow_client.get_model_version(spec.registry.model_name, version)
    assert found.tags["edgeloop.shadow.state"] == "fail"
    assert found.tags["edgeloop.shadow.agreement"] == "0.25"
    assert found.tags["edgeloop.shadow.rollout"] == rollout_id
    logged = mlflow_client.download_artifacts(found.run_id, f"shadow/{rollout_id}.json")
    with open(logged) as kept:
        assert json.load(kept) == record
    audit = s3_client.get_object(Bucket=spec.storage.bucket, Key=part_key(spec, rollout_id, SHADOW_PART, "shadow"))
    assert json.loads(audit["Body"].read()) == {"step": "shadow", "order": SHADOW_PART, **record}
