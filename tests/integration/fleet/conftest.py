"""A small simulated fleet on the real Kafka of the stack, one set of fresh topics per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from edgeloop.contract.keys import Signer
from edgeloop.spec import PipelineSpec, load_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"


@pytest.fixture
def operator() -> Signer:
    """The key that signs this test's orders and enrolments (the simulated devices trust it)."""
    return Signer.generate()


@pytest.fixture
def spec(kafka_config: dict[str, Any]) -> Iterator[PipelineSpec]:
    """The demo spec with 3 devices per group, fresh topics (deleted afterwards) and a 30 s stale_after."""
    base = load_spec(DEMO)
    prefix = f"it_fleet_{uuid.uuid4().hex[:10]}"
    spec = base.model_copy(
        update={
            "topics": base.topics.model_copy(update={"prefix": prefix, "partitions": 2}),
            "groups": [g.model_copy(update={"devices": 3}) for g in base.groups],
            "fleet_health": base.fleet_health.model_copy(update={"stale_after": timedelta(seconds=30)}),
        }
    )
    yield spec
    admin = AdminClient(kafka_config)
    existing = set(admin.list_topics(timeout=10).topics)
    names = [t for t in [*spec.all_topics, spec.topic("ground-truth")] if t in existing]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result(timeout=30)
