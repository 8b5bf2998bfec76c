"""Drift from device profiles (`telemetry.mode: profiles`): merge the sketches per scope, check as in raw mode.

The window's profiles (`raw/<pipeline>/<prefix>.profiles/...`, one row per device and window,
see `edgeloop.ingest.profiles`) are merged per scope: the fleet, each edge group and each model
version, over every device and window inside the drift window (into sketches of MERGE_K). Each scope's
merged KLL sketches
give a quantile sample of the scope's size capped at `drift.sample_per_group` (the value at
rank (i + 0.5) / n for i < n), and its frequent-items sketch the prediction's shares; these
samples go through the same check (`drift.detect.check_drift`) with the same statistic and
thresholds as raw records do. Counts (rows, confidence mean, devices, groups) are exact, from
the profiles' counts and moments. Only profiles signed by their device were landed by ingest.
The Evidently reports of the checked scopes are built from the records the devices sampled
(`report_from_sampled_records`), and say so: a person reads real records, not a sketch.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from edgeloop.contract.profile import BadProfile, DeviceProfile, decode_profile, load_sketch
from edgeloop.drift.columns import DriftColumns, drift_columns
from edgeloop.drift.sample import FLEET, StratifiedSample, Stratum, StratumStats
from edgeloop.drift.window import (
    CorruptObject,
    CorruptParquetError,
    S3Client,
    WindowBounds,
    WindowSample,
    fetch_objects,
    iter_window_objects,
    parse_parquet,
    read_window,
    window_bounds,
)
from edgeloop.ingest.keys import raw_prefix
from edgeloop.spec import PipelineSpec

PREDICTION = "prediction"
CONFIDENCE = "confidence"
# Scopes merge into sketches this fine: a device's window sketch holding fewer values than its own k is
# exact, so a scope's accuracy is this k's, not the devices' (KLL's rank error falls with k).
MERGE_K = 1000


@dataclass
class MergedScope:
    """The merged sketches and exact counts of one scope."""

    records: int = 0
    numeric: dict[str, Any] = field(default_factory=dict)  # column -> merged kll_floats_sketch
    predictions: Counter[str] = field(default_factory=Counter)
    confidence_sum: float = 0.0
    confidence_count: int = 0
    devices: set[str] = field(default_factory=set)
    groups: Counter[str] = field(default_factory=Counter)
    missing: Counter[str] = field(default_factory=Counter)

    def add(self, profile: DeviceProfile) -> None:
        self.records += profile.records
        self.devices.add(profile.device_id)
        self.groups[profile.group_id] += profile.records
        for column in profile.columns:
            if column.missing:
                self.missing[column.name] += column.missing
            if not column.count or not column.sketch:
                continue
            if column.kind == "categorical":
                sketch = load_sketch(column)
                for item, estimate, _, _ in sketch.get_frequent_items(_no_false_negatives()):
                    self.predictions[item] += int(estimate)
                continue
            self._merge_numeric(column.name, load_sketch(column))
            if column.name == CONFIDENCE:
                self.confidence_sum += column.mean * column.count
                self.confidence_count += column.count

    def absorb(self, other: MergedScope) -> None:
        """Add another scope's merged profile to this one."""
        self.records += other.records
        self.devices |= other.devices
        self.groups.update(other.groups)
        self.missing.update(other.missing)
        self.predictions.update(other.predictions)
        self.confidence_sum += other.confidence_sum
        self.confidence_count += other.confidence_count
        for name, sketch in other.numeric.items():
            self._merge_numeric(name, sketch)

    def _merge_numeric(self, name: str, sketch: Any) -> None:
        merged = self.numeric.get(name)
        if merged is None:
            merged = self.numeric[name] = _kll(MERGE_K)
        merged.merge(sketch)


def _kll(k: int) -> Any:
    import datasketches as ds

    return ds.kll_floats_sketch(k)


def _no_false_negatives() -> Any:
    import datasketches as ds

    return ds.frequent_items_error_type.NO_FALSE_NEGATIVES


