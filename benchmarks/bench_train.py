"""Training stage benchmarks against the stack's real MLflow server (artifacts proxied to S3).

1. Log-and-register time of the demo model: edgeloop's path (explicit pip requirements,
   explicit signature, `log_sklearn_model` + `register_challenger` with its duplicate
   checks and the `challenger` alias) against MLflow's defaults (`mlflow.sklearn.log_model`
   with an input example and `registered_model_name`: requirement inference, signature
   inference and serving-input validation on; its default skops format, with the one type a
   forest needs trusted). Both in this one run, one warm-up each,
   then the median of `--repeats` alternating rounds. Target: <= 2 s and >= 3x faster.
2. Training time for 100,000 labelled records with a 20-trial search (`build_dataset` +
   `train_model` with the demo spec's search space). Target: <= 120 s.

Needs the stack (`make stack-up`); endpoints from the environment or .edgeloop/stack.env.
Everything the benchmark creates (experiments, registered models, S3 objects) is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "include" / "pipelines" / "factory_maintenance.yaml"
DEMO_PARAMS = {"n_estimators": 100, "max_depth": 10, "min_samples_leaf": 2}


def stack_environment() -> dict[str, str]:
    if os.environ.get("MLFLOW_TRACKING_URI") and os.environ.get("EDGELOOP_S3_ENDPOINT"):
        return dict(os.environ)
    from edgeloop.devstack import stack

    env = stack.read_env_file()
    os.environ.update(env)
    return env


def bench_spec(name: str) -> Any:
    from edgeloop.spec import load_spec

    base = load_spec(DEMO)
    return base.model_copy(
        update={
            "name": name,
            "topics": base.topics.model_copy(update={"prefix": name}),
            "registry": base.registry.model_copy(update={"model_name": name}),
        }
    )


def cleanup(client: Any, s3: Any, spec: Any, extra_models: list[str]) -> None:
    from mlflow.exceptions import MlflowException

    from edgeloop.training.tracking import experiment_name

    for model in [spec.registry.model_name, *extra_models]:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(model)
    for name in (experiment_name(spec), f"{experiment_name(spec)}-default"):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None and experiment.lifecycle_stage == "active":
            client.delete_experiment(experiment.experiment_id)
    for area in ("curated", "training"):
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=spec.storage.bucket, Prefix=f"{spec.storage_prefix(area)}/"
        ):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=spec.storage.bucket, Delete={"Objects": keys})


def log_and_register(client: Any, spec: Any, repeats: int) -> dict[str, Any]:
    """(edgeloop path seconds, default path seconds), cold and warm."""
    import mlflow
    import mlflow.sklearn

    from edgeloop.registry.register import register_challenger
    from edgeloop.training.estimators import for_inference, make_estimator, step_params
    from edgeloop.training.seed import make_seed_frame
    from edgeloop.training.tracking import ensure_experiment, experiment_name, log_sklearn_model

    frame = make_seed_frame(spec)
    features = frame[spec.features]
    model = make_estimator(spec.training).set_params(**step_params(DEMO_PARAMS)).fit(features, frame["label"])
    model = for_inference(model)
    experiment_id = ensure_experiment(client, spec)
    default_model = f"{spec.registry.model_name}_default"

    def edgeloop_path() -> float:
        run = client.create_run(experiment_id, run_name="bench-edgeloop")
        started = time.perf_counter()
        ref = log_sklearn_model(client, run.info.run_id, experiment_id, model, features.head(20))
        trained = {
            "candidate": uuid.uuid4().hex[:24],
            "dataset_version": "seed",
            "dataset_digest": "bench",
            "code_version": "bench",
            "config_digest": "bench",
            "run_id": run.info.run_id,
            "model_id": ref.model_id,
            "dataset": {"bucket": spec.storage.bucket, "train_key": "-", "eval_key": "-", "split_key": "-"},
            "edge": {"ok": True, "violations": []},
        }
        register_challenger(client, spec, trained)
        elapsed = time.perf_counter() - started
        client.set_terminated(run.info.run_id)
        return elapsed

    mlflow.set_tracking_uri(client.tracking_uri)
    mlflow.set_experiment(f"{experiment_name(spec)}-default")

    def default_path() -> float:
        with mlflow.start_run(run_name="bench-default"):
            started = time.perf_counter()
            # MLflow 3.17's default format is skops, which refuses a forest unless its Tree type is trusted.
            mlflow.sklearn.log_model(
                model,
                name="model",
                input_example=features.head(1),
                registered_model_name=default_model,
                skops_trusted_types=["sklearn.tree._tree.Tree"],
            )
            return time.perf_counter() - started

    cold = {"edgeloop": edgeloop_path(), "default": default_path()}
    warm: dict[str, list[float]] = {"edgeloop": [], "default": []}
    for _ in range(repeats):
        warm["edgeloop"].append(edgeloop_path())
        warm["default"].append(default_path())
    return {
        "cold": cold,
        "warm": {k: statistics.median(v) for k, v in warm.items()},
        "default_model": default_model,
    }


def train_100k(client: Any, s3: Any, spec: Any, records: int, trials: int) -> dict[str, Any]:
    from edgeloop.training.dataset import build_dataset
    from edgeloop.training.seed import make_seed_frame
    from edgeloop.training.train import train_model

    started = time.perf_counter()
    dataset = build_dataset(s3, spec, seed_source=lambda s: make_seed_frame(s, records=records))
    built = time.perf_counter() - started
    started = time.perf_counter()
    trained = train_model(client, s3, spec, dataset, search_budget=trials)
    training = time.perf_counter() - started
    run = client.get_run(trained["run_id"])
    trial_runs = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"
    )
    return {
        "dataset_s": built,
        "train_s": training,
        "trials": len(trial_runs),
        "records": dataset["records"],
        "search_records": run.data.params.get("search_records"),
        "score": trained["eval_score"],
        "edge": trained["edge"],
        "best": trained["best_params"],
        "timings": trained.get("timings", {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-train", action="store_true", help="only the log-and-register comparison")
    parser.add_argument("--skip-register", action="store_true", help="only the training benchmark")
    args = parser.parse_args()

    logging.disable(logging.WARNING)
    env = stack_environment()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import boto3

    from edgeloop.registry.client import mlflow_client

    client = mlflow_client(env["MLFLOW_TRACKING_URI"])
    s3 = boto3.client("s3", endpoint_url=env["EDGELOOP_S3_ENDPOINT"])
    spec = bench_spec(f"bench_train_{uuid.uuid4().hex[:8]}")
    extra: list[str] = []
    try:
        registering = None if args.skip_register else log_and_register(client, spec, args.repeats)
        if registering:
            extra.append(registering["default_model"])
        training = None if args.skip_train else train_100k(client, s3, spec, args.records, args.trials)
    finally:
        cleanup(client, s3, spec, extra or [f"{spec.registry.model_name}_default"])

    ok = True
    if registering is not None:
        ours, default = registering["warm"]["edgeloop"], registering["warm"]["default"]
        speedup = default / ours
        print(f"\nLog and register the demo model (RandomForest {DEMO_PARAMS}), MLflow at {env['MLFLOW_TRACKING_URI']}")
        print(f"{'path':<66} {'cold s':>8} {'warm s':>8}")
        print(
            f"{'MLflow defaults (log_model, inference on, registered_model_name)':<66} "
            f"{registering['cold']['default']:>8.3f} {default:>8.3f}"
        )
        print(
            f"{'edgeloop (explicit requirements + register_challenger)':<66} "
            f"{registering['cold']['edgeloop']:>8.3f} {ours:>8.3f}"
        )
        print(f"warm = median of {args.repeats}; speed-up (warm) {speedup:.1f}x")
        ok = ours <= 2.0 and speedup >= 3.0
        print(f"target: <= 2 s and >= 3x faster -> {'met' if ok else 'NOT met'}")

    if training is not None:
        print(f"\nTrain on {args.records:,} labelled records with a {args.trials}-trial search")
        print(f"{'step':<58} {'seconds':>8}")
        print(f"{'build_dataset (seed generation, validation, split, S3)':<58} {training['dataset_s']:>8.1f}")
        print(f"{'train_model (search, refit, edge checks, MLflow logging)':<58} {training['train_s']:>8.1f}")
        for step, seconds in training["timings"].items():
            print(f"{'  ' + step.replace('_seconds', ''):<58} {seconds:>8.1f}")
        print(
            f"trials {training['trials']}, train/eval records {training['records']}, "
            f"search on {training['search_records']} records; held-out {training['score']:.4f}; "
            f"edge {training['edge']}; best {training['best']}"
        )
        train_ok = training["train_s"] <= 120
        print(f"target: train_model <= 120 s -> {'met' if train_ok else 'NOT met'}")
        ok = ok and train_ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
