"""Train a candidate: bounded search with nested MLflow runs, an edge-fit refit, and the logged model.

One parent run per candidate (dataset version + digest, code version, training config)
holds the dataset lineage, the split, the chosen parameters, the held-out metrics
(overall and per group), the edge-fitness metrics, the model and the ONNX file devices
run (`edge/model.onnx`, its sha256, size, opset and path as run tags). Each trial is a
nested run with its parameters, its validation score, its ONNX parity and its own
edge-fitness figures. Every trial and refit is exported to ONNX and parity-checked on
the validation devices (`onnx_export`), and its edge fitness is measured on that file
in onnxruntime (`fitness`); a model that cannot be exported or fails parity is a
rejected trial (its run says why), never a failed task.

Trials fit on a device-disjoint part of the training split (at most `search_records`
rows, a stratified sample when larger) and are scored on the other devices. With
enough data the search is successive halving: every trial fits a third of those rows,
the best third fit all of them (the same budget of configurations for about half the
cost). The best trial that fits the device limits is refitted on the whole training split. A refit
can outgrow the limits (deeper trees on more data), so the next-best trial is tried,
up to `max_refits` refits. A camera pipeline's model takes the frame's pixels
(`edgeloop.training.images.model_inputs`, the one branch): the splits get each row's
frame from object storage, the estimator is the image classifier, the export
`export_image_onnx`; everything else here is the same. A retried task finds the finished run of the same candidate
and returns it instead of training again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeloop.registry.client import mlflow_errors
from edgeloop.registry.tags import (
    PARENT_RUN_TAG,
    TAG_CANDIDATE,
    TAG_CODE_VERSION,
    TAG_CONFIG_DIGEST,
    TAG_DATASET,
    TAG_DATASET_DIGEST,
    TAG_DATASET_VERSION,
    TAG_EDGE_FIT,
    TAG_EDGE_VIOLATIONS,
    TAG_MODEL_ID,
    TAG_PIPELINE,
    TAG_RUN_KIND,
    TAG_SUMMARY,
)
from edgeloop.spec import PipelineSpec
from edgeloop.training.dataset import read_split, read_split_json
from edgeloop.training.errors import DatasetError, TrainingConfigError
from edgeloop.training.estimators import for_inference, search_candidates, step_params
from edgeloop.training.evaluate import evaluate_model, score
from edgeloop.training.fitness import EdgeFitness, measure_edge_fitness
from edgeloop.training.images import model_inputs
from edgeloop.training.onnx_export import OnnxExportError, OnnxModel, log_onnx_artifact
from edgeloop.training.seed import LABEL_COLUMN
from edgeloop.training.tracking import (
    LoggedModelRef,
    candidate_key,
    code_version,
    config_digest,
    dataset_inputs,
    ensure_experiment,
    log_sklearn_model,
)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

S3Client = Any


@dataclass(frozen=True)
class TrainOptions:
    """Knobs that bound the cost of training; the spec says what to train, these say how hard."""

    search_records: int = 20_000  # trials fit on at most this many rows
    halving_factor: int = 3  # rung 0 fits every trial on 1/factor of the rows; the best 1/factor go on
    min_rung_records: int = 2_000  # no halving below this many rows in rung 0
    validation_fraction: float = 0.2  # share of training devices that score the trials
    n_jobs: int | None = -1  # fitting threads (the saved model predicts single-threaded)
    random_state: int = 0
    trial_latency_repeats: int = 200  # single-row calls timed per trial (microseconds each in onnxruntime)
    latency_repeats: int = 400
    max_refits: int = 2
    selection_tolerance: float = 0.002  # trials this close to the best validation score count as tied


@dataclass
class Trial:
    index: int
    params: dict[str, Any]
    run_id: str
    score: float | None = None
    fitness: EdgeFitness | None = None
    rung: int = -1
    error: str | None = None


def _device_hash(device: str) -> str:
    return hashlib.sha256(device.encode()).hexdigest()


def _stratified(frame: pd.DataFrame, records: int, random_state: int) -> pd.DataFrame:
    if len(frame) <= records:
        return frame
    share = records / len(frame)
    return frame.groupby(LABEL_COLUMN, group_keys=False).sample(frac=share, random_state=random_state)


def search_sets(spec: PipelineSpec, train: pd.DataFrame, options: TrainOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit part, validation part) of the training split for scoring trials.

    Validation holds whole devices (a `validation_fraction` share, by hash) when there
    are at least five; otherwise a stratified random share. The fit part is cut to
    `search_records` rows by stratified sampling.
    """
    import numpy as np

    device = str(spec.field_with_role("device_id"))
    devices = sorted(set(train[device]), key=_device_hash)
    if len(devices) >= 5:
        held = set(devices[: max(1, round(len(devices) * options.validation_fraction))])
        mask = train[device].isin(held).to_numpy()
    else:
        rng = np.random.default_rng(options.random_state)
        mask = np.zeros(len(train), dtype=bool)
        for _, index in train.groupby(LABEL_COLUMN).indices.items():
            chosen = rng.choice(index, size=max(1, round(len(index) * options.validation_fraction)), replace=False)
            mask[chosen] = True
    fit, validation = train.loc[~mask], train.loc[mask]
    if fit[LABEL_COLUMN].nunique() < 2 or validation.empty:
        fit, validation = train, train  # too little data to hold any out: trials are compared on what they fit
    fit = _stratified(fit, options.search_records, options.random_state)
    return fit.reset_index(drop=True), validation.reset_index(drop=True)


