"""Choosing the records worth a person's time, from the drifted group's recent raw telemetry.

Strategies (spec.annotation.strategy, combined):

- `disagreement`: records where the champion's prediction (the `prediction` field) and a
  challenger's differ come first. The challenger is a column of the raw records or a
  callable that predicts from the candidate frame; without one the strategy is noted as
  not applied (there is nothing to disagree with).
- `low_confidence`: lower model confidence first.
- `diversity`: round robin over devices and over time slices of the window, so the batch
  covers many devices and the whole window instead of the few worst ones. Within a device
  and slice, the order above decides.

Ties (and a spec with diversity alone) are broken by a stable hash of the record id, so the
same inputs always give the same batch. Records already labelled, or waiting in a batch not
exported yet, are never chosen again. The batch is stored as a manifest plus a Parquet
snapshot of the chosen records (all schema columns, for display and for the export's join).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from edgeloop.annotation.manifest import (
    MANIFEST_VERSION,
    S3Client,
    batch_id_for,
    excluded_record_ids,
    load_manifest,
    manifest_key,
    put_json_if_absent,
    read_json,
    records_key,
)
from edgeloop.spec import FieldRole, PipelineSpec
from edgeloop.storage import get_bytes, list_keys, put_if_absent

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

ALL_GROUPS = "*"
TIME_SLICES = 6
SOURCE_COLUMN = "source_object"
_RAW_NAME = re.compile(r"/dt=\d{4}-\d{2}-\d{2}/hour=\d{2}/\d+-\d+-\d+\.parquet$")

Challenger = str | Callable[["pd.DataFrame"], Sequence[Any]]  # a raw column, or predict(frame of candidates)


class EmptySelection(Exception):
    """Nothing to label: the run ends (skipped) with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SelectionRequest:
    """What to select: for which alert, from which groups, how many, from which time window."""

    alert_id: str
    groups: tuple[str, ...]
    size: int
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("a selection needs at least one group (or '*')")
        if self.size < 1:
            raise ValueError(f"size must be at least 1, not {self.size}")
        if self.start.tzinfo is None or self.end.tzinfo is None or self.start >= self.end:
            raise ValueError(f"window {self.start}..{self.end} must be timezone-aware with start before end")


