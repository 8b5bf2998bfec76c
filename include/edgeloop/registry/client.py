"""The MLflow client of a pipeline's tracking server (which is also its model registry), and its failures.

Retries: MLflow's HTTP client retries connection errors, 429 and 5xx itself
(MLFLOW_HTTP_REQUEST_MAX_RETRIES / _BACKOFF_FACTOR / _TIMEOUT in the worker's
environment); when it gives up, `mlflow_errors` turns the failure into
`MlflowUnavailable` naming the server and the step. Airflow's task retries are the
outer loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from edgeloop.registry.errors import MlflowUnavailable

if TYPE_CHECKING:
    from mlflow import MlflowClient


def mlflow_client(tracking_uri: str) -> MlflowClient:
    """A client for one tracking server, which is also its model registry."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _unreachable(exc: BaseException) -> bool:
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, requests.exceptions.RequestException):
        return True
    if isinstance(exc, MlflowException):
        message = str(exc.message) if hasattr(exc, "message") else str(exc)
        return (
            exc.error_code == "TEMPORARILY_UNAVAILABLE"
            or "failed with exception" in message
            or "failed with timeout exception" in message
        )
    return False


@contextlib.contextmanager
def mlflow_errors(client: MlflowClient, what: str) -> Iterator[None]:
    """Turn 'the server did not answer' (after the HTTP client's retries) into MlflowUnavailable."""
    try:
        yield
    except Exception as exc:
        if _unreachable(exc):
            raise MlflowUnavailable(
                f"{what}: the MLflow server at {client.tracking_uri} did not answer after retries: {exc}"
            ) from exc
        raise
