"""The drift statistics are Evidently's: the same scores, tests, bins and verdicts, without building a report.

Two levels. Each statistic against Evidently's own stattest function on random and drifted
columns; then whole checks (every scope, every spec method) against the Evidently report
built from the same rows: per-column scores, methods, thresholds and verdicts, the drifted
share, the dataset verdict and the prediction's drift must be the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from edgeloop.drift import stats
from edgeloop.drift.columns import drift_columns
from edgeloop.drift.detect import DriftCheck, DriftMethodError, ScopeResult, check_drift
from edgeloop.drift.reference import reference_from_frame
from edgeloop.drift.reports import build_report, parse_snapshot
from edgeloop.drift.synthetic import SensorDrift, make_telemetry, synthetic_spec
from edgeloop.drift.window import frame_sample
from edgeloop.spec import PipelineSpec

RTOL = 1e-9
NUMERIC = ["a", "b", "c"]
GROUPS = ("plant-north", "plant-south")


def evidently_stattest(name: str) -> Any:
    """Evidently's implementation of one test: (reference Series, current Series, type, threshold) -> (score, drift)."""
    from evidently.legacy.calculations.stattests import (
        chisquare_stattest,
        jensenshannon,
        kl_div,
        ks_stattest,
        psi,
        wasserstein_distance_norm,
        z_stattest,
    )

    return {
        "psi": psi._psi,
        "jensenshannon": jensenshannon._jensenshannon,
        "kl_div": kl_div._kl_div,
        "ks": ks_stattest._ks_stat_test,
        "wasserstein": wasserstein_distance_norm._wasserstein_distance_norm,
        "z": z_stattest._z_stat_test,
        "chisquare": chisquare_stattest._chi_stat_test,
    }[name]


