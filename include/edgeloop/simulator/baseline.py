"""The baseline model (version "0") as an ONNX artifact, so devices start before the first training.

Sensor pipelines: the rule model below. Camera pipelines (a spec with an `image_ref` field):
an image classifier fitted on the seed frames (`camera_baseline_onnx`).

The same rule as `edgeloop.simulator.models.BaselineRuleModel`, written as an ONNX graph:
for the demo profile, the class whose typical RMS vibration level is nearest (in log
units) to the reading (ISO 10816 zones); otherwise the nearest class centre over
standardised features. The file follows `edgeloop.contract.artifact` (input `features`,
output `probabilities`, features, labels and a golden batch in its metadata), so an
agent loads and self-tests it like any trained model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from edgeloop.contract.artifact import (
    INPUT_NAME,
    META_FEATURES,
    META_GOLDEN,
    META_LABELS,
    META_REFERENCE,
    PROBABILITIES_OUTPUT,
)
from edgeloop.contract.profile import reference_metadata
from edgeloop.spec import PipelineSpec
from edgeloop.training.sensors import SensorProfile

OPSET = 17


def baseline_onnx(profile: SensorProfile) -> bytes:
    """The baseline rule model of a sensor profile as ONNX bytes, with a golden batch of typical readings."""
    from onnx import TensorProto, helper, numpy_helper

    labels = list(profile.labels)
    features = list(profile.features)

    def const(name: str, value: np.ndarray) -> TensorProto:
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    if profile.crest_of is not None:
        rms = profile.crest_of[1]
        centres = profile.means[:, rms].astype(np.float32)
        inits = [
            numpy_helper.from_array(np.array([rms], dtype=np.int64), "rms_index"),
            const("floor", np.array(1e-6)),
            const("centres", centres[None, :]),
            const("gain", np.array(-6.0)),
        ]
        nodes = [
            helper.make_node("Gather", [INPUT_NAME, "rms_index"], ["rms"], axis=1),
            helper.make_node("Max", ["rms", "floor"], ["clipped"]),
            helper.make_node("Log", ["clipped"], ["level"]),
            helper.make_node("Sub", ["level", "centres"], ["gap"]),
            helper.make_node("Mul", ["gap", "gap"], ["gap2"]),
            helper.make_node("Mul", ["gap2", "gain"], ["scores"]),
        ]
    else:
        scale = profile.stds.mean(axis=0)
        inits = [
            const("means", profile.means[None, :, :]),
            const("scale", scale[None, None, :]),
            const("gain", np.array(-2.0)),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ]
        nodes = [
            helper.make_node("Unsqueeze", [INPUT_NAME, "axis1"], ["x3"]),
            helper.make_node("Sub", ["x3", "means"], ["diff"]),
            helper.make_node("Div", ["diff", "scale"], ["z"]),
            helper.make_node("Mul", ["z", "z"], ["z2"]),
            helper.make_node("ReduceMean", ["z2"], ["distance"], axes=[2], keepdims=0),
            helper.make_node("Mul", ["distance", "gain"], ["scores"]),
        ]
    nodes.append(helper.make_node("Softmax", ["scores"], [PROBABILITIES_OUTPUT], axis=1))
    graph = helper.make_graph(
        nodes,
        "edgeloop_baseline",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, len(features)])],
        [helper.make_tensor_value_info(PROBABILITIES_OUTPUT, TensorProto.FLOAT, [None, len(labels)])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgeloop")
    return with_metadata(
        model.SerializeToString(), features, labels, _typical_rows(profile), reference_rows=reference_readings(profile)
    )


def reference_readings(profile: SensorProfile, n: int = 4000, seed: int = 0) -> np.ndarray:
    """Readings of a fleet without drift (every group, steady-state machines): the baseline's reference profile."""
    rng = np.random.default_rng(seed)
    offsets = list(profile.group_offsets.values())
    groups = rng.integers(len(offsets), size=n) if offsets else np.zeros(n, dtype=int)
    offset = np.array(offsets)[groups] if offsets else np.zeros((n, len(profile.features)))
    return profile.sample(profile.initial_states(n, rng), profile.device_bias(n, rng), offset, rng)


def _typical_rows(profile: SensorProfile) -> np.ndarray:
    """One typical reading per class (log-normal features at their median)."""
    rows = np.array(profile.means, dtype=np.float64)
    rows[:, profile.log_normal] = np.exp(rows[:, profile.log_normal])
    return rows


def with_metadata(
    data: bytes,
    features: Sequence[str],
    labels: Sequence[str],
    golden_rows: np.ndarray,
    *,
    reference_rows: np.ndarray | None = None,
) -> bytes:
    """ONNX bytes with the contract's metadata: features, labels, a golden batch scored by the model itself
    and, given `reference_rows`, the reference profile of those rows."""
    import onnx
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    rows = np.asarray(golden_rows, dtype=np.float32)
    (proba,) = session.run([PROBABILITIES_OUTPUT], {INPUT_NAME: rows})
    model = onnx.load_from_string(data)
    golden = {"rows": rows.tolist(), "probabilities": np.asarray(proba, dtype=np.float64).tolist()}
    for key, value in ((META_FEATURES, list(features)), (META_LABELS, list(labels)), (META_GOLDEN, golden)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    if reference_rows is not None:
        entry = model.metadata_props.add()
        entry.key = META_REFERENCE
        entry.value = reference_metadata({f: reference_rows[:, i] for i, f in enumerate(features)})
    return bytes(model.SerializeToString())


def camera_baseline_onnx(spec: PipelineSpec, per_group: int | None = None) -> bytes:
    """The baseline (version "0") of a camera pipeline as ONNX bytes: an image classifier fitted on seed frames.

    A camera's record takes its features from the model (`OnnxModel.predict_with_features`), so
    a camera fleet needs an image model from the start: `edgeloop.vision.model`'s classifier,
    fitted on `make_seed_frames(spec)` and exported with `export_image_onnx` (parity-checked,
    self-tested), the same file on every run for the same spec.
    """
    from edgeloop.training.seed import make_seed_frames
    from edgeloop.vision.model import export_image_onnx, train_image_classifier

    seed = make_seed_frames(spec) if per_group is None else make_seed_frames(spec, per_group)
    labels = sorted(set(seed.labels))
    unknown = sorted(set(labels) - set(spec.annotation.labels))
    if unknown:
        raise ValueError(f"{spec.name}: camera labels {unknown} are not in annotation.labels {spec.annotation.labels}")
    classifier = train_image_classifier(seed.pixels, seed.labels)
    return export_image_onnx(classifier, seed.pixels[::6]).data
