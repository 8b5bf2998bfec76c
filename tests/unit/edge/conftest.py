"""Fixtures for the agent's unit tests: the demo spec, its baseline ONNX model and variants of it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import onnx
import pytest

from edgeloop.contract.artifact import META_GOLDEN
from edgeloop.contract.messages import Target, new_assignment
from edgeloop.edge.config import AgentConfig, parse_config
from edgeloop.fleet.agents import agent_config
from edgeloop.fleet.baseline import baseline_onnx
from edgeloop.fleet.sensors import SensorProfile, sensor_profile
from edgeloop.spec import PipelineSpec, load_spec

DEMO_SPEC = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
KEY = b"unit-test-control-key"


@pytest.fixture(scope="session")
def spec() -> PipelineSpec:
    return load_spec(DEMO_SPEC)


@pytest.fixture(scope="session")
def profile(spec: PipelineSpec) -> SensorProfile:
    return sensor_profile(spec)


@pytest.fixture(scope="session")
def model_bytes(profile: SensorProfile) -> bytes:
    """The demo's baseline rule model (nearest vibration zone)."""
    return baseline_onnx(profile)


@pytest.fixture(scope="session")
def other_model_bytes(profile: SensorProfile) -> bytes:
    """A second valid model for the same features (nearest class centre)."""
    return baseline_onnx(dataclasses.replace(profile, crest_of=None))


def tampered_golden(data: bytes) -> bytes:
    """The same model with a golden batch that no longer matches its answers (self-test must fail)."""
    model = onnx.load_from_string(data)
    for entry in model.metadata_props:
        if entry.key == META_GOLDEN:
            golden = json.loads(entry.value)
            golden["probabilities"] = [list(reversed(row)) for row in golden["probabilities"]]
            entry.value = json.dumps(golden)
    return bytes(model.SerializeToString())


def assignment_wire(key: bytes = KEY, **kwargs: object) -> bytes:
    target = kwargs.pop("target", Target("group", "plant-north"))
    return new_assignment(target, **kwargs).to_wire(key)  # type: ignore[arg-type]


@pytest.fixture
def device_config(spec: PipelineSpec, tmp_path: Path) -> AgentConfig:
    raw = agent_config(spec, "plant-north", "plant-north-00001", {"bootstrap.servers": "127.0.0.1:1"}, tmp_path)
    return parse_config(raw)
