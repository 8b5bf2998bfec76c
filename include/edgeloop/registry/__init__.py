"""The model registry of a pipeline: one registered model, versions addressed by alias.

- `client`: the MLflow client of the tracking server (also the registry), `mlflow_errors`.
- `errors`: `RegistryError`, `MlflowUnavailable`.
- `tags`: every tag key edgeloop writes on runs and versions (the model's lineage).
- `register`: idempotent, race-safe registration of a training candidate as the `challenger`.
- `aliases`: read aliases, move `champion` (the rollout does, once the fleet runs the version).
- `artifacts`: publish a version's ONNX file, content-addressed, where devices fetch it.

Importing this package is cheap (MLflow is imported inside the functions).
"""
