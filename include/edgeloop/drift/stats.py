"""Evidently's per-column drift statistics as plain functions over numpy arrays and over bin fractions.

The same tests, defaults, binning and smoothing as Evidently 0.7's
`evidently.legacy.calculations.stattests`, which `DataDriftPreset` and `ValueDrift` run,
so a score here is the score Evidently's report shows for the same values (to float
rounding) and the verdict is the same; `tests/unit/drift/test_drift_stats.py` compares them.

Inputs are the finite values of one column (NaN and inf dropped, as Evidently drops them):
float arrays for a numerical column, integer codes for a categorical one, where the codes
number the distinct values in their sort order (`z_p_value` needs that order).

- `auto_test`: the test Evidently picks when none is named.
- `ks_p_value`, `z_p_value`, `chisquare_p_value`: p-values (drift below the threshold).
- `wasserstein_normed` and the binned distances PSI, Jensen-Shannon and Kullback-Leibler (drift at or above).
- `bin_fractions`, `sturges_edges`, `binned_score`: the binning apart from the scoring, so a caller that
  holds only a histogram or sketch of one side scores it with the same bins and smoothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Evidently's auto rule: up to this many reference values it uses p-value tests, above it distances.
SMALL_REFERENCE = 1000
# Evidently bins a numerical column by value (like a category) unless its reference has more distinct values.
HISTOGRAM_MIN_DISTINCT = 20
_FEW_DISTINCT = 5
_SMOOTHING = 0.0001


@dataclass(frozen=True)
class StatTest:
    """One of Evidently's drift tests: its name in a spec, the name its report shows, its default threshold."""

    name: str
    display_name: str
    default_threshold: float
    numerical: bool
    categorical: bool
    p_value: bool
    strict: bool = False

    def drifted(self, score: float, threshold: float) -> bool:
        """Evidently's comparison: p-values drift below the threshold (K-S also at it), distances at or above."""
        if self.p_value:
            return bool(score < threshold) if self.strict else bool(score <= threshold)
        return bool(score >= threshold)

    def applies_to(self, categorical: bool) -> bool:
        return self.categorical if categorical else self.numerical


TESTS = {
    t.name: t
    for t in (
        StatTest("ks", "K-S p_value", 0.05, numerical=True, categorical=False, p_value=True),
        StatTest("z", "Z-test p_value", 0.05, numerical=False, categorical=True, p_value=True, strict=True),
        StatTest("chisquare", "chi-square p_value", 0.05, numerical=False, categorical=True, p_value=True, strict=True),
        StatTest("psi", "PSI", 0.1, numerical=True, categorical=True, p_value=False),
        StatTest("jensenshannon", "Jensen-Shannon distance", 0.1, numerical=True, categorical=True, p_value=False),
        StatTest("kl_div", "Kullback-Leibler divergence", 0.1, numerical=True, categorical=True, p_value=False),
        StatTest("wasserstein", "Wasserstein distance (normed)", 0.1, numerical=True, categorical=False, p_value=False),
    )
}
BINNED = ("psi", "jensenshannon", "kl_div")


def auto_test(reference_size: int, distinct: int, *, categorical: bool) -> str:
    """The test Evidently picks for a column when none is named.

    `reference_size` counts the reference's finite values, `distinct` the distinct values
    of reference and current together. Small references get p-value tests (K-S, or
    chi-square / Z for categories and columns with at most 5 values), larger ones
    distances (normed Wasserstein, or Jensen-Shannon for those).
    """
    few = categorical or distinct <= _FEW_DISTINCT
    if reference_size <= SMALL_REFERENCE:
        if few:
            return "chisquare" if distinct > 2 else "z"
        return "ks"
    return "jensenshannon" if few else "wasserstein"


def distinct_sorted(values: np.ndarray) -> int:
    """The number of distinct values of a sorted array."""
    if values.size == 0:
        return 0
    return int(np.count_nonzero(values[1:] != values[:-1])) + 1


# --- p-value tests -----------------------------------------------------------------------------


