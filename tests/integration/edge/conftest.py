"""Fixtures for the agent's integration tests: the demo spec, its ONNX models, artifacts in the stack's S3.

No `__init__.py` here on purpose: `tests/unit/edge` is a package named `edge` under
pytest's default rootdir imports, and a second `edge` package would clash with it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_testkit import PrivateKafka, delete_prefix

from edgeloop.fleet.baseline import baseline_onnx
from edgeloop.fleet.sensors import SensorProfile, sensor_profile
from edgeloop.spec import PipelineSpec, load_spec

DEMO_SPEC = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"


@pytest.fixture(scope="session")
def demo_spec() -> PipelineSpec:
    return load_spec(DEMO_SPEC)


@pytest.fixture(scope="session")
def profile(demo_spec: PipelineSpec) -> SensorProfile:
    return sensor_profile(demo_spec)


@pytest.fixture(scope="session")
def baseline_model(profile: SensorProfile) -> bytes:
    """Version "0": the demo's baseline rule model, what every agent starts with."""
    return baseline_onnx(profile)


@pytest.fixture(scope="session")
def rollout_model(profile: SensorProfile) -> bytes:
    """A second valid model for the same features (nearest class centre), rolled out as version "1"."""
    return baseline_onnx(dataclasses.replace(profile, crest_of=None))


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
