"""Drift detection with Evidently for the whole fleet, each edge group and each model version.

Evidently is the detector: each scope runs `Report([DataDriftPreset(...)], include_tests=True)`
with the spec's columns, method and thresholds (plus a `ValueDrift` on the prediction
column when both sides have it), and the per-column and dataset verdicts are read from
its test results. edgeloop only decides what Evidently sees: a bounded stratified sample
per scope, numeric dtypes, and the columns with enough finite values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from edgeloop.drift.sample import FLEET, StratifiedSample, Stratum, StratumStats
from edgeloop.spec import DriftSpec, PipelineSpec

NOT_ENOUGH_DATA = "skipped: not enough data"
NOT_ENOUGH_REFERENCE = "skipped: not enough reference data"
DRIFT = "drift"
NO_DRIFT = "no drift"

# Evidently's own rule: above this many reference rows it switches from p-value tests to distances.
_LARGE_SAMPLE = 1000


@dataclass(frozen=True)
class ColumnDrift:
    """One column's verdict, as Evidently's `ValueDrift` metric and test gave it."""

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
    snapshot: Any = None  # the Evidently Snapshot (renders the HTML report)

    @property
    def drifted_columns(self) -> dict[str, float | None]:
        return {c.column: c.score for c in self.columns if c.drifted}

    @property
    def skipped(self) -> bool:
        return self.status.startswith("skipped")


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
    large-sample choice (normed Wasserstein), about twice as fast on the same rows.
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
    keep_snapshots: bool = True,
) -> DriftCheck:
    """Run Evidently for the fleet, each edge group (spec.drift.per_group) and each model version.

    Model versions get a scope of their own when more than one runs in the window.
    A scope with fewer than spec.drift.min_rows records ends as "skipped: not enough data",
    never as "no drift". `fleet_state` (group -> versions the fleet state reports) is added
    to each group's health context as it is.
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
        if not keep_snapshots:
            result.snapshot = None
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
    stratum: Stratum, stats: StratumStats, reference: StratifiedSample, min_rows: int
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
    mixed = _mixed_reference(stats, reference, min_rows)
    if mixed is not None:
        return "group mix", mixed
    return "fleet", reference.sample(FLEET)


def _mixed_reference(stats: StratumStats, reference: StratifiedSample, min_rows: int) -> pd.DataFrame | None:
    total = sum(stats.groups.values())
    if total == 0:
        return None
    parts: dict[str, pd.DataFrame] = {}
    for group in stats.groups:
        own = reference.sample(Stratum("group", group))
        if own is None or own.empty:
            return None  # a group the reference has never seen: no fair mix exists
        parts[group] = own
    shares = {g: n / total for g, n in stats.groups.items()}
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
    stats = current.stats.get(stratum, StratumStats())
    cur = current.sample(stratum)
    result = ScopeResult(stratum=stratum, status=NOT_ENOUGH_DATA, rows=stats.rows, nonfinite=stats.nonfinite())
    if cur is None or stats.rows < drift.min_rows:
        return result
    result.reference_scope, ref = _reference_for(stratum, stats, reference, drift.min_rows)
    result.sample_size = len(cur)
    if ref is None or len(ref) < drift.min_rows:
        result.status = NOT_ENOUGH_REFERENCE
        result.reference_size = 0 if ref is None else len(ref)
        return result
    result.reference_size = len(ref)
    ref_mean = _reference_confidence(stratum, stats, reference, result.reference_scope)
    result.confidence = _confidence(stats.confidence_mean, ref_mean, confidence_baseline, drift.confidence_drop)

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
    snapshot, verdicts, share, dataset_drift = _run_evidently(
        cur,
        ref,
        testable,
        categorical={c for c in testable if c in columns.categorical_features},
        prediction=prediction if with_prediction else None,
        drift=drift,
    )
    result.snapshot = snapshot
    result.columns = [verdicts[c] for c in testable if c in verdicts]
    result.prediction = verdicts.get(prediction) if with_prediction and prediction is not None else None
    result.drift_share = share
    result.dataset_drift = dataset_drift
    dropped = result.confidence is not None and result.confidence.dropped
    result.status = DRIFT if dataset_drift or dropped else NO_DRIFT
    return result


def _reference_confidence(
    stratum: Stratum, stats: StratumStats, reference: StratifiedSample, reference_scope: str
) -> float | None:
    """The reference's mean confidence, weighted like the reference rows the scope was compared with."""
    if reference_scope == "group":
        return reference.stats[stratum].confidence_mean
    fleet = reference.stats.get(FLEET)
    fleet_mean = fleet.confidence_mean if fleet is not None else None
    if reference_scope != "group mix":
        return fleet_mean
    total = sum(stats.groups.values())
    means = {g: reference.stats[Stratum("group", g)].confidence_mean for g in stats.groups}
    if any(m is None for m in means.values()):
        return fleet_mean
    return sum(float(m or 0.0) * n / total for (g, m), n in zip(means.items(), stats.groups.values(), strict=True))


