"""Fixtures for the training unit tests: the demo spec and labelled frames shaped like curated data."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeloop.spec import PipelineSpec, load_spec

DEMO_SPEC = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"


@pytest.fixture(scope="session")
def training_spec() -> PipelineSpec:
    return load_spec(DEMO_SPEC)
