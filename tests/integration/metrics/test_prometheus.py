"""Batch metrics travel Pushgateway -> Prometheus in the real local stack, and the rules are loaded."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import delete_from_gateway

from edgeloop.metrics.catalogue import unbounded_label_problems
from edgeloop.metrics.push import PUSH_JOB, BatchMetrics, grouping_key, push_batch_metrics
from edgeloop.spec import PipelineSpec, load_spec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TASK = "ops_integration_test"  # a grouping key of its own, deleted afterwards


@pytest.fixture
def spec() -> PipelineSpec:
    return load_spec(ROOT / "include" / "pipelines" / "factory_maintenance.yaml")


@pytest.fixture
def pushed_group(stack_env: dict[str, str], spec: PipelineSpec) -> Iterator[tuple[str, dict[str, str]]]:
    gateway = stack_env["EDGELOOP_PUSHGATEWAY_URL"]
    key = grouping_key(spec, f"{spec.name}__rollout", TASK)
    try:
        yield gateway, key
    finally:
        delete_from_gateway(gateway, job=PUSH_JOB, grouping_key=key)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the local stack's URL
        return json.loads(response.read())


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    result = _get(f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    assert result["status"] == "success", result
    return list(result["data"]["result"])


def test_a_pushed_counter_reaches_prometheus_and_keeps_growing(
    stack_env: dict[str, str], spec: PipelineSpec, pushed_group: tuple[str, dict[str, str]]
) -> None:
    gateway, key = pushed_group
    group = spec.groups[0]
    for _ in range(2):
        batch = BatchMetrics(spec)
        batch.inc("edgeloop_rollout_rollbacks_total", 1, group=group.name)
        batch.set("edgeloop_rollout_gate_passed", 1, group=group.name, wave=group.wave)
        push_batch_metrics(batch, gateway, key)

    with urllib.request.urlopen(f"{gateway}/metrics", timeout=10) as response:  # noqa: S310
        exposition = response.read().decode()
    assert unbounded_label_problems(exposition, [spec]) == []

    expr = f'edgeloop_rollout_rollbacks_total{{pipeline="{spec.name}", task="{TASK}", group="{group.name}"}}'
    deadline = time.monotonic() + 60  # two scrape intervals and then some
    samples: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        samples = _query(stack_env["EDGELOOP_PROMETHEUS_URL"], expr)
        if samples:
            break
        time.sleep(2)
    assert samples, f"{expr} did not appear in Prometheus within 60 s"
    assert float(samples[0]["value"][1]) == 2
    assert samples[0]["metric"]["dag"] == f"{spec.name}__rollout", "honor_labels must keep the pushed labels"


def test_prometheus_loaded_the_edgeloop_rules(stack_env: dict[str, str]) -> None:
    groups = _get(f"{stack_env['EDGELOOP_PROMETHEUS_URL']}/api/v1/rules")["data"]["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"EdgeloopLoopStalled", "EdgeloopRolloutGateFailed", "edgeloop:fleet_offline_ratio"} <= names
    unhealthy = [r["name"] for g in groups for r in g["rules"] if r.get("health") == "err"]
    assert unhealthy == []
