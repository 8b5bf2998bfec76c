"""Fresh topics and storage prefixes on the real Kafka and S3 of the stack, one set per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from benchmarks.soak_ingest import create_topic, ingest_spec

from edgeloop.spec import PipelineSpec


@pytest.fixture
def make_spec(stack_env: dict[str, str]) -> Callable[..., PipelineSpec]:
    """A demo spec on a new telemetry topic (created) and a new storage prefix; ingest settings overridable."""

    def make(partitions: int = 3, **ingest: Any) -> PipelineSpec:
        run = uuid.uuid4().hex[:10]
        spec = ingest_spec(
            bucket=stack_env.get("EDGELOOP_BUCKET", "edgeloop"),
            topic_prefix=f"it_ingest_{run}",
            storage_prefix=f"it/ingest/{run}",
            partitions=partitions,
            **ingest,
        )
        create_topic(stack_env["EDGELOOP_KAFKA_BOOTSTRAP"], spec.topic("telemetry"), partitions)
        return spec

    return make
