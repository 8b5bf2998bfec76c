"""Stratified bottom-k sampling: bounded, exact counts, independent of how records are chunked."""

from __future__ import annotations

import numpy as np
import pandas as pd

from edgeloop.drift.columns import drift_columns
from edgeloop.drift.sample import FLEET, StratifiedSampler, Stratum, normalize_frame, row_keys
from edgeloop.drift.synthetic import make_telemetry, synthetic_spec

FEATURES = ["a", "b"]
SPEC = synthetic_spec(FEATURES, ["g1", "g2"])
COLUMNS = drift_columns(SPEC)


def _chunk(rows: dict[str, int], seed: int) -> pd.DataFrame:
    return normalize_frame(make_telemetry(FEATURES, rows, seed=seed), COLUMNS)


def test_each_group_keeps_at_most_the_sample_size_and_counts_every_row() -> None:
    sampler = StratifiedSampler(COLUMNS, 100)
    for seed, rows in enumerate([{"g1": 500, "g2": 30}, {"g1": 700, "g2": 40}]):
        chunk = _chunk(rows, seed)
        sampler.add(chunk, row_keys(7, f"chunk-{seed}", len(chunk)))
    sample = sampler.finish()

    assert sample.stats[Stratum("group", "g1")].rows == 1200
    assert sample.stats[Stratum("group", "g2")].rows == 70
    assert sample.rows == 1270
    assert len(sample.samples[Stratum("group", "g1")]) == 100
    assert len(sample.samples[Stratum("group", "g2")]) == 70  # small groups are kept whole
    assert len(sample.samples[FLEET]) == 100
    assert set(sample.samples[Stratum("group", "g1")]["group_id"].astype(str)) == {"g1"}


def test_the_sample_does_not_depend_on_how_records_are_chunked() -> None:
    whole = _chunk({"g1": 900, "g2": 300}, seed=3)
    keys = row_keys(11, "object", len(whole))
    one = StratifiedSampler(COLUMNS, 50)
    one.add(whole, keys)
    many = StratifiedSampler(COLUMNS, 50)
    for part in np.array_split(np.arange(len(whole)), 4):
        many.add(whole.iloc[part], keys[part])

    for stratum in (FLEET, Stratum("group", "g1"), Stratum("group", "g2")):
        left = one.finish().samples[stratum]
        right = many.finish().samples[stratum]
        assert sorted(left["a"].tolist()) == sorted(right["a"].tolist())


def test_the_sample_draws_from_every_chunk_in_proportion() -> None:
    sampler = StratifiedSampler(COLUMNS, 400, by_group=False)
    first, second = _chunk({"g1": 1000}, seed=1), _chunk({"g1": 3000}, seed=2)
    first["a"], second["a"] = np.float32(0.0), np.float32(1.0)  # mark where each row came from
    sampler.add(first, row_keys(5, "first", len(first)))
    sampler.add(second, row_keys(5, "second", len(second)))

    from_first = int((sampler.finish().samples[FLEET]["a"] == 0).sum())
    assert 60 <= from_first <= 140  # expected 100 of 400


def test_nan_and_inf_are_counted_per_group_and_inf_becomes_nan() -> None:
    chunk = _chunk({"g1": 10, "g2": 10}, seed=4)
    chunk.loc[0, "a"] = np.inf  # g1
    chunk.loc[1, "a"] = np.nan  # g1
    chunk.loc[15, "b"] = -np.inf  # g2
    sampler = StratifiedSampler(COLUMNS, 100)
    sampler.add(chunk, row_keys(1, "x", len(chunk)))
    sample = sampler.finish()

    assert sample.stats[Stratum("group", "g1")].nonfinite() == {"a": {"nan": 1, "inf": 1}}
    assert sample.stats[Stratum("group", "g2")].nonfinite() == {"b": {"nan": 0, "inf": 1}}
    assert sample.stats[FLEET].nonfinite() == {"a": {"nan": 1, "inf": 1}, "b": {"nan": 0, "inf": 1}}
    kept = sample.samples[FLEET]
    assert not np.isinf(kept[["a", "b"]].to_numpy()).any()
    assert int(kept["a"].isna().sum()) == 2


def test_confidence_versions_and_devices_are_exact_per_group() -> None:
    chunk = _chunk({"g1": 50, "g2": 20}, seed=5)
    sampler = StratifiedSampler(COLUMNS, 10)
    sampler.add(chunk, row_keys(1, "x", len(chunk)))
    stats = sampler.finish().stats[Stratum("group", "g2")]

    g2 = chunk[chunk["group_id"] == "g2"]
    assert stats.confidence_mean is not None
    assert abs(stats.confidence_mean - float(g2["confidence"].astype("float64").mean())) < 1e-6
    assert stats.context["config_version"] == {"cfg-g2-1": 20}
    assert stats.context["firmware_version"] == {"fw-2.4.1": 20}
    assert len(stats.devices) == g2["device_id"].nunique()


def test_model_versions_get_strata_of_their_own() -> None:
    chunk = normalize_frame(make_telemetry(FEATURES, {"g1": 400}, seed=6, model_versions=("6", "7")), COLUMNS)
    sampler = StratifiedSampler(COLUMNS, 1000)
    sampler.add(chunk, row_keys(1, "x", len(chunk)))
    sample = sampler.finish()

    versions = sample.strata("model_version")
    assert [s.name for s in versions] == ["6", "7"]
    assert sum(sample.stats[s].rows for s in versions) == 400


def test_normalize_frame_uses_compact_dtypes_only_where_safe() -> None:
    frame = pd.DataFrame(
        {
            "a": np.array([1.5, 2.5, np.nan]),  # float64 -> float32
            "b": np.array([1e39, 0.0, 1.0]),  # beyond float32 range: stays float64
            "group_id": ["g1", "g2", "g1"],
            "ts": [1_767_225_600_000, 1_767_225_601_000, 1_767_225_602_000],  # epoch milliseconds
            "confidence": ["0.9", "oops", "0.7"],  # text that should have been numbers
            "unrelated": [1, 2, 3],
        }
    )
    out = normalize_frame(frame, COLUMNS)

    assert out["a"].dtype == np.float32
    assert out["b"].dtype == np.float64
    assert isinstance(out["group_id"].dtype, pd.CategoricalDtype)
    assert str(out["ts"].dt.tz) == "UTC"
    assert out["ts"].iloc[0] == pd.Timestamp("2026-01-01T00:00:00Z")
    assert out["confidence"].isna().tolist() == [False, True, False]
    assert "unrelated" not in out.columns


def test_large_integers_stay_exact() -> None:
    frame = pd.DataFrame({"a": np.array([2**25 + 1, 3], dtype="int64"), "b": np.array([1, 2], dtype="int16")})
    out = normalize_frame(frame, COLUMNS)
    assert out["a"].dtype == np.float64
    assert out["a"].iloc[0] == 2**25 + 1
    assert out["b"].dtype == np.float32
