"""Shared fixtures: the real local stack, started once per session when a test needs it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

STACK_VARS = (
    "EDGELOOP_KAFKA_BOOTSTRAP",
    "EDGELOOP_S3_ENDPOINT",
    "EDGELOOP_BUCKET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "EDGELOOP_LABEL_STUDIO_URL",
    "EDGELOOP_LABEL_STUDIO_TOKEN",
    "EDGELOOP_AIRFLOW_URL",
    "EDGELOOP_PROMETHEUS_URL",
    "EDGELOOP_PUSHGATEWAY_URL",
    "EDGELOOP_EXPORTER_URL",
    "EDGELOOP_SIGNING_KEY",
    "EDGELOOP_TRUSTED_KEYS",
    "AIRFLOW_ADMIN_PASSWORD",
    "AIRFLOW_VIEWER_PASSWORD",
    "EDGELOOP_METADATA_DB",
    "EDGELOOP_AIRFLOW_DB_URL",
    "EDGELOOP_MLFLOW_STORE_URL",
)


@pytest.fixture(scope="session")
def stack_env() -> Iterator[dict[str, str]]:
    """Endpoints and credentials of the running stack (started here if it is not running).

    When EDGELOOP_KAFKA_BOOTSTRAP is already in the environment, those services are used as they are.
    A stack this fixture started is stopped again at the end of the session.
    """
    if os.environ.get("EDGELOOP_KAFKA_BOOTSTRAP"):
        yield {k: os.environ[k] for k in STACK_VARS if k in os.environ}
        return
    from edgeloop.devstack import stack

    # a stack with any service running is not this session's (make test or a developer started it): it is used
    # as it is and left running; a service slow to answer its health check (the exporter reading every
    # pipeline's topics after a closed loop) is no reason to take it over
    was_running = any(s.running for s in stack.status())
    if not was_running:
        stack.up()
    env = stack.read_env_file()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield {k: env[k] for k in STACK_VARS if k in env}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if not was_running:
            stack.down()


@pytest.fixture(scope="session")
def s3_client(stack_env: dict[str, str]) -> Any:
    from edgeloop.devstack.pipelines import s3_client as stack_s3

    return stack_s3(stack_env)


@pytest.fixture(scope="session")
def kafka_config(stack_env: dict[str, str]) -> dict[str, str]:
    return {"bootstrap.servers": stack_env["EDGELOOP_KAFKA_BOOTSTRAP"]}


@pytest.fixture(scope="session")
def airflow_api(stack_env: dict[str, str]) -> Any:
    """A requests session logged in to the Airflow REST API as admin (token login)."""
    from edgeloop.airflow_api import AirflowApi

    return AirflowApi.login(stack_env["EDGELOOP_AIRFLOW_URL"], "admin", stack_env["AIRFLOW_ADMIN_PASSWORD"])
