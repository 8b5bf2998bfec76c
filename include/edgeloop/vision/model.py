"""A small image classifier for CPU-only cameras, and its export to one ONNX file that takes pixels.

The classifier is a fixed feature extractor (`edgeloop.vision.features`: six image statistics
and a PCA embedding of block-averaged pixels, 16 components) followed by a scikit-learn
pipeline (standard scaling, multinomial logistic regression). The embedding is the pipeline's,
fitted once on its seed frames and shared by every model it trains
(`edgeloop.training.images.seed_embedding`), so the `emb_..` columns of a record mean the same
whichever model version the camera ran; training fits the pipeline on the frames' features.

`export_image_onnx` writes the whole of it as one graph, so a camera needs nothing but
onnxruntime and the frame: the statistics as ONNX operators (ReduceMean, Slices of the frame
for the Laplacian and the neighbour differences, Less/Greater for the dark and bright shares),
the embedding as one MatMul with the block averaging folded into the matrix (all in float64,
as numpy computes them, then rounded to float32 once: the two sides' features agree to the
bit on the frames tried, so parity is the classifier's alone), then the classifier
as skl2onnx converts it (`edgeloop.training.onnx_export.convert_to_onnx`, the same opset and
no-ZipMap conventions as the tabular models). The file keeps the wire contract the agent
checks (`edgeloop.contract.artifact`): one float32 input `features` of shape [N, H*W] (the
frame's pixels divided by 255, row by row, named `px_<row>_<col>` in `edgeloop.features`),
one output `probabilities`, `edgeloop.labels`, a golden batch of frames; `edgeloop.image`
adds the frame shape, the pixel scale, the embedding (its leading components are the
drift check's `emb_..` columns) and the `columns` of the second output, `image_features`:
the frame's features as the classifier sees them, which a camera puts in its record.
Parity with the scikit-learn side is checked on validation frames by the tabular export's
rule (`compare`), and the file passes the agent's own loader and self-test before it is returned.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeloop.contract.artifact import IMAGE_FEATURES_OUTPUT, META_IMAGE
from edgeloop.vision.features import (
    STAT_COLUMNS,
    Embedding,
    as_unit_float,
    feature_matrix,
    fit_embedding,
)

if TYPE_CHECKING:
    import onnx

    from edgeloop.training.onnx_export import OnnxModel

MODEL_COMPONENTS = 16
IMAGE_GOLDEN_ROWS = 4  # each golden row is a whole frame: keep the metadata small
_FEATURES_INSIDE = IMAGE_FEATURES_OUTPUT  # the classifier's input inside the merged graph, also an output
_DARK, _BRIGHT = 0.25, 0.75


@dataclass(frozen=True)
class ImageClassifier:
    """A fitted embedding and a fitted scikit-learn pipeline over `feature_matrix` columns."""

    embedding: Embedding
    pipeline: Any

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(str(label) for label in self.pipeline.classes_)

    @property
    def columns(self) -> tuple[str, ...]:
        return (*STAT_COLUMNS, *self.embedding.columns)

    def features(self, frames: np.ndarray) -> np.ndarray:
        return feature_matrix(frames, self.embedding)[0]

    def predict_proba(self, frames: np.ndarray) -> np.ndarray:
        """Class probabilities (N, len(labels)) for a batch of frames (N, H, W)."""
        return np.asarray(self.pipeline.predict_proba(self.features(frames)), dtype=np.float64)

    def predict(self, frames: np.ndarray) -> list[str]:
        labels = self.labels
        return [labels[i] for i in self.predict_proba(frames).argmax(axis=1)]

    def accuracy(self, frames: np.ndarray, labels: Sequence[str]) -> float:
        """The share of frames whose predicted label is the true one."""
        if len(frames) != len(labels) or not len(labels):
            raise ValueError(f"accuracy needs as many labels as frames (>0), got {len(labels)} and {len(frames)}")
        return float(np.mean([p == t for p, t in zip(self.predict(frames), labels, strict=True)]))


def train_image_classifier(
    frames: np.ndarray,
    labels: Sequence[str],
    *,
    components: int = MODEL_COMPONENTS,
    regularisation: float = 1.0,
    random_state: int = 0,
    embedding: Embedding | None = None,
) -> ImageClassifier:
    """Scaling and logistic regression on the frames' features through `embedding` (fitted on `frames`
    with `components` when None)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if len(frames) != len(labels):
        raise ValueError(f"{len(frames)} frames but {len(labels)} labels")
    if len(set(labels)) < 2:
        raise ValueError(f"a classifier needs at least two labels, got {sorted(set(labels))}")
    if embedding is None:
        embedding = fit_embedding(frames, components)
    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            ("model", LogisticRegression(C=regularisation, max_iter=2000, random_state=random_state)),
        ]
    )
    pipeline.fit(feature_matrix(frames, embedding)[0], list(labels))
    return ImageClassifier(embedding, pipeline)


def pixel_features(shape: tuple[int, int]) -> tuple[str, ...]:
    """The names of a frame's pixels as model inputs, row by row: `px_<row>_<col>`."""
    height, width = shape
    digits = len(str(max(height, width) - 1))
    return tuple(f"px_{r:0{digits}d}_{c:0{digits}d}" for r in range(height) for c in range(width))