def numeric_columns(seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Reference and current columns: equal, shifted, rescaled, heavy-tailed, few values, values only in current."""
    rng = np.random.default_rng(seed)
    n1, n2 = (int(n) for n in rng.integers(300, 4000, size=2))
    few = int(rng.integers(3, 20))
    cases = [
        ("same distribution", rng.normal(0, 1, n1), rng.normal(0, 1, n2)),
        ("offset", rng.normal(0, 1, n1), rng.normal(0.4, 1, n2)),
        ("gain", rng.normal(2, 1, n1), rng.normal(2, 1.6, n2)),
        ("heavy tail", rng.lognormal(0, 2, n1), rng.lognormal(0.2, 2, n2)),
        ("few values", rng.integers(0, few, n1).astype(float), rng.integers(0, few, n2).astype(float)),
        ("new values", rng.integers(0, 4, n1).astype(float), rng.integers(0, 7, n2).astype(float)),
        ("far outliers", rng.normal(0, 1, n1), np.concatenate([rng.normal(0, 1, n2 - 3), [1e4, -1e4, 5e3]])),
    ]
    dtype = "float32" if seed % 2 else "float64"
    return [(name, ref.astype(dtype), cur.astype(dtype)) for name, ref, cur in cases]


@pytest.mark.parametrize("method", ["psi", "jensenshannon", "kl_div", "ks", "wasserstein"])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_each_numerical_statistic_equals_evidentlys(method: str, seed: int) -> None:
    from evidently.legacy.core import ColumnType

    for case, ref, cur in numeric_columns(seed):
        theirs, _ = evidently_stattest(method)(pd.Series(ref), pd.Series(cur), ColumnType.Numerical, 0.1)
        ours = stats.column_score(method, np.sort(ref), np.sort(cur), categorical=False)
        assert ours == pytest.approx(float(theirs), rel=RTOL, abs=1e-300), (case, ref.dtype)


@pytest.mark.parametrize("method", ["psi", "jensenshannon", "kl_div", "z", "chisquare"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_each_categorical_statistic_equals_evidentlys(method: str, seed: int) -> None:
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(seed)
    values = np.array(["idle", "run", "stop", "\uff1cx", "fault"], dtype=object)
    kinds = 2 if method == "z" else 5
    for shift in (0.0, 0.3):
        p_ref = np.full(kinds, 1 / kinds)
        p_cur = np.abs(p_ref + shift * rng.normal(size=kinds))
        ref = rng.choice(values[:kinds], size=int(rng.integers(300, 3000)), p=p_ref)
        cur = rng.choice(values[:kinds], size=int(rng.integers(300, 3000)), p=p_cur / p_cur.sum())
        theirs, _ = evidently_stattest(method)(pd.Series(ref), pd.Series(cur), ColumnType.Categorical, 0.05)
        keys = np.unique(np.concatenate([ref, cur]))  # codes in value order, as the check makes them
        codes = {v: i for i, v in enumerate(keys)}
        ref_codes = np.sort(np.array([codes[v] for v in ref]))
        cur_codes = np.sort(np.array([codes[v] for v in cur]))
        with np.errstate(divide="ignore"):
            ours = stats.column_score(method, ref_codes, cur_codes, categorical=True)
        assert ours == pytest.approx(float(theirs), rel=RTOL, abs=1e-300), shift


@pytest.mark.parametrize("seed", range(6))
def test_auto_picks_the_test_evidently_picks(seed: int) -> None:
    from evidently.legacy.calculations.stattests.registry import _get_default_stattest
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(seed)
    for size in (200, 1000, 1001, 3000):
        for distinct in (2, 3, 5, 6, 50):
            ref = pd.Series(rng.integers(0, distinct, size).astype(float))
            cur = pd.Series(rng.integers(0, distinct, 500).astype(float))
            both = np.sort(np.concatenate([ref.to_numpy(), cur.to_numpy()]))
            for categorical, kind in ((False, ColumnType.Numerical), (True, ColumnType.Categorical)):
                theirs = _get_default_stattest(ref, cur, kind).name
                ours = stats.auto_test(size, stats.distinct_sorted(both), categorical=categorical)
                assert ours == theirs, (size, distinct, kind)


def test_sturges_edges_from_min_max_and_count_are_numpys_edges() -> None:
    rng = np.random.default_rng(7)
    for dtype in ("float32", "float64"):
        for size in (21, 300, 4097, 40_000):
            values = (rng.normal(0, 1, size) * rng.uniform(0.01, 1000)).astype(dtype)
            ours = stats.sturges_edges(values.min(), values.max(), values.size)
            theirs = np.histogram_bin_edges(values, bins="sturges")
            assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), (dtype, size)
            assert np.array_equal(stats.histogram_counts(np.sort(values), ours), np.histogram(values, theirs)[0])


def test_a_binned_score_from_bin_fractions_alone_equals_evidentlys() -> None:
    """What a caller with only a histogram or sketch of the current side does: Sturges edges from
    min, max and count, then each side's share of values per bin, smoothed by `binned_score`."""
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(11)
    ref = rng.normal(0, 1, 5000).astype("float32")
    cur = np.concatenate([rng.normal(0.5, 1, 3000), [9.0]]).astype("float32")  # empty bins on the reference side
    edges = stats.sturges_edges(min(ref.min(), cur.min()), max(ref.max(), cur.max()), ref.size + cur.size)
    ref_fractions = np.histogram(ref, edges)[0] / ref.size
    cur_fractions = np.histogram(cur, edges)[0] / cur.size
    assert (ref_fractions == 0).any()
    for method in stats.BINNED:
        theirs, _ = evidently_stattest(method)(pd.Series(ref), pd.Series(cur), ColumnType.Numerical, 0.1)
        assert stats.binned_score(method, ref_fractions, cur_fractions) == pytest.approx(float(theirs), rel=RTOL)


def test_smoothing_follows_evidentlys_two_rules() -> None:
    assert stats.smooth_zeros(np.array([0.5, 0.5, 0.0])).tolist() == [0.5, 0.5, 0.0001]
    tiny = np.array([0.99995, 0.00005, 0.0])
    assert stats.smooth_zeros(tiny)[2] == pytest.approx(0.00005 / 10**6)
    with pytest.raises(ValueError, match="every bin is empty"):
        stats.smooth_zeros(np.zeros(3))
    with pytest.raises(ValueError, match="not a binned drift method"):
        stats.binned_score("ks", np.ones(2) / 2, np.ones(2) / 2)


# --- whole checks against Evidently's report ------------------------------------------------------


def spec_with(method: str, *, columns: list[str] | None = None, threshold: float | None = None) -> PipelineSpec:
    """Three numerical features and two categorical ones (`mode` with 3 values, `switch` with 2)."""
    base = synthetic_spec(NUMERIC, GROUPS, name="stats_check")
    data = base.model_dump(by_alias=True)
    data["schema"] += [{"name": "mode", "type": "string"}, {"name": "switch", "type": "string"}]
    data["drift"] |= {"method": method, "threshold": threshold, "drift_share": 0.3, "min_rows": 100}
    data["drift"]["columns"] = columns or []
    return PipelineSpec.model_validate(data)


def telemetry(rows: int, seed: int, *, drifted: bool) -> pd.DataFrame:
    """Rows per group; with `drifted`, plant-north's sensors and categories shift."""
    change = {"plant-north": {"a": SensorDrift(offset=0.5), "b": SensorDrift(gain=1.5)}} if drifted else None
    frame = make_telemetry(NUMERIC, dict.fromkeys(GROUPS, rows), seed=seed, drift=change)
    rng = np.random.default_rng(seed)
    north = (frame["group_id"] == "plant-north").to_numpy()
    modes = np.array(["idle", "run", "</script>"], dtype=object)
    skew = [0.6, 0.3, 0.1] if drifted else [1 / 3, 1 / 3, 1 / 3]
    frame["mode"] = np.where(north, rng.choice(modes, len(frame), p=skew), rng.choice(modes, len(frame)))
    switches = np.array(["on", "off"], dtype=object)
    split = [0.7, 0.3] if drifted else None
    frame["switch"] = np.where(north, rng.choice(switches, len(frame), p=split), rng.choice(switches, len(frame)))
    return frame


def checked(spec: PipelineSpec, rows: int, reference_rows: int, seed: int) -> DriftCheck:
    reference = reference_from_frame(telemetry(reference_rows, seed=100 + seed, drifted=False), spec)
    sample = frame_sample(telemetry(rows, seed=seed, drifted=True), drift_columns(spec), spec.drift.sample_per_group)
    return check_drift(sample, reference.sample, spec)


def assert_same_as_evidently(scope: ScopeResult) -> None:
    assert scope.report is not None, scope.status
    verdicts, share, dataset_drift = parse_snapshot(build_report(scope.report).dict())
    ours = [*scope.columns, *([scope.prediction] if scope.prediction is not None else [])]
    assert sorted(c.column for c in ours) == sorted(verdicts)
    for column in ours:
        theirs = verdicts[column.column]
        where = f"{scope.stratum.label} {column.column}"
        assert (column.method, column.threshold, column.status) == (theirs.method, theirs.threshold, theirs.status), (
            where
        )
        assert column.drifted == theirs.drifted, where
        if theirs.score is None:
            assert column.score is None, where
        else:
            assert column.score == pytest.approx(theirs.score, rel=RTOL, abs=1e-300), where
    assert scope.drift_share == pytest.approx(share, rel=RTOL)
    assert scope.dataset_drift == dataset_drift


CHECKS = {
    # spec method: (columns, rows per group, reference rows per group)
    "auto": (
        None,
        1500,
        1500,
    ),  # edgeloop picks PSI for the features; Evidently picks Jensen-Shannon for the prediction
    "auto-small": (None, 400, 400),  # K-S for numbers, chi-square and Z for categories and the prediction
    "psi": (None, 800, 1200),
    "ks": (NUMERIC, 800, 1200),
    "wasserstein": (NUMERIC, 800, 1200),
    "jensenshannon": (None, 800, 1200),
    "kl_div": (None, 800, 1200),
    "z": (["switch"], 800, 1200),
}


@pytest.mark.parametrize("case", list(CHECKS))
def test_every_scopes_verdicts_equal_evidentlys_report(case: str) -> None:
    columns, rows, reference_rows = CHECKS[case]
    spec = spec_with(case.removesuffix("-small"), columns=columns)
    check = checked(spec, rows, reference_rows, seed=len(case))
    assert [s.stratum.label for s in check.scopes] == ["fleet", "group=plant-north", "group=plant-south"]
    assert "plant-north" in check.drifted_groups  # p-value tests may flag a clean group too: the verdicts matter
    for scope in check.scopes:
        assert_same_as_evidently(scope)


def test_verdicts_equal_evidentlys_with_the_specs_threshold_on_a_second_window() -> None:
    spec = spec_with("psi", threshold=0.05)
    check = checked(spec, 1000, 1000, seed=21)
    assert {c.threshold for s in check.scopes for c in s.columns} == {0.05}
    for scope in check.scopes:
        assert_same_as_evidently(scope)


def test_a_method_that_does_not_fit_a_column_fails_with_its_name_as_evidently_does() -> None:
    spec = spec_with("z", columns=["a", "switch"])
    with pytest.raises(DriftMethodError, match="'z' does not apply to numerical column 'a'"):
        checked(spec, 400, 400, seed=5)
    spec = spec_with("wasserstein", columns=["a", "mode"])
    with pytest.raises(DriftMethodError, match="'wasserstein' does not apply to categorical column 'mode'"):
        checked(spec, 400, 400, seed=5)
