"""Export a fitted training pipeline to the ONNX file a device runs, and check that it answers like the source.

The file follows the wire contract (`edgeloop.contract.artifact`): one float32 input
`features` [N, len(features)] in the spec's feature order, one output `probabilities`
[N, len(labels)], and the metadata entries `edgeloop.features` and `edgeloop.labels`
(JSON lists: the input's columns and the output's columns, i.e. the classifier's
`classes_`) and `edgeloop.golden` (a few validation rows and the file's own answers for
them, for the device's self-test). skl2onnx converts with explicit input types, no
ZipMap (a plain tensor, not a list of dicts) and a fixed target opset; the converter's
`label` output is dropped from the graph outputs (a device takes `labels[argmax]`).

Parity is checked, not trusted. On the validation rows, a row *matches* when
1. every class probability of the ONNX file is within `PARITY_TOLERANCE` (1e-4, the
   contract's golden tolerance) of scikit-learn's `predict_proba`, and
2. the ONNX file's top class is scikit-learn's top class, or one that scikit-learn
   scores within the tolerance of its top (an exact tie either side may break).
The export passes when at least `PARITY_MIN_SHARE` (99.9%) of the rows match, i.e. at
most floor(0.1% of the rows) may differ: float32 thresholds in trees may send a value
that sits on a split point the other way, and that changes a row's answer by a whole
tree's vote, not by rounding. Below 1000 validation rows no row may differ.

A model that cannot be converted raises `OnnxExportError`, one that fails parity
`OnnxParityError` (a subclass); the message is the reason callers record when they
reject the trial or candidate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeloop.contract.artifact import (
    ARTIFACT_FORMAT,
    GOLDEN_TOLERANCE,
    INPUT_NAME,
    META_FEATURES,
    META_GOLDEN,
    META_LABELS,
    META_REFERENCE,
    PROBABILITIES_OUTPUT,
    sha256_hex,
)
from edgeloop.contract.profile import reference_metadata
from edgeloop.registry.tags import artifact_tags

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import pandas as pd

# What the converters may use: ONNX opset 17 and ai.onnx.ml 3 run on onnxruntime >= 1.14 (devices
# lag the training side); the file imports only the versions its operators need.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
PARITY_TOLERANCE = GOLDEN_TOLERANCE
PARITY_MIN_SHARE = 0.999
GOLDEN_ROWS = 8
ONNX_FILE_NAME = "model.onnx"

ARTIFACT_DIR = "edge"  # the run-relative folder of the file: edge/model.onnx


class OnnxExportError(ValueError):
    """The model cannot be exported to ONNX; the message is the reason."""


class OnnxParityError(OnnxExportError):
    """The exported file does not answer like the source model; the message has the numbers."""


@dataclass(frozen=True)
class Parity:
    """How the ONNX file's answers compare with scikit-learn's on the validation rows."""

    rows: int
    class_differs: int  # rows where rule 2 fails
    probabilities_differ: int  # rows where rule 1 fails
    mismatched: int  # rows where either fails
    max_abs_diff: float  # largest probability difference over all rows

    @property
    def allowed(self) -> int:
        return allowed_mismatches(self.rows)

    @property
    def ok(self) -> bool:
        return self.rows > 0 and self.mismatched <= self.allowed

    @property
    def class_agreement(self) -> float:
        return 1.0 - self.class_differs / self.rows if self.rows else 0.0

    def metrics(self, prefix: str = "onnx_parity_") -> dict[str, float]:
        return {
            f"{prefix}rows": float(self.rows),
            f"{prefix}mismatched": float(self.mismatched),
            f"{prefix}class_agreement": self.class_agreement,
            f"{prefix}max_abs_diff": self.max_abs_diff,
        }


@dataclass(frozen=True)
class OnnxModel:
    """One exported model: the file's bytes and what the registry records about them."""

    data: bytes
    sha256: str
    opset: str  # "ai.onnx=17,ai.onnx.ml=1": what a runtime must support
    features: tuple[str, ...]
    labels: tuple[str, ...]
    parity: Parity

    @property
    def size(self) -> int:
        return len(self.data)

    def record(self, path: str) -> dict[str, Any]:
        """What a training summary keeps about the file logged at run-relative `path`."""
        return {"sha256": self.sha256, "size": self.size, "opset": self.opset, "format": ARTIFACT_FORMAT, "path": path}


def allowed_mismatches(rows: int) -> int:
    """Rows that may answer differently: floor(0.1% of `rows`) (so none below 1000 rows)."""
    return math.floor(rows * (1 - PARITY_MIN_SHARE) + 1e-9)


def _classifier_name(model: Any) -> str:
    steps = getattr(model, "steps", None)
    return " -> ".join(type(step).__name__ for _, step in steps) if steps else type(model).__name__