def pixel_rows(frames: np.ndarray) -> np.ndarray:
    """Frames as the model's input rows: (N, H*W) float32, uint8 pixels divided by 255."""
    batch = as_unit_float(frames)
    return np.ascontiguousarray(batch.reshape(len(batch), -1))


def _variance_nodes(source: str, out: str) -> list[Any]:
    """Nodes for the population variance of each row of a [N, D] tensor, as [N, 1]."""
    from onnx import helper

    return [
        helper.make_node("ReduceMean", [source], [f"{out}_mean"], axes=[1], keepdims=1),
        helper.make_node("Sub", [source, f"{out}_mean"], [f"{out}_centred"]),
        helper.make_node("Mul", [f"{out}_centred", f"{out}_centred"], [f"{out}_squares"]),
        helper.make_node("ReduceMean", [f"{out}_squares"], [out], axes=[1], keepdims=1),
    ]


def _slice_node(image: str, out: str, starts: Sequence[int], ends: Sequence[int]) -> tuple[Any, list[Any]]:
    """A Slice of the [N, H, W] image over axes 1 and 2: the node and its initializers."""
    from onnx import helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array(starts, dtype=np.int64), f"{out}_starts"),
        numpy_helper.from_array(np.array(ends, dtype=np.int64), f"{out}_ends"),
        numpy_helper.from_array(np.array([1, 2], dtype=np.int64), f"{out}_axes"),
    ]
    return helper.make_node("Slice", [image, f"{out}_starts", f"{out}_ends", f"{out}_axes"], [out]), inits


def _neighbour_nodes(height: int, width: int) -> tuple[list[Any], list[Any]]:
    """Nodes for the flattened Laplacian (`laplacian`) and neighbour steps (`step_rows`, `step_cols`) of `image`."""
    from onnx import helper

    h, w = height, width
    cuts = {
        "up": ([0, 1], [h - 2, w - 1]),
        "down": ([2, 1], [h, w - 1]),
        "left": ([1, 0], [h - 1, w - 2]),
        "right": ([1, 2], [h - 1, w]),
        "centre": ([1, 1], [h - 1, w - 1]),
        "below": ([1, 0], [h, w]),
        "above": ([0, 0], [h - 1, w]),
        "after": ([0, 1], [h, w]),
        "before": ([0, 0], [h, w - 1]),
    }
    nodes, inits = [], []
    for name, (starts, ends) in cuts.items():
        node, more = _slice_node("image", name, starts, ends)
        nodes.append(node)
        inits += more
    nodes += [
        helper.make_node("Sum", ["up", "down", "left", "right"], ["neighbours"]),
        helper.make_node("Mul", ["centre", "four"], ["centre_4"]),
        helper.make_node("Sub", ["neighbours", "centre_4"], ["laplacian_map"]),
        helper.make_node("Reshape", ["laplacian_map", "flat_shape"], ["laplacian"]),
        helper.make_node("Sub", ["below", "above"], ["rows_map"]),
        helper.make_node("Sub", ["after", "before"], ["cols_map"]),
    ]
    for axis in ("rows", "cols"):
        nodes += [
            helper.make_node("Abs", [f"{axis}_map"], [f"abs_{axis}_map"]),
            helper.make_node("Reshape", [f"abs_{axis}_map", "flat_shape"], [f"abs_{axis}"]),
            helper.make_node("ReduceMean", [f"abs_{axis}"], [f"mean_{axis}"], axes=[1], keepdims=1),
        ]
    return nodes, inits


def feature_graph_nodes(embedding: Embedding, source: str, out: str) -> tuple[list[Any], list[Any]]:
    """ONNX nodes (opset 17) and initializers computing `feature_matrix` from pixel rows [N, H*W] into `out`.

    In float64 like `image_statistics` and `Embedding.project`, rounded to float32 once at the end.
    """
    from onnx import TensorProto, helper, numpy_helper

    height, width = embedding.shape
    matrix, bias = embedding.pixel_projection()
    inits = [
        numpy_helper.from_array(np.array([-1, height, width], dtype=np.int64), "image_shape"),
        numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "flat_shape"),
        *(
            numpy_helper.from_array(np.array(value, dtype=np.float64), name)
            for name, value in (("dark_level", _DARK), ("bright_level", _BRIGHT), ("half", 0.5), ("four", 4.0))
        ),
        numpy_helper.from_array(matrix.astype(np.float64), "embedding_matrix"),
        numpy_helper.from_array(bias.astype(np.float64), "embedding_bias"),
    ]
    nodes = [
        helper.make_node("Cast", [source], ["pixels"], to=TensorProto.DOUBLE),
        helper.make_node("Reshape", ["pixels", "image_shape"], ["image"]),
        helper.make_node("ReduceMean", ["pixels"], ["brightness"], axes=[1], keepdims=1),
        *_variance_nodes("pixels", "variance"),
        helper.make_node("Sqrt", ["variance"], ["contrast"]),
    ]
    neighbour_nodes, neighbour_inits = _neighbour_nodes(height, width)
    nodes += neighbour_nodes
    inits += neighbour_inits
    nodes += [
        *_variance_nodes("laplacian", "sharpness"),
        helper.make_node("Add", ["mean_rows", "mean_cols"], ["step_sum"]),
        helper.make_node("Mul", ["step_sum", "half"], ["gradient"]),
        helper.make_node("Less", ["pixels", "dark_level"], ["is_dark"]),
        helper.make_node("Cast", ["is_dark"], ["dark"], to=TensorProto.DOUBLE),
        helper.make_node("ReduceMean", ["dark"], ["dark_share"], axes=[1], keepdims=1),
        helper.make_node("Greater", ["pixels", "bright_level"], ["is_bright"]),
        helper.make_node("Cast", ["is_bright"], ["bright"], to=TensorProto.DOUBLE),
        helper.make_node("ReduceMean", ["bright"], ["bright_share"], axes=[1], keepdims=1),
        helper.make_node("MatMul", ["pixels", "embedding_matrix"], ["embedding_raw"]),
        helper.make_node("Add", ["embedding_raw", "embedding_bias"], ["embedding"]),
        helper.make_node("Concat", [*STAT_COLUMNS, "embedding"], ["features_double"], axis=1),
        helper.make_node("Cast", ["features_double"], [out], to=TensorProto.FLOAT),
    ]
    return nodes, inits


