"""Bad training input and an unreachable MLflow fail the run with a clear message and register nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from training_testkit import drifted_batch, write_curated

from edgeloop.registry.client import mlflow_client as make_client
from edgeloop.registry.errors import MlflowUnavailable
from edgeloop.registry.register import register_challenger
from edgeloop.spec import PipelineSpec
from edgeloop.training.dataset import build_dataset, curated_key, frame_to_parquet
from edgeloop.training.errors import DatasetError
from edgeloop.training.gate import evaluation_gate
from edgeloop.training.tracking import experiment_name
from edgeloop.training.train import train_model

pytestmark = pytest.mark.integration

VERSION = "2026-01-05T00-00-00Z"


def run_train_dag(client: Any, s3: Any, spec: PipelineSpec, version: str | None) -> dict[str, Any]:
    """The four tasks of `<pipeline>__train`, in order, as the DAG runs them."""
    dataset = build_dataset(s3, spec, version)
    trained = train_model(client, s3, spec, dataset)
    registered = register_challenger(client, spec, trained)
    return evaluation_gate(client, s3, spec, registered)


def assert_nothing_registered(client: Any, spec: PipelineSpec) -> None:
    assert client.search_model_versions(f"name = '{spec.registry.model_name}'") == []
    assert client.get_experiment_by_name(experiment_name(spec)) is None


def _empty(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[0:0]


def _unknown_label(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[7, "label"] = "exploded"
    return frame


def _schema_change(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns={"rpm": "rpm_hz"})


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_empty, "has no records"),
        (_unknown_label, r"label\(s\) \['exploded'\] are not in the spec's label set .* \(first at row 7\)"),
        (_schema_change, r"missing column\(s\) \['rpm'\] required by the spec schema"),
    ],
    ids=["empty", "unknown-label", "schema-change"],
)
def test_bad_curated_version_fails_with_a_clear_message_and_registers_nothing(
    mlflow_client: Any,
    s3_client: Any,
    fresh_spec: PipelineSpec,
    mutate: Callable[[pd.DataFrame], pd.DataFrame],
    message: str,
) -> None:
    write_curated(s3_client, fresh_spec, VERSION, mutate(drifted_batch(fresh_spec, records=200)))
    with pytest.raises(DatasetError, match=message) as failure:
        run_train_dag(mlflow_client, s3_client, fresh_spec, VERSION)
    assert VERSION in str(failure.value)
    assert_nothing_registered(mlflow_client, fresh_spec)


def test_a_single_class_fails_with_a_clear_message_and_registers_nothing(
    mlflow_client: Any, s3_client: Any, fresh_spec: PipelineSpec
) -> None:
    only_normal = drifted_batch(fresh_spec, records=300).assign(label="normal")
    seed_key = curated_key(fresh_spec, "seed")
    s3_client.put_object(Bucket=fresh_spec.storage.bucket, Key=seed_key, Body=frame_to_parquet(only_normal))
    write_curated(s3_client, fresh_spec, VERSION, only_normal)
    with pytest.raises(DatasetError, match=r"single class \['normal'\]"):
        run_train_dag(mlflow_client, s3_client, fresh_spec, VERSION)
    assert_nothing_registered(mlflow_client, fresh_spec)


def test_a_missing_version_is_named(mlflow_client: Any, s3_client: Any, fresh_spec: PipelineSpec) -> None:
    with pytest.raises(DatasetError, match=r"curated version 'v-missing' not found: s3://.*/v-missing/data.parquet"):
        run_train_dag(mlflow_client, s3_client, fresh_spec, "v-missing")
    assert_nothing_registered(mlflow_client, fresh_spec)


def test_unreachable_mlflow_retries_then_fails_clearly_and_registers_nothing(
    mlflow_client: Any, s3_client: Any, fresh_spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow's HTTP client reads its retry policy from the environment at each request.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    unreachable = make_client("http://127.0.0.1:9")  # the discard port: nothing listens there
    dataset = build_dataset(s3_client, fresh_spec)
    with pytest.raises(MlflowUnavailable, match=r"training .* the MLflow server at http://127.0.0.1:9 did not answer"):
        train_model(unreachable, s3_client, fresh_spec, dataset)

    trained = {
        "candidate": "c" * 24,
        "dataset_version": "seed",
        "dataset_digest": dataset["digest"],
        "code_version": "src-test",
        "config_digest": "cfg",
        "run_id": "r" * 32,
        "model_id": "m-" + "0" * 32,
        "dataset": {k: dataset[k] for k in ("bucket", "train_key", "eval_key", "split_key")},
        "edge": {"ok": True, "violations": []},
    }
    with pytest.raises(MlflowUnavailable, match=r"registering candidate c+ as a version of"):
        register_challenger(unreachable, fresh_spec, trained)
    assert_nothing_registered(mlflow_client, fresh_spec)


def test_a_first_model_over_the_edge_limits_is_registered_but_never_champion(
    mlflow_client: Any, s3_client: Any, fresh_spec: PipelineSpec
) -> None:
    tiny = fresh_spec.training.limits.model_copy(update={"max_model_mb": 0.001})
    spec = fresh_spec.model_copy(update={"training": fresh_spec.training.model_copy(update={"limits": tiny})})
    decision = run_train_dag(mlflow_client, s3_client, spec, None)
    assert decision["decision"] == "reject" and decision["first_run"] and not decision["champion_set"]
    assert decision["reason"].startswith("edge fitness: model size")
    assert decision["alert"]["kind"] == "model"
    model = mlflow_client.get_registered_model(spec.registry.model_name)
    assert "champion" not in model.aliases and model.aliases["challenger"] == decision["version"]
    run = mlflow_client.get_run(mlflow_client.get_model_version(spec.registry.model_name, "1").run_id)
    assert run.data.metrics["edge_fit"] == 0.0 and run.data.tags["edgeloop.edge_fit"] == "false"
