"""Bounded-memory stratified sampling and per-group counts, one chunk of records at a time.

Every record gets a random key; each stratum (the fleet, each edge group, each model
version) keeps the records with its k smallest keys ("bottom-k"). That is a uniform
sample without replacement of the stratum, it merges across chunks in any order, and
memory stays at k rows per stratum plus one chunk, however large the window is.
Counts (rows, NaN/inf per column, confidence, versions seen, devices) are exact: they
are taken over every record, not over the sample.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from edgeloop.drift.columns import DriftColumns

StratumKind = Literal["fleet", "group", "model_version"]
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32_EXACT_INT = 2**24


@dataclass(frozen=True, order=True)
class Stratum:
    kind: StratumKind
    name: str

    @property
    def label(self) -> str:
        return "fleet" if self.kind == "fleet" else f"{self.kind}={self.name}"


FLEET = Stratum("fleet", "*")


@dataclass
class StratumStats:
    """Exact counts over every record of one stratum."""

    rows: int = 0
    nan: Counter[str] = field(default_factory=Counter)
    inf: Counter[str] = field(default_factory=Counter)
    confidence_sum: float = 0.0
    confidence_count: int = 0
    context: dict[str, Counter[str]] = field(default_factory=dict)
    devices: set[str] = field(default_factory=set)
    groups: Counter[str] = field(default_factory=Counter)

    @property
    def confidence_mean(self) -> float | None:
        return self.confidence_sum / self.confidence_count if self.confidence_count else None

    def nonfinite(self) -> dict[str, dict[str, int]]:
        """Columns that had NaN or inf values, with both counts."""
        names = sorted(set(self.nan) | set(self.inf))
        return {c: {"nan": int(self.nan[c]), "inf": int(self.inf[c])} for c in names if self.nan[c] or self.inf[c]}


@dataclass
class StratifiedSample:
    """The sample of each stratum and the exact counts of each, as one read produced them."""

    columns: DriftColumns
    size: int
    samples: dict[Stratum, pd.DataFrame]
    stats: dict[Stratum, StratumStats]
    rows_without_group: int = 0

    @property
    def rows(self) -> int:
        return self.stats[FLEET].rows if FLEET in self.stats else 0

    def sample(self, stratum: Stratum) -> pd.DataFrame | None:
        return self.samples.get(stratum)

    def strata(self, kind: StratumKind) -> list[Stratum]:
        return sorted(s for s in self.stats if s.kind == kind)


def normalize_frame(frame: pd.DataFrame, columns: DriftColumns) -> pd.DataFrame:
    """Project to the drift columns and give each a compact dtype.

    Numeric features and confidence become float32 where that loses no range (float64
    otherwise), text-like numbers are parsed (unparseable values become NaN, counted later),
    ids and versions become categories, the timestamp becomes UTC datetimes (NaT when unparseable).
    Columns that are absent stay absent: checking for required ones is the caller's job.
    """
    out: dict[str, Any] = {}
    for name in columns.projection:
        if name not in frame.columns:
            continue
        series = frame[name]
        if name == columns.timestamp:
            out[name] = _to_utc(series)
        elif _is_numeric_column(name, series, columns):
            out[name] = _to_float(series)
        else:
            out[name] = _to_category(series)
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))


def _is_numeric_column(name: str, series: pd.Series, columns: DriftColumns) -> bool:
    if name in columns.features:
        return name not in columns.categorical_features
    if name == columns.prediction:
        return bool(pd.api.types.is_numeric_dtype(series.dtype))  # a regression output; class labels are categories
    return name == columns.confidence


def _to_float(series: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype("float32")
    if not pd.api.types.is_numeric_dtype(series.dtype):
        series = pd.to_numeric(series, errors="coerce")
    if pd.api.types.is_float_dtype(series.dtype) and series.dtype == np.float32:
        return series
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    finite = values[np.isfinite(values)]
    peak = float(np.abs(finite).max()) if finite.size else 0.0
    limit = _FLOAT32_EXACT_INT if pd.api.types.is_integer_dtype(series.dtype) else _FLOAT32_MAX
    return pd.Series(values.astype("float32" if peak < limit else "float64"), index=series.index, name=series.name)


def _to_category(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.CategoricalDtype) and pd.api.types.is_string_dtype(series.cat.categories.dtype):
        return series
    return series.astype("string").astype("category")


def _to_utc(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(series.dtype):
        return series.dt.tz_localize("UTC")
    if pd.api.types.is_numeric_dtype(series.dtype):
        # integer timestamps are epoch milliseconds (what Kafka record timestamps are)
        return pd.to_datetime(series, unit="ms", utc=True, errors="coerce")
    return pd.to_datetime(series, utc=True, errors="coerce", format="ISO8601")


def row_keys(seed: int, source: str, rows: int) -> np.ndarray:
    """Deterministic random keys for the rows of one source (object key or frame name)."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(source.encode("utf-8"))])
    return rng.random(rows)


