"""The reference a window is compared with.

After the first model exists the reference is the training dataset of the current
`champion` (its Parquet objects or a frame, which the training stage resolves through
the MLflow run's dataset lineage); before that it is a reference window of raw telemetry
named by the caller. Either way it becomes the same stratified sample as the current window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from edgeloop.drift.columns import DriftColumns, drift_columns
from edgeloop.drift.sample import StratifiedSample, StratifiedSampler, normalize_frame, row_keys
from edgeloop.drift.window import (
    CorruptObject,
    CorruptParquetError,
    S3Client,
    WindowBounds,
    fetch_objects,
    frame_sample,
    parse_parquet,
    read_window,
)
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
