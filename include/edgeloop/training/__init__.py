"""Retraining: curated datasets in, a tracked, edge-fit candidate model out.

- `dataset`: assemble every curated version up to the triggering one plus the seed,
  validate it against the spec, split it by time and device, store the split.
- `seed`: the deterministic seed training set (replaceable by the fleet simulator's).
- `sensors`: the synthetic sensor model the seed set and the fleet simulator draw readings from.
- `estimators`: the spec's scikit-learn pipeline and the bounded search space.
- `fitness`: edge fitness (model size, single-record latency, memory) against the spec's limits.
- `evaluate`: the spec's metric overall and per edge group.
- `tracking`: MLflow experiment, runs, dataset lineage and model logging with explicit requirements.
- `train`: the bounded hyperparameter search with one nested MLflow run per trial.
- `gate`: compare the registered challenger and the champion on the same held-out recent data
  and decide (it reads and writes the registry through `edgeloop.registry`).

Importing this package is cheap: the modules import pandas, scikit-learn and MLflow
themselves, so DAG files may import names from here at parse time.
"""
