"""Errors of the model registry and of the MLflow server behind it; each message names what is wrong and where."""

from __future__ import annotations


class MlflowUnavailable(RuntimeError):
    """The MLflow tracking server did not answer, after the HTTP client's own retries."""


class RegistryError(RuntimeError):
    """The model registry is in a state the stage cannot work with (missing version, bad tags)."""
