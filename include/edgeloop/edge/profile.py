"""Profiles and chosen samples on the device (`telemetry.mode: profiles`).

`WindowProfiler` summarises every reading of a window per model version: for each feature
and the confidence a KLL quantile sketch with count, missing, min, max, mean and variance,
for the prediction a frequent-items sketch (Apache DataSketches: mergeable, so the cloud
adds windows and devices up without seeing a record). `RecordSampler` decides which raw
records still go out and says why: every record under the low-confidence threshold, a
higher share while the device's own window drifts from the reference profile in its model
(`local_drift_score`), and a small uniform share otherwise.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasketches as ds

from edgeloop.contract.profile import ColumnProfile, DeviceProfile

CONFIDENCE = "confidence"
PREDICTION = "prediction"
LOCAL_DRIFT_BINS = 10


class _Numeric:
    """Count, missing, min, max, Welford mean/variance and a KLL sketch of one numeric column."""

    __slots__ = ("count", "m2", "max", "mean", "min", "missing", "sketch")

    def __init__(self, k: int) -> None:
        self.sketch = ds.kll_floats_sketch(k)
        self.count = self.missing = 0
        self.min, self.max, self.mean, self.m2 = math.inf, -math.inf, 0.0, 0.0

    def add(self, value: float | None) -> None:
        if value is None or not math.isfinite(value):
            self.missing += 1
            return
        self.sketch.update(value)
        self.count += 1
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)

    def profile(self, name: str) -> ColumnProfile:
        if not self.count:
            return ColumnProfile(name, "numeric", 0, self.missing)
        return ColumnProfile(
            name, "numeric", self.count, self.missing, self.min, self.max, self.mean, self.m2 / self.count,
            self.sketch.serialize(),
        )  # fmt: skip


class _Categorical:
    __slots__ = ("count", "missing", "sketch")

    def __init__(self, lg_max_k: int = 4) -> None:
        self.sketch = ds.frequent_strings_sketch(lg_max_k)
        self.count = self.missing = 0

    def add(self, value: str | None) -> None:
        if value is None:
            self.missing += 1
            return
        self.sketch.update(value)
        self.count += 1

    def profile(self, name: str) -> ColumnProfile:
        return ColumnProfile(name, "categorical", self.count, self.missing, sketch=self.sketch.serialize())


@dataclass
class _Window:
    numeric: dict[str, _Numeric]
    prediction: _Categorical = field(default_factory=_Categorical)
    records: int = 0
    sent: int = 0


class WindowProfiler:
    """The profiles of one device's readings, one per model version per window of `window_s` seconds."""

    def __init__(self, features: Sequence[str], *, window_s: float, k: int, start: float) -> None:
        self.features = list(features)
        self.window_s = window_s
        self.k = k
        self.window_start = start
        self._windows: dict[str | None, _Window] = {}

    def add(
        self,
        reading: Sequence[float],
        prediction: str | None,
        confidence: float | None,
        model_version: str | None,
        *,
        sent: bool,
    ) -> None:
        window = self._windows.get(model_version)
        if window is None:
            columns = [*self.features, CONFIDENCE]
            window = self._windows[model_version] = _Window({c: _Numeric(self.k) for c in columns})
        for name, value in zip(self.features, reading, strict=True):
            window.numeric[name].add(float(value))
        window.numeric[CONFIDENCE].add(confidence)
        window.prediction.add(prediction)
        window.records += 1
        window.sent += int(sent)

    def due(self, now: float) -> bool:
        return now >= self.window_start + self.window_s

    def current_sketch(self, model_version: str | None, column: str) -> Any:
        window = self._windows.get(model_version)
        return None if window is None else window.numeric[column].sketch

    def close(self, now: float, *, device_id: str, group_id: str, pipeline: str) -> list[DeviceProfile]:
        """The window's profiles (none if it saw no reading); the next window starts at `now`."""
        start_ms, end_ms = int(self.window_start * 1000), int(now * 1000)
        profiles = [
            DeviceProfile(
                device_id=device_id,
                group_id=group_id,
                pipeline=pipeline,
                model_version=version,
                window_start_ms=start_ms,
                window_end_ms=end_ms,
                records=window.records,
                sent=window.sent,
                columns=(
                    *(acc.profile(name) for name, acc in window.numeric.items()),
                    window.prediction.profile(PREDICTION),
                ),
            )
            for version, window in self._windows.items()
        ]
        self._windows = {}
        self.window_start = now
        return profiles


class RecordSampler:
    """Which raw records a device in profiles mode sends, and why (None: not sent)."""

    def __init__(
        self, *, rate: float, low_confidence: float, drift_rate: float, seed: str, rng: random.Random | None = None
    ) -> None:
        self.rate = rate
        self.low_confidence = low_confidence
        self.drift_rate = drift_rate
        self.drifting = False  # set per window from local_drift_score
        self.rng = rng or random.Random(seed)  # sampling, not security

    def reason(self, confidence: float | None) -> str | None:
        if confidence is not None and confidence < self.low_confidence:
            return "low_confidence"
        draw = self.rng.random()
        if self.drifting and draw < self.drift_rate:
            return "local_drift"
        return "uniform" if draw < self.rate else None


def local_drift_score(reference: Mapping[str, Any], window: Mapping[str, Any], bins: int = LOCAL_DRIFT_BINS) -> float:
    """The largest PSI over the columns both sides have: the window's KLL sketch against the reference's,
    on the reference's equal-share bins, less what chance alone gives a window of its size.

    A window of n values drawn from the reference itself scores a PSI of about (bins - 1) / n on
    average (PSI is close to a chi-square statistic over n), so a minute of 60 readings would look
    drifted at the usual 0.2; that part is taken off.
    """
    worst = 0.0
    for name, ref in reference.items():
        current = window.get(name)
        if current is None or current.is_empty() or ref.is_empty():
            continue
        edges = sorted(set(ref.get_quantiles([i / bins for i in range(1, bins)])))
        if not edges:
            continue
        ref_cdf = [0.0, *ref.get_cdf(edges)]
        cur_cdf = [0.0, *current.get_cdf(edges)]
        score = 0.0
        for i in range(len(ref_cdf) - 1):
            expected = max(ref_cdf[i + 1] - ref_cdf[i], 1e-4)
            actual = max(cur_cdf[i + 1] - cur_cdf[i], 1e-4)
            score += (actual - expected) * math.log(actual / expected)
        worst = max(worst, score - (len(edges)) / current.n)
    return worst
