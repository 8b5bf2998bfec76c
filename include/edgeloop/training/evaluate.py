"""The spec's metric, overall and per edge group, on held-out labelled records.

Macro F1 is averaged over the classes present in the held-out labels, so two models
scored on the same records are averaged over the same classes (a class absent from
the data would otherwise add a zero to both, or only to the one that predicts it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgeloop.spec import PipelineSpec
from edgeloop.training.seed import LABEL_COLUMN

if TYPE_CHECKING:
    import pandas as pd


def score(metric: str, y_true: Any, y_pred: Any) -> float:
    """The value of `metric` (f1_macro, accuracy, balanced_accuracy) for label sequences; higher is better."""
    import warnings

    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    if len(y_true) == 0:
        raise ValueError("cannot score an empty set of records")
    if metric == "f1_macro":
        return float(f1_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro", zero_division=0))
    if metric == "accuracy":
        return float(accuracy_score(y_true, y_pred))
    if metric == "balanced_accuracy":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true" is expected here
            return float(balanced_accuracy_score(y_true, y_pred))
    raise ValueError(f"metric {metric!r} is not one of f1_macro, accuracy, balanced_accuracy")


def evaluate_predictions(spec: PipelineSpec, frame: pd.DataFrame, predictions: Sequence[Any]) -> dict[str, Any]:
    """`{"score", "records", "groups": {group: {"score", "records"}}}` for the spec's metric."""
    import numpy as np

    metric = spec.training.metric
    truth = frame[LABEL_COLUMN].astype(str).to_numpy()
    predicted = np.asarray([str(p) for p in predictions])
    groups: dict[str, dict[str, Any]] = {}
    group_values = frame[str(spec.field_with_role("group_id"))].astype(str).to_numpy()
    for group in sorted(set(group_values)):
        mask = group_values == group
        groups[group] = {"score": score(metric, truth[mask], predicted[mask]), "records": int(mask.sum())}
    return {"metric": metric, "score": score(metric, truth, predicted), "records": len(truth), "groups": groups}


def evaluate_model(spec: PipelineSpec, model: Any, frame: pd.DataFrame) -> dict[str, Any]:
    """Score a fitted model on labelled records (the model's inputs: the spec's features in spec order, or a
    camera pipeline's pixels, `edgeloop.training.images.model_inputs`)."""
    from edgeloop.training.images import model_inputs

    return evaluate_predictions(spec, frame, model.predict(frame[list(model_inputs(spec).columns)]))
