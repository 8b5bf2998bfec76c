"""Recorded telemetry replayed through real device profilers: what each device would have sent in profiles mode.

For benchmarks and tests that compare raw mode with profiles mode on the same records:
each device's rows go, in time order, through the device's own `WindowProfiler` and
`RecordSampler` (the agent's code), windows closing every `window_s` seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from edgeloop.contract.profile import DeviceProfile
from edgeloop.edge.profile import RecordSampler, WindowProfiler


def replay_profiles(
    frame: pd.DataFrame,
    features: Sequence[str],
    *,
    pipeline: str,
    window_s: float = 60.0,
    k: int = 64,
    sampler: RecordSampler | None = None,
) -> tuple[list[DeviceProfile], int]:
    """The profiles the devices of `frame` (columns: device_id, group_id, ts, model_version, prediction,
    confidence and `features`) would send, and how many records the sampler would have sent raw."""
    profiles: list[DeviceProfile] = []
    sent = 0
    frame = frame.sort_values("ts", kind="stable")
    stamps = frame["ts"].to_numpy(dtype="datetime64[ms]").astype(np.int64) / 1000.0
    values = frame[list(features)].to_numpy(np.float64)
    for device, rows in frame.groupby("device_id", observed=True, sort=True).indices.items():
        group = str(frame["group_id"].iloc[rows[0]])
        first = float(stamps[rows[0]])
        profiler = WindowProfiler(features, window_s=window_s, k=k, start=first - first % window_s)
        predictions = frame["prediction"].iloc[rows].astype(str).tolist()
        confidences = frame["confidence"].iloc[rows].to_numpy(np.float64).tolist()
        versions = frame["model_version"].iloc[rows].astype(str).tolist()
        for j, i in enumerate(rows):
            now = float(stamps[i])
            if profiler.due(now):
                profiles += profiler.close(
                    profiler.window_start + window_s, device_id=str(device), group_id=group, pipeline=pipeline
                )
                profiler.window_start = now - now % window_s
            chosen = sampler.reason(confidences[j]) if sampler is not None else None
            sent += chosen is not None
            profiler.add(values[i], predictions[j], confidences[j], versions[j], sent=chosen is not None)
        profiles += profiler.close(
            profiler.window_start + window_s, device_id=str(device), group_id=group, pipeline=pipeline
        )
    return profiles, sent
