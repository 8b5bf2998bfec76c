"""A trial or refit that cannot be exported to ONNX is rejected with the reason; training goes on."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from edgeloop.spec import PipelineSpec
from edgeloop.training import onnx_export, train
from edgeloop.training.onnx_export import OnnxParityError, export_onnx
from edgeloop.training.seed import make_seed_frame
from edgeloop.training.train import TrainOptions, refit_best, run_search


class FakeMlflow:
    """The run calls the search makes, kept in dicts."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> Any:
        run_id = f"run{len(self.runs)}"
        self.runs[run_id] = {"name": run_name, "tags": dict(tags), "metrics": {}, "status": "RUNNING"}
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id))

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = ()) -> None:
        self.runs[run_id]["metrics"].update({m.key: m.value for m in metrics})
        self.runs[run_id]["tags"].update({t.key: t.value for t in tags})

    def set_terminated(self, run_id: str, status: str) -> None:
        self.runs[run_id]["status"] = status


REFUSAL = "ONNX parity: 7 of 500 validation rows answer differently from scikit-learn"


def refuse_deep_forests(model: Any, features: Any, validation: Any, **kwargs: Any) -> Any:
    if model.named_steps["model"].max_depth is None:
        raise OnnxParityError(REFUSAL)
    return export_onnx(model, features, validation, **kwargs)


@pytest.fixture
def small(training_spec: PipelineSpec) -> PipelineSpec:
    space = {"n_estimators": [10], "max_depth": [4, None]}
    return training_spec.model_copy(
        update={"training": training_spec.training.model_copy(update={"search_space": space})}
    )


def test_a_trial_that_fails_parity_is_a_rejected_trial_with_the_reason(
    small: PipelineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_export, "export_onnx", refuse_deep_forests)
    frame = make_seed_frame(small, records=600)
    client = FakeMlflow()
    candidates = [{"n_estimators": 10, "max_depth": 4}, {"n_estimators": 10, "max_depth": None}]

    trials = run_search(client, small, "1", {}, candidates, frame.iloc[:400], frame.iloc[400:], TrainOptions(n_jobs=1))

    kept, refused = trials
    assert kept.error is None and kept.fitness is not None and kept.fitness.ok
    assert refused.error == f"OnnxParityError: {REFUSAL}"
    assert client.runs[refused.run_id]["status"] == "FAILED"
    assert client.runs[refused.run_id]["tags"]["edgeloop.error"] == refused.error
    assert client.runs[kept.run_id]["status"] == "FINISHED"
    assert client.runs[kept.run_id]["metrics"]["onnx_parity_mismatched"] == 0.0


def test_a_refit_that_cannot_be_exported_is_kept_as_unfit_with_the_reason(
    small: PipelineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_export, "export_onnx", refuse_deep_forests)
    frame = make_seed_frame(small, records=600)
    ranked = [train.Trial(0, {"n_estimators": 10, "max_depth": None}, "run0")]

    trial, model, fitness, exported = refit_best(small, ranked, frame, frame, TrainOptions(n_jobs=1))

    assert trial.index == 0 and model is not None and exported is None
    assert not fitness.ok
    assert fitness.violations == (f"ONNX export: {REFUSAL}",)


def test_a_refit_that_exports_wins_over_one_that_does_not(small: PipelineSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_export, "export_onnx", refuse_deep_forests)
    frame = make_seed_frame(small, records=600)
    fit = train.EdgeFitness(0.1, 0.01, 0.01, 1.0, ())
    ranked = [
        train.Trial(0, {"n_estimators": 10, "max_depth": None}, "run0", 0.9, fit, 1),
        train.Trial(1, {"n_estimators": 10, "max_depth": 4}, "run1", 0.89, fit, 1),
    ]

    trial, _, fitness, exported = refit_best(small, ranked, frame, frame, TrainOptions(n_jobs=1))

    assert trial.index == 1 and fitness.ok and exported is not None and exported.parity.ok