def _confidence(
    current: float | None, reference: float | None, baseline: float | None, limit: float
) -> ConfidenceSignal | None:
    """Mean confidence now against the reference's (or `baseline` when the reference has none)."""
    ref = reference if reference is not None else baseline
    if current is None or ref is None:
        return None
    return ConfidenceSignal(current_mean=current, reference_mean=ref, drop=ref - current, limit=limit)


def _evidently_frame(frame: pd.DataFrame, columns: list[str], categorical: set[str]) -> pd.DataFrame:
    out = frame[columns].copy()
    for column in categorical:
        values = out[column].astype("object").where(out[column].notna(), None)
        out[column] = values.map(_inert, na_action="ignore")
    return out


def _inert(value: Any) -> Any:
    """A category as Evidently may embed it: its HTML report puts values unescaped in an inline script,
    so a device value such as `</script><script>...` would run in the reader's browser. `<` is shown as U+FF1C."""
    return value.replace("<", "\uff1c") if isinstance(value, str) else value


def _run_evidently(
    cur: pd.DataFrame,
    ref: pd.DataFrame,
    columns: list[str],
    *,
    categorical: set[str],
    prediction: str | None,
    drift: DriftSpec,
) -> tuple[Any, dict[str, ColumnDrift], float | None, bool]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    numerical = [c for c in columns if c not in categorical]
    cat_columns = sorted(categorical)
    names = list(columns)
    if prediction is not None:
        names.append(prediction)
        if pd.api.types.is_numeric_dtype(cur[prediction].dtype):
            numerical.append(prediction)
        else:
            cat_columns.append(prediction)
            categorical = categorical | {prediction}
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=cat_columns)
    preset = DataDriftPreset(
        columns=list(columns),
        method=evidently_method(drift.method, len(ref)),
        threshold=drift.threshold,
        drift_share=drift.drift_share,
    )
    metrics: list[Any] = [preset]
    if prediction is not None:
        metrics.append(ValueDrift(column=prediction))
    report = Report(metrics, include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(_evidently_frame(cur, names, categorical), data_definition=definition),
        Dataset.from_pandas(_evidently_frame(ref, names, categorical), data_definition=definition),
    )
    verdicts, share, dataset_drift = parse_snapshot(snapshot.dict())
    return snapshot, verdicts, share, dataset_drift


def parse_snapshot(data: Mapping[str, Any]) -> tuple[dict[str, ColumnDrift], float | None, bool]:
    """Per-column verdicts, the drifted share and the dataset-drift verdict from `Snapshot.dict()`.

    A column drifted when its `ValueDrift` test failed; the dataset drifted when the
    `DriftedColumnsCount` test (share below drift_share) failed.
    """
    scores: dict[str, tuple[float | None, str, float | None]] = {}
    share: float | None = None
    for metric in data.get("metrics", []):
        config = metric.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith(":ValueDrift"):
            scores[config["column"]] = (
                _number(metric.get("value")),
                str(config.get("method")),
                config.get("threshold"),
            )
        elif kind.endswith(":DriftedColumnsCount"):
            share = _number((metric.get("value") or {}).get("share"))
    statuses: dict[str, str] = {}
    dataset_drift = False
    for test in data.get("tests", []):
        params = (test.get("metric_config") or {}).get("params") or {}
        kind = str(params.get("type", ""))
        status = _status_name(test.get("status"))
        if kind.endswith(":ValueDrift"):
            statuses[params["column"]] = status
        elif kind.endswith(":DriftedColumnsCount"):
            dataset_drift = dataset_drift or status == "FAIL"
    verdicts = {
        column: ColumnDrift(
            column=column,
            score=score,
            method=method,
            threshold=_number(threshold),
            drifted=statuses.get(column) == "FAIL",
            status=statuses.get(column, "MISSING"),
        )
        for column, (score, method, threshold) in scores.items()
    }
    return verdicts, share, dataset_drift


def _status_name(status: Any) -> str:
    """'FAIL', 'SUCCESS', ... from Evidently's TestStatus enum or its JSON string."""
    return str(getattr(status, "value", status)).upper()


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _health(
    stats: StratumStats | None, stratum: Stratum, fleet_state: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Any]:
    """Versions and devices seen in this scope's window (and the fleet state's view of a group)."""
    health: dict[str, Any] = {}
    if stats is not None:
        health["versions"] = {c: dict(counts.most_common(10)) for c, counts in sorted(stats.context.items())}
        health["devices"] = len(stats.devices)
    if stratum.kind == "group" and fleet_state is not None and stratum.name in fleet_state:
        health["fleet_state"] = dict(fleet_state[stratum.name])
    return health
