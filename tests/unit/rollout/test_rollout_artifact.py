"""A kafka wave assigns a model version together with its ONNX file (plain fakes, no Kafka)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.helpers.keys import OPERATOR, TRUSTED

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.contract.messages import BASELINE_VERSION, parse_assignment
from edgeloop.fleet import control, registry
from edgeloop.registry.artifacts import ArtifactMissing
from edgeloop.rollout.job import RolloutJobError, assignment_id_for, run_kafka_wave
from edgeloop.spec import PipelineSpec, load_spec

SPEC = load_spec(Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml")
REF = ArtifactRef("https://s3.example/edgeloop/models/sha256/" + "a" * 64 + ".onnx?sig=1", "a" * 64, 1234)


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Signed control messages the wave publishes; no device answers."""
    sent: list[bytes] = []

    def publish(spec: PipelineSpec, kafka_config: Any, signer: Any, assignment: Any) -> None:
        sent.append(assignment.to_wire(signer))

    monkeypatch.setattr(control, "publish_assignment", publish)
    monkeypatch.setattr(
        control.FleetView, "refresh", lambda *a, **k: (registry.DeviceRegistry(), control.DeviceStates())
    )
    monkeypatch.setattr(control.FleetView, "mark_error_reports", lambda *a, **k: None)
    monkeypatch.setattr(control.FleetView, "new_error_reports", lambda *a, **k: [])
    return sent


def wave(version: str, artifacts: Any) -> dict[str, Any]:
    ident = assignment_id_for("ro-1", "plant-north", version)
    return run_kafka_wave(SPEC, {}, OPERATOR, "plant-north", version, ident, timeout_s=0, artifacts=artifacts)


def test_a_model_version_is_assigned_with_its_onnx_file(published: list[bytes]) -> None:
    asked: list[str] = []

    result = wave("3", lambda version: asked.append(version) or REF)

    assert asked == ["3"]
    assignment = parse_assignment(published[0], TRUSTED, [g.name for g in SPEC.groups])
    assert assignment.artifact == REF and assignment.model_version == "3"
    assert assignment.id == "ro-1.plant-north.v3"
    assert result["assignment"]["artifact"] == REF.to_dict()


def test_the_on_device_baseline_needs_no_file(published: list[bytes]) -> None:
    def no_lookup(version: str) -> ArtifactRef:
        raise AssertionError("the baseline has no artifact to look up")

    wave(BASELINE_VERSION, no_lookup)

    assert parse_assignment(published[0], TRUSTED, [g.name for g in SPEC.groups]).artifact is None


def test_a_version_without_an_onnx_file_fails_the_wave_with_the_reason(published: list[bytes]) -> None:
    def missing(version: str) -> ArtifactRef:
        raise ArtifactMissing(f"factory_maintenance version {version} has no ONNX file recorded")

    with pytest.raises(RolloutJobError, match=r"plant-north: model version 2 cannot be assigned: .* no ONNX file"):
        wave("2", missing)
    assert published == [], "nothing is assigned"
