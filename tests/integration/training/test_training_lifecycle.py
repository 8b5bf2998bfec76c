"""The retraining loop on the real MLflow server and S3: first model, drifted retrain, worse retrain.

One pipeline for the module, in the order the loop runs: the seed model becomes champion,
with its ONNX file logged and recorded on the version, and a rollout assignment of it
(on the real Kafka) carries that file's reference; a curated version with drifted
vibration sensors in plant-north trains a better challenger (20 racing registrations
leave one version; the gate promotes it without moving champion); the rollout moves
champion; a deliberately weak challenger is then rejected with its reason; a version
without an ONNX file is neither promoted nor assigned.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.keys import OPERATOR, TRUSTED
from training_testkit import (
    DEMO,
    artifact_text,
    cleanup_pipeline,
    drifted_batch,
    small_spec,
    unique_name,
    write_curated,
)

from edgeloop.contract.artifact import GOLDEN_TOLERANCE, META_FEATURES, ArtifactRef, content_key, sha256_hex
from edgeloop.contract.messages import parse_assignment
from edgeloop.fleet.topics import read_topic
from edgeloop.kafka import ensure_pipeline_topics
from edgeloop.registry.aliases import CHALLENGER, CHAMPION, alias_version, champion_training_data, set_champion
from edgeloop.registry.artifacts import publish_edge_artifact
from edgeloop.registry.client import mlflow_client as make_client
from edgeloop.registry.errors import RegistryError
from edgeloop.registry.register import candidate_versions, register_challenger
from edgeloop.registry.tags import TAG_CANDIDATE, TAG_RUN_KIND
from edgeloop.spec import PipelineSpec
from edgeloop.training.dataset import build_dataset, read_split
from edgeloop.training.gate import evaluation_gate, model_asset_extra
from edgeloop.training.onnx_export import read_metadata, self_test
from edgeloop.training.train import train_model

pytestmark = pytest.mark.integration

DRIFT_VERSION = "2026-01-03T00-00-00Z"


def alias_of(client: Any, model_name: str, alias: str) -> str | None:
    version = alias_version(client, model_name, alias)
    return None if version is None else str(version.version)


@pytest.fixture(scope="module")
def spec(mlflow_client: Any, s3_client: Any, kafka_config: dict[str, str]) -> Iterator[PipelineSpec]:
    spec = small_spec(unique_name("loop"))
    yield spec
    cleanup_pipeline(mlflow_client, s3_client, spec, kafka_config)


def run_file(client: Any, run_id: str, path: str) -> bytes:
    """The bytes of one artifact of a run, as the registry side downloads them."""
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_bytes()


@pytest.fixture(scope="module")
def first_run(mlflow_client: Any, s3_client: Any, spec: PipelineSpec) -> dict[str, Any]:
    dataset = build_dataset(s3_client, spec)
    trained = train_model(mlflow_client, s3_client, spec, dataset)
    registered = register_challenger(mlflow_client, spec, trained)
    decision = evaluation_gate(mlflow_client, s3_client, spec, registered)
    return {"dataset": dataset, "trained": trained, "registered": registered, "decision": decision}


@pytest.fixture(scope="module")
def drift_run(
    first_run: dict[str, Any], mlflow_client: Any, s3_client: Any, stack_env: dict[str, str], spec: PipelineSpec
) -> dict[str, Any]:
    write_curated(s3_client, spec, DRIFT_VERSION, drifted_batch(spec))
    dataset = build_dataset(s3_client, spec)
    trained = train_model(mlflow_client, s3_client, spec, dataset)

    # 20 workers register the same candidate at the same moment, each with its own client.
    barrier, results, errors = threading.Barrier(20), [], []

    def register() -> None:
        client = make_client(stack_env["MLFLOW_TRACKING_URI"])
        barrier.wait()
        try:
            results.append(register_challenger(client, spec, trained))
        except Exception as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=register) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    decision = evaluation_gate(mlflow_client, s3_client, spec, results[0]) if results else {}
    return {"dataset": dataset, "trained": trained, "results": results, "errors": errors, "decision": decision}


@pytest.fixture(scope="module")
def worse_run(drift_run: dict[str, Any], mlflow_client: Any, s3_client: Any, spec: PipelineSpec) -> dict[str, Any]:
    # The rollout has put the drift model on the fleet: it becomes champion.
    moved = set_champion(mlflow_client, spec, drift_run["decision"]["version"], expected_current="1")
    weak = spec.model_copy(
        update={
            "training": spec.training.model_copy(
                update={"estimator": "logistic_regression", "params": {"C": 1e-5}, "search_space": {}}
            )
        }
    )
    trained = train_model(mlflow_client, s3_client, weak, drift_run["dataset"])
    registered = register_challenger(mlflow_client, weak, trained)
    decision = evaluation_gate(mlflow_client, s3_client, weak, registered)
    return {"moved": moved, "trained": trained, "registered": registered, "decision": decision}


def test_training_logs_trials_lineage_metrics_and_model(mlflow_client: Any, first_run: dict[str, Any]) -> None:
    trained, dataset = first_run["trained"], first_run["dataset"]
    run = mlflow_client.get_run(trained["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG_RUN_KIND] == "training"
    assert run.data.tags["edgeloop.code_version"] == trained["code_version"].strip()
    assert run.data.tags["edgeloop.dataset_version"] == "seed"
    assert {"eval_f1_macro", "val_f1_macro", "edge_model_mb", "edge_latency_ms", "edge_memory_mb"} <= set(
        run.data.metrics
    )
    assert run.data.params["eval_groups"] == ",".join(dataset["eval_groups"])

    trials = mlflow_client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"
    )
    trial_runs = [t for t in trials if t.data.tags.get(TAG_RUN_KIND) == "trial"]
    assert len(trial_runs) == 2
    assert all("val_f1_macro" in t.data.metrics and "n_estimators" in t.data.params for t in trial_runs)

    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    seed_input = inputs[f"{dataset['pipeline']}/curated/seed"]
    assert json.loads(seed_input.dataset.source)["uri"] == f"s3://{dataset['bucket']}/{dataset['sources'][0]['key']}"
    assert seed_input.dataset.digest == dataset["sources"][0]["digest"][:32]
    contexts = {d.dataset.name: d.tags[0].value for d in run.inputs.dataset_inputs}
    assert contexts[f"{dataset['pipeline']}/seed/eval"] == "evaluation"

    assert all("onnx_parity_mismatched" in t.data.metrics for t in trial_runs)

    model = mlflow_client.get_logged_model(trained["model_id"])
    assert str(model.status) in ("READY", "LoggedModelStatus.READY")
    artifacts = {a.path for a in mlflow_client.list_logged_model_artifacts(trained["model_id"])}
    assert {"MLmodel", "model.pkl", "requirements.txt", "input_example.json"} <= artifacts
    requirements = artifact_text(mlflow_client, f"{model.artifact_location}/requirements.txt").split()
    assert any(r.startswith("scikit-learn==") for r in requirements)
    description = artifact_text(mlflow_client, f"{model.artifact_location}/MLmodel")
    assert "signature:" in description and "vibration_rms" in description


def test_first_model_on_seed_data_becomes_champion(
    mlflow_client: Any, spec: PipelineSpec, first_run: dict[str, Any]
) -> None:
    decision, registered = first_run["decision"], first_run["registered"]
    assert registered["version"] == "1" and registered["created"]
    assert decision["first_run"] and decision["champion_set"] and decision["promote"]
    assert first_run["trained"]["edge"]["ok"]
    name = spec.registry.model_name
    assert alias_of(mlflow_client, name, CHAMPION) == "1"
    assert alias_of(mlflow_client, name, CHALLENGER) == "1"
    reference = champion_training_data(mlflow_client, spec)
    assert reference is not None and reference["train_key"] == first_run["dataset"]["train_key"]


def test_the_onnx_file_devices_run_is_logged_with_the_run_and_recorded_on_the_version(
    mlflow_client: Any, spec: PipelineSpec, first_run: dict[str, Any]
) -> None:
    trained, registered = first_run["trained"], first_run["registered"]
    artifact = trained["artifact"]
    assert (artifact["path"], artifact["format"]) == ("edge/model.onnx", "onnx")
    data = run_file(mlflow_client, trained["run_id"], artifact["path"])
    assert (sha256_hex(data), len(data)) == (artifact["sha256"], artifact["size"])
    assert self_test(data) <= GOLDEN_TOLERANCE
    assert json.loads(read_metadata(data)[META_FEATURES]) == list(spec.features)
    # the edge verdict is the ONNX file's: its size is the file's
    assert trained["edge"]["model_mb"] == pytest.approx(len(data) / 2**20, abs=1e-4)

    run_tags = mlflow_client.get_run(trained["run_id"]).data.tags
    tags = mlflow_client.get_model_version(spec.registry.model_name, registered["version"]).tags
    for key, value in (("sha256", sha256_hex(data)), ("size", str(len(data))), ("path", "edge/model.onnx")):
        assert run_tags[f"edgeloop.artifact.{key}"] == tags[f"edgeloop.artifact.{key}"] == value
    assert tags["edgeloop.artifact.format"] == "onnx"
    assert tags["edgeloop.artifact.opset"] == artifact["opset"] and artifact["opset"].startswith("ai.onnx=17")
    assert registered["artifact"] == artifact


def test_a_rollout_assignment_of_a_registered_version_carries_its_onnx_file(
    mlflow_client: Any, s3_client: Any, kafka_config: dict[str, str], spec: PipelineSpec, first_run: dict[str, Any]
) -> None:
    from edgeloop.rollout.job import assignment_id_for, run_kafka_wave

    ensure_pipeline_topics(spec, dict(kafka_config))
    version, key = first_run["registered"]["version"], OPERATOR
    assignment_id = assignment_id_for("ro-it", "plant-north", version)

    def wave() -> dict[str, Any]:
        publish = lambda v: publish_edge_artifact(mlflow_client, s3_client, spec, v)  # noqa: E731
        return run_kafka_wave(
            spec, kafka_config, key, "plant-north", version, assignment_id, timeout_s=0, artifacts=publish
        )

    first = wave()

    ref = ArtifactRef.from_dict(first["assignment"]["artifact"])
    tags = mlflow_client.get_model_version(spec.registry.model_name, version).tags
    assert (ref.sha256, ref.size) == (tags["edgeloop.artifact.sha256"], int(tags["edgeloop.artifact.size"]))
    groups = [g.name for g in spec.groups]
    wires = [r.value for r in read_topic(kafka_config, spec.topic("control"))]
    (published,) = [parse_assignment(w, TRUSTED, groups) for w in wires]
    assert (published.id, published.model_version, published.artifact) == (assignment_id, version, ref)
    with urllib.request.urlopen(ref.url, timeout=30) as response:  # noqa: S310 - the presigned S3 URL
        served = response.read()
    assert (sha256_hex(served), len(served)) == (ref.sha256, ref.size), "a device downloads exactly the file"
    stored = s3_client.head_object(Bucket=spec.storage.bucket, Key=content_key(spec.storage.prefix, ref.sha256))
    assert stored["ContentLength"] == ref.size

    again = wave()  # a retried job: the same assignment id and file, a freshly signed URL
    assert again["assignment"]["id"] == assignment_id
    assert {k: v for k, v in again["assignment"]["artifact"].items() if k != "url"} == {
        "sha256": ref.sha256,
        "size": ref.size,
        "format": "onnx",
    }


def test_the_rollout_job_process_reaches_the_file_through_the_pipelines_connections(
    kafka_config: dict[str, str],
    spec: PipelineSpec,
    first_run: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`edgeloop rollout-job` as the local launcher starts it: S3 and MLflow from AIRFLOW_CONN_* variables."""
    import yaml

    from edgeloop.rollout.launch import run_local_job

    if f"AIRFLOW_CONN_{spec.connections.s3.upper()}" not in os.environ:  # set by stack_env from the stack's env file
        pytest.skip("the stack's connection variables are not in the environment")

    data = yaml.safe_load(DEMO.read_text())
    data["name"] = spec.name
    data["topics"]["prefix"] = spec.topics.prefix
    data["registry"]["model_name"] = spec.registry.model_name
    data["rollout"]["timeout"] = "2s"  # no device answers: the job reports what it published and ends
    (tmp_path / f"{spec.name}.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("EDGELOOP_PIPELINES_DIR", str(tmp_path))
    monkeypatch.setenv("EDGELOOP_SIGNING_KEY", OPERATOR.private_pem().decode())
    monkeypatch.delenv("EDGELOOP_TRUSTED_KEYS", raising=False)
    ensure_pipeline_topics(spec, dict(kafka_config))
    version = first_run["registered"]["version"]

    result = run_local_job(spec, "plant-south", version, 1, "ro-itjob")

    assert result["strategy"] == "kafka" and result["assignment"]["id"] == f"ro-itjob.plant-south.v{version}"
    ref = ArtifactRef.from_dict(result["assignment"]["artifact"])
    trained = first_run["trained"]["artifact"]
    assert (ref.sha256, ref.size) == (trained["sha256"], trained["size"])


def test_retried_tasks_create_no_new_run_or_version(
    mlflow_client: Any, s3_client: Any, spec: PipelineSpec, first_run: dict[str, Any]
) -> None:
    again = train_model(mlflow_client, s3_client, spec, build_dataset(s3_client, spec, "seed"))
    assert again["reused"] and again["run_id"] == first_run["trained"]["run_id"]
    registered = register_challenger(mlflow_client, spec, again)
    assert registered["version"] == "1" and not registered["created"]
    versions = mlflow_client.search_model_versions(f"name = '{spec.registry.model_name}'")
    assert [v.version for v in versions] == ["1"]
    decision = evaluation_gate(mlflow_client, s3_client, spec, registered)
    assert decision["promote"] and decision["first_run"]  # the retried first gate says the same


def test_a_leftover_duplicate_version_is_removed_by_the_next_registration(
    mlflow_client: Any, spec: PipelineSpec, first_run: dict[str, Any]
) -> None:
    # A registration that crashed after creating its version and before cleaning up leaves a duplicate.
    name = spec.registry.model_name
    original = mlflow_client.get_model_version(name, "1")
    duplicate = mlflow_client.create_model_version(
        name,
        source=original.source,
        run_id=original.run_id,
        tags=original.tags,
        model_id=original.tags["edgeloop.model_id"],
    )
    assert len(candidate_versions(mlflow_client, name, original.tags[TAG_CANDIDATE])) == 2
    registered = register_challenger(mlflow_client, spec, first_run["trained"])
    assert registered["version"] == "1" and not registered["created"]
    live = candidate_versions(mlflow_client, name, original.tags[TAG_CANDIDATE])
    assert [v.version for v in live] == ["1"]
    assert duplicate.version != "1"


def test_twenty_concurrent_registrations_leave_one_version(
    mlflow_client: Any, spec: PipelineSpec, drift_run: dict[str, Any]
) -> None:
    assert drift_run["errors"] == []
    results = drift_run["results"]
    assert len(results) == 20
    versions = {r["version"] for r in results}
    assert len(versions) == 1
    live = candidate_versions(mlflow_client, spec.registry.model_name, drift_run["trained"]["candidate"])
    assert [v.version for v in live] == list(versions)
    assert sum(r["created"] for r in results) == 1
    removed = sorted({v for r in results for v in r["removed"]}, key=int)
    print(f"20 racing registrations: winner {versions}, duplicates created and removed: {removed}")
    assert alias_of(mlflow_client, spec.registry.model_name, CHALLENGER) in versions


def test_drifted_data_trains_a_better_challenger_that_is_promoted_without_moving_champion(
    mlflow_client: Any, s3_client: Any, spec: PipelineSpec, drift_run: dict[str, Any]
) -> None:
    dataset, decision = drift_run["dataset"], drift_run["decision"]
    assert dataset["dataset_version"] == DRIFT_VERSION
    assert [s["version"] for s in dataset["sources"]] == ["seed", DRIFT_VERSION]
    evaluation = read_split(s3_client, dataset, "eval")
    assert set(evaluation["group_id"]) == {"plant-north"}  # the drifted group's recent data
    assert (
        evaluation["ts"].min() >= read_split(s3_client, dataset, "train").query("group_id == 'plant-north'")["ts"].min()
    )

    assert decision["decision"] == "promote" and decision["promote"] and not decision["first_run"]
    assert decision["champion_version"] == "1" and decision["alert"] is None
    challenger, champion = decision["challenger"]["score"], decision["champion"]["score"]
    assert challenger >= champion + spec.training.margin
    # The gate's challenger score is the training run's held-out score: same model, same records.
    assert challenger == pytest.approx(drift_run["trained"]["eval_score"])
    assert alias_of(mlflow_client, spec.registry.model_name, CHAMPION) == "1"
    extra = model_asset_extra(decision)
    assert extra["version"] == decision["version"] and extra["model_uri"].endswith(f"/{decision['version']}")
    tags = mlflow_client.get_model_version(spec.registry.model_name, decision["version"]).tags
    assert tags["edgeloop.gate.decision"] == "promote"


def test_worse_challenger_is_rejected_with_its_reason(
    mlflow_client: Any, spec: PipelineSpec, drift_run: dict[str, Any], worse_run: dict[str, Any]
) -> None:
    assert worse_run["moved"]["changed"] and worse_run["moved"]["previous_version"] == "1"
    name = spec.registry.model_name
    champion = drift_run["decision"]["version"]
    assert alias_of(mlflow_client, name, CHAMPION) == champion
    with pytest.raises(RegistryError, match="champion is version"):
        set_champion(mlflow_client, spec, "1", expected_current="1")

    decision = worse_run["decision"]
    assert decision["decision"] == "reject" and not decision["promote"]
    assert decision["champion_version"] == champion
    assert decision["challenger"]["score"] < decision["champion"]["score"] + spec.training.margin
    assert "does not beat the champion" in decision["reason"]
    tags = mlflow_client.get_model_version(name, decision["version"]).tags
    assert tags["edgeloop.gate.decision"] == "reject"
    assert "does not beat the champion" in tags["edgeloop.gate.reason"]
    alert = decision["alert"]
    assert alert["kind"] == "model" and alert["pipeline"] == spec.name and alert["version"] == decision["version"]
    assert alias_of(mlflow_client, name, CHAMPION) == champion


def test_a_version_without_an_onnx_file_is_neither_promoted_nor_assigned(
    mlflow_client: Any, s3_client: Any, kafka_config: dict[str, str], spec: PipelineSpec, worse_run: dict[str, Any]
) -> None:
    from edgeloop.rollout.job import RolloutJobError, run_kafka_wave

    # what a version registered before ONNX export looks like: the same model, no edgeloop.artifact.* tags
    name, original = spec.registry.model_name, mlflow_client.get_model_version(spec.registry.model_name, "1")
    tags = {k: v for k, v in original.tags.items() if not k.startswith(("edgeloop.artifact.", "edgeloop.gate."))}
    tags.pop(TAG_CANDIDATE)
    old = mlflow_client.create_model_version(
        name, source=original.source, run_id=original.run_id, tags=tags, model_id=original.tags["edgeloop.model_id"]
    )

    decision = evaluation_gate(mlflow_client, s3_client, spec, {"version": old.version})
    assert not decision["promote"] and "edge fitness: no ONNX file is recorded on the version" in decision["reasons"]
    with pytest.raises(RolloutJobError, match=f"version {old.version} has no ONNX file recorded"):
        publish = lambda v: publish_edge_artifact(mlflow_client, s3_client, spec, v)  # noqa: E731
        run_kafka_wave(
            spec, kafka_config, OPERATOR, "plant-north", old.version, "ro-it.x", timeout_s=0, artifacts=publish
        )
