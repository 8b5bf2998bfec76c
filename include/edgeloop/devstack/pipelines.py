"""Pipelines a test or benchmark adds to the stack, and their removal (DAGs, topics, objects, model, metrics)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from edgeloop.spec import STAGES, PipelineSpec, load_spec

log = logging.getLogger(__name__)


def s3_client(env: dict[str, str]) -> Any:
    """A boto3 S3 client for the stack's object store, from its `stack.env` values."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["EDGELOOP_S3_ENDPOINT"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def write_pipeline(folder: Path, data: dict[str, Any]) -> tuple[Path, PipelineSpec]:
    """Put a spec into the pipelines folder the dag-processor reads (never half-written) and load it."""
    name = data["name"]
    target = folder / f"{name}.yaml"
    staging = folder / f".{name}.yaml.tmp"  # not *.yaml: never parsed half-written
    staging.write_text(yaml.safe_dump(data, sort_keys=False))
    staging.replace(target)
    return target, load_spec(target)


def remove_pipeline(api: Any, s3: Any, spec: PipelineSpec, env: dict[str, str]) -> None:
    """Pause and delete the DAGs; delete topics, objects, the registered model and pushed metrics (best effort)."""
    from confluent_kafka.admin import AdminClient
    from mlflow import MlflowClient

    for stage in STAGES:
        dag_id = f"{spec.name}__{stage}"
        if api.session.patch(f"{api.base_url}/api/v2/dags/{dag_id}", json={"is_paused": True}, timeout=30).ok:
            for run in api.runs(dag_id, limit=20):
                if run["state"] not in ("success", "failed"):
                    api.patch(f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}", {"state": "failed"})
        api.session.delete(f"{api.base_url}/api/v2/dags/{dag_id}", timeout=30)
    admin = AdminClient({"bootstrap.servers": env["EDGELOOP_KAFKA_BOOTSTRAP"]})
    topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith(f"{spec.name}.")]
    for future in admin.delete_topics(topics, operation_timeout=30).values() if topics else []:
        future.result(timeout=30)
    # frames: a camera pipeline's claim checks; models/sha256 stays (content-addressed, shared by every pipeline)
    for area in ("raw", "deadletter", "reports", "curated", "annotations", "rollouts", "training", "frames"):
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=spec.storage.bucket, Prefix=f"{spec.storage_prefix(area)}/"
        ):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=spec.storage.bucket, Key=item["Key"])
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    if client.search_registered_models(filter_string=f"name = '{spec.registry.model_name}'"):
        client.delete_registered_model(spec.registry.model_name)
    from edgeloop.training.tracking import experiment_name

    experiment = client.get_experiment_by_name(experiment_name(spec))
    if experiment is not None and experiment.lifecycle_stage == "active":
        client.delete_experiment(experiment.experiment_id)
    forget_pushed_metrics(spec, env)


def forget_pushed_metrics(spec: PipelineSpec, env: dict[str, str]) -> int:
    """Delete the pipeline's metric groups from the stack's Pushgateway; return how many went.

    Best effort: without a Pushgateway in `env`, or with one that is down, nothing is deleted and
    the removal goes on (a warning says why).
    """
    from edgeloop.metrics.push import PUSHGATEWAY_ENV, MetricsPushError, delete_pipeline_groups

    gateway = env.get(PUSHGATEWAY_ENV)
    if not gateway:
        return 0
    try:
        return len(delete_pipeline_groups(gateway, spec.name, timeout=5.0))
    except MetricsPushError as exc:
        log.warning("metric groups of %s left on the Pushgateway: %s", spec.name, exc)
        return 0
