"""Simulated cameras: the image source around real device cores, for camera pipelines (`visual_inspection`).

A camera device is the agent's `DeviceCore` with an image source instead of sensor
readings. The harness simulates only the camera: what each one sees (`edgeloop.vision.frames`:
a part on the line under its group's `CameraConditions`, deterministic per device and frame
index) and a drift of a group's camera (`CameraRig.inject`; the fleet simulator's drift
injections name the change, e.g. `hall-east:lighting@120s`). The device does the rest, as an
agent would: the serving ONNX model scores the frame's pixels and gives its features
(`OnnxModel.predict_with_features`, one batched run per loaded model), and `DeviceCore.observe_frame`
makes the frame's bounded message (`<prefix>.frames`) and the telemetry record that
references it by content address.

A camera without a model sends nothing (its record's features come from the model) and is
counted as idle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeloop.edge.device import DeviceCore, Outgoing
from edgeloop.spec import PipelineSpec
from edgeloop.training.sensors import DriftInjection
from edgeloop.vision.frames import (
    DEFAULT_SIZE,
    DRIFTS,
    CameraConditions,
    encode_png,
    group_conditions,
    inject_drift,
    make_frame,
)


@dataclass
class CameraRig:
    """What the cameras of each group see: their conditions, and each device's next frame index."""

    conditions: dict[str, CameraConditions]
    size: int = DEFAULT_SIZE
    next_index: dict[str, int] = field(default_factory=dict)

    def inject(self, group: str, kind: str) -> None:
        """A drift of one group's cameras (`edgeloop.vision.frames.DRIFTS`: lighting, focus, lens_dirt)."""
        if group not in self.conditions:
            raise ValueError(f"group {group!r} has no cameras (groups: {sorted(self.conditions)})")
        self.conditions[group] = inject_drift(self.conditions[group], kind)

    def capture(self, device: str, group: str) -> tuple[np.ndarray, str]:
        """The device's next frame: its pixels (uint8 H x W) and the true label of the part."""
        index = self.next_index.get(device, 0)
        self.next_index[device] = index + 1
        frame = make_frame(device, index, self.conditions[group], size=self.size)
        return frame.pixels, frame.label


def is_camera_pipeline(spec: PipelineSpec) -> bool:
    """Whether the spec's devices are cameras: its records reference a frame (a field of role `image_ref`)."""
    return spec.field_with_role("image_ref") is not None


def check_camera_drift(spec: PipelineSpec, drift: Sequence[DriftInjection]) -> None:
    """Raise ValueError naming a camera drift whose group is not in the spec or whose change is not a camera's.

    A camera pipeline's drift injection names a camera change (`DRIFTS`: lighting, focus,
    lens_dirt) where a sensor pipeline's names a feature; it has no gain or offset.
    """
    groups = {g.name for g in spec.groups}
    for index, item in enumerate(drift):
        if item.group not in groups:
            raise ValueError(f"drift[{index}].group: {item.group!r} is not a group of {spec.name}")
        if item.feature not in DRIFTS:
            raise ValueError(
                f"drift[{index}]: {item.feature!r} is not a camera drift of {spec.name} (one of {', '.join(DRIFTS)})"
            )
        if item.gain != 1.0 or item.offset != 0.0:
            raise ValueError(f"drift[{index}]: a camera drift ({item.feature}) takes no gain or offset")


def camera_rig(spec: PipelineSpec, size: int = DEFAULT_SIZE) -> CameraRig:
    """The cameras of a spec's groups before any drift (`group_conditions` of each group)."""
    return CameraRig({g.name: group_conditions(g.name) for g in spec.groups}, size)


@dataclass
class CameraStep:
    """One round of frames: each device's messages (by index into the cores), true labels, idle cameras."""

    messages: list[tuple[int, Outgoing]] = field(default_factory=list)
    truth: list[tuple[str, str]] = field(default_factory=list)
    idle: int = 0
    inference_errors: int = 0


def camera_step(cores: Sequence[DeviceCore], rig: CameraRig, now: float) -> CameraStep:
    """One frame per camera: capture, score the frames of each serving model in one run, let each core report."""
    from edgeloop.vision.model import pixel_rows

    step = CameraStep()
    by_model: dict[int, list[int]] = {}
    for i, core in enumerate(cores):
        if core.model is None:
            step.idle += 1
        else:
            by_model.setdefault(id(core.model), []).append(i)
    for devices in by_model.values():
        model: Any = cores[devices[0]].model
        captured = [rig.capture(cores[i].device_id, cores[i].group_id) for i in devices]
        pixels = np.stack([p for p, _ in captured])
        try:
            proba, features = model.predict_with_features(pixel_rows(pixels))
        except Exception as exc:  # a model that raises is each device's inference error, never a crash
            for i in devices:
                step.messages.append((i, cores[i].inference_failed(str(exc)[:300], now)))
            step.inference_errors += len(devices)
            continue
        columns = list(model.image_columns)
        for row, i in enumerate(devices):
            core = cores[i]
            values = dict(zip(columns, features[row].tolist(), strict=True))
            out = core.observe_frame(encode_png(pixels[row]), values, proba[row], now)
            step.messages.extend((i, message) for message in out)
            if out:
                step.truth.append((str(core.last_record_id), captured[row][1]))
    return step
