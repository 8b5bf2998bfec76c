"""Camera devices: a device core with an image source scores each frame with its ONNX model and sends the frame
(a bounded message on `frames`) and a telemetry record that references it by content address, with the frame's
features as the spec's drift columns; a drift injection changes what the cameras of one group see."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from tests.helpers.camera_models import camera_cores, camera_model, camera_model_bytes, vision_spec
from tests.helpers.keys import TRUSTED

from edgeloop.contract.frame import MAX_FRAME_MESSAGE_BYTES, decode_frame_message, frame_key
from edgeloop.edge.config import ConfigError, parse_config
from edgeloop.edge.device import DeviceCore
from edgeloop.edge.runtime import ModelRefused
from edgeloop.fleet.agents import agent_config
from edgeloop.ingest.decode import decode_records, record_schema
from edgeloop.simulator.cameras import CameraRig, camera_rig, camera_step
from edgeloop.spec import PipelineSpec
from edgeloop.vision.features import Embedding, feature_matrix
from edgeloop.vision.frames import decode_png
from edgeloop.vision.model import image_metadata

NOW = 1_767_225_600.0


def test_each_camera_sends_its_frame_and_a_record_that_references_it() -> None:
    spec = vision_spec()
    cores = camera_cores(spec, 2, TRUSTED, camera_model(), NOW)
    step = camera_step(cores, camera_rig(spec), NOW)

    kinds = [(i, m.kind) for i, m in step.messages]
    assert kinds == [(i, kind) for i in range(len(cores)) for kind in ("frames", "telemetry")]
    assert step.idle == 0 and len(step.truth) == len(cores)
    for (_, frame), (_, record_message) in zip(step.messages[::2], step.messages[1::2], strict=True):
        assert len(frame.value) <= MAX_FRAME_MESSAGE_BYTES and frame.key == record_message.key
        header, png = decode_frame_message(frame.value)
        record = json.loads(record_message.value)
        assert header.record_id == record["record_id"] and header.group_id == record["group_id"]
        assert record["frame_sha256"] == hashlib.sha256(png).hexdigest() == header.sha256
        assert record["frame_bytes"] == len(png)
        assert record["frame_key"] == frame_key(spec.name, header.sha256)
        assert record["prediction"] in spec.annotation.labels and 0 < record["confidence"] <= 1


def test_the_records_features_are_the_frames_statistics_and_embedding() -> None:
    spec = vision_spec()
    model = camera_model()
    cores = camera_cores(spec, 1, TRUSTED, model, NOW)
    step = camera_step(cores, camera_rig(spec), NOW)
    embedding = Embedding.from_dict(image_metadata(camera_model_bytes())["embedding"])
    for (_, frame), (_, record_message) in zip(step.messages[::2], step.messages[1::2], strict=True):
        pixels = decode_png(decode_frame_message(frame.value)[1])
        expected, columns = feature_matrix(pixels, embedding)
        record = json.loads(record_message.value)
        by_name = dict(zip(columns, expected[0].tolist(), strict=True))
        for name in spec.features:
            assert record[name] == pytest.approx(by_name[name], abs=2e-3), name


def test_ingest_accepts_every_camera_record() -> None:
    spec = vision_spec()
    step = camera_step(camera_cores(spec, 2, TRUSTED, camera_model(), NOW), camera_rig(spec), NOW)
    values = [m.value for _, m in step.messages if m.kind == "telemetry"]
    decoded = decode_records(values, record_schema(spec), [int(NOW * 1000)] * len(values))
    assert decoded.bad == [] and decoded.table.num_rows == len(values)


def test_a_lighting_drift_flattens_only_the_drifted_groups_frames() -> None:
    spec = vision_spec()
    cores = camera_cores(spec, 3, TRUSTED, camera_model(), NOW)
    clean, drifted_rig = camera_rig(spec), camera_rig(spec)
    drifted_rig.inject("hall-east", "lighting")

    def contrast(rig: CameraRig) -> dict[str, float]:
        records = [json.loads(m.value) for _, m in camera_step(cores, rig, NOW).messages if m.kind == "telemetry"]
        return {g: float(np.mean([r["contrast"] for r in records if r["group_id"] == g])) for g in rig.conditions}

    before, after = contrast(clean), contrast(drifted_rig)  # a failing lamp: dimmer parts, more stray light
    assert after["hall-east"] < 0.7 * before["hall-east"]
    assert after["hall-west"] == pytest.approx(before["hall-west"])
    with pytest.raises(ValueError, match="no cameras"):
        drifted_rig.inject("nowhere", "focus")


def test_a_camera_without_a_model_is_idle_and_a_tabular_model_is_no_image_model() -> None:
    spec = vision_spec()
    cores = camera_cores(spec, 1, TRUSTED, None, NOW)
    step = camera_step(cores, camera_rig(spec), NOW)
    assert step.messages == [] and step.idle == len(cores)
    model = camera_model()
    assert model.image_columns == image_metadata(camera_model_bytes())["columns"]
    model.image_columns = []
    with pytest.raises(ModelRefused, match="not an image model"):
        model.predict_with_features(np.zeros((1, 4096), dtype=np.float32))


def test_a_camera_agent_config_carries_the_storage_prefix_of_its_frame_keys(tmp_path: Path) -> None:
    spec = vision_spec()
    data = spec.model_dump(by_alias=True)
    data["storage"]["prefix"] = "site-7/lake"
    prefixed = PipelineSpec.model_validate(data)
    raw = agent_config(prefixed, "hall-east", "hall-east-cam-001", {"bootstrap.servers": "127.0.0.1:1"}, tmp_path)
    core = DeviceCore.for_config(parse_config(raw), TRUSTED, clock=lambda: NOW)
    core.model = camera_model()
    (_, frame), (_, record) = camera_step([core], camera_rig(prefixed), NOW).messages
    header, _ = decode_frame_message(frame.value)
    expected = frame_key(spec.name, header.sha256, storage_prefix="site-7/lake")
    assert json.loads(record.value)["frame_key"] == expected
    assert expected.startswith(prefixed.storage_prefix("frames") + "/")
    tabular = agent_config(spec, "hall-east", "cam", {"bootstrap.servers": "127.0.0.1:1"}, tmp_path)
    assert "frame_prefix" not in tabular  # no storage prefix: nothing to carry
    with pytest.raises(ConfigError, match="frame_prefix"):
        parse_config({**raw, "frame_prefix": "/not relative"})
