"""Fixtures for the agent's integration tests: the demo spec, its ONNX models, artifacts in the stack's S3.

No `__init__.py` here on purpose: `tests/unit/edge` is a package named `edge` under
pytest's default rootdir imports, and a second `edge` package would clash with it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_testkit import PrivateKafka, delete_prefix
from tests.helpers.edge_models import baseline_model, demo_spec, profile, rollout_model

__all__ = ["baseline_model", "demo_spec", "profile", "rollout_model"]


@pytest.fixture
def storage_area(stack_env: dict[str, str], s3_client: Any) -> Iterator[tuple[str, str]]:
    """(bucket, prefix) of this test's own objects in the stack's S3, removed afterwards."""
    bucket = stack_env.get("EDGELOOP_BUCKET", "edgeloop")
    prefix = f"it/edge/{uuid.uuid4().hex[:10]}"
    yield bucket, prefix
    delete_prefix(s3_client, bucket, prefix + "/")


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[PrivateKafka]:
    """This test's own KRaft broker (the stack's jars), stopped by its pid at the end."""
    from edgeloop.devstack.config import StackConfig

    libs = StackConfig.from_env().kafka_libs
    if not any(libs.glob("kafka_2.13-*.jar")):
        pytest.skip(f"no Kafka jars in {libs} (make kafka-libs)")
    broker = PrivateKafka(libs, tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
