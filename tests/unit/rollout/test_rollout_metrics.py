"""A rollout's outcome as Prometheus values, through the real BatchMetrics (labels checked against the catalogue)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgeloop.metrics.push import BatchMetrics
from edgeloop.rollout.metrics import record_rollout_metrics
from edgeloop.spec import load_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
PLAN = {
    "rollout_id": "ro-1",
    "model_version": "3",
    "previous_version": "2",
    "waves": [
        {"index": 0, "name": "canary", "groups": ["line-canary"]},
        {"index": 1, "name": "wave_1", "groups": ["plant-north", "plant-south"]},
    ],
}


def _reading(group: str, ratio: float) -> dict[str, Any]:
    return {"group": group, "applied_ratio": ratio}


def _samples(batch: BatchMetrics) -> dict[str, float]:
    """`name{label="value",...}` (pipeline left out, labels sorted) -> value."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(batch.registry).decode()):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()) if k != "pipeline")
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def test_a_promoted_rollout_reports_every_wave_and_the_new_version() -> None:
    batch = BatchMetrics(load_spec(DEMO))
    applies = {0: {"applied_at": 100.0}, 1: {"applied_at": 200.0}}
    gates = {
        0: {"state": "pass", "decided_at": 165.0, "readings": [_reading("line-canary", 1.0)]},
        1: {
            "state": "pass",
            "decided_at": 270.5,
            "readings": [_reading("plant-north", 0.99), _reading("plant-south", 1.0)],
        },
    }
    record_rollout_metrics(batch, PLAN, applies, gates)
    got = _samples(batch)
    assert got["edgeloop_rollout_wave{}"] == 1.0 or got.get("edgeloop_rollout_wave") == 1.0
    assert got['edgeloop_rollout_duration_seconds{group="line-canary",wave="0"}'] == 65.0
    assert got['edgeloop_rollout_devices_applied_ratio{group="plant-north",wave="1"}'] == 0.99
    assert got['edgeloop_rollout_model_version{group="plant-south"}'] == 3.0
    assert got['edgeloop_rollout_gate_failures_total{group="plant-north",wave="1"}'] == 0.0
    assert got['edgeloop_rollout_rollbacks_total{group="line-canary"}'] == 0.0


def test_a_failed_canary_reports_the_failure_the_rollback_and_the_previous_version() -> None:
    batch = BatchMetrics(load_spec(DEMO))
    gates = {0: {"state": "fail", "decided_at": 130.0, "readings": [_reading("line-canary", 0.4)]}}
    record_rollout_metrics(batch, PLAN, {0: {"applied_at": 100.0}}, gates, rolled_back=["line-canary"])
    got = _samples(batch)
    assert got['edgeloop_rollout_gate_passed{group="line-canary",wave="0"}'] == 0.0
    assert got['edgeloop_rollout_gate_failures_total{group="line-canary",wave="0"}'] == 1.0
    assert got['edgeloop_rollout_rollbacks_total{group="line-canary"}'] == 1.0
    assert got['edgeloop_rollout_model_version{group="line-canary"}'] == 2.0
    assert 'edgeloop_rollout_gate_passed{group="plant-north",wave="1"}' not in got  # never reached
    assert got['edgeloop_rollout_rollbacks_total{group="plant-north"}'] == 0.0
