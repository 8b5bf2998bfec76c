"""The tasks of the `train` DAG: one function each, typed results across the boundary.

`register_challenger` and `evaluation_gate` call the registry; the train DAG is where they run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeloop.spec import PipelineSpec
from edgeloop.xcom import JSON, XComResult, XComResultWithDetails

if TYPE_CHECKING:
    from edgeloop.connections import PipelineClients
    from edgeloop.metrics.push import BatchMetrics, TaskMetrics


@dataclass(frozen=True)
class DatasetBuilt(XComResult):
    """The train/eval split `build_dataset` stored (`training.dataset.build_dataset`): where, how big, from what."""

    pipeline: str
    dataset_version: str
    digest: str
    bucket: str
    train_key: str
    eval_key: str
    split_key: str
    records: dict[str, int]
    eval_groups: JSON
    cutoff: JSON
    sources: list[dict[str, JSON]]


@dataclass(frozen=True)
class ModelTrained(XComResultWithDetails):
    """The training run's summary (`training.train.train_model`): the candidate's identity, its run and model.

    The summary of a reused run comes from its MLflow tag, written by whichever version trained
    it: the keys registration reads are checked, the others (scores, trials, timings, ...) are
    in `details` and go to XCom unchanged.
    """

    pipeline: str
    candidate: str
    dataset_version: str
    dataset_digest: str
    code_version: str
    config_digest: str
    run_id: str
    model_id: str
    edge: dict[str, JSON]
    dataset: dict[str, JSON]
    reused: bool
    details: dict[str, JSON]


@dataclass(frozen=True)
class ChallengerRegistered(XComResult):
    """The registry version that holds the challenger (`registry.register.register_challenger`)."""

    pipeline: str
    model_name: str
    version: str
    model_uri: str
    created: bool
    removed: JSON
    alias: str
    candidate: str
    dataset_version: str
    code_version: str
    run_id: str
    model_id: str
    edge: dict[str, JSON]
    dataset: dict[str, JSON]
    artifact: dict[str, JSON] | None


@dataclass(frozen=True)
class GateDecision(XComResult):
    """The evaluation gate's decision (`training.gate.evaluation_gate`): promote or not, why, both models' scores."""

    pipeline: str
    model_name: str
    version: str
    model_uri: str
    decision: str
    promote: bool
    reason: str
    reasons: list[str]
    first_run: bool
    champion_set: bool
    champion_version: JSON
    metric: str
    margin: float
    group_tolerance: float
    challenger: dict[str, JSON]
    champion: JSON
    edge: dict[str, JSON]
    dataset_version: str | None
    code_version: str | None
    eval_records: int
    gate_run_id: str | None
    alert: dict[str, JSON] | None


@dataclass(frozen=True)
class ModelAnnounced(XComResult):
    """The `model` asset event of a promoted challenger (`training.gate.model_asset_extra`): what the rollout needs."""

    pipeline: str
    model_name: str
    version: str
    model_uri: str
    dataset_version: str | None
    code_version: str | None
    first_run: bool
    model_version: str


def dataset_version_of(requested: str | None, events: Sequence[Any]) -> str | None:
    """The curated version to train on: the run's param, else the newest `curated` event's, else None (newest)."""
    return requested or ((events[-1].extra or {}).get("version") if events else None)


def build_dataset(spec: PipelineSpec, clients: PipelineClients, version: str | None) -> DatasetBuilt:
    """Split the curated version (None: the newest) into train and eval sets in object storage."""
    from edgeloop.training import dataset

    return DatasetBuilt.from_xcom(dataset.build_dataset(clients.s3(), spec, version))


def train_model(
    spec: PipelineSpec,
    clients: PipelineClients,
    built: DatasetBuilt,
    *,
    search_budget: int | None,
    metrics: TaskMetrics,
) -> ModelTrained:
    """Search, refit and export the best candidate (budget: `search_budget`, default the spec's)."""
    from edgeloop.metrics.push import push_task_metrics
    from edgeloop.registry.client import mlflow_client
    from edgeloop.training import train
    from edgeloop.training.metrics import record_training_metrics

    budget = int(search_budget or spec.training.search_budget)
    trained = train.train_model(
        mlflow_client(clients.mlflow_uri()), clients.s3(), spec, built.to_xcom(), search_budget=budget
    )
    push_task_metrics(spec, metrics, lambda batch: record_training_metrics(batch, trained))
    return ModelTrained.from_xcom(trained)


def register_challenger(spec: PipelineSpec, clients: PipelineClients, trained: ModelTrained) -> ChallengerRegistered:
    """Register the trained model as a version with the `challenger` alias (once per candidate)."""
    from edgeloop.registry import register
    from edgeloop.registry.client import mlflow_client

    registered = register.register_challenger(mlflow_client(clients.mlflow_uri()), spec, trained.to_xcom())
    return ChallengerRegistered.from_xcom(registered)


def evaluation_gate(
    spec: PipelineSpec, clients: PipelineClients, registered: ChallengerRegistered, *, metrics: TaskMetrics
) -> GateDecision:
    """Judge the challenger against the champion; a rejection goes to the alerts topic."""
    from edgeloop.events import publish_alerts
    from edgeloop.metrics.push import push_task_metrics
    from edgeloop.registry.client import mlflow_client
    from edgeloop.training import gate
    from edgeloop.training.metrics import record_gate_metrics

    decision = gate.evaluation_gate(mlflow_client(clients.mlflow_uri()), clients.s3(), spec, registered.to_xcom())
    if decision.get("alert"):
        publish_alerts(clients.kafka(), spec, [decision["alert"]])

    def fill(batch: BatchMetrics) -> None:
        record_gate_metrics(batch, decision)
        batch.mark_success("train")

    push_task_metrics(spec, metrics, fill)
    return GateDecision.from_xcom(decision)


def announce_model(decision: GateDecision) -> ModelAnnounced:
    """The `model` asset event of a promoted challenger; skip the task (no rollout) otherwise."""
    from airflow.exceptions import AirflowSkipException

    from edgeloop.training.gate import model_asset_extra

    if not decision.promote:
        raise AirflowSkipException(f"no rollout: {decision.reason}")
    return ModelAnnounced.from_xcom(model_asset_extra(decision.to_xcom()))


# --- the DAG's tasks: each reads its inputs from the Airflow context and calls the function above


def run_build_dataset(spec: PipelineSpec, events: Sequence[Any], context: Mapping[str, Any]) -> DatasetBuilt:
    """`build_dataset` of the run's `dataset_version` param, else of the newest `curated` event among `events`."""
    from edgeloop.connections import PipelineClients

    version = dataset_version_of(context["params"].get("dataset_version"), events)
    return build_dataset(spec, PipelineClients(spec), version)


def run_train_model(spec: PipelineSpec, dataset: object, context: Mapping[str, Any]) -> ModelTrained:
    from edgeloop.connections import PipelineClients
    from edgeloop.metrics.push import TaskMetrics

    built, budget = DatasetBuilt.from_xcom(dataset), context["params"].get("search_budget")
    return train_model(spec, PipelineClients(spec), built, search_budget=budget, metrics=TaskMetrics.of_task(context))


def run_register_challenger(spec: PipelineSpec, trained: object) -> ChallengerRegistered:
    from edgeloop.connections import PipelineClients

    return register_challenger(spec, PipelineClients(spec), ModelTrained.from_xcom(trained))


def run_evaluation_gate(spec: PipelineSpec, registered: object, context: Mapping[str, Any]) -> GateDecision:
    from edgeloop.connections import PipelineClients
    from edgeloop.metrics.push import TaskMetrics

    version = ChallengerRegistered.from_xcom(registered)
    return evaluation_gate(spec, PipelineClients(spec), version, metrics=TaskMetrics.of_task(context))


def run_announce_model(decision: object) -> ModelAnnounced:
    return announce_model(GateDecision.from_xcom(decision))
