"""The reference a window is compared with.

After the first model exists the reference follows the data the current `champion` was
trained for (`champion_reference`): a group whose drift the champion was retrained for
(a curated version of its training data covers the group) is compared with the raw
records of that group's new normal, the window after the one its annotation batch was
drawn from; every other group with the champion's training rows. Before any model exists
it is a reference window of raw telemetry named by the caller. Either way it becomes the
same stratified sample as the current window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from edgeloop.drift.columns import DriftColumns, drift_columns
from edgeloop.drift.lineage import CuratedWindow, champion_lineage
from edgeloop.drift.sample import StratifiedSample, StratifiedSampler, Stratum, normalize_frame, row_keys
from edgeloop.drift.window import (
    CorruptObject,
    CorruptParquetError,
    S3Client,
    WindowBounds,
    fetch_objects,
    frame_sample,
    iter_window_objects,
    parse_parquet,
    read_window,
)
from edgeloop.ingest.keys import raw_prefix
from edgeloop.spec import PipelineSpec


@dataclass
class ReferenceSample:
    """A reference sample and where it came from (for the summary)."""

    source: str
    sample: StratifiedSample
    details: dict[str, Any] = field(default_factory=dict)
    corrupt: list[CorruptObject] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.sample.rows

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.rows,
            **self.details,
            "corrupt_objects": [{"key": c.key, "error": c.error} for c in self.corrupt],
        }


def reference_from_frame(
    frame: pd.DataFrame,
    spec: PipelineSpec,
    *,
    seed: int = 0,
    sample_size: int | None = None,
    source: str = "frame",
    columns: DriftColumns | None = None,
) -> ReferenceSample:
    """A reference from an in-memory frame (e.g. the champion's training data already loaded).

    The frame must hold the checked feature columns; a group id column, when present,
    gives each group a reference of its own.
    """
    columns = columns or drift_columns(spec)
    sample = frame_sample(
        frame, columns, sample_size or spec.drift.sample_per_group, seed=seed, source=f"reference {source}"
    )
    return ReferenceSample(source=source, sample=sample, details={"frame_rows": len(frame)})


def read_reference_objects(
    s3: S3Client,
    bucket: str,
    keys: Sequence[str],
    spec: PipelineSpec,
    *,
    seed: int = 0,
    sample_size: int | None = None,
    source: str = "champion training data",
    columns: DriftColumns | None = None,
) -> ReferenceSample:
    """A reference from Parquet objects (the champion's training dataset), streamed into a sample.

    Corrupt objects are reported with their key and skipped; a missing feature column
    raises `MissingColumnsError` naming the object.
    """
    columns = columns or drift_columns(spec)
    sampler = StratifiedSampler(columns, sample_size or spec.drift.sample_per_group)
    corrupt: list[CorruptObject] = []
    read: list[str] = []
    for key, body in fetch_objects(s3, bucket, keys):
        try:
            frame = parse_parquet(body, f"s3://{bucket}/{key}", columns.projection, columns.features)
        except CorruptParquetError as exc:
            corrupt.append(CorruptObject(key, str(exc)))
            continue
        read.append(key)
        normalized = normalize_frame(frame, columns)
        sampler.add(normalized, row_keys(seed, key, len(normalized)))
    return ReferenceSample(
        source=source,
        sample=sampler.finish(),
        details={"objects": len(read), "keys": list(read[:20])},
        corrupt=corrupt,
    )


def read_reference_window(
    s3: S3Client,
    bucket: str,
    spec: PipelineSpec,
    start: datetime,
    end: datetime,
    *,
    topic: str | None = None,
    seed: int = 0,
    sample_size: int | None = None,
) -> ReferenceSample:
    """A reference from a window of raw telemetry [start, end), used before any model exists."""
    window = read_window(
        s3,
        bucket,
        spec,
        end,
        topic=topic,
        bounds=WindowBounds(end=end, start=start),
        seed=seed,
        sample_size=sample_size,
    )
    details = {k: v for k, v in window.describe().items() if k != "corrupt_objects"}
    return ReferenceSample(source="window", sample=window.sample, details=details, corrupt=list(window.corrupt))


TRAINING_SOURCE = "champion training data"


def reference_columns(columns: DriftColumns) -> DriftColumns:
    """The columns a champion reference keeps: checked features, group, timestamp and device.

    Model outputs (prediction, confidence, model version) and version context are left
    out: in a raw window they come from the model that ran then, not from the champion
    the current window runs, and training rows have none either.
    """
    return replace(columns, model_version=None, prediction=None, confidence=None, context=())


@dataclass(frozen=True)
class GroupSource:
    """Where one group's reference records come from: a raw window of a curated version."""

    label: str
    window: CuratedWindow
    bounds: WindowBounds

    def describe(self, rows: int) -> dict[str, Any]:
        return {
            "source": self.label,
            "version": self.window.version,
            "window": self.bounds.describe(),
            "batch_window": self.window.batch.describe(),
            "lineage_key": self.window.lineage_key,
            "rows": rows,
        }


def _candidates(window: CuratedWindow) -> list[GroupSource]:
    """A covered group's reference, best first: the new normal after the batch's window, then that window."""
    return [
        GroupSource(f"curated {window.version} post-change window", window, window.after),
        GroupSource(f"curated {window.version} batch window", window, window.batch),
    ]


@dataclass
class _Pass:
    sample: StratifiedSample
    raw_objects: list[str]
    corrupt: list[CorruptObject]
    unexpected_keys: list[str]


def _group_rows(sample: StratifiedSample, group: str) -> int:
    stats = sample.stats.get(Stratum("group", group))
    return stats.rows if stats is not None else 0


def _read_pass(
    s3: S3Client,
    spec: PipelineSpec,
    training: Mapping[str, Any],
    plan: Mapping[str, GroupSource],
    columns: DriftColumns,
    size: int,
    seed: int,
    topic: str,
) -> _Pass:
    """One sample: training rows of the groups not in `plan`, raw records of each planned group's window."""
    sampler = StratifiedSampler(columns, size)
    corrupt: list[CorruptObject] = []
    bucket, train_key = str(training["bucket"]), str(training["train_key"])
    for key, body in fetch_objects(s3, bucket, [train_key]):
        try:
            frame = parse_parquet(body, f"s3://{bucket}/{key}", columns.projection, columns.features)
        except CorruptParquetError as exc:
            corrupt.append(CorruptObject(key, str(exc)))
            continue
        normalized = normalize_frame(frame, columns)
        keys = row_keys(seed, key, len(normalized))
        if plan and columns.group is not None and columns.group in normalized.columns:
            keep = ~normalized[columns.group].isin(list(plan)).to_numpy(dtype=bool)
            normalized, keys = normalized[keep], keys[keep]
        sampler.add(normalized, keys)
    unexpected: list[str] = []
    raw_read: list[str] = []
    if plan:
        assert columns.group is not None and columns.timestamp is not None  # champion_reference plans none otherwise
        raw_bucket = spec.storage.bucket
        prefix = raw_prefix(spec, topic)
        listed: set[str] = set()
        for bounds in sorted({source.bounds for source in plan.values()}, key=lambda b: (b.start, b.end)):
            listed.update(raw.key for raw in iter_window_objects(s3, raw_bucket, prefix, bounds, unexpected))
        required = (*columns.features, columns.group, columns.timestamp)
        for key, body in fetch_objects(s3, raw_bucket, sorted(listed)):
            try:
                frame = parse_parquet(body, f"s3://{raw_bucket}/{key}", columns.projection, required)
            except CorruptParquetError as exc:
                corrupt.append(CorruptObject(key, str(exc)))
                continue
            raw_read.append(key)
            normalized = normalize_frame(frame, columns)
            # keys of their own: where the reference and the current window read the same object,
            # the two samples stay independent draws
            keys = row_keys(seed, f"reference {key}", len(normalized))
            mask = _planned_rows(normalized, plan, columns.group, columns.timestamp)
            if mask.any():
                sampler.add(normalized[mask], keys[mask])
    return _Pass(sampler.finish(), raw_read, corrupt, unexpected)


def _planned_rows(frame: pd.DataFrame, plan: Mapping[str, GroupSource], group: str, timestamp: str) -> np.ndarray:
    """Rows of a planned group whose timestamp falls inside that group's window."""
    stamps = frame[timestamp].to_numpy(dtype="datetime64[ns]").astype("int64")
    valid = ~frame[timestamp].isna().to_numpy()
    groups = frame[group]
    mask = np.zeros(len(frame), dtype=bool)
    for name, source in plan.items():
        assert source.bounds.start is not None
        start, end = pd.Timestamp(source.bounds.start).value, pd.Timestamp(source.bounds.end).value
        mask |= (groups == name).to_numpy(dtype=bool, na_value=False) & valid & (stamps >= start) & (stamps < end)
    return mask


def champion_reference(
    s3: S3Client,
    spec: PipelineSpec,
    training: Mapping[str, Any],
    *,
    seed: int = 0,
    sample_size: int | None = None,
    topic: str | None = None,
    columns: DriftColumns | None = None,
) -> ReferenceSample:
    """The reference of each group, following the data the champion was trained for.

    `training` is what `edgeloop.registry.aliases.champion_training_data` returns. A group
    covered by a curated version of the champion's training data (the newest one covering
    it, found through split.json and the version's lineage.json) is compared with its raw
    records (from `raw/<topic>`, default the telemetry topic) of the window after the one
    its batch was drawn from: once a model retrained for a group's drift is champion, that
    group's new normal is accepted and only a further change alerts again. When that
    window holds fewer than `spec.drift.min_rows` records of the group, the batch's own
    window is used, then the training rows. Every other group keeps the champion's
    training rows. Memory stays bounded as for the current window (column projection,
    up to `sample_size` records per stratum, one object at a time); the sample depends
    only on the stored data and `seed`. `describe()["groups"]` states each group's source.
    """
    columns = reference_columns(columns or drift_columns(spec))
    size = sample_size or spec.drift.sample_per_group
    topic = topic or spec.topic("telemetry")
    lineage = champion_lineage(s3, spec, training)
    notes = list(lineage.notes)
    candidates = {group: _candidates(window) for group, window in sorted(lineage.windows.items())}
    if candidates and (columns.group is None or columns.timestamp is None):
        notes.append("the spec has no group id or timestamp field: every group keeps the training rows")
        candidates = {}
    choice = dict.fromkeys(candidates, 0)
    while True:  # at most 1 + 2 passes: a pass only repeats when a group falls back to its next source
        plan = {g: candidates[g][i] for g, i in choice.items() if i < len(candidates[g])}
        read = _read_pass(s3, spec, training, plan, columns, size, seed, topic)
        short = {g: _group_rows(read.sample, g) for g in plan}
        short = {g: n for g, n in short.items() if n < spec.drift.min_rows}
        if not short:
            break
        for group, rows in short.items():
            choice[group] += 1
            following = candidates[group][choice[group]].label if choice[group] < len(candidates[group]) else None
            window = plan[group].bounds
            notes.append(
                f"{group}: the {plan[group].label} ({window.start.isoformat() if window.start else None}.."
                f"{window.end.isoformat()}) holds {rows} records, fewer than min_rows={spec.drift.min_rows}: "
                f"using the {following or TRAINING_SOURCE}"
            )
    groups: dict[str, dict[str, Any]] = {}
    names = {s.name for s in read.sample.strata("group")} | {g.name for g in spec.groups} | set(plan)
    for name in sorted(names):
        rows = _group_rows(read.sample, name)
        groups[name] = plan[name].describe(rows) if name in plan else {"source": TRAINING_SOURCE, "rows": rows}
    source = TRAINING_SOURCE
    if plan:
        source += f" (curated windows for {', '.join(sorted(plan))})"
    train_key = str(training["train_key"])
    return ReferenceSample(
        source=source,
        sample=read.sample,
        details={
            "champion_version": training.get("version"),
            "train_key": train_key,
            **lineage.describe(),
            "notes": notes,
            "groups": groups,
            "objects": 1 + len(read.raw_objects),
            "keys": [train_key, *read.raw_objects[:19]],
            "unexpected_key_count": len(read.unexpected_keys),
            "sample_size": size,
        },
        corrupt=read.corrupt,
    )
