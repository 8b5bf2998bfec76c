"""Every pushed metric family of a batch shows up in the real Prometheus, asked through its HTTP API.

A throwaway pipeline (the demo spec under a fresh name) records every metric a batch task may
push, pushes them to the stack's Pushgateway, and `missing_metric_families` sees each family in
Prometheus after the next scrape (the stack scrapes every 15 s; the wait has a 60 s deadline).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import delete_from_gateway

from edgeloop.metrics.catalogue import BY_NAME, METRICS, label_bounds
from edgeloop.metrics.promql import missing_metric_families, wait_for_metric_families
from edgeloop.metrics.push import PUSH_JOB, BatchMetrics, grouping_key, push_batch_metrics
from edgeloop.spec import PipelineSpec, parse_spec

pytestmark = pytest.mark.integration

DEMO_SPEC = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
PUSHED = [d.name for d in METRICS if d.source == "push"]
SCRAPE_DEADLINE_S = 60.0  # four scrapes of the stack's 15 s interval


@pytest.fixture
def throwaway_spec() -> PipelineSpec:
    name = f"ops_families_{uuid.uuid4().hex[:8]}"
    return parse_spec(DEMO_SPEC.read_text().replace("factory_maintenance", name))


@pytest.fixture
def gateway_group(stack_env: dict[str, str], throwaway_spec: PipelineSpec) -> Iterator[tuple[str, dict[str, str]]]:
    gateway = stack_env["EDGELOOP_PUSHGATEWAY_URL"]
    key = grouping_key(throwaway_spec, f"{throwaway_spec.name}__ops", "metric_families")
    try:
        yield gateway, key
    finally:
        delete_from_gateway(gateway, job=PUSH_JOB, grouping_key=key)


def record_every_pushed_family(spec: PipelineSpec) -> BatchMetrics:
    """One value of each metric a batch task may push, with the first allowed value of each label."""
    bounds = label_bounds(spec)
    batch = BatchMetrics(spec)
    for name in PUSHED:
        definition = BY_NAME[name]
        labels = {label: sorted(bounds[label])[0] for label in definition.labels if label != "pipeline"}
        if definition.kind == "counter":
            batch.inc(name, 1, **labels)
        else:
            batch.set(name, 1, **labels)
    return batch


def test_every_pushed_family_appears_in_prometheus_after_a_push(
    stack_env: dict[str, str], throwaway_spec: PipelineSpec, gateway_group: tuple[str, dict[str, str]]
) -> None:
    prometheus = stack_env["EDGELOOP_PROMETHEUS_URL"]
    gateway, key = gateway_group
    assert missing_metric_families(prometheus, PUSHED, pipeline=throwaway_spec.name) == PUSHED

    assert push_batch_metrics(record_every_pushed_family(throwaway_spec), gateway, key) == sorted(PUSHED)

    missing = wait_for_metric_families(prometheus, PUSHED, pipeline=throwaway_spec.name, deadline_s=SCRAPE_DEADLINE_S)
    assert missing == [], f"not in Prometheus {SCRAPE_DEADLINE_S:.0f} s after the push: {missing}"
    # another pipeline's families are not counted for this one
    other = missing_metric_families(prometheus, PUSHED, pipeline=f"{throwaway_spec.name}x")
    assert other == PUSHED


def test_the_exporter_families_of_the_demo_pipeline_are_scraped(stack_env: dict[str, str]) -> None:
    families = ["edgeloop_spec_limit", "edgeloop_exporter_reader_up", "edgeloop_exporter_rejected_samples"]
    missing = wait_for_metric_families(
        stack_env["EDGELOOP_PROMETHEUS_URL"], families, pipeline="factory_maintenance", deadline_s=SCRAPE_DEADLINE_S
    )
    assert missing == []
