"""Image features: statistics that move the way a camera change moves them, a PCA embedding that is linear in
the pixels and travels as JSON, and a table the drift check reads like numeric record fields."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from edgeloop.drift.columns import drift_columns
from edgeloop.drift.detect import check_drift, column_verdicts
from edgeloop.drift.reference import reference_from_frame
from edgeloop.drift.synthetic import synthetic_spec
from edgeloop.drift.window import frame_sample
from edgeloop.vision import features as V
from edgeloop.vision import frames as F

CONDITIONS = F.group_conditions("plant-north")


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    pixels, _ = F.make_frames("cam-ref", 0, 300, CONDITIONS)
    return pixels


def test_statistics_of_known_images() -> None:
    flat = np.full((1, 8, 8), 0.5, dtype=np.float32)
    checker = (np.indices((8, 8)).sum(axis=0) % 2).astype(np.float32)[np.newaxis]
    stats = V.image_statistics(np.concatenate([flat, checker]))
    assert stats["brightness"].tolist() == pytest.approx([0.5, 0.5])
    assert stats["contrast"].tolist() == pytest.approx([0.0, 0.5])
    assert stats["sharpness"][0] == 0.0
    assert stats["sharpness"][1] == pytest.approx(16.0)  # the Laplacian is +-4 everywhere inside
    assert stats["gradient"].tolist() == pytest.approx([0.0, 1.0])
    assert stats["dark_share"].tolist() == pytest.approx([0.0, 0.5])
    assert stats["bright_share"].tolist() == pytest.approx([0.0, 0.5])
    assert all(v.dtype == np.float32 and v.shape == (2,) for v in stats.values())


def test_uint8_frames_are_scaled_to_unit_range() -> None:
    white = np.full((2, 4, 4), 255, dtype=np.uint8)
    assert V.image_statistics(white)["brightness"].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="batch"):
        V.image_statistics(np.zeros((2, 2, 4, 4)))
    with pytest.raises(ValueError, match="at least 3x3"):
        V.image_statistics(np.zeros((2, 2, 2)))


def test_camera_drifts_move_the_statistics_that_describe_them() -> None:
    clean, _ = F.make_frames("cam-1", 0, 40, CONDITIONS)
    lighting, _ = F.make_frames("cam-1", 0, 40, F.inject_drift(CONDITIONS, "lighting"))
    focus, _ = F.make_frames("cam-1", 0, 40, F.inject_drift(CONDITIONS, "focus"))
    base, dim, blurred = (V.image_statistics(x) for x in (clean, lighting, focus))
    assert np.median(dim["contrast"]) < 0.7 * np.median(base["contrast"])
    assert np.median(dim["dark_share"]) < 0.7 * np.median(base["dark_share"])
    assert np.median(blurred["sharpness"]) < 0.5 * np.median(base["sharpness"])
    assert np.median(blurred["brightness"]) == pytest.approx(np.median(base["brightness"]), abs=0.01)


def test_block_average_and_its_size_check() -> None:
    frames = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    averaged = V.block_average(frames, 2)
    assert averaged.shape == (2, 4)
    assert averaged[0].tolist() == [2.5, 4.5, 10.5, 12.5]
    with pytest.raises(ValueError, match="3x3 blocks"):
        V.block_average(frames, 3)


def test_the_embedding_is_a_pca_with_uncorrelated_ordered_components(reference: np.ndarray) -> None:
    embedding = V.fit_embedding(reference, 8)
    assert embedding.columns == tuple(f"emb_{i:02d}" for i in range(8))
    projected = embedding.project(reference).astype(np.float64)
    assert projected.shape == (300, 8)
    assert np.abs(projected.mean(axis=0)).max() < 1e-4  # centred on the reference
    variances = projected.var(axis=0)
    assert (np.diff(variances) <= 1e-9).all()  # the first component explains the most
    corr = np.corrcoef(projected.T)
    assert np.abs(corr - np.eye(8)).max() < 1e-3
    assert np.allclose(embedding.components @ embedding.components.T, np.eye(8), atol=1e-5)


def test_fitting_twice_gives_the_same_embedding(reference: np.ndarray) -> None:
    one, two = V.fit_embedding(reference, 4), V.fit_embedding(reference.copy(), 4)
    assert np.array_equal(one.components, two.components)
    biggest = one.components[np.arange(4), np.abs(one.components).argmax(axis=1)]
    assert (biggest > 0).all()


def test_the_pixel_projection_is_the_embedding_of_raw_pixels(reference: np.ndarray) -> None:
    embedding = V.fit_embedding(reference, 8)
    matrix, bias = embedding.pixel_projection()
    assert matrix.shape == (64 * 64, 8) and bias.shape == (8,)
    pixels = V.as_unit_float(reference[:50]).reshape(50, -1)
    assert np.allclose(pixels @ matrix + bias, embedding.project(reference[:50]), atol=1e-4)


def test_the_embedding_travels_as_json(reference: np.ndarray) -> None:
    embedding = V.fit_embedding(reference, 8)
    back = V.Embedding.from_dict(json.loads(json.dumps(embedding.to_dict())))
    assert back.shape == (64, 64) and back.block == 4
    assert np.array_equal(back.project(reference[:20]), embedding.project(reference[:20]))
    broken = embedding.to_dict() | {"mean": [0.0] * 3}
    with pytest.raises(ValueError, match="do not fit 64x64"):
        V.Embedding.from_dict(broken)
    with pytest.raises(ValueError, match="not an embedding"):
        V.Embedding.from_dict({"shape": [64, 64]})
    with pytest.raises(ValueError, match="fitted on"):
        embedding.project(np.zeros((1, 32, 32), dtype=np.uint8))


def test_too_many_components_are_refused(reference: np.ndarray) -> None:
    with pytest.raises(ValueError, match="components"):
        V.fit_embedding(reference[:5], 8)


def test_the_feature_table_has_numeric_columns_and_the_extra_columns_first(reference: np.ndarray) -> None:
    embedding = V.fit_embedding(reference, 8)
    table = V.feature_table(reference[:10], embedding, {"device_id": ["cam-ref"] * 10, "group_id": ["g"] * 10})
    assert list(table.columns) == ["device_id", "group_id", *V.STAT_COLUMNS, *embedding.columns]
    assert all(table[c].dtype == np.float32 for c in (*V.STAT_COLUMNS, *embedding.columns))
    with pytest.raises(ValueError, match="clashes"):
        V.feature_table(reference[:2], embedding, {"brightness": [1, 2]})


def test_the_drift_check_finds_lighting_drift_in_image_features_and_none_in_clean_frames(
    reference: np.ndarray,
) -> None:
    """Given features of clean reference frames, the drift check's column verdicts flag a lighting change
    on most columns and nothing much on fresh clean frames from other devices."""
    embedding = V.fit_embedding(reference, 8)
    columns = [*V.STAT_COLUMNS, *embedding.columns]
    ref = V.feature_table(reference, embedding)
    clean = V.feature_table(F.make_frames("cam-new", 0, 300, CONDITIONS)[0], embedding)
    dim = V.feature_table(F.make_frames("cam-new", 0, 300, F.inject_drift(CONDITIONS, "lighting"))[0], embedding)
    quiet = column_verdicts(clean, ref, columns, categorical=set())
    drifted = column_verdicts(dim, ref, columns, categorical=set())
    assert sum(v.drifted for v in quiet.values()) <= 2
    assert sum(v.drifted for v in drifted.values()) / len(columns) >= 0.5
    for name in ("brightness", "contrast", "dark_share", "emb_00"):
        assert drifted[name].drifted, name


def test_the_feature_table_fits_a_drift_window_with_timestamps() -> None:
    pixels, _ = F.make_frames("cam-1", 0, 4, CONDITIONS)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    table = V.feature_table(
        pixels, V.fit_embedding(pixels, 2), {"ts": [start + timedelta(seconds=i) for i in range(4)]}
    )
    assert pd.api.types.is_datetime64_any_dtype(table["ts"])
    assert len(table) == 4


def test_the_leading_components_do_not_depend_on_how_many_were_fitted(reference: np.ndarray) -> None:
    wide, narrow = V.fit_embedding(reference, 16), V.fit_embedding(reference, 8)
    assert np.allclose(wide.truncated(8).components, narrow.components, atol=1e-4)
    assert wide.truncated(8).columns == narrow.columns
    with pytest.raises(ValueError, match="has 16 components, not 17"):
        wide.truncated(17)


def _group_table(group: str, conditions: F.CameraConditions, count: int, embedding: V.Embedding) -> pd.DataFrame:
    pixels, labels = F.make_frames(f"{group}-cam", 0, count, conditions)
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    extra = {
        "record_id": [f"{group}-{i}" for i in range(count)],
        "device_id": [f"{group}-cam"] * count,
        "group_id": [group] * count,
        "ts": [start + timedelta(seconds=i) for i in range(count)],
        "prediction": labels,
        "confidence": [0.9] * count,
        "model_version": ["1"] * count,
    }
    return V.feature_table(pixels, embedding, extra)


def test_the_drift_stage_checks_image_features_per_group_like_record_fields(reference: np.ndarray) -> None:
    """Given a spec whose features are the image columns, when one group's lighting drifts, then the drift
    stage's own check (stratified sample, reference per group, per-group scopes) flags that group only."""
    embedding = V.fit_embedding(reference, 8)
    groups = {"plant-north": F.group_conditions("plant-north"), "plant-south": F.group_conditions("plant-south")}
    spec = synthetic_spec(
        [*V.STAT_COLUMNS, *embedding.columns],
        list(groups),
        name="visual_inspection",
        drift={"method": "psi", "threshold": 0.2, "min_rows": 100},
    )
    ref = pd.concat([_group_table(g, c, 300, embedding) for g, c in groups.items()], ignore_index=True)
    window = {**groups, "plant-north": F.inject_drift(groups["plant-north"], "lighting")}
    current = pd.concat([_group_table(g, c, 300, embedding) for g, c in window.items()], ignore_index=True)
    sample = frame_sample(current, drift_columns(spec), spec.drift.sample_per_group, seed=2)
    check = check_drift(sample, reference_from_frame(ref, spec, seed=1).sample, spec, keep_report_input=False)
    assert check.drifted_groups == ["plant-north"]
    north = next(s for s in check.scopes if s.stratum.name == "plant-north")
    assert north.drift_share is not None and north.drift_share >= 0.5
    assert {"brightness", "contrast"} <= set(north.drifted_columns)
