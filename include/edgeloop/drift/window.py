"""The current window: raw telemetry Parquet objects read with partition pruning.

Raw objects live at `<raw prefix>/<topic>/dt=YYYY-MM-DD/hour=HH/<partition>-<first>-<last>.parquet`
(the layout of `edgeloop.ingest.keys`; ingest splits records by the hour of their timestamp).
A time window lists only the hour partitions it overlaps and keeps the records whose
timestamp falls inside it; a record-count window walks the partitions newest first
and stops once the objects read hold enough records. Records stream object by object
into a `StratifiedSampler`, so memory stays bounded by the sample size and one object.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from edgeloop.drift.columns import DriftColumns, MissingColumnsError, drift_columns
from edgeloop.drift.sample import StratifiedSample, StratifiedSampler, normalize_frame, row_keys
from edgeloop.ingest.keys import OffsetRange, hour_dir, parse_hour_dir, parse_object_key, raw_prefix
from edgeloop.spec import PipelineSpec

S3Client = Any  # a boto3 S3 client; typed loosely because boto3 ships no type stubs


@dataclass(frozen=True)
class RawObject:
    """One raw Parquet object, with the hour partition and offset range its key names."""

    key: str
    hour: datetime
    offsets: OffsetRange


def parse_raw_key(key: str) -> RawObject | None:
    """The raw object a key names; None for any other key (flush markers, stray files)."""
    if not key.endswith(".parquet"):
        return None
    try:
        hour, offsets = parse_object_key(key)
    except ValueError:
        return None
    return RawObject(key, hour, offsets)


@dataclass(frozen=True)
class WindowBounds:
    """A time window [start, end) or the newest `records` records up to `end`."""

    end: datetime
    start: datetime | None = None
    records: int | None = None

    def __post_init__(self) -> None:
        if self.end.tzinfo is None or (self.start is not None and self.start.tzinfo is None):
            raise ValueError("window bounds must be timezone-aware datetimes")
        if (self.start is None) == (self.records is None):
            raise ValueError("a window has either a start time or a record count")
        if self.start is not None and self.start >= self.end:
            raise ValueError(f"window start {self.start.isoformat()} is not before its end {self.end.isoformat()}")

    def describe(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat(),
            "records": self.records,
        }


def window_bounds(
    spec: PipelineSpec, now: datetime, *, window: timedelta | None = None, window_records: int | None = None
) -> WindowBounds:
    """The spec's drift window ending at `now`: a record count when `drift.window_records` is set, else a duration."""
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    records = window_records if window_records is not None else (None if window else spec.drift.window_records)
    if records is not None:
        return WindowBounds(end=now, records=records)
    return WindowBounds(end=now, start=now - (window or spec.drift.window))


def hour_prefixes(prefix: str, start: datetime, end: datetime) -> list[str]:
    """The hour partitions overlapping [start, end), oldest first."""
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    last = end.astimezone(UTC)
    out = []
    while hour < last:
        out.append(f"{prefix}/{hour_dir(hour)}/")
        hour += timedelta(hours=1)
    return out


def _list_keys(s3: S3Client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def _list_children(s3: S3Client, bucket: str, prefix: str) -> list[str]:
    children: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        children.extend(item["Prefix"] for item in page.get("CommonPrefixes", []))
    return children


def _newest_first(objects: list[RawObject]) -> list[RawObject]:
    return sorted(objects, key=lambda o: (o.hour, o.offsets.first, o.offsets.partition), reverse=True)


def iter_window_objects(
    s3: S3Client, bucket: str, prefix: str, bounds: WindowBounds, unexpected: list[str] | None = None
) -> Iterator[RawObject]:
    """Raw objects of the window, newest first, listing only the partitions the window can touch.

    Keys under the prefix that are not named like raw objects are appended to `unexpected`.
    """
    unexpected = unexpected if unexpected is not None else []

    def objects_under(hour_prefix: str) -> list[RawObject]:
        found = []
        for key in _list_keys(s3, bucket, hour_prefix):
            parsed = parse_raw_key(key)
            if parsed is None:
                unexpected.append(key)
            else:
                found.append(parsed)
        return _newest_first(found)

    if bounds.start is not None:
        for hour_prefix in reversed(hour_prefixes(prefix, bounds.start, bounds.end)):
            yield from objects_under(hour_prefix)
        return
    end_hour = bounds.end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    for day_prefix in sorted(_list_children(s3, bucket, f"{prefix}/"), reverse=True):
        if not day_prefix[len(prefix) + 1 :].startswith("dt="):
            continue  # flush markers and anything else that is not a partition
        for hour_prefix in sorted(_list_children(s3, bucket, day_prefix), reverse=True):
            try:
                hour = parse_hour_dir(hour_prefix[len(prefix) + 1 :].rstrip("/"))
            except ValueError:
                continue
            if hour <= end_hour:
                yield from objects_under(hour_prefix)


@dataclass(frozen=True)
class CorruptObject:
    key: str
    error: str


@dataclass
class WindowSample:
    """What reading a window produced: the stratified sample and an account of every object and row."""

    bounds: WindowBounds
    sample: StratifiedSample
    objects: list[str] = field(default_factory=list)
    corrupt: list[CorruptObject] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    rows_outside_window: int = 0
    rows_bad_timestamp: int = 0

    @property
    def rows(self) -> int:
        return self.sample.rows

    def describe(self) -> dict[str, Any]:
        return {
            **self.bounds.describe(),
            "rows": self.rows,
            "objects": len(self.objects),
            "corrupt_objects": [{"key": c.key, "error": c.error} for c in self.corrupt],
            "unexpected_keys": self.unexpected_keys[:20],
            "unexpected_key_count": len(self.unexpected_keys),
            "rows_outside_window": self.rows_outside_window,
            "rows_bad_timestamp": self.rows_bad_timestamp,
            "rows_without_group": self.sample.rows_without_group,
            "sample_size": self.sample.size,
        }


class CorruptParquetError(Exception):
    """An object that is not readable Parquet; readers turn it into a `CorruptObject` and go on."""


def _get_body(s3: S3Client, bucket: str, key: str) -> bytes:
    try:
        body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey as exc:
        raise FileNotFoundError(f"s3://{bucket}/{key}: no such object") from exc
    return body


def fetch_objects(s3: S3Client, bucket: str, keys: Iterable[str], *, ahead: int = 2) -> Iterator[tuple[str, bytes]]:
    """Bodies of the objects in order, downloading up to `ahead` objects ahead in threads.

    Downloading overlaps with decoding and sampling; memory stays at a few objects (`ahead` + 2).
    Raises `FileNotFoundError` naming a key that does not exist.
    """
    with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="drift-fetch") as pool:
        pending: deque[tuple[str, Future[bytes]]] = deque()
        for key in keys:
            pending.append((key, pool.submit(_get_body, s3, bucket, key)))
            if len(pending) > ahead:
                done_key, future = pending.popleft()
                yield done_key, future.result()
        while pending:
            done_key, future = pending.popleft()
            yield done_key, future.result()


