"""A pipeline a test added to the stack leaves nothing of its own in the bucket when it is removed."""

from __future__ import annotations

from typing import Any

import pytest
from tests.helpers.camera_models import vision_spec

from edgeloop.devstack import pipelines


class NoDags:
    """The REST API of a stack where the pipeline's DAGs never appeared."""

    base_url = "http://airflow"

    class session:
        @staticmethod
        def patch(*_: Any, **__: Any) -> Any:
            return type("Response", (), {"ok": False})()

        @staticmethod
        def delete(*_: Any, **__: Any) -> None:
            return None


class Bucket:
    def __init__(self, keys: list[str]) -> None:
        self.keys = set(keys)

    def get_paginator(self, _: str) -> Any:
        bucket = self

        class Pages:
            def paginate(self, *, Bucket: str, Prefix: str) -> list[dict[str, Any]]:
                return [{"Contents": [{"Key": k} for k in sorted(bucket.keys) if k.startswith(Prefix)]}]

        return Pages()

    def delete_object(self, *, Bucket: str, Key: str) -> None:
        self.keys.discard(Key)


class NoTopics:
    def __init__(self, _: dict[str, str]) -> None:
        pass

    def list_topics(self, timeout: float) -> Any:
        return type("Metadata", (), {"topics": {}})()


class NoModel:
    def __init__(self, tracking_uri: str) -> None:
        pass

    def search_registered_models(self, filter_string: str) -> list[Any]:
        return []

    def get_experiment_by_name(self, name: str) -> None:
        return None


def test_a_camera_pipelines_frames_and_training_data_go_and_shared_model_files_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import confluent_kafka.admin
    import mlflow

    monkeypatch.setattr(confluent_kafka.admin, "AdminClient", NoTopics)
    monkeypatch.setattr(mlflow, "MlflowClient", NoModel)
    spec = vision_spec()
    ours = [f"{area}/{spec.name}/x" for area in ("raw", "curated", "frames", "training", "reports", "rollouts")]
    others = ["frames/factory_maintenance/x", "models/sha256/ab.onnx", f"raw/{spec.name}_other/x"]
    bucket = Bucket(ours + others)
    env = {"EDGELOOP_KAFKA_BOOTSTRAP": "127.0.0.1:1", "MLFLOW_TRACKING_URI": "http://mlflow"}
    pipelines.remove_pipeline(NoDags(), bucket, spec, env)
    assert bucket.keys == set(others)
