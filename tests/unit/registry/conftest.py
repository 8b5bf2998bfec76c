"""Fixtures for the registry unit tests: the demo spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeloop.spec import PipelineSpec, load_spec

DEMO_SPEC = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"


@pytest.fixture(scope="session")
def registry_spec() -> PipelineSpec:
    return load_spec(DEMO_SPEC)
