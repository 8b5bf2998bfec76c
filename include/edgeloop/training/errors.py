"""Errors of the training stage; each message names what is wrong and where.

The registry's errors (`RegistryError`, `MlflowUnavailable`) live in `edgeloop.registry.errors`.
"""

from __future__ import annotations


class DatasetError(ValueError):
    """The training data cannot be used: empty, one class, unknown labels, schema mismatch."""


class TrainingConfigError(ValueError):
    """The spec's training section does not fit the estimator (unknown parameter, empty grid)."""
