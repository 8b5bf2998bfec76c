"""MLflow plumbing for training: experiment, lineage, versions, and fast model logging.

Everything goes through an `MlflowClient` made by the caller (no fluent API, no global
active run), so several pipelines can train in one process. Models are logged the way
`mlflow.sklearn.log_model` does it in MLflow 3 (a LoggedModel, its artifacts, the run's
model output), but with the signature and the pip requirements given explicitly:
MLflow's requirement inference loads the model in a subprocess and costs seconds.

The client, its retries and `mlflow_errors` are the registry's (`edgeloop.registry.client`), the
tag keys too (`edgeloop.registry.tags`). Every step here is safe to run again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeloop.registry.tags import TAG_PIPELINE
from edgeloop.spec import PipelineSpec

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

# The source files whose content is the "code version" of a model: the training and
# registry stages and the spec model they read.
_CODE_PACKAGES = ("training", "registry")
_DIGEST_LENGTH = 32  # MLflow stores dataset digests in 36 characters


def experiment_name(spec: PipelineSpec) -> str:
    return f"edgeloop-{spec.name}"


def ensure_experiment(client: MlflowClient, spec: PipelineSpec) -> str:
    """The id of the pipeline's experiment, created (or restored) when needed; safe under races."""
    from mlflow.exceptions import MlflowException

    name = experiment_name(spec)
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return str(client.create_experiment(name, tags={TAG_PIPELINE: spec.name}))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return str(found.experiment_id)


def code_version(package_dir: Path | None = None) -> str:
    """A digest of the training and registry source (and the spec model): same code, same version.

    A content digest rather than a git commit: bundles are often deployed without
    `.git`, and an uncommitted change must not pass for the committed code.
    """
    root = package_dir or Path(__file__).resolve().parent.parent
    files = [root / "spec.py"]
    for package in _CODE_PACKAGES:
        files.extend(sorted((root / package).glob("*.py")))
    digest = hashlib.sha256()
    for path in files:
        if path.exists():
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"src-{digest.hexdigest()[:12]}"


def config_digest(spec: PipelineSpec, search_budget: int) -> str:
    """A digest of what, besides data and code, decides the model: the training section and the budget."""
    payload = {"training": spec.training.model_dump(mode="json"), "budget": search_budget}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def candidate_key(dataset_version: str, dataset_digest: str, code: str, config: str) -> str:
    """The identity of one training candidate: retried or racing tasks with the same key are one model."""
    text = f"{dataset_version}|{dataset_digest}|{code}|{config}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def _schema_json(frame: pd.DataFrame) -> str:
    from mlflow.models import infer_signature

    return json.dumps({"mlflow_colspec": infer_signature(frame.head(5)).inputs.to_dict()})


def dataset_inputs(dataset: Mapping[str, Any], *, train: pd.DataFrame | None = None) -> list[Any]:
    """MLflow dataset inputs for a training run: every source version (context `training`), the split parts.

    Each source names its S3 location and the sha256 digest (first 32 hex characters)
    of its Parquet object, so the run's lineage leads back to the exact curated data.
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag

    schema = _schema_json(train) if train is not None else None
    inputs = []
    for source in dataset["sources"]:
        entity = Dataset(
            name=f"{dataset['pipeline']}/curated/{source['version']}",
            digest=str(source["digest"])[:_DIGEST_LENGTH],
            source_type="s3",
            source=json.dumps({"uri": s3_uri(dataset["bucket"], source["key"])}),
            schema=schema,
            profile=json.dumps({"num_rows": source["records"]}),
        )
        inputs.append(DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")]))
    for part, context in (("train", "training"), ("eval", "evaluation")):
        entity = Dataset(
            name=f"{dataset['pipeline']}/{dataset['dataset_version']}/{part}",
            digest=str(dataset["digest"]),
            source_type="s3",
            source=json.dumps({"uri": s3_uri(dataset["bucket"], dataset[f"{part}_key"])}),
            schema=schema,
            profile=json.dumps({"num_rows": dataset["records"][part]}),
        )
        inputs.append(DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)]))
    return inputs


def model_pip_requirements() -> list[str]:
    """The pinned packages a device needs to load and run the model (MLflow adds its own pin)."""
    import numpy
    import pandas
    import scipy
    import sklearn

    return [
        f"scikit-learn=={sklearn.__version__}",
        f"numpy=={numpy.__version__}",
        f"scipy=={scipy.__version__}",
        f"pandas=={pandas.__version__}",
    ]


@dataclass(frozen=True)
class LoggedModelRef:
    model_id: str
    artifact_location: str

    @property
    def uri(self) -> str:
        return f"models:/{self.model_id}"


def log_sklearn_model(
    client: MlflowClient,
    run_id: str,
    experiment_id: str,
    model: Any,
    example: pd.DataFrame,
    *,
    name: str = "model",
    pip_requirements: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> LoggedModelRef:
    """Log a fitted sklearn model as an MLflow model of `run_id`: signature, input example, explicit requirements.

    The LoggedModel is finalized READY only after all its artifacts are uploaded; a
    failure on the way leaves it FAILED (never registered by this package).
    """
    import mlflow.sklearn
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model, infer_signature

    sample = example.head(20)
    signature = infer_signature(sample, model.predict(sample))
    logged = client.create_logged_model(
        experiment_id, name=name, source_run_id=run_id, tags=dict(tags or {}), model_type="sklearn"
    )
    try:
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        description = Model(
            artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id, model_id=logged.model_id
        )
        with tempfile.TemporaryDirectory(prefix="edgeloop-model-") as tmp:
            path = Path(tmp) / "model"
            mlflow.sklearn.save_model(
                model,
                str(path),
                mlflow_model=description,
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_PICKLE,
                signature=signature,
                input_example=example.head(1),
                pip_requirements=list(pip_requirements or model_pip_requirements()),
            )
            client.log_model_artifacts(logged.model_id, str(path))
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    except BaseException:
        with contextlib.suppress(Exception):
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    return LoggedModelRef(logged.model_id, logged.artifact_location)


def model_id_of_source(source: str) -> str | None:
    """`m-…` from a model version source `models:/m-…`; None for other sources."""
    prefix = "models:/"
    if source.startswith(prefix) and "/" not in source[len(prefix) :] and source[len(prefix) :].startswith("m-"):
        return source[len(prefix) :]
    return None