def ks_p_value(reference: np.ndarray, current: np.ndarray) -> float:
    """Two-sided two-sample Kolmogorov-Smirnov p-value (scipy's `ks_2samp`, as Evidently calls it)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(reference, current)[1])


def z_p_value(reference: np.ndarray, current: np.ndarray) -> float:
    """Evidently's two-proportion Z-test: the smallest value against all others, two-sided.

    1.0 when both sides hold one and the same value.
    """
    from scipy.special import ndtr

    ref_values, cur_values = np.unique(reference), np.unique(current)
    if ref_values.size == 1 and cur_values.size == 1 and ref_values[0] == cur_values[0]:
        return 1.0
    first = min(ref_values[0], cur_values[0])
    n1, n2 = reference.size, current.size
    p1 = float(np.count_nonzero(reference != first)) / n1
    p2 = float(np.count_nonzero(current != first)) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - ndtr(np.abs(z))))


def chisquare_p_value(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Evidently's chi-square test: current counts per value against reference counts scaled to the current size.

    scipy's `chisquare` (Pearson's statistic, chi-squared survival with one degree of
    freedom fewer than values) without importing `scipy.stats`, which costs most of a second.
    """
    from scipy.special import chdtrc

    observed = np.asarray(current_counts, dtype=np.float64)
    expected = reference_counts * (current_counts.sum() / reference_counts.sum())
    statistic = np.sum((observed - expected) ** 2 / expected)
    return float(chdtrc(np.float64(observed.size - 1), statistic))


# --- distances ---------------------------------------------------------------------------------


def wasserstein_normed(reference: np.ndarray, current: np.ndarray, *, presorted: bool = False) -> float:
    """First Wasserstein distance divided by the reference's standard deviation (at least 0.001).

    The standard deviation is computed as pandas computes it for Evidently (`np.std` of a
    Series: a float64 two-pass sum, rounded to the values' float type). With `presorted`
    the inputs are taken as sorted already.
    """
    norm = max(_series_std(reference), 0.001)
    if not presorted:
        reference, current = np.sort(reference), np.sort(current)
    return _wasserstein(reference, current) / norm


def _series_std(values: np.ndarray) -> float:
    dtype = values.dtype if values.dtype.kind == "f" else np.dtype(np.float64)
    values = values.astype(dtype, copy=False)
    count = dtype.type(values.size)
    mean = values.sum(dtype=np.float64) / count
    variance = ((mean - values) ** 2).sum(dtype=np.float64) / count
    return float(np.sqrt(np.asarray(variance).astype(dtype)))


def _wasserstein(reference_sorted: np.ndarray, current_sorted: np.ndarray) -> float:
    """scipy's `wasserstein_distance` (its `_cdf_distance` with p=1) for already sorted inputs."""
    u = reference_sorted.astype(np.float64, copy=False)
    v = current_sorted.astype(np.float64, copy=False)
    both = np.concatenate((u, v))
    both.sort(kind="mergesort")
    deltas = np.diff(both)
    u_cdf = u.searchsorted(both[:-1], "right") / u.size
    v_cdf = v.searchsorted(both[:-1], "right") / v.size
    return float(np.vecdot(np.abs(u_cdf - v_cdf), deltas))


def sturges_edges(low: np.generic | float, high: np.generic | float, count: int) -> np.ndarray:
    """`np.histogram_bin_edges(values, bins="sturges")` from the values' minimum, maximum and count alone.

    Pass `low` and `high` as numpy scalars of the values' dtype (float32 data has float32 edges).
    """
    ends = np.array([low, high])
    width = np.ptp(ends) / (np.log2(count) + 1.0)
    if np.issubdtype(ends.dtype, np.integer) and width < 1:
        width = 1
    bins = int(np.ceil((ends[1] - ends[0]) / width)) if width else 1
    return np.histogram_bin_edges(ends, bins=bins)


