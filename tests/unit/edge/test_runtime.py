"""A device loads only a model that onnxruntime can run, that fits its features and passes its self-test."""

from __future__ import annotations

import numpy as np
import pytest
from tests.helpers.edge_models import tampered_golden

from edgeloop.edge.runtime import ModelCache, ModelRefused, load_model
from edgeloop.simulator.models import BaselineRuleModel
from edgeloop.spec import PipelineSpec
from edgeloop.training.sensors import SensorProfile


def test_the_baseline_model_answers_like_the_rule_it_encodes(
    spec: PipelineSpec, profile: SensorProfile, baseline_model: bytes
) -> None:
    model = load_model(baseline_model, "0", spec.features)
    rng = np.random.default_rng(1)
    rows = profile.sample(profile.initial_states(500, rng), profile.device_bias(500, rng), np.zeros((500, 6)), rng)
    expected = BaselineRuleModel(profile).predict_proba(rows)
    assert np.abs(model.predict_proba(rows) - expected).max() < 1e-5
    assert model.labels == list(spec.annotation.labels)


def test_bytes_onnxruntime_cannot_load_are_refused_with_the_reason(spec: PipelineSpec) -> None:
    with pytest.raises(ModelRefused, match="onnxruntime cannot load"):
        load_model(b"\x08\x07 certainly not a model", "5", spec.features)


def test_a_model_for_other_features_is_refused(spec: PipelineSpec, baseline_model: bytes) -> None:
    with pytest.raises(ModelRefused, match="differ from the device's"):
        load_model(baseline_model, "5", list(reversed(spec.features)))


def test_a_model_failing_its_golden_batch_is_refused(spec: PipelineSpec, baseline_model: bytes) -> None:
    with pytest.raises(ModelRefused, match="self-test failed"):
        load_model(tampered_golden(baseline_model), "5", spec.features)


def test_a_model_without_the_contract_metadata_is_refused(spec: PipelineSpec, baseline_model: bytes) -> None:
    import onnx

    bare = onnx.load_from_string(baseline_model)
    del bare.metadata_props[:]
    with pytest.raises(ModelRefused, match="metadata"):
        load_model(bare.SerializeToString(), "5", spec.features)


def test_devices_share_one_session_per_artifact(spec: PipelineSpec, baseline_model: bytes) -> None:
    cache = ModelCache()
    first = cache.load(baseline_model, "0", spec.features)
    assert cache.load(baseline_model, "0", spec.features) is first
    assert len(cache) == 1
