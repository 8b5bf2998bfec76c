"""The estimator, the bounded search space, edge fitness, scoring, and the candidate's identity."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from edgeloop.spec import EdgeLimits, PipelineSpec
from edgeloop.training.errors import TrainingConfigError
from edgeloop.training.estimators import for_inference, make_estimator, search_candidates, step_params
from edgeloop.training.evaluate import evaluate_predictions, score
from edgeloop.training.fitness import EdgeFitness, limit_violations, measure_edge_fitness
from edgeloop.training.onnx_export import export_onnx
from edgeloop.training.seed import make_seed_frame
from edgeloop.training.tracking import candidate_key, code_version, config_digest, model_id_of_source
from edgeloop.training.train import TrainOptions, Trial, rank_trials, search_rungs, search_sets


def with_training(spec: PipelineSpec, **changes: object) -> PipelineSpec:
    return spec.model_copy(update={"training": spec.training.model_copy(update=changes)})


def test_search_draws_distinct_candidates_within_the_budget(training_spec: PipelineSpec) -> None:
    candidates = search_candidates(training_spec.training, 12)
    assert len(candidates) == 12
    assert len({tuple(sorted(c.items())) for c in candidates}) == 12
    space = training_spec.training.search_space
    assert all(c[name] in values for c in candidates for name, values in space.items())
    assert candidates == search_candidates(training_spec.training, 12)  # reproducible


def test_a_budget_beyond_the_grid_searches_the_whole_grid(training_spec: PipelineSpec) -> None:
    assert len(search_candidates(training_spec.training, 500)) == 3 * 4 * 3


def test_an_empty_search_space_is_one_trial_with_the_fixed_params(training_spec: PipelineSpec) -> None:
    spec = with_training(training_spec, search_space={}, params={"n_estimators": 7})
    assert search_candidates(spec.training, 10) == [{"n_estimators": 7}]


def test_unknown_parameters_are_named_with_their_spec_path(training_spec: PipelineSpec) -> None:
    with pytest.raises(TrainingConfigError, match=r"training.search_space.n_trees: not a parameter of RandomForest"):
        make_estimator(with_training(training_spec, search_space={"n_trees": [1, 2]}).training)
    with pytest.raises(TrainingConfigError, match=r"training.params.alpha: not a parameter of LogisticRegression"):
        make_estimator(with_training(training_spec, estimator="logistic_regression", params={"alpha": 1}).training)
    with pytest.raises(TrainingConfigError, match=r"training.search_space.max_depth: the list of values is empty"):
        search_candidates(with_training(training_spec, search_space={"max_depth": []}).training, 3)


@pytest.mark.parametrize("estimator", ["random_forest", "gradient_boosting", "logistic_regression"])
def test_each_estimator_fits_predicts_labels_and_is_edge_measured(training_spec: PipelineSpec, estimator: str) -> None:
    params = {} if estimator == "logistic_regression" else {"n_estimators": 10}
    spec = with_training(training_spec, estimator=estimator, search_space={}, params=params)
    frame = make_seed_frame(spec, records=600)
    features = frame[spec.features]
    model = for_inference(make_estimator(spec.training).fit(features, frame["label"]))
    assert set(model.predict(features)) <= set(spec.annotation.labels)
    exported = export_onnx(model, spec.features, frame.tail(200))
    # Limits far above any machine's figures: this checks the measuring, the benchmark checks the speed.
    roomy = EdgeLimits(max_model_mb=1000, max_latency_ms=10_000, max_memory_mb=10_000)
    fitness = measure_edge_fitness(exported.data, features.head(1), roomy, calls=20)
    assert fitness.ok and fitness.model_mb > 0 and fitness.latency_ms > 0 and fitness.memory_mb >= 0
    assert fitness.model_mb == len(exported.data) / 2**20
    tight = measure_edge_fitness(exported.data, features.head(1), EdgeLimits(max_model_mb=1e-6), calls=2)
    assert not tight.ok and tight.violations[0].startswith("model size")


def test_step_params_address_the_model_step() -> None:
    assert step_params({"max_depth": 3}) == {"model__max_depth": 3}


def test_limit_violations_name_each_limit() -> None:
    limits = EdgeLimits(max_model_mb=1, max_latency_ms=2, max_memory_mb=3)
    assert limit_violations(0.5, 1, 2, limits) == ()
    assert limit_violations(1.5, 2.5, 3.5, limits) == (
        "model size 1.50 MB > limit 1 MB",
        "single-record latency 2.50 ms > limit 2 ms",
        "memory 3.50 MB > limit 3 MB",
    )


def test_macro_f1_averages_over_the_classes_present(training_spec: PipelineSpec) -> None:
    truth, predicted = ["normal", "normal", "wear", "wear"], ["normal", "fault", "wear", "wear"]
    # Over the present classes normal (F1 2/3) and wear (F1 1): the absent 'fault' adds no zero.
    assert score("f1_macro", truth, predicted) == pytest.approx((2 / 3 + 1) / 2)
    assert score("accuracy", truth, predicted) == 0.75
    assert score("balanced_accuracy", truth, predicted) == 0.75
    frame = pd.DataFrame({"group_id": ["a", "a", "b", "b"], "label": truth})
    result = evaluate_predictions(training_spec, frame, predicted)
    assert result["groups"] == {"a": {"score": pytest.approx(2 / 3), "records": 2}, "b": {"score": 1.0, "records": 2}}


def test_trials_are_scored_on_devices_they_did_not_fit(training_spec: PipelineSpec) -> None:
    frame = make_seed_frame(training_spec, records=3000)
    fit, validation = search_sets(training_spec, frame, TrainOptions(search_records=1000))
    assert not set(fit["device_id"]) & set(validation["device_id"])
    assert len(fit) <= 1001 and set(fit["label"]) == set(frame["label"])


def test_candidate_identity_is_stable_and_sensitive(training_spec: PipelineSpec, tmp_path: Path) -> None:
    assert config_digest(training_spec, 12) == config_digest(training_spec, 12)
    assert config_digest(training_spec, 12) != config_digest(training_spec, 13)
    assert candidate_key("v1", "d", "src", "cfg") != candidate_key("v2", "d", "src", "cfg")
    package = Path(__file__).resolve().parents[3] / "include" / "edgeloop"
    copy = tmp_path / "edgeloop"
    shutil.copytree(package / "training", copy / "training")
    shutil.copytree(package / "registry", copy / "registry")
    shutil.copy(package / "spec.py", copy / "spec.py")
    assert code_version(copy) == code_version(package)
    (copy / "training" / "train.py").write_text("# changed\n", encoding="utf-8")
    assert code_version(copy) != code_version(package)


def test_model_id_of_source() -> None:
    assert model_id_of_source("models:/m-123abc") == "m-123abc"
    assert model_id_of_source("models:/name/3") is None
    assert model_id_of_source("runs:/abc/model") is None


def test_successive_halving_only_when_it_pays() -> None:
    frame = pd.DataFrame({"label": ["a", "b"] * 6000})
    options = TrainOptions()
    small, full = search_rungs(frame, 20, options)
    assert len(small) == 4000 and len(full) == 12_000 and set(small["label"]) == {"a", "b"}
    assert len(search_rungs(frame, 3, options)) == 1  # too few candidates
    assert len(search_rungs(frame.head(3000), 20, options)) == 1  # too little data


def _trial(index: int, score: float, model_mb: float, ok: bool = True, rung: int = 1) -> Trial:
    violations = () if ok else ("model size too big",)
    return Trial(index, {}, f"run{index}", score, EdgeFitness(model_mb, 1.0, 2.0, 1.0, violations), rung)


def test_ranking_prefers_fit_then_the_smallest_model_among_near_ties() -> None:
    trials = [
        _trial(0, 0.9845, 11.0),  # best score, big
        _trial(1, 0.9840, 2.5),  # within the tolerance, small: chosen
        _trial(2, 0.9700, 0.5),  # clearly worse
        _trial(3, 0.9990, 1.0, ok=False),  # best of all but over the device limits
        _trial(4, 0.9950, 1.0, rung=0),  # only evaluated on the small rung
    ]
    assert [t.index for t in rank_trials(trials, 0.002)] == [1, 0, 2, 4, 3]
    assert next(t.index for t in rank_trials(trials, 0.0)) == 0
