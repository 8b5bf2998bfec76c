"""Shared fixtures of the agent's tests: the demo spec, its sensor profile and ONNX models to roll out.

Import the fixtures into a conftest (`from tests.helpers.edge_models import ...`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edgeloop.contract.artifact import META_GOLDEN
from edgeloop.simulator.baseline import baseline_onnx
from edgeloop.spec import PipelineSpec, load_spec
from edgeloop.training.sensors import SensorProfile, sensor_profile

DEMO_SPEC = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "factory_maintenance.yaml"


@pytest.fixture(scope="session")
def demo_spec() -> PipelineSpec:
    return load_spec(DEMO_SPEC)


@pytest.fixture(scope="session")
def profile(demo_spec: PipelineSpec) -> SensorProfile:
    return sensor_profile(demo_spec)


@pytest.fixture(scope="session")
def baseline_model(profile: SensorProfile) -> bytes:
    """Version "0": the demo's baseline rule model (nearest vibration zone), what every agent starts with."""
    return baseline_onnx(profile)


@pytest.fixture(scope="session")
def rollout_model(profile: SensorProfile) -> bytes:
    """A second valid model for the same features (nearest class centre)."""
    return baseline_onnx(dataclasses.replace(profile, crest_of=None))


def tampered_golden(data: bytes) -> bytes:
    """The same ONNX model with a golden batch its answers no longer match (its self-test must fail)."""
    import onnx

    model = onnx.load_from_string(data)
    for entry in model.metadata_props:
        if entry.key == META_GOLDEN:
            golden = json.loads(entry.value)
            golden["probabilities"] = [list(reversed(row)) for row in golden["probabilities"]]
            entry.value = json.dumps(golden)
    return bytes(model.SerializeToString())
