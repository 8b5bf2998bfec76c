"""A rollout's outcome as Prometheus values (names defined in `edgeloop.metrics`).

Computed once per rollout, by the promote or rollback task, from the plan and the XComs of
the apply and gate tasks; labels are the spec's groups and the wave index only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class RolloutSink(Protocol):
    """What `edgeloop.metrics.BatchMetrics` offers."""

    def set(self, name: str, value: float, **labels: str | int) -> None: ...

    def inc(self, name: str, amount: float = 1.0, **labels: str | int) -> None: ...


def record_rollout_metrics(
    sink: RolloutSink,
    plan: Mapping[str, Any],
    applies: Mapping[int, Any],
    gates: Mapping[int, Any],
    rolled_back: list[str] | None = None,
) -> None:
    """Per group and wave: applied ratio, gate passed, duration, failed gates; per group: the version it runs now
    and rollbacks; once: the last wave reached. Counters start at 0 so that they exist before the first failure."""
    rolled_back = rolled_back or []
    reached = -1
    for wave in plan.get("waves", []):
        index = int(wave["index"])
        gate, applied = gates.get(index) or {}, applies.get(index) or {}
        readings = {r["group"]: r for r in gate.get("readings", [])}
        for group in wave.get("groups", []):
            failed = 1.0 if gate and gate.get("state") != "pass" else 0.0
            sink.inc("edgeloop_rollout_gate_failures_total", failed, group=group, wave=index)
            if not gate:
                continue
            reached = max(reached, index)
            sink.set("edgeloop_rollout_gate_passed", 1.0 - failed, group=group, wave=index)
            if group in readings:
                sink.set(
                    "edgeloop_rollout_devices_applied_ratio",
                    float(readings[group]["applied_ratio"]),
                    group=group,
                    wave=index,
                )
            if applied.get("applied_at") and gate.get("decided_at"):
                seconds = float(gate["decided_at"]) - float(applied["applied_at"])
                sink.set("edgeloop_rollout_duration_seconds", max(0.0, seconds), group=group, wave=index)
            version = plan["previous_version"] if group in rolled_back else plan["model_version"]
            if version is not None and str(version).isdigit():
                sink.set("edgeloop_rollout_model_version", float(version), group=group)
    for wave in plan.get("waves", []):
        for group in wave.get("groups", []):
            sink.inc("edgeloop_rollout_rollbacks_total", 1.0 if group in rolled_back else 0.0, group=group)
    if reached >= 0:
        sink.set("edgeloop_rollout_wave", float(reached))
