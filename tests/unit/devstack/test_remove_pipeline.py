"""A pipeline a test added to the stack leaves nothing of its own in the bucket or on the Pushgateway once removed."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
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


@pytest.fixture
def no_services(monkeypatch: pytest.MonkeyPatch) -> None:
    import confluent_kafka.admin
    import mlflow

    monkeypatch.setattr(confluent_kafka.admin, "AdminClient", NoTopics)
    monkeypatch.setattr(mlflow, "MlflowClient", NoModel)


def test_a_camera_pipelines_frames_and_training_data_go_and_shared_model_files_stay(no_services: None) -> None:
    spec = vision_spec()
    ours = [f"{area}/{spec.name}/x" for area in ("raw", "curated", "frames", "training", "reports", "rollouts")]
    others = ["frames/factory_maintenance/x", "models/sha256/ab.onnx", f"raw/{spec.name}_other/x"]
    bucket = Bucket(ours + others)
    env = {"EDGELOOP_KAFKA_BOOTSTRAP": "127.0.0.1:1", "MLFLOW_TRACKING_URI": "http://mlflow"}
    pipelines.remove_pipeline(NoDags(), bucket, spec, env)
    assert bucket.keys == set(others)


class Pushgateway:
    """A Pushgateway on loopback: its groups (`/api/v1/metrics`) and the DELETE requests it got."""

    def __init__(self, groups: list[dict[str, str]]) -> None:
        self.groups = groups
        self.deleted: list[str] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"status": "success", "data": [{"labels": g} for g in gateway.groups]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def do_DELETE(self) -> None:
                gateway.deleted.append(self.path)
                self.send_response(202)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"127.0.0.1:{self.server.server_port}"


@pytest.fixture
def pushgateway() -> Iterator[Pushgateway]:
    spec = vision_spec()
    gateway = Pushgateway(
        [
            {
                "job": "edgeloop",
                "pipeline": spec.name,
                "dag": f"{spec.name}__ingest",
                "task": "ingest",
                "topic": "frames",
            },
            {"job": "edgeloop", "pipeline": spec.name, "dag": f"{spec.name}__drift", "task": "check"},
            {
                "job": "edgeloop",
                "pipeline": "factory_maintenance",
                "dag": "factory_maintenance__drift",
                "task": "check",
            },
            {"job": "other", "pipeline": spec.name},
        ]
    )
    thread = threading.Thread(target=gateway.server.serve_forever, daemon=True)
    thread.start()
    yield gateway
    gateway.server.shutdown()
    gateway.server.server_close()


def test_the_pipelines_metric_groups_go_from_the_pushgateway_and_the_others_stay(
    no_services: None, pushgateway: Pushgateway
) -> None:
    spec = vision_spec()
    env = {"EDGELOOP_KAFKA_BOOTSTRAP": "127.0.0.1:1", "MLFLOW_TRACKING_URI": "http://mlflow"}
    pipelines.remove_pipeline(NoDags(), Bucket([]), spec, {**env, "EDGELOOP_PUSHGATEWAY_URL": pushgateway.url})
    assert sorted(pushgateway.deleted) == [
        f"/metrics/job/edgeloop/dag/{spec.name}__drift/pipeline/{spec.name}/task/check",
        f"/metrics/job/edgeloop/dag/{spec.name}__ingest/pipeline/{spec.name}/task/ingest/topic/frames",
    ]


def test_a_pushgateway_that_is_down_does_not_stop_the_removal(
    no_services: None, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # closed again: nothing listens there
    spec = vision_spec()
    bucket = Bucket([f"raw/{spec.name}/x"])
    env = {
        "EDGELOOP_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "MLFLOW_TRACKING_URI": "http://mlflow",
        "EDGELOOP_PUSHGATEWAY_URL": f"127.0.0.1:{port}",
    }
    pipelines.remove_pipeline(NoDags(), bucket, spec, env)
    assert bucket.keys == set()
    assert "left on the Pushgateway" in caplog.text
