"""The camera classifier: accurate on frames like its training frames, worse after a camera drift, accurate
again once trained on labelled drifted frames; exported to one ONNX file that takes pixels, answers like the
classifier, passes the edge agent's loader and fits the edge limits."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgeloop.contract.artifact import (
    IMAGE_FEATURES_OUTPUT,
    INPUT_NAME,
    META_FEATURES,
    META_GOLDEN,
    META_LABELS,
    PROBABILITIES_OUTPUT,
)
from edgeloop.edge.runtime import load_model
from edgeloop.spec import EdgeLimits
from edgeloop.training.fitness import measure_edge_fitness
from edgeloop.training.onnx_export import TARGET_OPSET, read_metadata
from edgeloop.vision import features as V
from edgeloop.vision import frames as F
from edgeloop.vision import model as M

CONDITIONS = F.group_conditions("plant-north")
DRIFTED = F.inject_drift(CONDITIONS, "lighting")


def _frames(devices: tuple[str, ...], count: int, conditions: F.CameraConditions) -> tuple[np.ndarray, list[str]]:
    parts = [F.make_frames(device, 0, count, conditions) for device in devices]
    return np.concatenate([p for p, _ in parts]), [label for _, labels in parts for label in labels]


@pytest.fixture(scope="module")
def train() -> tuple[np.ndarray, list[str]]:
    return _frames(("cam-01", "cam-02"), 400, CONDITIONS)


@pytest.fixture(scope="module")
def clean_test() -> tuple[np.ndarray, list[str]]:
    return _frames(("cam-11", "cam-12"), 200, CONDITIONS)


@pytest.fixture(scope="module")
def drifted_test() -> tuple[np.ndarray, list[str]]:
    return _frames(("cam-11", "cam-12"), 200, DRIFTED)


@pytest.fixture(scope="module")
def classifier(train: tuple[np.ndarray, list[str]]) -> M.ImageClassifier:
    return M.train_image_classifier(*train)


@pytest.fixture(scope="module")
def exported(classifier: M.ImageClassifier, clean_test: tuple[np.ndarray, list[str]]) -> bytes:
    return M.export_image_onnx(classifier, clean_test[0][:200]).data


def test_accurate_on_clean_frames_and_worse_after_lighting_drift(
    classifier: M.ImageClassifier,
    clean_test: tuple[np.ndarray, list[str]],
    drifted_test: tuple[np.ndarray, list[str]],
) -> None:
    clean = classifier.accuracy(*clean_test)
    drifted = classifier.accuracy(*drifted_test)
    print(f"accuracy on clean frames {clean:.3f}, after the lighting drift {drifted:.3f}")
    assert clean >= 0.9
    assert drifted <= clean - 0.2  # the same parts, seen by a changed camera


def test_labelled_drifted_frames_bring_the_accuracy_back(
    train: tuple[np.ndarray, list[str]],
    clean_test: tuple[np.ndarray, list[str]],
    drifted_test: tuple[np.ndarray, list[str]],
) -> None:
    """What the loop does: annotate frames from the drifted group, retrain on old and new frames."""
    labelled = _frames(("cam-21",), 400, DRIFTED)
    retrained = M.train_image_classifier(np.concatenate([train[0], labelled[0]]), [*train[1], *labelled[1]])
    clean, drifted = retrained.accuracy(*clean_test), retrained.accuracy(*drifted_test)
    print(f"retrained: accuracy on clean frames {clean:.3f}, on drifted frames {drifted:.3f}")
    assert drifted >= 0.9
    assert clean >= 0.9


def test_training_refuses_what_is_not_a_labelled_set(train: tuple[np.ndarray, list[str]]) -> None:
    with pytest.raises(ValueError, match="3 frames but 2 labels"):
        M.train_image_classifier(train[0][:3], train[1][:2])
    with pytest.raises(ValueError, match="at least two labels"):
        M.train_image_classifier(train[0][:10], ["ok"] * 10)


def test_pixel_feature_names_are_row_by_row() -> None:
    names = M.pixel_features((64, 64))
    assert len(names) == 4096 and len(set(names)) == 4096
    assert names[:2] == ("px_00_00", "px_00_01") and names[64] == "px_01_00" and names[-1] == "px_63_63"
    assert M.pixel_features((2, 3)) == ("px_0_0", "px_0_1", "px_0_2", "px_1_0", "px_1_1", "px_1_2")


def test_the_onnx_feature_nodes_compute_the_numpy_features(
    classifier: M.ImageClassifier, drifted_test: tuple[np.ndarray, list[str]]
) -> None:
    nodes, inits = M.feature_graph_nodes(classifier.embedding, "pixels_in", "out")
    graph = helper.make_graph(
        nodes,
        "features",
        [helper.make_tensor_value_info("pixels_in", TensorProto.FLOAT, [None, 4096])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, len(classifier.columns)])],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    frames = drifted_test[0][:100]
    (got,) = session.run(["out"], {"pixels_in": M.pixel_rows(frames)})
    want = classifier.features(frames)
    assert got.shape == want.shape == (100, 6 + 16)
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()


def test_the_file_takes_pixels_and_answers_like_the_classifier(
    classifier: M.ImageClassifier, exported: bytes, drifted_test: tuple[np.ndarray, list[str]]
) -> None:
    session = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [(INPUT_NAME, [None, 4096])]
    assert [o.name for o in session.get_outputs()] == [PROBABILITIES_OUTPUT, IMAGE_FEATURES_OUTPUT]
    frames = drifted_test[0][:150]  # frames the export's parity check did not see
    got, features = session.run([PROBABILITIES_OUTPUT, IMAGE_FEATURES_OUTPUT], {INPUT_NAME: M.pixel_rows(frames)})
    want = classifier.predict_proba(frames)
    assert np.abs(got - want).max() < 1e-4
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()
    # the second output: the features the classifier sees, which a camera reports in its record
    assert features.shape == (len(frames), len(classifier.columns))
    assert np.allclose(features, classifier.features(frames), rtol=1e-5, atol=1e-6)


def test_the_file_carries_the_contract_metadata_and_the_embedding(
    classifier: M.ImageClassifier, exported: bytes
) -> None:
    meta = read_metadata(exported)
    assert json.loads(meta[META_FEATURES]) == list(M.pixel_features((64, 64)))
    assert tuple(json.loads(meta[META_LABELS])) == classifier.labels
    assert sorted(classifier.labels) == sorted(F.LABELS)
    assert len(json.loads(meta[META_GOLDEN])["rows"]) == M.IMAGE_GOLDEN_ROWS
    image = M.image_metadata(exported)
    assert image["shape"] == [64, 64] and image["scale"] == 255
    assert image["columns"] == list(classifier.columns)
    embedding = V.Embedding.from_dict(image["embedding"])
    assert np.array_equal(embedding.components, classifier.embedding.components)
    opsets = {entry.domain or "": entry.version for entry in onnx.load_from_string(exported).opset_import}
    assert all(version <= TARGET_OPSET[domain] for domain, version in opsets.items())


def test_the_edge_agent_loads_the_file_and_predicts_a_frame(
    classifier: M.ImageClassifier, exported: bytes, clean_test: tuple[np.ndarray, list[str]]
) -> None:
    model = load_model(exported, "v1", M.pixel_features((64, 64)))  # runs the golden self-test
    frame = clean_test[0][250]
    proba = model.predict_proba(M.pixel_rows(frame[np.newaxis]))
    assert model.labels[int(proba.argmax())] == classifier.predict(frame[np.newaxis])[0]


def test_the_file_fits_the_edge_limits(exported: bytes, clean_test: tuple[np.ndarray, list[str]]) -> None:
    limits = EdgeLimits(max_model_mb=40, max_latency_ms=15, max_memory_mb=200)
    fitness = measure_edge_fitness(
        exported, M.pixel_rows(clean_test[0][:1]), limits, calls=50, memory_probe=lambda data, n: 0.0
    )
    assert fitness.ok, fitness.violations
    assert 0 < fitness.model_mb < 5


def test_image_metadata_is_refused_for_a_file_without_it(exported: bytes) -> None:
    proto = onnx.load_from_string(exported)
    del proto.metadata_props[:]
    with pytest.raises(ValueError, match="not an image model"):
        M.image_metadata(proto.SerializeToString())


def test_importing_the_vision_modules_loads_no_heavy_library() -> None:
    """scikit-learn, onnx, onnxruntime, pandas and Pillow load inside the functions that need them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; import edgeloop.vision.frames, edgeloop.vision.features, edgeloop.vision.model, "
        "edgeloop.vision.claim; "
        "print(sorted(m for m in ('sklearn', 'onnx', 'onnxruntime', 'pandas', 'PIL', 'skl2onnx') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "include")}
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120, env=env)
    assert done.stdout.strip() == "[]"