def search_rungs(fit: pd.DataFrame, candidates: int, options: TrainOptions) -> list[pd.DataFrame]:
    """The fit data of each rung of successive halving: a 1/factor sample for all trials, then all of it.

    One rung when the data or the number of candidates is too small for halving to pay.
    """
    small = len(fit) // max(1, options.halving_factor)
    if options.halving_factor < 2 or candidates <= options.halving_factor or small < options.min_rung_records:
        return [fit]
    return [_stratified(fit, small, options.random_state).reset_index(drop=True), fit]


def _evaluate_trial(
    client: MlflowClient,
    spec: PipelineSpec,
    trial: Trial,
    rung: int,
    fit: pd.DataFrame,
    validation: pd.DataFrame,
    options: TrainOptions,
) -> None:
    from mlflow.entities import Metric

    inputs = model_inputs(spec)
    features = list(inputs.columns)
    started = time.perf_counter()
    model = inputs.estimator(random_state=options.random_state, n_jobs=options.n_jobs)
    model.set_params(**step_params(trial.params)).fit(fit[features], fit[LABEL_COLUMN])
    fit_s = time.perf_counter() - started
    trial.score = score(spec.training.metric, validation[LABEL_COLUMN], model.predict(validation[features]))
    exported = inputs.export(for_inference(model), validation)  # OnnxExportError rejects the trial
    trial.fitness = measure_edge_fitness(
        exported.data, fit[features].head(1), spec.training.limits, calls=options.trial_latency_repeats
    )
    trial.rung = rung
    metrics = {
        f"val_{spec.training.metric}": trial.score,
        "fit_seconds": fit_s,
        "rung": float(rung),
        "rung_records": float(len(fit)),
        **trial.fitness.metrics(),
        **exported.parity.metrics(),
    }
    now = int(time.time() * 1000)
    client.log_batch(trial.run_id, metrics=[Metric(k, float(v), now, rung) for k, v in metrics.items()])


def run_search(
    client: MlflowClient,
    spec: PipelineSpec,
    experiment_id: str,
    parent_tags: Mapping[str, str],
    candidates: list[dict[str, Any]],
    fit: pd.DataFrame,
    validation: pd.DataFrame,
    options: TrainOptions,
) -> list[Trial]:
    """Evaluate the candidates with successive halving, one nested MLflow run per trial (metrics per rung)."""
    from mlflow.entities import Param, RunTag

    trials = []
    for index, params in enumerate(candidates):
        run = client.create_run(
            experiment_id, run_name=f"trial-{index:03d}", tags={**parent_tags, TAG_RUN_KIND: "trial"}
        )
        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        trials.append(Trial(index, params, run.info.run_id))
    rungs = search_rungs(fit, len(trials), options)
    active = trials
    try:
        for rung, data in enumerate(rungs):
            if rung > 0:
                scored = sorted((t for t in active if t.error is None), key=lambda t: (-(t.score or 0.0), t.index))
                active = scored[: max(1, math.ceil(len(scored) / options.halving_factor))]
            for trial in active:
                try:
                    _evaluate_trial(client, spec, trial, rung, data, validation, options)
                # an invalid parameter value in the search space, or a model that fails ONNX export or parity
                except (OnnxExportError, ValueError, TypeError) as exc:
                    trial.error = f"{type(exc).__name__}: {exc}"
                    client.log_batch(trial.run_id, tags=[RunTag("edgeloop.error", trial.error[:5000])])
    except BaseException:
        for trial in trials:  # no trial run is left RUNNING by a search that stopped half-way
            with contextlib.suppress(Exception):
                client.set_terminated(trial.run_id, "FAILED")
        raise
    for trial in trials:
        client.set_terminated(trial.run_id, "FAILED" if trial.error else "FINISHED")
    return trials


