"""The camera pipeline for tests: the shipped `visual_inspection` spec, a small ONNX camera model, camera cores."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from edgeloop.contract.keys import Keyring
from edgeloop.edge.config import SchemaField
from edgeloop.edge.device import DeviceCore
from edgeloop.edge.runtime import OnnxModel, load_model
from edgeloop.spec import PipelineSpec, load_spec

VISION_SPEC = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "visual_inspection.yaml"


@cache
def vision_spec() -> PipelineSpec:
    return load_spec(VISION_SPEC)


@cache
def camera_model_bytes() -> bytes:
    """An image classifier trained on frames of every group's cameras, as the ONNX file a camera loads."""
    from edgeloop.vision import frames as F
    from edgeloop.vision import model as M

    parts = [F.make_frames(f"train-{g.name}", 0, 120, F.group_conditions(g.name)) for g in vision_spec().groups]
    pixels = np.concatenate([p for p, _ in parts])
    labels = [label for _, group_labels in parts for label in group_labels]
    classifier = M.train_image_classifier(pixels, labels)
    return M.export_image_onnx(classifier, pixels[::6]).data


def camera_model(version: str = "1") -> OnnxModel:
    """The camera model loaded as a device loads it (inputs: the frame's pixels)."""
    from edgeloop.vision.model import pixel_features

    return load_model(camera_model_bytes(), version, pixel_features((64, 64)))


def camera_cores(
    spec: PipelineSpec, per_group: int, trusted: Keyring, model: OnnxModel | None, now: float
) -> list[DeviceCore]:
    """`per_group` camera device cores in each group of `spec`, serving `model`, their clocks stopped at `now`."""
    groups = [g.name for g in spec.groups]
    schema = [SchemaField(f.name, f.role) for f in spec.schema_]
    cores = []
    for group in groups:
        for index in range(per_group):
            core = DeviceCore(f"{group}-cam-{index:03d}", group, spec.name, groups, schema, trusted, clock=lambda: now)
            core.model = model
            core.frame_prefix = spec.storage.prefix  # frame keys under the pipeline's storage prefix
            cores.append(core)
    return cores
