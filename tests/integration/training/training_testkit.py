"""Helpers for the training integration tests: small specs, curated versions in S3, clean-up."""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from edgeloop.spec import PipelineSpec, load_spec
from edgeloop.training.seed import SEED_START, make_seed_frame

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
SMALL_SEARCH = {"n_estimators": [20, 40], "max_depth": [6, 10], "min_samples_leaf": [2]}


def small_spec(name: str, **training: Any) -> PipelineSpec:
    """The demo spec under a fresh name (its own prefixes, experiment and registered model), small search."""
    base = load_spec(DEMO)
    # Roomy latency and memory limits: a busy CI machine must not turn a timing into a test failure
    # (the size limit stays, and the edge-limit test tightens it on purpose).
    limits = base.training.limits.model_copy(update={"max_latency_ms": 1000.0, "max_memory_mb": 2000.0})
    settings = {"search_space": SMALL_SEARCH, "search_budget": 2, "limits": limits, **training}
    return base.model_copy(
        update={
            "name": name,
            "topics": base.topics.model_copy(update={"prefix": name}),
            "registry": base.registry.model_copy(update={"model_name": name}),
            "training": base.training.model_copy(update=settings),
        }
    )


def unique_name(tag: str) -> str:
    return f"it_{tag}_{uuid.uuid4().hex[:8]}"


def write_curated(
    s3: Any, spec: PipelineSpec, version: str, frame: pd.DataFrame, *, created_at: str | None = None
) -> str:
    """Store a curated version the way the annotation stage does: data.parquet plus lineage.json."""
    prefix = f"{spec.storage_prefix('curated')}/{version}"
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    s3.put_object(Bucket=spec.storage.bucket, Key=f"{prefix}/data.parquet", Body=sink.getvalue())
    lineage = {"version": version, "records": len(frame), "created_at": created_at or version}
    s3.put_object(Bucket=spec.storage.bucket, Key=f"{prefix}/lineage.json", Body=json.dumps(lineage).encode())
    return f"{prefix}/data.parquet"


def drifted_batch(
    spec: PipelineSpec, *, records: int = 600, seed: int = 1, group: str = "plant-north", gain: float = 2.5
) -> pd.DataFrame:
    """Labelled records of one group, two days after the seed, whose vibration sensors read `gain` x too high
    (a firmware recalibration): the labels (the machines' true states) are unchanged."""
    frame = make_seed_frame(spec, records=records, seed=seed)
    devices = [f"{group}-dev-{i:02d}" for i in range(8)]
    frame["group_id"] = group
    frame["device_id"] = [devices[i % len(devices)] for i in range(len(frame))]
    frame["ts"] = frame["ts"] + timedelta(days=2)
    frame["record_id"] = [f"{spec.name}-batch{seed}-{i:06d}" for i in range(len(frame))]
    for column in ("vibration_rms", "vibration_peak"):
        frame[column] = frame[column] * gain
    assert frame["ts"].min() > SEED_START
    return frame


def cleanup_pipeline(client: Any, s3: Any, spec: PipelineSpec, kafka_config: dict[str, Any] | None = None) -> None:
    """Remove what a test pipeline left in MLflow, S3 and Kafka (registered model, experiment, objects, topics)."""
    from mlflow.exceptions import MlflowException

    from edgeloop.contract.artifact import content_key
    from edgeloop.training.tracking import experiment_name

    with contextlib.suppress(MlflowException):  # the ONNX files its versions published (content-addressed)
        for version in client.search_model_versions(f"name = '{spec.registry.model_name}'"):
            digest = (version.tags or {}).get("edgeloop.artifact.sha256")
            if digest:
                s3.delete_object(Bucket=spec.storage.bucket, Key=content_key(spec.storage.prefix, digest))
    with contextlib.suppress(MlflowException):
        client.delete_registered_model(spec.registry.model_name)
    experiment = client.get_experiment_by_name(experiment_name(spec))
    if experiment is not None and experiment.lifecycle_stage == "active":
        client.delete_experiment(experiment.experiment_id)
    for area in ("curated", "training"):
        prefix = f"{spec.storage_prefix(area)}/"
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=spec.storage.bucket, Prefix=prefix):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=spec.storage.bucket, Delete={"Objects": keys})
    if kafka_config is not None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(dict(kafka_config))
        names = [t for t in spec.all_topics if t in set(admin.list_topics(timeout=10).topics)]
        for future in admin.delete_topics(names, operation_timeout=30).values() if names else []:
            future.result(timeout=30)


def artifact_text(client: Any, uri: str) -> str:
    """The text of one artifact (e.g. `<logged model location>/MLmodel`) from the client's server."""
    import tempfile

    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=client.tracking_uri)
        return Path(path).read_text()
