"""Simulated devices get their models the way agents do: from the artifact a signed assignment names."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.simulator.baseline import baseline_onnx
from edgeloop.simulator.models import ModelLoadError, onnx_provider
from edgeloop.spec import load_spec
from edgeloop.training.sensors import sensor_profile

DEMO_SPEC = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"


def test_offered_artifacts_load_and_bad_ones_fail_with_the_reason(tmp_path: Path) -> None:
    profile = sensor_profile(load_spec(DEMO_SPEC))
    data = baseline_onnx(profile)
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    provider = onnx_provider(profile)
    assert provider.load("0").labels == list(profile.labels)
    provider.offer("7", ArtifactRef(path.as_uri(), hashlib.sha256(data).hexdigest(), len(data)))
    model = provider.load("7")
    assert model.version == "7"
    assert model.predict_proba(profile.means).shape == (len(profile.labels), len(profile.labels))
    provider.offer("8", ArtifactRef(path.as_uri(), "0" * 64, len(data)))
    with pytest.raises(ModelLoadError, match="does not match"):
        provider.load("8")
    with pytest.raises(ModelLoadError, match="no assignment names its artifact"):
        provider.load("9")