def convert_to_onnx(model: Any, n_features: int) -> onnx.ModelProto:
    """The fitted model as an ONNX graph with the contract's input and output (no metadata yet).

    Raise OnnxExportError naming the model when skl2onnx cannot convert it.
    """
    import skl2onnx
    from skl2onnx.common.data_types import FloatTensorType

    try:
        proto: onnx.ModelProto = skl2onnx.convert_sklearn(
            model,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            target_opset=dict(TARGET_OPSET),
            options={"zipmap": False},
        )
    except Exception as exc:  # skl2onnx raises RuntimeError, NotImplementedError, MissingShapeCalculator, ...
        raise OnnxExportError(
            f"{_classifier_name(model)} cannot be exported to ONNX (skl2onnx {skl2onnx.__version__}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    _keep_only_probabilities(proto, _classifier_name(model))
    _merge_opset_imports(proto)
    return proto


def _keep_only_probabilities(proto: onnx.ModelProto, what: str) -> None:
    """Make `probabilities` the graph's one output (renamed from the converter's float output if needed)."""
    from onnx import TensorProto

    outputs = list(proto.graph.output)
    chosen = next((o for o in outputs if o.name == PROBABILITIES_OUTPUT), None)
    if chosen is None:
        floats = [o for o in outputs if o.type.tensor_type.elem_type == TensorProto.FLOAT]
        if len(floats) != 1:
            names = [o.name for o in outputs]
            raise OnnxExportError(f"{what}: the ONNX graph has no single probability output (outputs {names})")
        chosen, old = floats[0], floats[0].name
        for node in proto.graph.node:
            node.output[:] = [PROBABILITIES_OUTPUT if name == old else name for name in node.output]
            node.input[:] = [PROBABILITIES_OUTPUT if name == old else name for name in node.input]
        chosen.name = PROBABILITIES_OUTPUT
    kept = type(chosen)()
    kept.CopyFrom(chosen)
    del proto.graph.output[:]
    proto.graph.output.append(kept)  # the label output's node stays; its output is simply unused


def _merge_opset_imports(proto: onnx.ModelProto) -> None:
    """One opset import per domain (skl2onnx may list the default domain twice)."""
    from onnx import helper

    versions: dict[str, int] = {}
    for entry in proto.opset_import:
        versions[entry.domain] = max(versions.get(entry.domain, 0), int(entry.version))
    del proto.opset_import[:]
    proto.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in sorted(versions.items()))


def opset_text(proto: onnx.ModelProto) -> str:
    """The file's opset imports as `ai.onnx=17,ai.onnx.ml=1`."""
    return ",".join(f"{entry.domain or 'ai.onnx'}={entry.version}" for entry in proto.opset_import)


def read_metadata(data: bytes) -> dict[str, str]:
    """The metadata entries of an ONNX file."""
    import onnx

    return {entry.key: entry.value for entry in onnx.load_from_string(data).metadata_props}


def _set_metadata(proto: onnx.ModelProto, entries: Mapping[str, str]) -> None:
    current = {entry.key: entry.value for entry in proto.metadata_props}
    current.update(entries)
    del proto.metadata_props[:]
    for key, value in current.items():
        proto.metadata_props.add(key=key, value=value)


def onnx_probabilities(data: bytes, rows: np.ndarray) -> np.ndarray:
    """What the ONNX file answers for float32 `rows`, run as a device runs it (see `fitness.device_session`)."""
    import numpy as np

    from edgeloop.training.fitness import device_session

    session = device_session(data)
    result = session.run([PROBABILITIES_OUTPUT], {INPUT_NAME: np.ascontiguousarray(rows, dtype=np.float32)})
    return np.asarray(result[0], dtype=np.float64)


def compare(onnx_probs: np.ndarray, sklearn_probs: np.ndarray, tolerance: float = PARITY_TOLERANCE) -> Parity:
    """Count the rows that do not match (see the module docstring for the rule)."""
    import numpy as np

    if onnx_probs.shape != sklearn_probs.shape:
        raise OnnxParityError(
            f"ONNX parity: the file answers shape {list(onnx_probs.shape)}, scikit-learn {list(sklearn_probs.shape)}"
        )
    rows = len(sklearn_probs)
    if rows == 0:
        return Parity(0, 0, 0, 0, 0.0)
    diff = np.abs(onnx_probs - sklearn_probs).max(axis=1)
    chosen = onnx_probs.argmax(axis=1)
    class_ok = sklearn_probs[np.arange(rows), chosen] >= sklearn_probs.max(axis=1) - tolerance
    prob_ok = diff <= tolerance
    return Parity(
        rows=rows,
        class_differs=int((~class_ok).sum()),
        probabilities_differ=int((~prob_ok).sum()),
        mismatched=int((~(class_ok & prob_ok)).sum()),
        max_abs_diff=float(diff.max()),
    )


