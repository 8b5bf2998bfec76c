"""Training against the real MLflow server (artifacts in the stack's S3), one fresh pipeline per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from training_testkit import cleanup_pipeline, small_spec, unique_name

from edgeloop.spec import PipelineSpec


@pytest.fixture(scope="session")
def mlflow_client(stack_env: dict[str, str]) -> Any:
    from edgeloop.registry.client import mlflow_client as make_client

    return make_client(stack_env["MLFLOW_TRACKING_URI"])


@pytest.fixture
def fresh_spec(mlflow_client: Any, s3_client: Any) -> Iterator[PipelineSpec]:
    spec = small_spec(unique_name("train"))
    yield spec
    cleanup_pipeline(mlflow_client, s3_client, spec)