def image_onnx_graph(classifier: ImageClassifier) -> onnx.ModelProto:
    """The classifier's ONNX graph taking pixel rows: the feature nodes in front of skl2onnx's classifier graph."""
    from onnx import TensorProto, checker, helper

    from edgeloop.contract.artifact import INPUT_NAME
    from edgeloop.training.onnx_export import convert_to_onnx

    proto = convert_to_onnx(classifier.pipeline, len(classifier.columns))
    graph = proto.graph
    graph.name = "edgeloop_image_classifier"  # skl2onnx names it by a random uuid: the same model, other bytes
    for node in graph.node:
        node.input[:] = [_FEATURES_INSIDE if name == INPUT_NAME else name for name in node.input]
    nodes, inits = feature_graph_nodes(classifier.embedding, INPUT_NAME, _FEATURES_INSIDE)
    classifier_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *classifier_nodes])
    graph.initializer.extend(inits)
    height, width = classifier.embedding.shape
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, height * width]))
    columns = len(classifier.columns)
    graph.output.append(helper.make_tensor_value_info(_FEATURES_INSIDE, TensorProto.FLOAT, [None, columns]))
    checker.check_model(proto)
    return proto


def export_image_onnx(
    classifier: ImageClassifier, validation: np.ndarray, *, golden_rows: int = IMAGE_GOLDEN_ROWS
) -> OnnxModel:
    """The classifier as a contract ONNX file taking pixels, parity-checked on `validation` frames (N, H, W).

    Raise `OnnxExportError` when it cannot be converted, `OnnxParityError` when the file does not
    answer like the classifier (the tabular export's rule) or a device's loader would refuse it.
    """
    from onnx import helper

    from edgeloop.contract.artifact import META_FEATURES, META_GOLDEN, META_LABELS, sha256_hex
    from edgeloop.training.onnx_export import (
        OnnxModel,
        OnnxParityError,
        compare,
        golden_batch,
        onnx_probabilities,
        opset_text,
        self_test,
    )

    proto = image_onnx_graph(classifier)
    features, labels = pixel_features(classifier.embedding.shape), classifier.labels
    image = {
        "shape": list(classifier.embedding.shape),
        "scale": 255,
        "columns": list(classifier.columns),
        "embedding": classifier.embedding.to_dict(),
    }
    meta = {META_FEATURES: json.dumps(features), META_LABELS: json.dumps(labels), META_IMAGE: json.dumps(image)}
    helper.set_model_props(proto, meta)
    rows = pixel_rows(validation)
    if not len(rows):
        raise OnnxParityError("ONNX parity: there are no validation frames to compare on")
    parity = compare(onnx_probabilities(proto.SerializeToString(), rows), classifier.predict_proba(validation))
    if not parity.ok:
        raise OnnxParityError(
            f"ONNX parity: {parity.mismatched} of {parity.rows} validation frames answer differently from the "
            f"classifier (allowed {parity.allowed}; largest probability difference {parity.max_abs_diff:.3g})"
        )
    golden = golden_batch(proto.SerializeToString(), rows, golden_rows)
    helper.set_model_props(proto, {**meta, META_GOLDEN: json.dumps(golden)})
    data = proto.SerializeToString()
    self_test(data)
    return OnnxModel(data, sha256_hex(data), opset_text(proto), features, labels, parity)


def image_metadata(data: bytes) -> dict[str, Any]:
    """The `edgeloop.image` entry of an image model's ONNX file (shape, scale, embedding); ValueError without it."""
    from edgeloop.training.onnx_export import read_metadata

    raw = read_metadata(data).get(META_IMAGE)
    if raw is None:
        raise ValueError(f"the ONNX file has no '{META_IMAGE}' metadata: not an image model")
    image: dict[str, Any] = json.loads(raw)
    return image
