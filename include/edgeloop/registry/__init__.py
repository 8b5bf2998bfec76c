"""The model registry of a pipeline: one registered model, versions addressed by alias.

- `register`: idempotent, race-safe registration of a training candidate as the `challenger`.
- `aliases`: read aliases, move `champion` (the rollout does, once the fleet runs the version).
- `gate`: compare challenger and champion on the same held-out recent data and decide.

Importing this package is cheap (MLflow is imported inside the functions).
"""