def parse_parquet(body: bytes, where: str, wanted: tuple[str, ...], required: tuple[str, ...]) -> pd.DataFrame:
    """The wanted columns that exist in one Parquet object, strings as categories.

    Raises `CorruptParquetError` when the bytes are not readable Parquet and
    `MissingColumnsError` naming `where` when a required column is absent.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(pa.BufferReader(body))
        present = set(parquet.schema_arrow.names)
    except (pa.ArrowException, OSError) as exc:
        raise CorruptParquetError(f"{type(exc).__name__}: {exc}") from exc
    missing = [c for c in required if c not in present]
    if missing:
        raise MissingColumnsError(where, missing)
    try:
        table = parquet.read(columns=[c for c in wanted if c in present])
    except (pa.ArrowException, OSError) as exc:
        raise CorruptParquetError(f"{type(exc).__name__}: {exc}") from exc
    return table.to_pandas(strings_to_categorical=True)


def read_window(
    s3: S3Client,
    bucket: str,
    spec: PipelineSpec,
    now: datetime,
    *,
    topic: str | None = None,
    bounds: WindowBounds | None = None,
    seed: int = 0,
    sample_size: int | None = None,
    columns: DriftColumns | None = None,
) -> WindowSample:
    """Read the drift window of one pipeline from `raw/` into a stratified sample.

    `topic` is the full Kafka topic name (default: the pipeline's telemetry topic); `bounds`
    default to the spec's window ending at `now`; `seed` fixes the sample (use one per run).
    Lists only the hour partitions the window overlaps (a record-count window walks them
    newest first and stops once the objects read hold `records` records), reads only the
    drift columns, and samples up to `sample_size` (default spec.drift.sample_per_group)
    records per stratum. A corrupt object is reported with its key and skipped; a missing
    required column raises `MissingColumnsError` naming the object and the columns.
    """
    columns = columns or drift_columns(spec)
    bounds = bounds or window_bounds(spec, now)
    size = sample_size or spec.drift.sample_per_group
    sampler = StratifiedSampler(columns, size, by_group=spec.drift.per_group)
    required = columns.features
    if spec.drift.per_group and columns.group is not None:
        required += (columns.group,)
    if bounds.start is not None and columns.timestamp is not None:
        required += (columns.timestamp,)
    result = WindowSample(bounds=bounds, sample=sampler.finish())
    start_ns = pd.Timestamp(bounds.start).value if bounds.start is not None else None
    end_ns = pd.Timestamp(bounds.end).value
    rows = 0
    prefix = raw_prefix(spec, topic or spec.topic("telemetry"))
    listed = (raw.key for raw in iter_window_objects(s3, bucket, prefix, bounds, result.unexpected_keys))
    for key, body in fetch_objects(s3, bucket, listed):
        try:
            frame = parse_parquet(body, f"s3://{bucket}/{key}", columns.projection, required)
        except CorruptParquetError as exc:
            result.corrupt.append(CorruptObject(key, str(exc)))
            continue
        result.objects.append(key)
        frame = normalize_frame(frame, columns)
        keys = row_keys(seed, key, len(frame))
        if start_ns is not None and columns.timestamp is not None:
            stamps = frame[columns.timestamp].to_numpy(dtype="datetime64[ns]").astype("int64")
            bad = frame[columns.timestamp].isna().to_numpy()
            inside = ~bad & (stamps >= start_ns) & (stamps < end_ns)
            result.rows_bad_timestamp += int(bad.sum())
            result.rows_outside_window += int((~bad & ~inside).sum())
            if not inside.all():
                frame, keys = frame[inside], keys[inside]
        sampler.add(frame, keys)
        rows += len(frame)
        if bounds.records is not None and rows >= bounds.records:
            break
    result.sample = sampler.finish()
    return result


def frame_sample(
    frame: pd.DataFrame,
    columns: DriftColumns,
    size: int,
    *,
    seed: int = 0,
    source: str = "frame",
    by_group: bool = True,
    required: tuple[str, ...] | None = None,
) -> StratifiedSample:
    """The same stratified sample built from an in-memory frame (a reference DataFrame, a test)."""
    needed = columns.features if required is None else required
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise MissingColumnsError(source, missing)
    sampler = StratifiedSampler(columns, size, by_group=by_group)
    normalized = normalize_frame(frame, columns)
    sampler.add(normalized, row_keys(seed, source, len(normalized)))
    return sampler.finish()