def rank_trials(trials: list[Trial], tolerance: float) -> list[Trial]:
    """Best first: fits the device limits, evaluated on the most data, then the smallest model among
    those within `tolerance` of the best score (differences that small are noise, size is not),
    then the highest score."""
    done = [t for t in trials if t.error is None and t.score is not None and t.fitness is not None]
    if not done:
        return []

    def tier(t: Trial) -> tuple[bool, int]:
        return (not (t.fitness and t.fitness.ok), -t.rung)

    best_tier = min(tier(t) for t in done)
    leaders = [t for t in done if tier(t) == best_tier]
    top = max(t.score or 0.0 for t in leaders)
    close = sorted(
        (t for t in leaders if (t.score or 0.0) >= top - tolerance),
        key=lambda t: (t.fitness.model_mb if t.fitness else 0.0, -(t.score or 0.0), t.index),
    )
    rest = sorted((t for t in done if t not in close), key=lambda t: (*tier(t), -(t.score or 0.0), t.index))
    return close + rest


def refit_best(
    spec: PipelineSpec, ranked: list[Trial], train: pd.DataFrame, validation: pd.DataFrame, options: TrainOptions
) -> tuple[Trial, Any, EdgeFitness, OnnxModel | None]:
    """Refit the best trials on the whole training split until one exports to ONNX and fits the device limits.

    Up to `max_refits` trials, in rank order; after the first, only trials that fitted the
    limits on the search data. Returns (trial, fitted model, its edge fitness, its ONNX
    file): the first refit that is fit, else the first that exported, else the first
    refit with its export failure as the edge violation (never an exception: the
    candidate is logged, and the gate rejects it with that reason).
    """
    inputs = model_inputs(spec)
    features = list(inputs.columns)
    best: tuple[Trial, Any, EdgeFitness, OnnxModel | None] | None = None
    for position, trial in enumerate(ranked[: max(1, options.max_refits)]):
        if position > 0 and not (trial.fitness and trial.fitness.ok):
            break  # the remaining trials did not fit the limits even on the smaller search data
        refit = inputs.estimator(random_state=options.random_state, n_jobs=options.n_jobs)
        refit = for_inference(refit.set_params(**step_params(trial.params)).fit(train[features], train[LABEL_COLUMN]))
        try:
            exported = inputs.export(refit, validation)
        except OnnxExportError as exc:
            log.warning("refit of trial %d is rejected: %s", trial.index, exc)
            best = best or (trial, refit, EdgeFitness.not_measured(f"ONNX export: {exc}"), None)
            continue
        measured = measure_edge_fitness(
            exported.data, train[features].head(1), spec.training.limits, calls=options.latency_repeats
        )
        if best is None or best[3] is None or measured.ok:
            best = (trial, refit, measured, exported)
        if measured.ok:
            break
        log.info("refit of trial %d exceeds the edge limits (%s)", trial.index, "; ".join(measured.violations))
    assert best is not None
    return best


