"""Drift verdicts for the whole fleet, each edge group and each model version.

Each scope is checked the way Evidently's `DataDriftPreset` (with `include_tests=True`)
and a `ValueDrift` on the prediction column check it: the same test per column (the
spec's method, or Evidently's own choice), the same defaults, bins and thresholds, the
same drifted share and dataset verdict. The statistics are `stats`' numpy versions of
Evidently's, computed for all columns of a scope from one sort of its rows, so no report
is built here; each checked scope keeps the rows it was compared on (`ReportInput`),
from which `reports` builds its Evidently report when someone will open it. edgeloop
decides what is compared: a bounded stratified sample per scope, numeric dtypes, and
the columns with enough finite values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from edgeloop.drift import stats
from edgeloop.drift.sample import FLEET, StratifiedSample, Stratum, StratumStats
from edgeloop.spec import DriftSpec, PipelineSpec

NOT_ENOUGH_DATA = "skipped: not enough data"
NOT_ENOUGH_REFERENCE = "skipped: not enough reference data"
DRIFT = "drift"
NO_DRIFT = "no drift"

# Evidently's own rule: above this many reference rows it switches from p-value tests to distances.
_LARGE_SAMPLE = stats.SMALL_REFERENCE


class DriftMethodError(ValueError):
    """The spec's drift method does not apply to a column's type (Evidently refuses it too)."""


@dataclass(frozen=True)
class ColumnDrift:
    """One column's verdict, as Evidently's `ValueDrift` metric and test give it (`method` is the
    spec's stattest name, or the display name of the test Evidently chose)."""

    column: str
    score: float | None
    method: str
    threshold: float | None
    drifted: bool
    status: str = ""


@dataclass(frozen=True)
class ConfidenceSignal:
    current_mean: float
    reference_mean: float
    drop: float
    limit: float

    @property
    def dropped(self) -> bool:
        return self.limit > 0 and self.drop >= self.limit


@dataclass(frozen=True)
class ReportInput:
    """What a scope's Evidently report is built from: the rows compared and the check's settings."""

    current: pd.DataFrame
    reference: pd.DataFrame
    columns: tuple[str, ...]
    categorical: tuple[str, ...]
    prediction: str | None
    method: str | None  # the stattest named to Evidently; None lets Evidently choose per column
    threshold: float | None
    drift_share: float
    from_sampled_records: bool = False  # profiles mode: the check read merged profiles, the report a sample

    @property
    def names(self) -> list[str]:
        """Every column the report reads: the checked features, then the prediction."""
        return [*self.columns, *([self.prediction] if self.prediction is not None else [])]


@dataclass
class ScopeResult:
    """The drift verdict for one scope (the fleet, an edge group or a model version)."""

    stratum: Stratum
    status: str
    rows: int
    sample_size: int = 0
    reference_size: int = 0
    reference_scope: str = ""
    columns: list[ColumnDrift] = field(default_factory=list)
    skipped_columns: dict[str, str] = field(default_factory=dict)
    drift_share: float | None = None
    dataset_drift: bool = False
    prediction: ColumnDrift | None = None
    confidence: ConfidenceSignal | None = None
    nonfinite: dict[str, dict[str, int]] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    report: ReportInput | None = None  # the rows checked, for its Evidently report

    @property
    def drifted_columns(self) -> dict[str, float | None]:
        return {c.column: c.score for c in self.columns if c.drifted}

    @property
    def skipped(self) -> bool:
        return self.status.startswith("skipped")

    @property
    def report_before_alert(self) -> bool:
        """A drifted scope's report is written by the check, before its alert goes out; other scopes' after it."""
        return self.status == DRIFT


@dataclass
class DriftCheck:
    """Every scope's result for one window."""

    pipeline: str
    scopes: list[ScopeResult]
    settings: dict[str, Any]

    def scope(self, stratum: Stratum) -> ScopeResult | None:
        return next((s for s in self.scopes if s.stratum == stratum), None)

    @property
    def fleet(self) -> ScopeResult:
        found = self.scope(FLEET)
        assert found is not None, "a drift check always has a fleet scope"
        return found

    @property
    def status(self) -> str:
        """`drift` when the fleet or a group drifted, else the fleet's status (`no drift` or a skip)."""
        if self.fleet.skipped:
            return self.fleet.status
        deciding = [s for s in self.scopes if s.stratum.kind in ("fleet", "group")]
        return DRIFT if any(s.status == DRIFT for s in deciding) else NO_DRIFT

    @property
    def drifted_groups(self) -> list[str]:
        return sorted(s.stratum.name for s in self.scopes if s.stratum.kind == "group" and s.status == DRIFT)


def evidently_method(method: str, reference_rows: int) -> str | None:
    """The Evidently stattest name for the spec's method; `None` lets Evidently choose.

    With `auto` on large samples edgeloop picks PSI: a distance like Evidently's own
    large-sample choice (normed Wasserstein), with the same 0.1 threshold, that needs only
    each side's share of values per bin (so a histogram or sketch of the data is enough).
    """
    if method != "auto":
        return method
    return "psi" if reference_rows > _LARGE_SAMPLE else None


def check_drift(
    current: StratifiedSample,
    reference: StratifiedSample,
    spec: PipelineSpec,
    *,
    confidence_baseline: float | None = None,
    fleet_state: Mapping[str, Mapping[str, Any]] | None = None,
    keep_report_input: bool = True,
) -> DriftCheck:
    """Check the fleet, each edge group (spec.drift.per_group) and each model version.

    Model versions get a scope of their own when more than one runs in the window.
    A scope with fewer than spec.drift.min_rows records ends as "skipped: not enough data",
    never as "no drift". `fleet_state` (group -> versions the fleet state reports) is added
    to each group's health context as it is. With `keep_report_input`, each checked scope
    keeps the rows it was compared on (`ScopeResult.report`) for its Evidently report.
    """
    drift = spec.drift
    strata = [FLEET]
    if drift.per_group:
        seen = set(current.strata("group"))
        strata += sorted(seen | {Stratum("group", g.name) for g in spec.groups})
    versions = current.strata("model_version")
    if len(versions) > 1:
        strata += versions
    scopes = []
    for stratum in strata:
        result = _check_scope(stratum, current, reference, drift, confidence_baseline)
        result.health = _health(current.stats.get(stratum), stratum, fleet_state)
        if not keep_report_input:
            result.report = None
        scopes.append(result)
    settings = {
        "columns": list(current.columns.features),
        "method": drift.method,
        "threshold": drift.threshold,
        "drift_share": drift.drift_share,
        "min_rows": drift.min_rows,
        "sample_per_group": current.size,
        "confidence_drop": drift.confidence_drop,
        "per_group": drift.per_group,
    }
    return DriftCheck(pipeline=spec.name, scopes=scopes, settings=settings)


def _reference_for(
    stratum: Stratum, counts: StratumStats, reference: StratifiedSample, min_rows: int
) -> tuple[str, pd.DataFrame | None]:
    """The reference rows a scope is compared with, and which kind they are.

    A group is compared with its own reference rows when the reference has enough of them.
    The fleet and a model version are compared with the reference groups mixed in the
    proportions the scope has now, so a group that is quiet or busier than usual is not
    mistaken for drift; without per-group reference rows the whole reference is used.
    """
    if stratum.kind == "group":
        own = reference.sample(stratum)
        if own is not None and len(own) >= min_rows:
            return "group", own
        return "fleet", reference.sample(FLEET)
    mixed = _mixed_reference(counts, reference, min_rows)
    if mixed is not None:
        return "group mix", mixed
    return "fleet", reference.sample(FLEET)


def _mixed_reference(counts: StratumStats, reference: StratifiedSample, min_rows: int) -> pd.DataFrame | None:
    total = sum(counts.groups.values())
    if total == 0:
        return None
    parts: dict[str, pd.DataFrame] = {}
    for group in counts.groups:
        own = reference.sample(Stratum("group", group))
        if own is None or own.empty:
            return None  # a group the reference has never seen: no fair mix exists
        parts[group] = own
    shares = {g: n / total for g, n in counts.groups.items()}
    size = min([reference.size] + [int(len(parts[g]) / shares[g]) for g in parts])
    if size < min_rows:
        return None
    rng = np.random.default_rng(0)
    chosen = []
    for group in sorted(parts):
        want = min(len(parts[group]), max(1, round(size * shares[group])))
        chosen.append(parts[group].iloc[np.sort(rng.choice(len(parts[group]), size=want, replace=False))])
    return pd.concat(chosen, ignore_index=True)


def _check_scope(
    stratum: Stratum,
    current: StratifiedSample,
    reference: StratifiedSample,
    drift: DriftSpec,
    confidence_baseline: float | None,
) -> ScopeResult:
    counts = current.stats.get(stratum, StratumStats())
    cur = current.sample(stratum)
    result = ScopeResult(stratum=stratum, status=NOT_ENOUGH_DATA, rows=counts.rows, nonfinite=counts.nonfinite())
    if cur is None or counts.rows < drift.min_rows:
        return result
    result.reference_scope, ref = _reference_for(stratum, counts, reference, drift.min_rows)
    result.sample_size = len(cur)
    if ref is None or len(ref) < drift.min_rows:
        result.status = NOT_ENOUGH_REFERENCE
        result.reference_size = 0 if ref is None else len(ref)
        return result
    result.reference_size = len(ref)
    ref_mean = _reference_confidence(stratum, counts, reference, result.reference_scope)
    result.confidence = _confidence(counts.confidence_mean, ref_mean, confidence_baseline, drift.confidence_drop)

    columns = current.columns
    testable = []
    for column in columns.features:
        cur_n = int(cur[column].notna().sum()) if column in cur else 0
        ref_n = int(ref[column].notna().sum()) if column in ref else 0
        if cur_n < drift.min_rows or ref_n < drift.min_rows:
            result.skipped_columns[column] = (
                f"not enough finite values (current {cur_n}, reference {ref_n}, min_rows {drift.min_rows})"
            )
        else:
            testable.append(column)
    if not testable:
        return result
    prediction = columns.prediction
    with_prediction = (
        prediction is not None
        and prediction in cur
        and prediction in ref
        and cur[prediction].notna().sum() >= drift.min_rows
        and ref[prediction].notna().sum() >= drift.min_rows
    )
    categorical = tuple(sorted(c for c in testable if c in columns.categorical_features))
    method = evidently_method(drift.method, len(ref))
    verdicts = column_verdicts(
        cur, ref, testable, categorical=set(categorical), method=method, threshold=drift.threshold
    )
    result.columns = [verdicts[c] for c in testable]
    result.drift_share = sum(v.drifted for v in result.columns) / len(result.columns)
    result.dataset_drift = result.drift_share >= drift.drift_share
    if with_prediction and prediction is not None:
        numeric = pd.api.types.is_numeric_dtype(cur[prediction].dtype)
        by_evidently = column_verdicts(cur, ref, [prediction], categorical=set() if numeric else {prediction})
        result.prediction = by_evidently[prediction]
    result.report = ReportInput(
        current=cur,
        reference=ref,
        columns=tuple(testable),
        categorical=categorical,
        prediction=prediction if with_prediction else None,
        method=method,
        threshold=drift.threshold,
        drift_share=drift.drift_share,
    )
    dropped = result.confidence is not None and result.confidence.dropped
    result.status = DRIFT if result.dataset_drift or dropped else NO_DRIFT
    return result


def column_verdicts(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    columns: list[str],
    *,
    categorical: set[str],
    method: str | None = None,
    threshold: float | None = None,
) -> dict[str, ColumnDrift]:
    """Each column's verdict as Evidently's `ValueDrift(column, method, threshold)` with its test gives it.

    `method` None lets Evidently's rule choose per column (by reference size, type and
    distinct values); `threshold` None takes the test's default. The numerical columns of
    each side are sorted once, all together; every statistic reads the sorted values.
    """
    numerical = [c for c in columns if c not in categorical]
    ref_sorted, cur_sorted = _finite_sorted(reference, numerical), _finite_sorted(current, numerical)
    for column in columns:
        if column in categorical:
            ref_sorted[column], cur_sorted[column] = _category_codes(reference[column], current[column])
    out = {}
    for column in columns:
        ref, cur, is_categorical = ref_sorted[column], cur_sorted[column], column in categorical
        name = method
        if name is None:
            distinct = stats.distinct_sorted(np.sort(np.concatenate((ref, cur))))
            name = stats.auto_test(ref.size, distinct, categorical=is_categorical)
        test = stats.TESTS[name]
        if not test.applies_to(is_categorical):
            kind = "categorical" if is_categorical else "numerical"
            raise DriftMethodError(f"drift method '{name}' does not apply to {kind} column '{column}'")
        with np.errstate(divide="ignore", invalid="ignore"):
            score = stats.column_score(name, ref, cur, categorical=is_categorical)
        limit = test.default_threshold if threshold is None else threshold
        drifted = test.drifted(score, limit)
        out[column] = ColumnDrift(
            column=column,
            score=finite_number(score),
            method=method if method is not None else test.display_name,
            threshold=limit,
            drifted=drifted,
            status="FAIL" if drifted else "SUCCESS",
        )
    return out


def _finite_sorted(frame: pd.DataFrame, columns: list[str]) -> dict[str, np.ndarray]:
    """Each numerical column's finite values, sorted: one sort per dtype for all its columns."""
    by_dtype: dict[np.dtype[Any], list[str]] = {}
    for column in columns:
        by_dtype.setdefault(np.dtype(frame[column].dtype), []).append(column)
    out: dict[str, np.ndarray] = {}
    for dtype, names in by_dtype.items():
        block = frame[names].to_numpy(dtype=dtype, na_value=np.nan)
        ordered = np.sort(block, axis=0)  # -inf first, then finite values, +inf, NaN last
        finite = np.isfinite(block).sum(axis=0)
        first = (block == -np.inf).sum(axis=0)
        for j, name in enumerate(names):
            out[name] = np.ascontiguousarray(ordered[first[j] : first[j] + finite[j], j])
    return out


def _category_codes(reference: pd.Series, current: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Both sides' categories as sorted codes that number the values (as Evidently sees them) in sort order."""
    ref, cur = _as_category(reference), _as_category(current)
    ref_names = [inert_category(v) for v in ref.cat.categories]
    cur_names = [inert_category(v) for v in cur.cat.categories]
    union = np.array(sorted(set(ref_names) | set(cur_names)), dtype=object)
    out = []
    for series, names in ((ref, ref_names), (cur, cur_names)):
        position = np.searchsorted(union, np.array(names, dtype=object)) if names else np.zeros(0, dtype=np.intp)
        codes = series.cat.codes.to_numpy()
        out.append(np.sort(position[codes[codes >= 0]]))
    return out[0], out[1]


def _as_category(series: pd.Series) -> pd.Series:
    return series if isinstance(series.dtype, pd.CategoricalDtype) else series.astype("category")


def inert_category(value: Any) -> Any:
    """A category as Evidently may embed it: its HTML report puts values unescaped in an inline script,
    so a device value such as `</script><script>...` would run in the reader's browser. `<` is shown as U+FF1C.
    The check compares these same values, so its verdicts are the report's."""
    return value.replace("<", "\uff1c") if isinstance(value, str) else value


def _reference_confidence(
    stratum: Stratum, counts: StratumStats, reference: StratifiedSample, reference_scope: str
) -> float | None:
    """The reference's mean confidence, weighted like the reference rows the scope was compared with."""
    if reference_scope == "group":
        return reference.stats[stratum].confidence_mean
    fleet = reference.stats.get(FLEET)
    fleet_mean = fleet.confidence_mean if fleet is not None else None
    if reference_scope != "group mix":
        return fleet_mean
    total = sum(counts.groups.values())
    means = {g: reference.stats[Stratum("group", g)].confidence_mean for g in counts.groups}
    if any(m is None for m in means.values()):
        return fleet_mean
    return sum(float(m or 0.0) * n / total for (g, m), n in zip(means.items(), counts.groups.values(), strict=True))


def _confidence(
    current: float | None, reference: float | None, baseline: float | None, limit: float
) -> ConfidenceSignal | None:
    """Mean confidence now against the reference's (or `baseline` when the reference has none)."""
    ref = reference if reference is not None else baseline
    if current is None or ref is None:
        return None
    return ConfidenceSignal(current_mean=current, reference_mean=ref, drop=ref - current, limit=limit)


def finite_number(value: Any) -> float | None:
    """`value` as a finite float, else None (missing, not a number, NaN or infinite)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _health(
    stratum_counts: StratumStats | None, stratum: Stratum, fleet_state: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Any]:
    """Versions and devices seen in this scope's window (and the fleet state's view of a group)."""
    health: dict[str, Any] = {}
    if stratum_counts is not None:
        health["versions"] = {c: dict(counts.most_common(10)) for c, counts in sorted(stratum_counts.context.items())}
        health["devices"] = len(stratum_counts.devices)
    if stratum.kind == "group" and fleet_state is not None and stratum.name in fleet_state:
        health["fleet_state"] = dict(fleet_state[stratum.name])
    return health
