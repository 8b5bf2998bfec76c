"""ONNX export: every estimator the spec offers becomes a contract file that answers like the source model."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest

from edgeloop.contract.artifact import (
    GOLDEN_TOLERANCE,
    INPUT_NAME,
    META_FEATURES,
    META_GOLDEN,
    META_LABELS,
    PROBABILITIES_OUTPUT,
    sha256_hex,
)
from edgeloop.spec import PipelineSpec
from edgeloop.training.estimators import for_inference, make_estimator
from edgeloop.training.onnx_export import (
    GOLDEN_ROWS,
    OnnxExportError,
    OnnxParityError,
    allowed_mismatches,
    check_parity,
    compare,
    export_onnx,
    onnx_probabilities,
    read_metadata,
    self_test,
)
from edgeloop.training.seed import make_seed_frame

ESTIMATORS = ["random_forest", "gradient_boosting", "logistic_regression"]


def fitted(spec: PipelineSpec, estimator: str) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    """(fitted pipeline, training rows, validation rows) for one estimator on seed data."""
    params = {} if estimator == "logistic_regression" else {"n_estimators": 20, "max_depth": 8}
    training = spec.training.model_copy(update={"estimator": estimator, "search_space": {}, "params": params})
    frame = make_seed_frame(spec, records=1500)
    train, validation = frame.iloc[:1000], frame.iloc[1000:].reset_index(drop=True)
    model = for_inference(make_estimator(training).fit(train[spec.features], train["label"]))
    return model, train, validation


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_each_estimator_exports_a_contract_file_that_answers_like_scikit_learn(
    training_spec: PipelineSpec, estimator: str
) -> None:
    model, _, validation = fitted(training_spec, estimator)

    exported = export_onnx(model, training_spec.features, validation)

    proto = onnx.load_from_string(exported.data)
    (source,) = proto.graph.input
    assert source.name == INPUT_NAME
    assert source.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in source.type.tensor_type.shape.dim][1] == len(training_spec.features)
    assert [o.name for o in proto.graph.output] == [PROBABILITIES_OUTPUT]
    onnx.checker.check_model(proto, full_check=True)
    meta = read_metadata(exported.data)
    assert json.loads(meta[META_FEATURES]) == list(training_spec.features)
    assert json.loads(meta[META_LABELS]) == [str(c) for c in model.classes_] == list(exported.labels)
    golden = json.loads(meta[META_GOLDEN])
    assert len(golden["rows"]) == len(golden["probabilities"]) == GOLDEN_ROWS
    assert self_test(exported.data) <= GOLDEN_TOLERANCE
    assert exported.sha256 == sha256_hex(exported.data) and exported.size == len(exported.data)
    assert exported.opset.startswith("ai.onnx=") and "ai.onnx.ml=" in exported.opset

    rows = validation[training_spec.features]
    answered = onnx_probabilities(exported.data, rows.to_numpy(np.float32))
    assert np.abs(answered - model.predict_proba(rows)).max() <= 1e-4
    assert exported.parity.ok and exported.parity.rows == len(validation)
    assert exported.parity.class_agreement >= 0.999


def _tamper(data: bytes) -> bytes:
    """The same file with the classifier's numbers changed (what a corrupted or swapped file looks like)."""
    proto = onnx.load_from_string(data)
    for node in proto.graph.node:
        for attribute in node.attribute:
            if attribute.name in ("class_weights", "coefficients"):
                attribute.floats[:] = list(reversed(attribute.floats))
    return bytes(proto.SerializeToString())


@pytest.mark.parametrize("estimator", ["random_forest", "logistic_regression"])
def test_a_tampered_file_fails_parity_with_the_numbers(training_spec: PipelineSpec, estimator: str) -> None:
    model, _, validation = fitted(training_spec, estimator)
    exported = export_onnx(model, training_spec.features, validation)

    with pytest.raises(OnnxParityError, match=r"ONNX parity: \d+ of 500 validation rows answer differently") as err:
        check_parity(_tamper(exported.data), model, validation, training_spec.features)
    assert "allowed 0" in str(err.value)
    with pytest.raises(OnnxParityError, match="self-test failed: probabilities differ from the golden batch by"):
        self_test(_tamper(exported.data))


def test_an_estimator_skl2onnx_cannot_convert_is_rejected_with_the_reason(training_spec: PipelineSpec) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    _, train, validation = fitted(training_spec, "logistic_regression")
    model = Pipeline([("log", FunctionTransformer(np.log1p)), ("model", LogisticRegression(max_iter=500))])
    model.fit(train[training_spec.features], train["label"])

    with pytest.raises(OnnxExportError, match=r"FunctionTransformer -> LogisticRegression cannot be exported to ONNX"):
        export_onnx(model, training_spec.features, validation)


def test_the_parity_rule_allows_ties_and_a_tenth_of_a_percent_of_split_point_flips() -> None:
    rows = 2000
    source = np.tile([0.7, 0.2, 0.1], (rows, 1))
    assert compare(source + 1e-6, source).mismatched == 0

    tie = source.copy()
    tie[0] = [0.5, 0.5, 0.0]  # an exact tie: float32 may break it the other way
    answered = tie.copy()
    answered[0] = [0.49999, 0.50001, 0.0]
    assert compare(answered, tie).mismatched == 0

    flipped = source.copy()
    flipped[:2] = [0.3, 0.6, 0.1]  # two rows whose value sat on a tree's split point
    assert allowed_mismatches(rows) == 2
    parity = compare(flipped, source)
    assert (parity.class_differs, parity.mismatched, parity.ok) == (2, 2, True)
    flipped[2] = [0.3, 0.6, 0.1]
    assert not compare(flipped, source).ok

    drifted = source.copy()
    drifted[5] += [2e-4, -2e-4, 0.0]  # same class, probabilities beyond the tolerance
    parity = compare(drifted, source)
    assert (parity.class_differs, parity.probabilities_differ) == (0, 1)
    assert allowed_mismatches(999) == 0 and allowed_mismatches(1000) == 1
    assert not compare(drifted[:999], source[:999]).ok


def test_a_converter_that_names_its_probability_output_differently_is_renamed_to_the_contract() -> None:
    from onnx import TensorProto, helper

    from edgeloop.training.onnx_export import _keep_only_probabilities

    source = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph(
        [
            helper.make_node("Softmax", [INPUT_NAME], ["output_probability"], axis=1),
            helper.make_node("ArgMax", ["output_probability"], ["output_label"], axis=1, keepdims=0),
        ],
        "other-converter",
        [source],
        [
            helper.make_tensor_value_info("output_label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("output_probability", TensorProto.FLOAT, [None, 3]),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    _keep_only_probabilities(proto, "test")

    assert [o.name for o in proto.graph.output] == [PROBABILITIES_OUTPUT]
    answered = onnx_probabilities(proto.SerializeToString(), np.asarray([[0.0, 0.0, 0.0]], dtype=np.float32))
    assert answered[0].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3])
