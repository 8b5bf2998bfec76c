"""Fixtures for the annotation tests: the stack's Label Studio and S3, and a fresh pipeline per test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from edgeloop.annotation.label_studio import LabelStudioBackend, LabelStudioSettings, project_title
from edgeloop.spec import PipelineSpec

TEST_CONN_ID = "edgeloop_annotation_itest"


@pytest.fixture(scope="session")
def ls_settings(stack_env: dict[str, str]) -> LabelStudioSettings:
    return LabelStudioSettings(stack_env["EDGELOOP_LABEL_STUDIO_URL"], stack_env["EDGELOOP_LABEL_STUDIO_TOKEN"])


@pytest.fixture(scope="session")
def backend(ls_settings: LabelStudioSettings) -> LabelStudioBackend:
    return LabelStudioBackend.connect(ls_settings)


@pytest.fixture
def ls_connection(ls_settings: LabelStudioSettings, monkeypatch: pytest.MonkeyPatch) -> str:
    """An Airflow connection (environment variable) to the stack's Label Studio, as the triggerer would read it."""
    conn = {"conn_type": "http", "host": ls_settings.url, "password": ls_settings.token}
    monkeypatch.setenv(f"AIRFLOW_CONN_{TEST_CONN_ID.upper()}", json.dumps(conn))
    return TEST_CONN_ID


@pytest.fixture
def cleanup(backend: LabelStudioBackend, s3_client: Any) -> Iterator[list[PipelineSpec]]:
    """Specs appended here have their Label Studio project and their objects removed after the test."""
    specs: list[PipelineSpec] = []
    yield specs
    for spec in specs:
        for project in backend.client.projects.list(title=project_title(spec)):
            if project.title == project_title(spec):
                backend.client.projects.delete(project.id)
        paginator = s3_client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=spec.storage.bucket, Prefix=f"{spec.storage.prefix}/"):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                s3_client.delete_objects(Bucket=spec.storage.bucket, Delete={"Objects": keys})