@dataclass
class ProfileWindow:
    """The profiles of one drift window, merged per scope, and what could not be read."""

    bounds: WindowBounds
    scopes: dict[Stratum, MergedScope]
    profiles: int = 0
    objects: list[str] = field(default_factory=list)
    corrupt: list[CorruptObject] = field(default_factory=list)
    bad_profiles: list[str] = field(default_factory=list)


def scopes_of(profile: DeviceProfile, per_group: bool) -> Iterator[Stratum]:
    yield FLEET
    if per_group:
        yield Stratum("group", profile.group_id)
    if profile.model_version is not None:
        yield Stratum("model_version", profile.model_version)


def merge_profiles(profiles: Iterable[DeviceProfile], *, per_group: bool = True) -> dict[Stratum, MergedScope]:
    """Each scope's merged profile: every profile is read once into its (group, model version) cell,
    and the cells are rolled up into the fleet, the groups and the model versions."""
    cells: dict[tuple[str, str | None], tuple[DeviceProfile, MergedScope]] = {}
    for profile in profiles:
        key = (profile.group_id, profile.model_version)
        if key not in cells:
            cells[key] = (profile, MergedScope())
        cells[key][1].add(profile)
    scopes: dict[Stratum, MergedScope] = {}
    for first, cell in cells.values():
        for stratum in scopes_of(first, per_group):
            scopes.setdefault(stratum, MergedScope()).absorb(cell)
    return scopes


def read_profiles(
    s3: S3Client, bucket: str, spec: PipelineSpec, now: datetime, *, bounds: WindowBounds | None = None
) -> ProfileWindow:
    """The pipeline's profiles whose window ended inside the drift window, merged per scope."""
    bounds = bounds or window_bounds(spec, now)
    if bounds.start is None:
        raise ValueError("drift on profiles needs a time window (drift.window), not drift.window_records")
    start_ms, end_ms = int(bounds.start.timestamp() * 1000), int(bounds.end.timestamp() * 1000)
    result = ProfileWindow(bounds, {})
    prefix = raw_prefix(spec, spec.topic("profiles"))
    unexpected: list[str] = []
    listed = (o.key for o in iter_window_objects(s3, bucket, prefix, _widened(bounds, spec), unexpected))
    profiles: list[DeviceProfile] = []
    for key, body in fetch_objects(s3, bucket, listed):
        try:
            frame = parse_parquet(body, f"s3://{bucket}/{key}", ("window_end", "profile"), ("window_end", "profile"))
        except CorruptParquetError as exc:
            result.corrupt.append(CorruptObject(key, str(exc)))
            continue
        result.objects.append(key)
        ends = frame["window_end"].to_numpy(dtype="datetime64[ms]").astype("int64")
        for value in frame["profile"][(ends > start_ms) & (ends <= end_ms)]:
            try:
                profiles.append(decode_profile(value))
            except BadProfile as exc:
                result.bad_profiles.append(f"{key}: {exc}")
    result.profiles = len(profiles)
    result.scopes = merge_profiles(profiles, per_group=spec.drift.per_group)
    return result


def _widened(bounds: WindowBounds, spec: PipelineSpec) -> WindowBounds:
    """Profiles are placed by their window's start: list from one profile window before the drift window."""
    assert bounds.start is not None
    return WindowBounds(end=bounds.end, start=bounds.start - spec.telemetry.window)


def quantile_sample(sketch: Any, size: int) -> np.ndarray:
    """`size` values at evenly spaced ranks of the sketch: a sample with the sketch's distribution."""
    ranks = (np.arange(size, dtype=np.float64) + 0.5) / size
    return np.asarray(sketch.get_quantiles(ranks), dtype=np.float64)


def shares_sample(counts: Counter[str], size: int) -> list[str | None]:
    """`size` labels in the proportions of `counts` (largest remainders), sorted."""
    total = sum(counts.values())
    if not total:
        return [None] * size
    exact = {k: v * size / total for k, v in counts.items()}
    whole = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (whole[k] - exact[k], k))[: size - sum(whole.values())]:
        whole[k] += 1
    return [k for k in sorted(whole) for _ in range(whole[k])]


