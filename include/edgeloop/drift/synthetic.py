"""Synthetic fleet telemetry with controllable drift, for tests, benchmarks and demos.

Each group has its own operating point (feature means differ by group, as machines in
different plants do); a drift is a sensor offset (in units of the feature's spread)
and/or gain applied to chosen columns of one group.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from edgeloop.spec import PipelineSpec

LABELS = ("normal", "wear", "fault")


@dataclass(frozen=True)
class SensorDrift:
    """x -> x * gain + offset * spread (the column's spread in its group)."""

    offset: float = 0.0
    gain: float = 1.0


def synthetic_spec(
    features: Sequence[str],
    groups: Sequence[str],
    *,
    name: str = "synthetic_fleet",
    bucket: str = "edgeloop",
    storage_prefix: str = "",
    drift: Mapping[str, Any] | None = None,
) -> PipelineSpec:
    """A valid pipeline spec for telemetry shaped like `make_telemetry` output."""
    schema = [
        {"name": "record_id", "type": "string", "role": "record_id"},
        {"name": "device_id", "type": "string", "role": "device_id"},
        {"name": "group_id", "type": "string", "role": "group_id"},
        {"name": "ts", "type": "timestamp", "role": "timestamp"},
        *({"name": f, "type": "float"} for f in features),
        {"name": "prediction", "type": "string", "role": "prediction"},
        {"name": "confidence", "type": "float", "role": "confidence"},
        {"name": "model_version", "type": "string", "role": "model_version"},
        {"name": "config_version", "type": "string", "role": "config_version", "nullable": True},
        {"name": "firmware_version", "type": "string", "role": "meta", "nullable": True},
    ]
    return PipelineSpec.model_validate(
        {
            "name": name,
            "topics": {"ingest": ["telemetry"]},
            "schema": schema,
            "storage": {"bucket": bucket, "prefix": storage_prefix},
            "drift": dict(drift or {}),
            "annotation": {"labels": list(LABELS)},
            "registry": {"model_name": name},
            "groups": [{"name": g} for g in groups],
        }
    )


def make_telemetry(
    features: Sequence[str],
    groups: Mapping[str, int],
    *,
    seed: int,
    start: datetime | None = None,
    duration: timedelta = timedelta(minutes=50),
    drift: Mapping[str, Mapping[str, SensorDrift]] | None = None,
    model_versions: Sequence[str] = ("7",),
    devices_per_group: int = 20,
    dtype: str = "float32",
) -> pd.DataFrame:
    """Rows per group as given; `drift[group][column]` distorts one group's columns."""
    rng = np.random.default_rng(seed)
    start = start or datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    frames = []
    for group, rows in groups.items():
        # a group's operating point belongs to the group, not to the sample: seeded by its name only
        layout = np.random.default_rng(zlib.crc32(group.encode("utf-8")))
        means = layout.normal(0.0, 2.0, size=len(features))
        spreads = layout.uniform(0.5, 3.0, size=len(features))
        data: dict[str, Any] = {}
        for j, column in enumerate(features):
            values = rng.normal(means[j], spreads[j], size=rows)
            change = (drift or {}).get(group, {}).get(column)
            if change is not None:
                values = values * change.gain + change.offset * spreads[j]
            data[column] = values.astype(dtype)
        frame = pd.DataFrame(data)
        # a linear "model": scores from standardized features, softmax confidence
        z = np.column_stack([(frame[c].to_numpy() - means[j]) / spreads[j] for j, c in enumerate(features)])
        weights = layout.normal(size=(len(features), len(LABELS)))
        logits = z @ weights / np.sqrt(len(features)) * 2.0
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        frame["prediction"] = pd.Categorical.from_codes(probs.argmax(axis=1), categories=list(LABELS))
        frame["confidence"] = probs.max(axis=1).astype("float32")
        frame["group_id"] = group
        frame["device_id"] = [f"{group}-dev{d:03d}" for d in rng.integers(0, devices_per_group, size=rows)]
        frame["model_version"] = rng.choice(list(model_versions), size=rows)
        frame["config_version"] = f"cfg-{group}-1"
        frame["firmware_version"] = "fw-2.4.1"
        offsets = np.sort(rng.uniform(0, duration.total_seconds(), size=rows))
        frame["ts"] = pd.Timestamp(start) + pd.to_timedelta(offsets, unit="s")
        frame["record_id"] = [f"{group}-{seed}-{i}" for i in range(rows)]
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    for column in ("group_id", "device_id", "model_version", "config_version", "firmware_version"):
        out[column] = out[column].astype("category")
    return out
