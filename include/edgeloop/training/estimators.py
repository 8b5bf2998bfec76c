"""The spec's estimator as a scikit-learn pipeline, and the bounded search over its parameters.

The search uses scikit-learn's `ParameterSampler`: the spec's search space is a small
discrete grid (lists of values), so sampling it without replacement gives every trial
a distinct configuration, is reproducible from a seed and needs no extra dependency.
A Bayesian sampler (Optuna's TPE) starts with about ten random trials before it models
anything, which is the whole budget here. The training stage runs the sampled trials as
successive halving (see `edgeloop.training.train`), which is where the time goes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from edgeloop.spec import TrainingSpec
from edgeloop.training.errors import TrainingConfigError

MODEL_STEP = "model"


def make_estimator(
    training: TrainingSpec, *, random_state: int = 0, n_jobs: int | None = None, model: Any | None = None
) -> Any:
    """An unfitted scikit-learn Pipeline for the spec's estimator with its fixed params applied.

    The classifier is the pipeline step named `model`; spec params and search-space
    names are that step's parameter names (e.g. `n_estimators`, `max_depth`). `model`
    replaces the spec's estimator (a camera pipeline's image classifier).
    """
    from sklearn.pipeline import Pipeline

    steps: list[tuple[str, Any]]
    if model is not None:
        steps = [(MODEL_STEP, model)]
    elif training.estimator == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        steps = [(MODEL_STEP, RandomForestClassifier(random_state=random_state, n_jobs=n_jobs))]
    elif training.estimator == "gradient_boosting":
        # Not HistGradientBoosting: its OpenMP prediction costs ~100 ms per single record on a busy CPU.
        from sklearn.ensemble import GradientBoostingClassifier

        steps = [(MODEL_STEP, GradientBoostingClassifier(random_state=random_state))]
    else:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        steps = [("scale", StandardScaler()), (MODEL_STEP, LogisticRegression(max_iter=1000))]
    pipeline = Pipeline(steps)
    check_params(pipeline, training.params, "training.params")
    check_params(pipeline, {k: v[0] for k, v in training.search_space.items() if v}, "training.search_space")
    return pipeline.set_params(**step_params(training.params))


def step_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Spec parameter names as pipeline parameter names (`max_depth` -> `model__max_depth`)."""
    return {f"{MODEL_STEP}__{name}": value for name, value in params.items()}


def check_params(pipeline: Any, params: Mapping[str, Any], where: str) -> None:
    """Raise TrainingConfigError naming `where.<name>` for a parameter the classifier does not have."""
    model = pipeline.named_steps[MODEL_STEP]
    known = set(model.get_params(deep=False))
    for name in params:
        if name not in known:
            raise TrainingConfigError(
                f"{where}.{name}: not a parameter of {type(model).__name__} (known: {sorted(known)})"
            )


def search_candidates(training: TrainingSpec, budget: int, *, random_state: int = 0) -> list[dict[str, Any]]:
    """At most `budget` distinct parameter sets from the spec's search space (spec names, not prefixed).

    Empty search space: one candidate, the spec's fixed params. A grid smaller than the
    budget is searched exhaustively.
    """
    from sklearn.model_selection import ParameterSampler

    if budget < 1:
        raise TrainingConfigError(f"search budget: {budget} must be at least 1")
    space = dict(training.search_space)
    empty = [name for name, values in space.items() if not values]
    if empty:
        raise TrainingConfigError(f"training.search_space.{empty[0]}: the list of values is empty")
    if not space:
        return [dict(training.params)]
    grid_size = math.prod(len(v) for v in space.values())
    sampler = ParameterSampler(space, n_iter=min(budget, grid_size), random_state=random_state)
    return [{**training.params, **dict(sorted(candidate.items()))} for candidate in sampler]


def for_inference(pipeline: Any) -> Any:
    """The fitted pipeline set up for one-record-at-a-time inference on a device (no worker pool)."""
    if "n_jobs" in pipeline.named_steps[MODEL_STEP].get_params(deep=False):
        pipeline.set_params(**{f"{MODEL_STEP}__n_jobs": None})
    return pipeline