def _parse_time(value: Any, what: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{what}: {value!r} is not an ISO 8601 time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


ALERT_WINDOWS = 4
"""An alert's window is cut to at most this many drift windows (spec.drift.window) before its end."""


def selection_request(
    spec: PipelineSpec,
    *,
    now: datetime,
    alert: Mapping[str, Any] | None = None,
    group: str | None = None,
    size: int | None = None,
    run_id: str | None = None,
    lookback: timedelta | None = None,
) -> SelectionRequest:
    """Turn a drift alert and/or the DAG's params into a selection request.

    Groups: the `group` param if given, else the alert's groups, else every group. The alert
    id names the batch; a run without an alert uses `manual-<run_id>`. The window is the
    alert's window (its end, and its start when it has one), else the spec's drift window
    ending `now`; `lookback` replaces the window's length. An alert's window never ends after
    `now` and is at most ALERT_WINDOWS drift windows long.
    """
    alert = alert or {}
    known = {g.name for g in spec.groups}
    if group:
        groups: tuple[str, ...] = (group,)
    elif alert.get("groups"):
        groups = tuple(sorted({str(g) for g in alert["groups"]}))
    else:
        groups = (ALL_GROUPS,)
    unknown = sorted(set(groups) - known - {ALL_GROUPS})
    if unknown:
        raise ValueError(f"groups {unknown} are not groups of pipeline {spec.name} ({sorted(known)})")
    if ALL_GROUPS in groups:
        groups = (ALL_GROUPS,)
    alert_id = str(alert.get("alert_id") or f"manual-{run_id or now.isoformat()}")
    window = alert.get("window") or {}
    if not isinstance(window, Mapping):
        raise ValueError(f"alert.window: expected an object with start and end, got {type(window).__name__}")
    # Anyone may publish an alert: its window ends by now and spans a few drift windows at most,
    # so a window from year 1 to 9999 cannot make millions of hour prefixes to list.
    end = min(_parse_time(window.get("end"), "alert.window.end") or now, now)
    start = _parse_time(window.get("start"), "alert.window.start")
    try:
        if lookback is not None or start is None or start >= end:
            start = end - (lookback or spec.drift.window)
        else:
            start = max(start, end - ALERT_WINDOWS * spec.drift.window)
    except OverflowError:
        raise ValueError(f"alert.window.end: {end.isoformat()} is too early for a window") from None
    return SelectionRequest(alert_id, groups, size or spec.annotation.batch_size, start, end)


# --- reading candidates ---------------------------------------------------------------------------


def _hour_prefixes(prefix: str, start: datetime, end: datetime) -> list[str]:
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    out = []
    while hour < end:
        out.append(f"{prefix}/dt={hour:%Y-%m-%d}/hour={hour:%H}/")
        hour += timedelta(hours=1)
    return out


def raw_objects(spec: PipelineSpec, s3: S3Client, topic: str, start: datetime, end: datetime) -> list[str]:
    """Keys of the raw Parquet objects whose hour partition overlaps [start, end)."""
    prefix = f"{spec.storage_prefix('raw')}/{topic}"
    keys: list[str] = []
    for hour_prefix in _hour_prefixes(prefix, start, end):
        keys.extend(k for k in list_keys(s3, spec.storage.bucket, hour_prefix) if _RAW_NAME.search(k))
    return keys


def _read_object(
    s3: S3Client,
    bucket: str,
    key: str,
    columns: Sequence[str],
    group_column: str,
    groups: tuple[str, ...],
    ts_column: str,
    start: datetime,
    end: datetime,
) -> pa.Table | None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    body = get_bytes(s3, bucket, key)
    try:
        parquet = pq.ParquetFile(pa.BufferReader(body))
        present = set(parquet.schema_arrow.names)
        table = parquet.read(columns=[c for c in columns if c in present])
    except (pa.ArrowException, OSError) as exc:
        log.warning("skipping s3://%s/%s: not readable Parquet (%s)", bucket, key, exc)
        return None
    if group_column not in present or ts_column not in present:
        log.warning("skipping s3://%s/%s: no %s or %s column", bucket, key, group_column, ts_column)
        return None
    ts = table[ts_column]
    if not pa.types.is_timestamp(ts.type):
        log.warning("skipping s3://%s/%s: %s is %s, not a timestamp", bucket, key, ts_column, ts.type)
        return None
    start_s = pa.scalar(start, type=pa.timestamp("us", tz="UTC")).cast(ts.type)
    end_s = pa.scalar(end, type=pa.timestamp("us", tz="UTC")).cast(ts.type)
    mask = pc.and_(pc.greater_equal(ts, start_s), pc.less(ts, end_s))
    if groups != (ALL_GROUPS,):
        mask = pc.and_(mask, pc.is_in(table[group_column], value_set=pa.array(list(groups), type=pa.string())))
    table = table.filter(pc.fill_null(mask, False))
    if table.num_rows == 0:
        return None
    return table.append_column(SOURCE_COLUMN, pa.array([key] * table.num_rows, type=pa.string()))


def read_candidates(
    spec: PipelineSpec,
    s3: S3Client,
    request: SelectionRequest,
    *,
    topic: str,
    extra_columns: Sequence[str] = (),
    workers: int = 4,
) -> tuple[pa.Table | None, list[str]]:
    """Records of the request's groups and window from raw storage (every schema column), and the keys read.

    The table is None when no object holds a matching record.
    """
    import pyarrow as pa

    group_column = _required(spec, "group_id")
    ts_column = _required(spec, "timestamp")
    columns = [f.name for f in spec.schema_] + [c for c in extra_columns if c not in {f.name for f in spec.schema_}]
    keys = raw_objects(spec, s3, topic, request.start, request.end)

    def read(key: str) -> pa.Table | None:
        return _read_object(
            s3, spec.storage.bucket, key, columns, group_column, request.groups, ts_column, request.start, request.end
        )

    with ThreadPoolExecutor(max_workers=workers) as pool:
        tables = [t for t in pool.map(read, keys) if t is not None]
    if not tables:
        return None, keys
    return pa.concat_tables(tables, promote_options="default"), keys


def _required(spec: PipelineSpec, role: FieldRole) -> str:
    name = spec.field_with_role(role)
    if name is None:  # the spec validator requires these roles; a custom spec object may not
        raise ValueError(f"schema: no field has the role '{role}'")
    return name


# --- ranking --------------------------------------------------------------------------------------


def _stable_hash(record_ids: np.ndarray, seed: int) -> np.ndarray:
    """A per-record pseudo-random tie-breaker that depends only on the record id and the seed."""
    import pandas as pd

    key = hashlib.sha256(f"edgeloop-annotation-{seed}".encode()).hexdigest()[:16]
    hashed: np.ndarray = pd.util.hash_array(record_ids.astype(object), hash_key=key)
    return hashed


def _cumcount(groups: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions have the same group value."""
    import numpy as np

    n = len(groups)
    order = np.argsort(groups, kind="stable")
    ordered = groups[order]
    starts = np.r_[0, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1]
    lengths = np.diff(np.r_[starts, n])
    counts = np.empty(n, dtype=np.int64)
    counts[order] = np.arange(n) - np.repeat(starts, lengths)
    return counts


def rank_order(
    record_ids: np.ndarray,
    *,
    devices: np.ndarray | None,
    seconds: np.ndarray | None,
    confidence: np.ndarray | None,
    disagree: np.ndarray | None,
    start: datetime,
    end: datetime,
    seed: int = 0,
) -> np.ndarray:
    """Positions of the candidates in the order they should be chosen.

    Priority: disagreement first (when given), then lower confidence (when given), then the
    stable hash. With `devices` and `seconds` (diversity), round robin: round r takes, device by
    device, each device's best record of its r-th best time slice.
    """
    import numpy as np

    n = len(record_ids)
    keys: list[np.ndarray] = [_stable_hash(record_ids, seed)]
    if confidence is not None:
        keys.append(np.nan_to_num(confidence.astype(float), nan=np.inf))
    if disagree is not None:
        keys.append((~disagree.astype(bool)).astype(np.int8))
    priority = np.lexsort(keys)  # the last key sorts first
    if devices is None or seconds is None:
        return priority
    span = max((end - start).total_seconds(), 1e-9)
    slices = np.clip(((seconds - start.timestamp()) / span * TIME_SLICES).astype(np.int64), 0, TIME_SLICES - 1)
    device = devices.astype(np.int64)[priority]
    in_slice = _cumcount(device * TIME_SLICES + slices[priority])
    turn = _cumcount(device * (n + 1) + in_slice)
    return priority[np.lexsort((np.arange(n), turn, in_slice))]


def rank_table(
    table: pa.Table,
    spec: PipelineSpec,
    strategies: Sequence[str],
    *,
    challenger: np.ndarray | None,
    start: datetime,
    end: datetime,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, str]]:
    """Row positions of the candidates in the order they should be chosen, and a note per strategy not applied."""
    import pyarrow as pa
    import pyarrow.compute as pc

    inputs, notes = _rank_inputs(spec, strategies, lambda name: table[name].to_numpy(zero_copy_only=False), challenger)
    device = spec.field_with_role("device_id")
    diversity = "diversity" in strategies and device is not None
    ts = table[_required(spec, "timestamp")]
    order = rank_order(
        table[_required(spec, "record_id")].to_numpy(zero_copy_only=False),
        devices=pc.dictionary_encode(table[device]).combine_chunks().indices.to_numpy(zero_copy_only=False)
        if diversity and device
        else None,
        seconds=pc.cast(ts, pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False) / 1e6
        if diversity
        else None,
        start=start,
        end=end,
        seed=seed,
        **inputs,
    )
    return order, notes


def rank_candidates(
    frame: pd.DataFrame,
    spec: PipelineSpec,
    strategies: Sequence[str],
    *,
    challenger: pd.Series | None,
    start: datetime,
    end: datetime,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """`rank_table` for a pandas frame of candidates: the frame in choice order (with the challenger's column)."""
    import pyarrow as pa

    values = None if challenger is None else challenger.to_numpy(dtype=object)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    order, notes = rank_table(table, spec, strategies, challenger=values, start=start, end=end, seed=seed)
    ranked = frame.iloc[order].copy()
    if values is not None and "disagreement" not in notes:
        ranked["challenger_prediction"] = values[order]
    return ranked, notes


def _rank_inputs(
    spec: PipelineSpec,
    strategies: Sequence[str],
    column: Callable[[str], np.ndarray],
    challenger: np.ndarray | None,
) -> tuple[dict[str, np.ndarray | None], dict[str, str]]:
    """The confidence and disagreement arrays the strategies ask for, and notes for those not applicable."""
    import numpy as np

    notes: dict[str, str] = {}
    prediction = spec.field_with_role("prediction")
    confidence = spec.field_with_role("confidence")
    inputs: dict[str, np.ndarray | None] = {"confidence": None, "disagree": None}
    if "disagreement" in strategies:
        if challenger is None:
            notes["disagreement"] = "not applied: no challenger predictions were given"
        elif prediction is None:
            notes["disagreement"] = "not applied: the schema has no prediction field"
        else:
            champion = column(prediction).astype(object)
            inputs["disagree"] = np.array(
                [
                    a is not None and b is not None and str(a) != str(b)
                    for a, b in zip(champion, challenger, strict=True)
                ]
            )
    if "low_confidence" in strategies:
        if confidence is None:
            notes["low_confidence"] = "not applied: the schema has no confidence field"
        else:
            inputs["confidence"] = column(confidence).astype(float)
    if "diversity" in strategies and (spec.field_with_role("device_id") is None):
        notes["diversity"] = "not applied: the schema has no device field"
    return inputs, notes


def _challenger_values(challenger: Challenger | None, table: pa.Table) -> np.ndarray | None:
    import numpy as np

    if challenger is None:
        return None
    if isinstance(challenger, str):
        if challenger not in table.column_names:
            raise ValueError(f"challenger column '{challenger}' is not in the raw records")
        values: np.ndarray = table[challenger].to_numpy(zero_copy_only=False).astype(object)
        return values
    predicted = list(challenger(table.to_pandas()))
    if len(predicted) != table.num_rows:
        raise ValueError(f"the challenger returned {len(predicted)} predictions for {table.num_rows} records")
    return np.array(predicted, dtype=object)


# --- the batch ------------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    import pandas as pd

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value


def select_batch(
    spec: PipelineSpec,
    s3: S3Client,
    request: SelectionRequest,
    *,
    topic: str | None = None,
    challenger: Challenger | None = None,
    strategies: Sequence[str] | None = None,
    seed: int = 0,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Choose the batch for one alert and store its manifest; a re-run returns the stored batch.

    `topic` is the raw topic directory (default: the full name of the telemetry topic).
    Raises EmptySelection with a reason when there is nothing to label. Returns a small
    summary: batch id, manifest key, size, counts.
    """
    bucket = spec.storage.bucket
    batch_id = batch_id_for(spec.name, request.alert_id, request.groups)
    existing = read_json(s3, bucket, manifest_key(spec, batch_id))
    if existing is not None:
        log.info("batch %s was already selected; returning its manifest", batch_id)
        return _summary(spec, load_manifest(spec, s3, batch_id), created=False)

    topic = topic or spec.topic("telemetry")
    strategies = list(strategies or spec.annotation.strategy)
    extra = [challenger] if isinstance(challenger, str) else []
    table, keys = read_candidates(spec, s3, request, topic=topic, extra_columns=extra)
    where = f"groups {list(request.groups)} in {request.start.isoformat()}..{request.end.isoformat()} of {topic}"
    if not keys:
        raise EmptySelection(f"no raw objects for {where}")
    if table is None:
        raise EmptySelection(f"no records of {where} ({len(keys)} raw objects read)")
    chosen, notes, candidates, excluded = _choose(spec, s3, table, request, batch_id, strategies, challenger, seed)
    if chosen is None:
        raise EmptySelection(f"all {candidates} records of {where} are already labelled or waiting in a batch")
    manifest = _manifest(spec, request, batch_id, chosen, strategies, notes, candidates, excluded, keys, topic, now)
    created = _store(spec, s3, manifest, chosen)
    # another attempt may have stored its manifest first: report what is stored
    return _summary(spec, manifest if created else load_manifest(spec, s3, batch_id), created=created)


def _choose(
    spec: PipelineSpec,
    s3: S3Client,
    table: pa.Table,
    request: SelectionRequest,
    batch_id: str,
    strategies: list[str],
    challenger: Challenger | None,
    seed: int,
) -> tuple[pd.DataFrame | None, dict[str, str], int, int]:
    """The chosen records (None if every candidate is excluded), strategy notes, candidate and excluded counts.

    Works on Arrow columns and numpy arrays; only the chosen rows become a pandas frame.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    ids = table[_required(spec, "record_id")].to_numpy(zero_copy_only=False)
    keep = ~pd.Series(ids).duplicated(keep="first").to_numpy()
    candidates = int(keep.sum())
    excluded = excluded_record_ids(spec, s3, skip_batch=batch_id)
    if excluded:
        keep &= ~pd.Series(ids).isin(excluded).to_numpy()
    if not keep.any():
        return None, {}, candidates, len(excluded)
    table = table.filter(pa.array(keep))
    challenger_values = _challenger_values(challenger, table)
    order, notes = rank_table(
        table, spec, strategies, challenger=challenger_values, start=request.start, end=request.end, seed=seed
    )
    order = order[: request.size]
    chosen = table.take(pa.array(order)).to_pandas()
    if challenger_values is not None and "disagreement" not in notes:
        chosen["challenger_prediction"] = np.asarray(challenger_values)[order]
    return chosen, notes, candidates, len(excluded)


def _manifest(
    spec: PipelineSpec,
    request: SelectionRequest,
    batch_id: str,
    chosen: pd.DataFrame,
    strategies: list[str],
    notes: dict[str, str],
    candidates: int,
    excluded: int,
    keys: list[str],
    topic: str,
    now: datetime | None,
) -> dict[str, Any]:
    roles: tuple[FieldRole, ...] = (
        "record_id",
        "device_id",
        "group_id",
        "timestamp",
        "prediction",
        "confidence",
        "model_version",
    )
    columns = {role: spec.field_with_role(role) for role in roles}
    records = []
    for row in chosen.to_dict(orient="records"):
        entry: dict[str, Any] = {
            str(role): _json_value(row.get(col)) for role, col in columns.items() if col is not None
        }
        entry["record_id"] = str(entry["record_id"])
        entry["source"] = row[SOURCE_COLUMN]
        if "challenger_prediction" in row:
            entry["challenger_prediction"] = _json_value(row["challenger_prediction"])
        records.append(entry)
    record_ids = [r["record_id"] for r in records]
    device = spec.field_with_role("device_id")
    return {
        "version": MANIFEST_VERSION,
        "pipeline": spec.name,
        "batch_id": batch_id,
        "alert_id": request.alert_id,
        "groups": list(request.groups),
        "topic": topic,
        "window": {"start": request.start.isoformat(), "end": request.end.isoformat()},
        "strategy": [s for s in strategies if s not in notes],
        "strategy_notes": notes,
        "requested_size": request.size,
        "size": len(records),
        "candidates": candidates,
        "excluded_already_selected": excluded,
        "devices": int(chosen[device].nunique()) if device and not chosen.empty else 0,
        "source_objects": sorted({r["source"] for r in records}),
        "objects_read": len(keys),
        "records_key": records_key(spec, batch_id, record_ids),
        "created_at": (now or datetime.now(UTC)).isoformat(),
        "records": records,
    }


def _store(spec: PipelineSpec, s3: S3Client, manifest: dict[str, Any], chosen: pd.DataFrame) -> bool:
    """Write the records snapshot, then the manifest (the commit point); False if a manifest was there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keep = [f.name for f in spec.schema_ if f.name in chosen.columns] + [SOURCE_COLUMN]
    table = pa.Table.from_pandas(chosen[keep], preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    put_if_absent(s3, spec.storage.bucket, manifest["records_key"], sink.getvalue())
    return put_json_if_absent(s3, spec.storage.bucket, manifest_key(spec, manifest["batch_id"]), manifest)


def _summary(spec: PipelineSpec, manifest: dict[str, Any], *, created: bool) -> dict[str, Any]:
    return {
        "batch_id": manifest["batch_id"],
        "alert_id": manifest["alert_id"],
        "groups": manifest["groups"],
        "size": manifest["size"],
        "requested_size": manifest["requested_size"],
        "strategy": manifest["strategy"],
        "strategy_notes": manifest.get("strategy_notes", {}),
        "candidates": manifest["candidates"],
        "excluded_already_selected": manifest["excluded_already_selected"],
        "devices": manifest.get("devices", 0),
        "source_objects": len(manifest["source_objects"]),
        "manifest_key": manifest_key(spec, manifest["batch_id"]),
        "created": created,
    }


def load_records(spec: PipelineSpec, s3: S3Client, manifest: Mapping[str, Any]) -> pd.DataFrame:
    """The snapshot of a batch's records (every schema column and the source object key)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    body = get_bytes(s3, spec.storage.bucket, str(manifest["records_key"]))
    return pq.read_table(pa.BufferReader(body)).to_pandas()
