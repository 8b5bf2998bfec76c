"""Errors of the training and registry stages; each message names what is wrong and where."""

from __future__ import annotations


class DatasetError(ValueError):
    """The training data cannot be used: empty, one class, unknown labels, schema mismatch."""


class TrainingConfigError(ValueError):
    """The spec's training section does not fit the estimator (unknown parameter, empty grid)."""


class MlflowUnavailable(RuntimeError):
    """The MLflow tracking server did not answer, after the HTTP client's own retries."""


class RegistryError(RuntimeError):
    """The model registry is in a state the stage cannot work with (missing version, bad tags)."""