class StratifiedSampler:
    """Feeds chunks of normalized records into bottom-k samples per stratum and exact counts."""

    def __init__(self, columns: DriftColumns, size: int, *, by_group: bool = True, by_model_version: bool = True):
        if size < 1:
            raise ValueError(f"sample size must be at least 1, got {size}")
        self.columns = columns
        self.size = size
        self.by_group = by_group and columns.group is not None
        self.by_model_version = by_model_version and columns.model_version is not None
        self._keys: dict[Stratum, np.ndarray] = {}
        self._frames: dict[Stratum, pd.DataFrame] = {}
        self._stats: dict[Stratum, StratumStats] = {}
        self._rows_without_group = 0

    def add(self, frame: pd.DataFrame, keys: np.ndarray) -> None:
        """Add one chunk (a normalized frame) with one random key per row."""
        if len(frame) != len(keys):
            raise ValueError(f"{len(frame)} rows but {len(keys)} keys")
        if frame.empty:
            return
        frame = frame.reset_index(drop=True)
        nonfinite = _Nonfinite.of(frame, self.columns)
        for column in nonfinite.columns_with_inf():
            # counted as inf, then missing: Evidently drops missing values per column
            frame[column] = frame[column].mask(np.isinf(frame[column].to_numpy(dtype="float64", na_value=np.nan)))
        self._take(FLEET, frame, keys, np.ones(len(frame), dtype=bool), nonfinite=nonfinite, context=True)
        if self.by_group:
            assert self.columns.group is not None
            codes = frame[self.columns.group]
            self._rows_without_group += int(codes.isna().sum())
            for name, mask in _masks_by_value(codes):
                self._take(Stratum("group", name), frame, keys, mask, nonfinite=nonfinite, context=True)
        if self.by_model_version and self.columns.model_version in frame.columns:
            assert self.columns.model_version is not None
            for name, mask in _masks_by_value(frame[self.columns.model_version]):
                self._take(Stratum("model_version", name), frame, keys, mask, nonfinite=nonfinite, context=False)

    def finish(self) -> StratifiedSample:
        samples = {s: f.reset_index(drop=True) for s, f in self._frames.items()}
        return StratifiedSample(
            columns=self.columns,
            size=self.size,
            samples=samples,
            stats=dict(self._stats),
            rows_without_group=self._rows_without_group,
        )

    # --- internals -------------------------------------------------------------------

    def _take(
        self,
        stratum: Stratum,
        frame: pd.DataFrame,
        keys: np.ndarray,
        mask: np.ndarray,
        *,
        nonfinite: _Nonfinite,
        context: bool,
    ) -> None:
        stats = self._stats.setdefault(stratum, StratumStats())
        rows = int(mask.sum())
        if rows == 0:
            return
        stats.rows += rows
        nonfinite.count(mask, stats)
        part = frame[mask] if rows < len(frame) else frame
        group = self.columns.group
        if group is not None and group in part.columns:
            stats.groups.update(_value_counts(part[group], missing=None))
        confidence = self.columns.confidence
        if confidence is not None and confidence in part.columns:
            values = part[confidence].to_numpy(dtype="float64", na_value=np.nan)
            finite = values[np.isfinite(values)]
            stats.confidence_sum += float(finite.sum())
            stats.confidence_count += int(finite.size)
        if context:
            for column in self.columns.context:
                if column in part.columns:
                    stats.context.setdefault(column, Counter()).update(_value_counts(part[column]))
            device = self.columns.device
            if device is not None and device in part.columns:
                stats.devices.update(str(d) for d in part[device].dropna().unique())
        self._keep_smallest(stratum, part, keys[mask])

    def _keep_smallest(self, stratum: Stratum, part: pd.DataFrame, keys: np.ndarray) -> None:
        if stratum in self._frames:
            keys = np.concatenate([self._keys[stratum], keys])
            part = _concat(self._frames[stratum], part)
        if len(keys) > self.size:
            chosen = np.argpartition(keys, self.size - 1)[: self.size]
            chosen.sort()
            keys = keys[chosen]
            part = part.iloc[chosen]
        self._keys[stratum] = keys
        self._frames[stratum] = part.reset_index(drop=True)


@dataclass(frozen=True)
class _Nonfinite:
    """NaN and inf flags of one chunk's feature columns (rows x columns), counted per stratum."""

    columns: list[str]
    nan: np.ndarray
    inf: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame, columns: DriftColumns) -> _Nonfinite:
        present = [c for c in columns.features if c in frame.columns]
        nan = np.zeros((len(frame), len(present)), dtype=bool)
        inf = np.zeros_like(nan)
        for j, column in enumerate(present):
            if column in columns.categorical_features:
                nan[:, j] = frame[column].isna().to_numpy()
            else:
                values = frame[column].to_numpy(dtype="float64", na_value=np.nan)
                nan[:, j] = np.isnan(values)
                inf[:, j] = np.isinf(values)
        return cls(present, nan, inf)

    def columns_with_inf(self) -> list[str]:
        return [self.columns[int(j)] for j in np.flatnonzero(np.any(self.inf, axis=0))]

    def count(self, mask: np.ndarray, stats: StratumStats) -> None:
        for flags, counter in ((self.nan, stats.nan), (self.inf, stats.inf)):
            if not flags.any():
                continue
            sums = flags[mask].sum(axis=0) if not mask.all() else flags.sum(axis=0)
            counter.update({c: int(n) for c, n in zip(self.columns, sums, strict=True) if n})


def _value_counts(series: pd.Series, missing: str | None = "<missing>") -> Counter[str]:
    """Counts per value as text (fast on categoricals); missing values under `missing`, or dropped when None."""
    counts = series.value_counts(dropna=missing is None)
    out: Counter[str] = Counter()
    for value, n in counts.items():
        key = missing if pd.isna(value) else str(value)
        if n and key is not None:
            out[key] += int(n)
    return out


def _masks_by_value(series: pd.Series) -> list[tuple[str, np.ndarray]]:
    """One boolean mask per distinct non-null value, keyed by the value as text."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return [(str(value), codes == i) for i, value in enumerate(uniques)]


def _concat(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    """Concatenate two chunks, keeping categorical columns categorical when their categories differ."""
    out = pd.concat([left, right], ignore_index=True)
    for name in left.columns:
        if isinstance(left[name].dtype, pd.CategoricalDtype) and not isinstance(out[name].dtype, pd.CategoricalDtype):
            out[name] = out[name].astype("string").astype("category")
    return out
