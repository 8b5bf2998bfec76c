"""The seed training set: what the very first model learns from, before any annotation.

`make_seed_frame(spec)` is deterministic (same spec, same rows) and has the shape of a
curated dataset: the spec's device, group, timestamp and feature columns plus `label`.
Readings come from the sensor model the fleet simulator also uses (`edgeloop.training.sensors`): for the
demo spec physical class-conditional distributions (ISO 10816 vibration zones, warmer bearings
and louder machines when worn or faulty) with each group's site offsets; any other spec gets
Gaussian class centres over its features. The training stage takes the generator as an
argument, so other labelled data can replace it.

A camera pipeline's seed is frames (`make_seed_frames`): parts seen by each group's cameras
before any drift, generated as the simulator's cameras generate them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from edgeloop.spec import PipelineSpec

if TYPE_CHECKING:
    import pandas as pd

LABEL_COLUMN = "label"
SEED_VERSION = "seed"
SEED_START = datetime(2026, 1, 1, tzinfo=UTC)
SEED_SPAN_S = 24 * 3600
# A camera pipeline's seed frames per group. They are also the drift reference of every group until a
# retraining covers it: at 120 a clean one-minute window of four cameras showed 5-8 of 22 image columns
# over PSI 0.2 against the group's training rows (84), at 600 (420 training rows) 0-1 of 22.
SEED_FRAMES_PER_GROUP = 600

SeedSource = Callable[[PipelineSpec], "pd.DataFrame"]


def _spec_seed(spec: PipelineSpec, seed: int) -> int:
    text = f"{spec.name}|{'|'.join(spec.features)}|{'|'.join(spec.annotation.labels)}|{seed}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def make_seed_frame(spec: PipelineSpec, records: int = 12000, seed: int = 0) -> pd.DataFrame:
    """A deterministic labelled seed dataset for `spec` with `records` rows over all its groups."""
    import pandas as pd

    if records < 1:
        raise ValueError(f"records: {records} must be at least 1")
    from edgeloop.training.sensors import sensor_profile

    rng = np.random.default_rng(_spec_seed(spec, seed))
    profile = sensor_profile(spec)
    labels = list(profile.labels)
    classes = rng.choice(len(labels), size=records, p=profile.steady_state())
    # A few devices per group, each with its own calibration bias and its group's site offset,
    # drawn from the same sensor profile the fleet simulator uses (so clean groups do not drift).
    devices = [(g.name, f"{g.name}-seed-{i:02d}") for g in spec.groups for i in range(max(1, min(g.devices, 40)))]
    device_index = rng.integers(0, len(devices), size=records)
    bias = profile.device_bias(len(devices), rng)
    offsets = np.stack([profile.group_offsets[devices[i][0]] for i in device_index])
    readings = profile.sample(classes, bias[device_index], offsets, rng)
    offsets = np.sort(rng.uniform(0, SEED_SPAN_S, size=records))
    stamps = pd.to_datetime(SEED_START) + pd.to_timedelta(np.round(offsets * 1e6), unit="us")

    kinds = {f.name: f.type for f in spec.schema_}
    columns: dict[str, object] = {}
    record_field = spec.field_with_role("record_id")
    if record_field:
        columns[record_field] = [f"{spec.name}-seed-{i:07d}" for i in range(records)]
    columns[str(spec.field_with_role("device_id"))] = [devices[i][1] for i in device_index]
    columns[str(spec.field_with_role("group_id"))] = [devices[i][0] for i in device_index]
    columns[str(spec.field_with_role("timestamp"))] = stamps
    for index, name in enumerate(spec.features):
        values = readings[:, index]
        columns[name] = np.round(values).astype("int64") if kinds[name] == "int" else np.round(values, 4)
    columns[LABEL_COLUMN] = [labels[c] for c in classes]
    return pd.DataFrame(columns)


@dataclass(frozen=True)
class SeedFrames:
    """The seed set of a camera pipeline: frames (uint8 N x H x W), their true labels, devices and groups."""

    pixels: np.ndarray
    labels: list[str]
    devices: list[str]
    groups: list[str]


def make_seed_frames(spec: PipelineSpec, per_group: int = SEED_FRAMES_PER_GROUP, seed: int = 0) -> SeedFrames:
    """Deterministic labelled frames of every group's cameras before any drift, `per_group` frames per group.

    The frames come from the simulator's own cameras (`edgeloop.vision.frames` under each group's
    `group_conditions`), from a few seed devices per group, so a model fitted on them knows each
    group's camera as it is until a drift changes it.
    """
    from edgeloop.vision.frames import group_conditions, make_frames

    if per_group < 1:
        raise ValueError(f"per_group: {per_group} must be at least 1")
    pixels: list[np.ndarray] = []
    labels: list[str] = []
    devices: list[str] = []
    groups: list[str] = []
    for group in spec.groups:
        cameras = max(1, min(group.devices, 4))
        conditions = group_conditions(group.name)
        for camera in range(cameras):
            count = per_group // cameras + (1 if camera < per_group % cameras else 0)
            device = f"{group.name}-seed-{camera:02d}"
            batch, batch_labels = make_frames(device, seed * per_group, count, conditions)
            pixels.append(batch)
            labels += batch_labels
            devices += [device] * count
            groups += [group.name] * count
    return SeedFrames(np.concatenate(pixels), labels, devices, groups)