def histogram_counts(values_sorted: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`np.histogram(values, edges)[0]` for sorted values: [e_i, e_i+1) per bin, the last bin closed."""
    inside = np.concatenate(
        (values_sorted.searchsorted(edges[:-1], "left"), values_sorted.searchsorted(edges[-1:], "right"))
    )
    return np.diff(inside)


def bin_fractions(
    reference_sorted: np.ndarray, current_sorted: np.ndarray, *, categorical: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Evidently's bins for PSI, Jensen-Shannon and Kullback-Leibler, as fractions of each side (unsmoothed).

    A numerical column whose reference has more than 20 distinct values gets Sturges bins
    over reference and current together; any other column one bin per value present on
    either side. Both inputs sorted.
    """
    if not categorical and distinct_sorted(reference_sorted) > HISTOGRAM_MIN_DISTINCT:
        low = min(reference_sorted[0], current_sorted[0])
        high = max(reference_sorted[-1], current_sorted[-1])
        edges = sturges_edges(low, high, reference_sorted.size + current_sorted.size)
        ref_counts = histogram_counts(reference_sorted, edges)
        cur_counts = histogram_counts(current_sorted, edges)
    else:
        ref_counts, cur_counts = value_counts(reference_sorted, current_sorted)
    return ref_counts / reference_sorted.size, cur_counts / current_sorted.size


def value_counts(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of each value present on either side, aligned (for chi-square and per-value bins)."""
    keys, codes = np.unique(np.concatenate((reference, current)), return_inverse=True)
    ref_counts = np.bincount(codes[: reference.size], minlength=keys.size)
    cur_counts = np.bincount(codes[reference.size :], minlength=keys.size)
    return ref_counts, cur_counts


def smooth_zeros(fractions: np.ndarray) -> np.ndarray:
    """Evidently's smoothing before PSI and Kullback-Leibler: empty bins get 0.0001,
    or a millionth of the smallest non-empty bin when that is itself at most 0.0001."""
    out = np.array(fractions, dtype=np.float64)
    filled = out[out != 0]
    if filled.size == 0:
        raise ValueError("every bin is empty: a drift score needs values on both sides")
    smallest = filled.min()
    np.place(out, out == 0, smallest / 10**6 if smallest <= _SMOOTHING else _SMOOTHING)
    return out


def binned_score(method: str, reference_fractions: np.ndarray, current_fractions: np.ndarray) -> float:
    """PSI, Jensen-Shannon distance or Kullback-Leibler divergence of two binned distributions.

    `method` is "psi", "jensenshannon" or "kl_div". The fractions are each side's share of
    values per bin, over the same bins in the same order (counts / total, as `bin_fractions`
    gives them, or read from a histogram or sketch of that side with `sturges_edges`). Empty
    bins are smoothed here the way Evidently does (PSI and Kullback-Leibler only), so pass
    them unsmoothed; the drift threshold is `TESTS[method]` compared with `drifted`.
    """
    ref = np.asarray(reference_fractions, dtype=np.float64)
    cur = np.asarray(current_fractions, dtype=np.float64)
    if ref.shape != cur.shape or ref.ndim != 1:
        raise ValueError(f"fractions must be two 1-d arrays of the same length, got {ref.shape} and {cur.shape}")
    from scipy.special import rel_entr

    if method == "jensenshannon":
        p, q = ref / np.sum(ref), cur / np.sum(cur)
        middle = (p + q) / 2.0
        return float(np.sqrt((np.sum(rel_entr(p, middle)) + np.sum(rel_entr(q, middle))) / 2.0))
    ref, cur = smooth_zeros(ref), smooth_zeros(cur)
    if method == "psi":
        return float(np.sum((ref - cur) * np.log(ref / cur)))
    if method == "kl_div":
        return float(np.sum(rel_entr(ref / np.sum(ref), cur / np.sum(cur))))
    raise ValueError(f"'{method}' is not a binned drift method (one of {', '.join(BINNED)})")


def column_score(method: str, reference_sorted: np.ndarray, current_sorted: np.ndarray, *, categorical: bool) -> float:
    """The drift score of one column by the named test, from both sides' finite values, sorted."""
    if method in BINNED:
        ref, cur = bin_fractions(reference_sorted, current_sorted, categorical=categorical)
        return binned_score(method, ref, cur)
    if method == "wasserstein":
        return wasserstein_normed(reference_sorted, current_sorted, presorted=True)
    if method == "ks":
        return ks_p_value(reference_sorted, current_sorted)
    if method == "z":
        return z_p_value(reference_sorted, current_sorted)
    if method == "chisquare":
        return chisquare_p_value(*value_counts(reference_sorted, current_sorted))
    raise ValueError(f"unknown drift method '{method}' (one of {', '.join(TESTS)})")
