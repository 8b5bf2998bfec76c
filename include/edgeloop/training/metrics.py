"""Training and evaluation-gate results as Prometheus values (names defined in `edgeloop.metrics`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from edgeloop.metrics.catalogue import GATE_DECISIONS


class MetricSink(Protocol):
    """What `edgeloop.metrics.BatchMetrics` offers."""

    def set(self, name: str, value: float, **labels: str | int) -> None: ...

    def inc(self, name: str, amount: float = 1.0, **labels: str | int) -> None: ...


def record_training_metrics(sink: MetricSink, trained: Mapping[str, Any]) -> None:
    """From `train_model`'s result: trials, score, wall time, the model's edge fitness (size, latency, memory)
    and, for a camera pipeline, the rows dropped for their frames."""
    edge: Mapping[str, Any] = trained.get("edge") or {}
    sink.set("edgeloop_training_trials", float(trained.get("trials") or 0))
    if trained.get("eval_score") is not None:
        sink.set("edgeloop_training_best_score", float(trained["eval_score"]), metric=str(trained.get("metric")))
    timings: Mapping[str, float] = trained.get("timings") or {}
    if timings:
        sink.set("edgeloop_training_duration_seconds", float(sum(timings.values())))
    if edge.get("model_mb") is not None:
        sink.set("edgeloop_training_model_size_bytes", float(edge["model_mb"]) * 1024 * 1024)
    latency_ms = edge.get("latency_p95_ms", edge.get("latency_ms"))
    if latency_ms is not None:
        sink.set("edgeloop_training_inference_latency_seconds", float(latency_ms) / 1000)
    if edge.get("memory_mb") is not None:
        sink.set("edgeloop_training_model_memory_bytes", float(edge["memory_mb"]) * 1024 * 1024)
    rejected: Mapping[str, Mapping[str, int]] | None = trained.get("frames_rejected")
    if rejected is not None:  # a camera pipeline: rows dropped for frames that could not be used
        sink.set("edgeloop_training_frames_rejected", float(sum(sum(part.values()) for part in rejected.values())))


def record_gate_metrics(sink: MetricSink, decision: Mapping[str, Any]) -> None:
    """The evaluation gate's decision: 1 for the one taken, 0 for the others (counters start at 0 too)."""
    taken = str(decision.get("decision"))
    for word in GATE_DECISIONS:
        sink.set("edgeloop_training_gate_decision", 1.0 if word == taken else 0.0, decision=word)
        sink.inc("edgeloop_training_gate_decisions_total", 1.0 if word == taken else 0.0, decision=word)
