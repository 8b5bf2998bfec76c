"""Frames: the same device and index give the same bytes, and the classes and camera conditions show in the pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edgeloop.vision import frames as F

CLEAN = F.CameraConditions()


def test_the_same_device_and_index_give_the_same_pixels_and_bytes() -> None:
    first = F.make_frame("cam-007", 42, F.group_conditions("plant-north"))
    again = F.make_frame("cam-007", 42, F.group_conditions("plant-north"))
    assert first.label == again.label
    assert np.array_equal(first.pixels, again.pixels)
    assert F.encode_png(first.pixels) == F.encode_png(again.pixels)


def test_other_devices_and_indexes_give_other_frames() -> None:
    base = F.make_frame("cam-007", 42, CLEAN).pixels
    assert not np.array_equal(base, F.make_frame("cam-007", 43, CLEAN).pixels)
    assert not np.array_equal(base, F.make_frame("cam-008", 42, CLEAN).pixels)


def test_the_label_does_not_depend_on_the_camera() -> None:
    drifted = F.inject_drift(CLEAN, "lighting")
    for index in range(30):
        assert F.make_frame("cam-1", index, CLEAN).label == F.make_frame("cam-1", index, drifted).label


def test_labels_follow_the_class_weights() -> None:
    labels = [F.frame_label("cam-1", i) for i in range(2000)]
    shares = {label: labels.count(label) / len(labels) for label in F.LABELS}
    assert set(shares) == set(F.LABELS)
    assert 0.35 < shares["ok"] < 0.45
    assert all(0.16 < shares[label] < 0.24 for label in ("scratch", "dent", "missing_hole"))
    only_dents = {F.frame_label("cam-1", i, (0, 0, 1, 0)) for i in range(50)}
    assert only_dents == {"dent"}


def test_bad_class_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="class weights"):
        F.frame_label("cam-1", 0, (1, 1))
    with pytest.raises(ValueError, match="class weights"):
        F.frame_label("cam-1", 0, (0, 0, 0, 0))


def _scene(label: str, seed: int = 3) -> np.ndarray:
    return F.render_part(label, np.random.default_rng(seed))


def test_a_missing_hole_leaves_fewer_dark_pixels_on_the_plate() -> None:
    dark_ok = (_scene("ok") < 0.2).sum()
    dark_missing = (_scene("missing_hole") < 0.2).sum()
    # the background is dark too; the difference is one hole of radius 4 to 5 (about 50 to 80 pixels)
    assert 40 < dark_ok - dark_missing < 100


def test_a_scratch_and_a_dent_darken_the_plate_where_ok_has_none() -> None:
    ok = _scene("ok", 5)
    for label in ("scratch", "dent"):
        defect = _scene(label, 5)  # same seed: the same plate and holes, then the defect
        assert (ok - defect).max() > 0.2, label
        assert (defect - ok).max() < 0.15, label  # a dent's rim is the only brighter part


def test_unknown_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown part label 'crack'"):
        _scene("crack")


def test_lighting_drift_darkens_and_flattens_the_frames() -> None:
    conditions = F.group_conditions("plant-north")
    clean, _ = F.make_frames("cam-1", 0, 20, conditions)
    dim, _ = F.make_frames("cam-1", 0, 20, F.inject_drift(conditions, "lighting"))
    assert dim.astype(float).mean() > clean.astype(float).mean()  # the offset lifts the dark background
    assert dim.astype(float).std() < 0.7 * clean.astype(float).std()


def test_focus_drift_blurs_and_lens_dirt_darkens_fixed_places() -> None:
    scene = _scene("ok")
    quiet = F.CameraConditions(noise=0.0)  # the sensor noise would hide the edges
    sharp = F.apply_camera(scene, quiet, np.random.default_rng(0)).astype(float)
    blurred = F.apply_camera(scene, F.inject_drift(quiet, "focus"), np.random.default_rng(0)).astype(float)
    assert np.abs(np.diff(blurred, axis=1)).max() < 0.5 * np.abs(np.diff(sharp, axis=1)).max()
    dirty = F.inject_drift(quiet, "lens_dirt")
    mask = F.lens_dirt(scene.shape, dirty.dirt_seed)
    assert np.array_equal(mask, F.lens_dirt(scene.shape, dirty.dirt_seed))
    darker = F.apply_camera(scene, dirty, np.random.default_rng(0)).astype(float)
    spots = mask > 0.5
    assert spots.any()
    assert (sharp - darker)[spots].mean() > 10  # on the uint8 scale


def test_groups_differ_a_little_and_unknown_drifts_are_refused() -> None:
    north, south = F.group_conditions("plant-north"), F.group_conditions("plant-south")
    assert north != south
    assert north == F.group_conditions("plant-north")
    assert 0.95 <= north.gain <= 1.05 and north.dirt == 0
    with pytest.raises(ValueError, match="unknown camera drift 'fog'"):
        F.inject_drift(north, "fog")
    with pytest.raises(ValueError, match="camera gain"):
        F.CameraConditions(gain=0)


def test_blur_keeps_the_mean_and_a_constant_image() -> None:
    flat = np.full((16, 16), 0.4)
    assert np.allclose(F.gaussian_blur(flat, 1.5), 0.4)
    spike = np.zeros((15, 15))
    spike[7, 7] = 1.0
    blurred = F.gaussian_blur(spike, 1.0)
    assert blurred.sum() == pytest.approx(1.0)
    assert blurred[7, 7] == blurred.max() < 0.2


def test_png_is_read_back_by_pillow_with_the_same_pixels() -> None:
    pixels = F.make_frame("cam-1", 0, CLEAN).pixels
    data = F.encode_png(pixels)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode == "L" and image.size == (64, 64)
        assert np.array_equal(np.asarray(image), pixels)
    assert np.array_equal(F.decode_png(data), pixels)
    assert len(data) < pixels.size  # deflate does better than raw bytes on these frames


def test_png_refuses_what_is_not_a_grayscale_frame() -> None:
    with pytest.raises(ValueError, match="uint8"):
        F.encode_png(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        F.encode_png(np.zeros((4, 4, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    Image.new("L", (4, 4)).save(buffer, format="JPEG")
    with pytest.raises(ValueError, match="not a PNG"):
        F.decode_png(buffer.getvalue())