def find_training_run(client: MlflowClient, experiment_id: str, candidate: str) -> Any | None:
    """The oldest finished training run of a candidate that has a logged model, if any."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{TAG_CANDIDATE}` = '{candidate}' and tags.`{TAG_RUN_KIND}` = 'training' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time ASC"],
        max_results=10,
    )
    return next((r for r in runs if TAG_SUMMARY in r.data.tags), None)


def _summary(run: Any, reused: bool) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(run.data.tags[TAG_SUMMARY])
    return {**summary, "run_id": run.info.run_id, "experiment_id": run.info.experiment_id, "reused": reused}


def train_model(
    client: MlflowClient,
    s3: S3Client,
    spec: PipelineSpec,
    dataset: Mapping[str, Any],
    *,
    search_budget: int | None = None,
    code: str | None = None,
    options: TrainOptions = TrainOptions(),
) -> dict[str, Any]:
    """Search, refit, measure and log one candidate model for a dataset made by `build_dataset`.

    Returns a small dict for XCom: run and model ids, the candidate key and its parts
    (dataset version and digest, code version, config digest), the held-out score
    (overall and per group), the edge-fitness figures and verdict, and where the
    dataset's parts are. Nothing is registered here.
    """
    from mlflow.entities import RunTag

    budget = search_budget or spec.training.search_budget
    code = code or code_version()
    config = config_digest(spec, budget)
    version, digest = str(dataset["dataset_version"]), str(dataset["digest"])
    candidate = candidate_key(version, digest, code, config)
    candidates = search_candidates(spec.training, budget, random_state=options.random_state)
    inputs = model_inputs(spec)  # the one branch between tabular and image models
    inputs.estimator()  # a bad parameter name fails here, before any run exists

    with mlflow_errors(client, f"training {spec.name} on dataset {version}"):
        experiment_id = ensure_experiment(client, spec)
        existing = find_training_run(client, experiment_id, candidate)
        if existing is not None:
            log.info("candidate %s was trained already in run %s: reusing it", candidate, existing.info.run_id)
            return _summary(existing, reused=True)

        attached = [inputs.attach(s3, read_split(s3, dataset, part)) for part in ("train", "eval")]
        (train, evaluation), rejected = [a.frame for a in attached], [a.rejected for a in attached]
        split_info = read_split_json(s3, dataset)
        if train[LABEL_COLUMN].nunique() < 2:
            raise DatasetError(f"dataset {version}: the training split has a single class")
        identity = _candidate_tags(spec, candidate, version, digest, code, config)
        parent = client.create_run(
            experiment_id,
            run_name=f"train-{version}",
            tags={**identity, TAG_RUN_KIND: "training", "mlflow.source.name": "edgeloop.training.train"},
        )
        run_id = parent.info.run_id
        try:
            summary = _train_in_run(
                client,
                spec,
                experiment_id,
                run_id,
                identity,
                dataset,
                split_info,
                train,
                evaluation,
                candidates,
                options,
            )
            location = {k: dataset[k] for k in ("bucket", "train_key", "eval_key", "split_key")}
            summary = {**_identity_summary(identity, budget), **summary, "dataset": location}
            if inputs.image_shape is not None:  # rows dropped for frames that could not be used, by reason
                summary["frames_rejected"] = {"train": rejected[0], "eval": rejected[1]}
            client.log_batch(
                run_id,
                tags=[
                    RunTag(TAG_SUMMARY, json.dumps(summary, sort_keys=True)),
                    RunTag(TAG_DATASET, json.dumps(location)),
                ],
            )
            client.set_terminated(run_id, "FINISHED")
        except BaseException:
            try:
                client.set_terminated(run_id, "FAILED")
            except Exception as exc:  # the server may be the reason we are here
                log.warning("could not mark run %s FAILED: %s", run_id, exc)
            raise
        return _summary(client.get_run(run_id), reused=False)


def _candidate_tags(
    spec: PipelineSpec, candidate: str, version: str, digest: str, code: str, config: str
) -> dict[str, str]:
    """The tags that identify a training candidate on its runs (and, after registration, its version)."""
    return {
        TAG_PIPELINE: spec.name,
        TAG_CANDIDATE: candidate,
        TAG_DATASET_VERSION: version,
        TAG_DATASET_DIGEST: digest,
        TAG_CODE_VERSION: code,
        TAG_CONFIG_DIGEST: config,
    }


def _identity_summary(identity: Mapping[str, str], budget: int) -> dict[str, Any]:
    """The candidate's identity as the first keys of the training summary."""
    return {
        "pipeline": identity[TAG_PIPELINE],
        "candidate": identity[TAG_CANDIDATE],
        "dataset_version": identity[TAG_DATASET_VERSION],
        "dataset_digest": identity[TAG_DATASET_DIGEST],
        "code_version": identity[TAG_CODE_VERSION],
        "config_digest": identity[TAG_CONFIG_DIGEST],
        "search_budget": budget,
    }


def _log_run_inputs(
    client: MlflowClient,
    spec: PipelineSpec,
    run_id: str,
    dataset: Mapping[str, Any],
    split_info: dict[str, Any],
    train: pd.DataFrame,
    evaluation: pd.DataFrame,
    fit: pd.DataFrame,
    validation: pd.DataFrame,
    trials: int,
    options: TrainOptions,
) -> None:
    """The training run's parameters, its dataset inputs and the split record."""
    from mlflow.entities import Param

    client.log_batch(
        run_id,
        params=[
            Param("estimator", spec.training.estimator),
            Param("metric", spec.training.metric),
            Param("search", f"sklearn.ParameterSampler, successive halving (factor {options.halving_factor})"),
            Param("search_budget", str(trials)),
            Param("search_records", str(len(fit))),
            Param("validation_records", str(len(validation))),
            Param("train_records", str(len(train))),
            Param("eval_records", str(len(evaluation))),
            Param("eval_cutoff", str(dataset.get("cutoff", ""))),
            Param("eval_groups", ",".join(dataset.get("eval_groups", []))),
        ],
    )
    client.log_inputs(run_id, datasets=dataset_inputs(dataset, train=train[list(spec.features)]))
    client.log_dict(run_id, split_info, "split.json")


