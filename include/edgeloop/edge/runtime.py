"""ONNX models in onnxruntime: load from verified bytes, self-test on the golden batch, predict.

One `InferenceSession` per artifact digest, shared by every device in a process that
runs the same model (`ModelCache`). Sessions are single-threaded (one intra-op and one
inter-op thread): a device scores one record at a time, and a gateway's other work
needs the other cores.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeloop.contract.artifact import (
    GOLDEN_TOLERANCE,
    IMAGE_FEATURES_OUTPUT,
    INPUT_NAME,
    META_FEATURES,
    META_GOLDEN,
    META_IMAGE,
    META_LABELS,
    META_REFERENCE,
    PROBABILITIES_OUTPUT,
    sha256_hex,
)
from edgeloop.contract.profile import BadProfile, parse_reference


class ModelRefused(RuntimeError):
    """A model a device must not serve; the message is the reason (reported with status `failed`)."""


@dataclass
class OnnxModel:
    """A loaded, self-tested model: class probabilities for rows of the device's features."""

    version: str
    sha256: str
    size: int
    features: list[str]
    labels: list[str]
    session: Any = field(repr=False)
    reference: dict[str, Any] = field(default_factory=dict, repr=False)  # KLL sketches (contract.profile)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    image_columns: list[str] = field(default_factory=list)  # an image model's `image_features` columns

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """Probabilities, shape [N, len(labels)], for rows of shape [N, len(features)]."""
        batch = np.ascontiguousarray(rows, dtype=np.float32).reshape(-1, len(self.features))
        with self.lock:  # one session may serve many devices' threads
            (proba,) = self.session.run([PROBABILITIES_OUTPUT], {INPUT_NAME: batch})
        return np.asarray(proba, dtype=np.float64)

    def predict_with_features(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An image model's probabilities and the frames' features (`image_columns`), from one run."""
        if not self.image_columns:
            raise ModelRefused(f"model version {self.version}: not an image model (no '{IMAGE_FEATURES_OUTPUT}')")
        batch = np.ascontiguousarray(rows, dtype=np.float32).reshape(-1, len(self.features))
        with self.lock:
            proba, features = self.session.run([PROBABILITIES_OUTPUT, IMAGE_FEATURES_OUTPUT], {INPUT_NAME: batch})
        return np.asarray(proba, dtype=np.float64), np.asarray(features, dtype=np.float32)


def session_options() -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return options


def load_model(data: bytes, version: str, features: Sequence[str]) -> OnnxModel:
    """Load ONNX bytes, check they fit the device's features, and run the golden self-test.

    Raise ModelRefused naming the step that failed: onnxruntime cannot load the bytes,
    the model's inputs, outputs or feature list differ from the device's, the golden
    batch is missing, or the model's answers to it differ from the recorded ones.
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(data, sess_options=session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several native exception types for bad bytes
        raise ModelRefused(
            f"model version {version}: onnxruntime cannot load the artifact: {_first_line(exc)}"
        ) from None
    meta = session.get_modelmeta().custom_metadata_map
    try:
        model_features = [str(f) for f in json.loads(meta[META_FEATURES])]
        labels = [str(label) for label in json.loads(meta[META_LABELS])]
        golden = json.loads(meta[META_GOLDEN])
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelRefused(f"model version {version}: metadata {exc} missing or not JSON") from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or PROBABILITIES_OUTPUT not in outputs:
        raise ModelRefused(
            f"model version {version}: expects input {INPUT_NAME!r} and output {PROBABILITIES_OUTPUT!r},"
            f" the artifact has inputs {inputs} and outputs {outputs}"
        )
    if model_features != list(features):
        raise ModelRefused(
            f"model version {version}: features {model_features} differ from the device's {list(features)}"
        )
    reference: dict[str, Any] = {}
    if META_REFERENCE in meta:
        try:
            reference = parse_reference(meta[META_REFERENCE], model_features)
        except BadProfile as exc:
            raise ModelRefused(f"model version {version}: {exc}") from None
    model = OnnxModel(version, sha256_hex(data), len(data), model_features, labels, session, reference)
    model.image_columns = _image_columns(meta, outputs, version)
    self_test(model, golden)
    release_freed_memory()
    return model


def _image_columns(meta: dict[str, str], outputs: list[str], version: str) -> list[str]:
    """The `image_features` columns of an image model (none for a tabular one); ModelRefused when they do not fit."""
    if IMAGE_FEATURES_OUTPUT not in outputs:
        return []
    try:
        columns = [str(c) for c in json.loads(meta[META_IMAGE])["columns"]]
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelRefused(
            f"model version {version}: output {IMAGE_FEATURES_OUTPUT!r} without columns in {META_IMAGE!r}: {exc}"
        ) from None
    return columns


def release_freed_memory() -> None:
    """Hand memory freed while parsing a model back to the OS (glibc keeps it otherwise; ~10 MB for a forest)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def self_test(model: OnnxModel, golden: Any) -> float:
    """Score the golden batch and compare with the recorded probabilities: the largest difference, or ModelRefused."""
    try:
        rows = np.asarray(golden["rows"], dtype=np.float32)
        expected = np.asarray(golden["probabilities"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelRefused(f"model version {model.version}: golden batch unreadable: {exc}") from None
    if rows.ndim != 2 or rows.shape[0] == 0 or expected.shape != (rows.shape[0], len(model.labels)):
        raise ModelRefused(f"model version {model.version}: golden batch has the wrong shape {rows.shape}")
    try:
        got = model.predict_proba(rows)
    except Exception as exc:  # a model that raises on its own golden rows is refused, never served
        raise ModelRefused(f"model version {model.version}: self-test raised: {_first_line(exc)}") from None
    worst = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
    if not worst <= GOLDEN_TOLERANCE:
        raise ModelRefused(
            f"model version {model.version}: self-test failed: probabilities differ from the golden batch"
            f" by {worst:.3g} (tolerance {GOLDEN_TOLERANCE:g})"
        )
    return worst


class ModelCache:
    """Loaded models by artifact digest, shared by the devices of one process. Thread-safe."""

    def __init__(self) -> None:
        self._models: dict[str, OnnxModel] = {}
        self._lock = threading.Lock()

    def get(self, sha256: str) -> OnnxModel | None:
        with self._lock:
            return self._models.get(sha256)

    def load(self, data: bytes, version: str, features: Sequence[str]) -> OnnxModel:
        digest = sha256_hex(data)
        cached = self.get(digest)
        if cached is not None and cached.version == version:
            return cached
        model = load_model(data, version, features)
        with self._lock:
            self._models[digest] = model
        return model

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