def check_parity(data: bytes, model: Any, frame: pd.DataFrame, features: Sequence[str]) -> Parity:
    """Compare the ONNX file with the fitted model on `frame`'s rows; raise OnnxParityError when it fails."""
    import numpy as np

    rows = frame[list(features)]
    if rows.empty:
        raise OnnxParityError("ONNX parity: there are no validation rows to compare on")
    parity = compare(onnx_probabilities(data, rows.to_numpy(np.float32)), np.asarray(model.predict_proba(rows)))
    if not parity.ok:
        raise OnnxParityError(
            f"ONNX parity: {parity.mismatched} of {parity.rows} validation rows answer differently from "
            f"scikit-learn (allowed {parity.allowed}, {1 - PARITY_MIN_SHARE:.1%}): the class differs on "
            f"{parity.class_differs}, probabilities differ by more than {PARITY_TOLERANCE:g} on "
            f"{parity.probabilities_differ} (largest difference {parity.max_abs_diff:.3g})"
        )
    return parity


def golden_batch(data: bytes, rows: np.ndarray, count: int = GOLDEN_ROWS) -> dict[str, Any]:
    """`count` of `rows` spread over them and the ONNX file's answers, as the `edgeloop.golden` JSON object."""
    import numpy as np

    picks = sorted({int(i) for i in np.linspace(0, len(rows) - 1, num=min(count, len(rows))).round()})
    chosen = np.asarray(rows, dtype=np.float32)[picks]
    answers = onnx_probabilities(data, chosen).astype(np.float32)
    # float32 values as Python floats are exact: a device parsing them back to float32 gets the same bits
    return {
        "rows": [[float(v) for v in row] for row in chosen],
        "probabilities": [[float(v) for v in row] for row in answers],
    }


def self_test(data: bytes) -> float:
    """Load the file with the device's own loader (contract, features, golden batch); the golden batch's largest
    difference, or OnnxParityError with the reason a device would refuse it."""
    from edgeloop.edge.runtime import ModelRefused, load_model
    from edgeloop.edge.runtime import self_test as device_self_test

    meta = read_metadata(data)
    if META_GOLDEN not in meta or META_FEATURES not in meta:
        raise OnnxParityError(f"ONNX self-test: the file has no '{META_GOLDEN}' or '{META_FEATURES}' metadata")
    try:
        model = load_model(data, "candidate", json.loads(meta[META_FEATURES]))
        return device_self_test(model, json.loads(meta[META_GOLDEN]))
    except ModelRefused as exc:
        raise OnnxParityError(f"ONNX self-test: a device would refuse the file: {exc}") from None


def export_onnx(
    model: Any, features: Sequence[str], validation: pd.DataFrame, *, golden_rows: int = GOLDEN_ROWS
) -> OnnxModel:
    """The fitted model as a contract ONNX file, parity-checked on `validation` (a frame with the feature columns).

    Raise OnnxExportError when the model cannot be converted, OnnxParityError when the
    file does not answer like the model (see the module docstring for the rule).
    """
    import numpy as np

    features = list(features)
    labels = [str(label) for label in getattr(model, "classes_", [])]
    if not labels:
        raise OnnxExportError(f"{_classifier_name(model)}: not a fitted classifier (no classes_)")
    proto = convert_to_onnx(model, len(features))
    _set_metadata(proto, {META_FEATURES: json.dumps(features), META_LABELS: json.dumps(labels)})
    parity = check_parity(proto.SerializeToString(), model, validation, features)
    # the golden answers are the file's own: metadata does not change the graph (self_test checks it)
    golden = golden_batch(proto.SerializeToString(), validation[features].to_numpy(np.float32), golden_rows)
    reference = reference_metadata({f: validation[f].to_numpy(np.float32) for f in features})
    _set_metadata(proto, {META_GOLDEN: json.dumps(golden), META_REFERENCE: reference})
    data = proto.SerializeToString()
    self_test(data)
    return OnnxModel(data, sha256_hex(data), opset_text(proto), tuple(features), tuple(labels), parity)


def log_onnx_artifact(client: Any, run_id: str, exported: OnnxModel) -> dict[str, Any]:
    """Log the file as `edge/model.onnx` of the run and tag the run with its digest, size, opset, format and path.

    Returns the record (`OnnxModel.record`) the training summary keeps. Safe to repeat:
    the same bytes overwrite the same path.
    """
    import tempfile
    from pathlib import Path

    from mlflow.entities import RunTag

    with tempfile.TemporaryDirectory(prefix="edgeloop-onnx-") as tmp:
        path = Path(tmp) / ONNX_FILE_NAME
        path.write_bytes(exported.data)
        client.log_artifact(run_id, str(path), ARTIFACT_DIR)
    record = exported.record(f"{ARTIFACT_DIR}/{ONNX_FILE_NAME}")
    client.log_batch(run_id, tags=[RunTag(key, value) for key, value in artifact_tags(record).items()])
    return record
