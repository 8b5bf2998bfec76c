"""Fixtures for the agent's unit tests: the demo spec and its ONNX models (tests/helpers/edge_models.py), a config."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.helpers.edge_models import baseline_model, demo_spec, profile, rollout_model
from tests.helpers.keys import OPERATOR, TRUSTED

from edgeloop.contract.keys import Signer
from edgeloop.contract.messages import Target, new_assignment
from edgeloop.edge.config import AgentConfig, parse_config
from edgeloop.edge.device import DeviceCore
from edgeloop.edge.runtime import load_model
from edgeloop.fleet.agents import agent_config
from edgeloop.spec import PipelineSpec

__all__ = ["baseline_model", "demo_spec", "profile", "rollout_model"]
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the clock of the device cores under test
PIPELINE = "factory_maintenance"


@pytest.fixture(scope="session")
def spec(demo_spec: PipelineSpec) -> PipelineSpec:
    return demo_spec


def assignment_wire(signer: Signer = OPERATOR, **kwargs: object) -> bytes:
    """A signed order for plant-north of the demo pipeline, issued at NOW (override any field)."""
    target = kwargs.pop("target", Target("group", "plant-north"))
    kwargs.setdefault("pipeline", PIPELINE)
    kwargs.setdefault("issued_at", NOW)
    return new_assignment(target, **kwargs).to_wire(signer)  # type: ignore[arg-type]


@pytest.fixture
def device_config(spec: PipelineSpec, tmp_path: Path) -> AgentConfig:
    raw = agent_config(spec, "plant-north", "plant-north-00001", {"bootstrap.servers": "127.0.0.1:1"}, tmp_path)
    return parse_config(raw)


@pytest.fixture
def core(device_config: AgentConfig, spec: PipelineSpec, baseline_model: bytes) -> DeviceCore:
    """A device core of plant-north on the baseline model, its clock stopped at NOW."""
    device = DeviceCore.for_config(device_config, TRUSTED, clock=lambda: NOW)
    device.model = load_model(baseline_model, "0", spec.features)
    return device
