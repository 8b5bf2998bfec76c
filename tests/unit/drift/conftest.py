"""Fixtures for the drift unit tests: the demo pipeline spec and synthetic telemetry shaped by it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeloop.spec import PipelineSpec, load_spec

DEMO_SPEC = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"


@pytest.fixture(scope="session")
def demo_spec() -> PipelineSpec:
    """The shipped demo spec with a sample size small enough for fast tests."""
    spec = load_spec(DEMO_SPEC)
    return spec.model_copy(update={"drift": spec.drift.model_copy(update={"sample_per_group": 3000})})
