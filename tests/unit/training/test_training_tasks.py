"""The train tasks: dataset, run, registered version and the gate's decision, read back strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowSkipException

from edgeloop import events
from edgeloop.metrics.push import TaskMetrics
from edgeloop.registry import client
from edgeloop.spec import PipelineSpec, load_spec
from edgeloop.training import gate
from edgeloop.training import tasks as train_tasks
from edgeloop.training.tasks import ChallengerRegistered, DatasetBuilt, GateDecision, ModelAnnounced, ModelTrained
from edgeloop.xcom import XComContractError

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
NO_METRICS = TaskMetrics(gateway=None, dag_id="factory_maintenance__train", task_id="evaluation_gate")

DATASET = DatasetBuilt(
    pipeline="factory_maintenance",
    dataset_version="v1",
    digest="d" * 64,
    bucket="edgeloop",
    train_key="training/v1/train.parquet",
    eval_key="training/v1/eval.parquet",
    split_key="training/v1/split.json",
    records={"train": 800, "eval": 200},
    eval_groups=["plant-north"],
    cutoff="2026-01-01T00:00:00+00:00",
    sources=[{"version": "v1", "key": "curated/v1/data.parquet", "digest": "e" * 64, "records": 1000}],
)
TRAINED: dict[str, Any] = {
    "pipeline": "factory_maintenance",
    "candidate": "c1",
    "dataset_version": "v1",
    "dataset_digest": "d" * 64,
    "code_version": "abc",
    "config_digest": "f" * 16,
    "run_id": "r1",
    "model_id": "m-1",
    "edge": {"model_mb": 0.1},
    "dataset": {"bucket": "edgeloop"},
    "reused": False,
    "eval_score": 0.93,
    "trials": 12,
}
REGISTERED = ChallengerRegistered(
    pipeline="factory_maintenance",
    model_name="factory_maintenance",
    version="3",
    model_uri="models:/factory_maintenance/3",
    created=True,
    removed=[],
    alias="challenger",
    candidate="c1",
    dataset_version="v1",
    code_version="abc",
    run_id="r1",
    model_id="m-1",
    edge={"model_mb": 0.1},
    dataset={"bucket": "edgeloop"},
    artifact=None,
)


def decision(promote: bool, **changes: Any) -> GateDecision:
    fields: dict[str, Any] = {
        "pipeline": "factory_maintenance",
        "model_name": "factory_maintenance",
        "version": "3",
        "model_uri": "models:/factory_maintenance/3",
        "decision": "promote" if promote else "reject",
        "promote": promote,
        "reason": "" if promote else "eval_f1 0.80 is not above the champion's 0.90",
        "reasons": [] if promote else ["eval_f1 0.80 is not above the champion's 0.90"],
        "first_run": False,
        "champion_set": False,
        "champion_version": "2",
        "metric": "f1",
        "margin": 0.0,
        "group_tolerance": 0.05,
        "challenger": {"score": 0.8},
        "champion": {"score": 0.9},
        "edge": {},
        "dataset_version": "v1",
        "code_version": "abc",
        "eval_records": 200,
        "gate_run_id": None,
        "alert": None if promote else {"kind": "model", "group": ""},
    }
    return GateDecision(**{**fields, **changes})


@pytest.fixture
def spec() -> PipelineSpec:
    return load_spec(DEMO)


class FakeClients:
    def kafka(self) -> dict[str, Any]:
        return {"bootstrap.servers": "fake:9092"}

    def s3(self) -> object:
        return object()

    def mlflow_uri(self) -> str:
        return "http://mlflow.invalid"


@pytest.mark.parametrize("result", [DATASET, REGISTERED, decision(True), decision(False)])
def test_results_survive_their_xcom_round_trip(result: Any) -> None:
    assert type(result).from_xcom(result.to_xcom()) == result


def test_the_training_summary_keeps_the_keys_it_does_not_name() -> None:
    trained = ModelTrained.from_xcom(TRAINED)
    assert trained.details == {"eval_score": 0.93, "trials": 12}
    assert trained.to_xcom() == TRAINED
    without = {k: v for k, v in TRAINED.items() if k != "model_id"}
    with pytest.raises(XComContractError, match=r"ModelTrained.from_xcom: missing key\(s\) \['model_id'\]"):
        ModelTrained.from_xcom(without)


def test_a_renamed_key_of_the_decision_is_named() -> None:
    data = decision(True).to_xcom()
    data["promoted"] = data.pop("promote")
    with pytest.raises(XComContractError, match=r"missing key\(s\) \['promote'\]; unknown key\(s\) \['promoted'\]"):
        GateDecision.from_xcom(data)


def test_the_dataset_version_comes_from_the_param_then_the_newest_event() -> None:
    class Event:
        def __init__(self, version: str) -> None:
            self.extra = {"version": version}

    assert train_tasks.dataset_version_of("v9", [Event("v1")]) == "v9"
    assert train_tasks.dataset_version_of(None, [Event("v1"), Event("v2")]) == "v2"
    assert train_tasks.dataset_version_of(None, []) is None


def test_only_a_promoted_challenger_is_announced() -> None:
    announced = train_tasks.announce_model(decision(True, first_run=True))
    assert announced == ModelAnnounced.from_xcom(announced.to_xcom())
    assert (announced.model_version, announced.version, announced.first_run) == ("3", "3", True)
    with pytest.raises(AirflowSkipException, match=r"no rollout: eval_f1 0\.80"):
        train_tasks.announce_model(decision(False))


def test_a_rejection_goes_to_the_alerts_topic(spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    rejected = decision(False)
    sent: list[Any] = []
    monkeypatch.setattr(client, "mlflow_client", lambda uri: object())
    monkeypatch.setattr(gate, "evaluation_gate", lambda mlflow, s3, spec, registered: rejected.to_xcom())
    monkeypatch.setattr(events, "publish_alerts", lambda kafka, spec, alerts: sent.append(alerts) or len(alerts))
    clients: Any = FakeClients()
    assert train_tasks.evaluation_gate(spec, clients, REGISTERED, metrics=NO_METRICS) == rejected
    assert sent == [[rejected.alert]]