def _train_in_run(
    client: MlflowClient,
    spec: PipelineSpec,
    experiment_id: str,
    run_id: str,
    identity: Mapping[str, str],
    dataset: Mapping[str, Any],
    split_info: dict[str, Any],
    train: pd.DataFrame,
    evaluation: pd.DataFrame,
    candidates: list[dict[str, Any]],
    options: TrainOptions,
) -> dict[str, Any]:
    from mlflow.entities import Metric, Param

    features, metric = list(model_inputs(spec).columns), spec.training.metric
    started = time.perf_counter()
    fit, validation = search_sets(spec, train, options)
    _log_run_inputs(
        client, spec, run_id, dataset, split_info, train, evaluation, fit, validation, len(candidates), options
    )

    parent_tags = {**identity, PARENT_RUN_TAG: run_id}
    clock = time.perf_counter()
    trials = run_search(client, spec, experiment_id, parent_tags, candidates, fit, validation, options)
    timings = {"search_seconds": time.perf_counter() - clock}
    clock = time.perf_counter()
    ranked = rank_trials(trials, options.selection_tolerance)
    if not ranked:
        errors = "; ".join(f"trial {t.index} {t.params}: {t.error}" for t in trials)
        raise TrainingConfigError(f"every trial of the search failed: {errors}")

    chosen, model, fitness, exported = refit_best(spec, ranked, train, validation, options)
    timings["refit_seconds"] = time.perf_counter() - clock

    result = evaluate_model(spec, model, evaluation)
    now = int(time.time() * 1000)
    metrics = {
        f"eval_{metric}": result["score"],
        f"val_{metric}": float(chosen.score or 0.0),
        "eval_records": float(result["records"]),
        "trials": float(len(trials)),
        "trials_failed": float(sum(t.error is not None for t in trials)),
        "train_seconds": time.perf_counter() - started,
        **timings,
        **fitness.metrics(),
    }
    for group, values in result["groups"].items():
        metrics[f"eval_{metric}.{group}"] = values["score"]
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(f"best.{k}", str(v)) for k, v in chosen.params.items()]
        + [Param("best.trial", str(chosen.index))],
    )
    ref, artifact = _log_models(
        client, run_id, experiment_id, model, train[features].head(20), identity, fitness, exported, timings
    )
    return {
        "model_id": ref.model_id,
        "model_uri": ref.uri,
        "metric": metric,
        "eval_score": result["score"],
        "eval_groups": {g: v["score"] for g, v in result["groups"].items()},
        "val_score": chosen.score,
        "best_params": chosen.params,
        "best_trial_run_id": chosen.run_id,
        "trials": len(trials),
        "edge": fitness.as_dict(),
        "artifact": artifact,
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }


def _log_models(
    client: MlflowClient,
    run_id: str,
    experiment_id: str,
    model: Any,
    example: pd.DataFrame,
    identity: Mapping[str, str],
    fitness: EdgeFitness,
    exported: OnnxModel | None,
    timings: dict[str, float],
) -> tuple[LoggedModelRef, dict[str, Any] | None]:
    """Log the MLflow model and the ONNX file of the chosen refit; `timings` gains `log_model_seconds`."""
    from mlflow.entities import Metric, RunTag

    clock = time.perf_counter()
    ref = log_sklearn_model(
        client, run_id, experiment_id, model, example, tags={TAG_CANDIDATE: identity[TAG_CANDIDATE]}
    )
    timings["log_model_seconds"] = time.perf_counter() - clock
    client.log_batch(
        run_id,
        metrics=[Metric("log_model_seconds", timings["log_model_seconds"], int(time.time() * 1000), 0)],
        tags=[
            RunTag(TAG_MODEL_ID, ref.model_id),
            RunTag(TAG_EDGE_FIT, str(fitness.ok).lower()),
            RunTag(TAG_EDGE_VIOLATIONS, "; ".join(fitness.violations)),
        ],
    )
    # the file devices run, next to the MLflow model; none when no refit could be exported (the gate rejects it)
    artifact = log_onnx_artifact(client, run_id, exported) if exported is not None else None
    return ref, artifact