def profile_sample(window: ProfileWindow, spec: PipelineSpec, columns: DriftColumns | None = None) -> StratifiedSample:
    """The `StratifiedSample` the drift check reads, made from the merged profiles of each scope."""
    columns = columns or drift_columns(spec)
    cap = spec.drift.sample_per_group
    samples: dict[Stratum, pd.DataFrame] = {}
    stats: dict[Stratum, StratumStats] = {}
    for stratum, scope in sorted(window.scopes.items()):
        size = min(scope.records, cap)
        frame: dict[str, Any] = {}
        for name in columns.features:
            sketch = scope.numeric.get(name)
            frame[name] = quantile_sample(sketch, size) if sketch is not None else np.full(size, np.nan)
        if columns.confidence is not None and CONFIDENCE in scope.numeric:
            frame[columns.confidence] = quantile_sample(scope.numeric[CONFIDENCE], size)
        if columns.prediction is not None:
            frame[columns.prediction] = pd.Categorical(shares_sample(scope.predictions, size))
        if columns.group is not None:
            frame[columns.group] = pd.Categorical(shares_sample(scope.groups, size))
        if columns.model_version is not None and stratum.kind == "model_version":
            frame[columns.model_version] = pd.Categorical([stratum.name] * size)
        samples[stratum] = pd.DataFrame(frame)
        stats[stratum] = StratumStats(
            rows=scope.records,
            nan=Counter({k: v for k, v in scope.missing.items() if k in columns.features}),
            confidence_sum=scope.confidence_sum,
            confidence_count=scope.confidence_count,
            devices=set(scope.devices),
            groups=Counter(scope.groups),
        )
    return StratifiedSample(columns=columns, size=cap, samples=samples, stats=stats)


@dataclass
class ProfileWindowSample:
    """A drift window in profiles mode: the check's sample from the merged profiles, and the sampled
    records of the same window (what the Evidently reports and annotation see)."""

    profiles: ProfileWindow
    sample: StratifiedSample
    sampled: WindowSample

    @property
    def rows(self) -> int:
        return self.sample.rows

    @property
    def corrupt(self) -> list[CorruptObject]:
        return [*self.profiles.corrupt, *self.sampled.corrupt]

    def describe(self) -> dict[str, Any]:
        return {
            **self.sampled.describe(),
            "telemetry": "profiles",
            "rows": self.rows,
            "profiles": self.profiles.profiles,
            "profile_objects": len(self.profiles.objects),
            "bad_profiles": self.profiles.bad_profiles[:20],
            "sampled_records": self.sampled.rows,
            "corrupt_objects": [{"key": c.key, "error": c.error} for c in self.corrupt],
        }


def read_profile_window(
    s3: S3Client, bucket: str, spec: PipelineSpec, now: datetime, *, bounds: WindowBounds | None = None, seed: int = 0
) -> ProfileWindowSample:
    """The drift window of a pipeline in profiles mode: merged profiles, and the sampled records beside them."""
    bounds = bounds or window_bounds(spec, now)
    profiles = read_profiles(s3, bucket, spec, now, bounds=bounds)
    sampled = read_window(s3, bucket, spec, now, bounds=bounds, seed=seed)
    return ProfileWindowSample(profiles, profile_sample(profiles, spec), sampled)


def report_from_sampled_records(check: Any, sampled: StratifiedSample) -> None:
    """Point each checked scope's Evidently report at the scope's sampled records (in place); a scope
    without sampled records keeps no report. The report's title says it is built from a sample."""
    for scope in check.scopes:
        report = scope.report
        if report is None:
            continue
        frame = sampled.sample(scope.stratum)
        if frame is None or frame.empty or any(c not in frame.columns for c in report.names):
            scope.report = None
            continue
        scope.report = dataclasses.replace(report, current=frame, from_sampled_records=True)
