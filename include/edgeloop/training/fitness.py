"""Edge fitness: will the model run on the device? Size, single-record latency, memory, against the spec.

Measured on this machine, with the model as the device loads it (the pickled bytes
MLflow stores): size of those bytes; latency of `predict_proba` on one record (a
one-row frame, as devices call it), median and 95th percentile over repeated calls
after a warm-up, the median judged against the limit because a shared machine's tail
is noise; memory as the peak Python heap (NumPy arrays included) while unpickling the
model and scoring one record, i.e. what the model adds to the inference runtime.
"""

from __future__ import annotations

import pickle
import statistics
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

from edgeloop.spec import EdgeLimits

MIB = 1024 * 1024


@dataclass(frozen=True)
class EdgeFitness:
    model_mb: float
    latency_ms: float
    latency_p95_ms: float
    memory_mb: float
    violations: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.violations

    def metrics(self, prefix: str = "edge_") -> dict[str, float]:
        return {
            f"{prefix}model_mb": self.model_mb,
            f"{prefix}latency_ms": self.latency_ms,
            f"{prefix}latency_p95_ms": self.latency_p95_ms,
            f"{prefix}memory_mb": self.memory_mb,
            f"{prefix}fit": float(self.ok),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_mb": round(self.model_mb, 4),
            "latency_ms": round(self.latency_ms, 4),
            "latency_p95_ms": round(self.latency_p95_ms, 4),
            "memory_mb": round(self.memory_mb, 4),
            "ok": self.ok,
            "violations": list(self.violations),
        }


def limit_violations(model_mb: float, latency_ms: float, memory_mb: float, limits: EdgeLimits) -> tuple[str, ...]:
    """One readable reason per limit the model exceeds."""
    checks = (
        ("model size", model_mb, limits.max_model_mb, "MB"),
        ("single-record latency", latency_ms, limits.max_latency_ms, "ms"),
        ("memory", memory_mb, limits.max_memory_mb, "MB"),
    )
    return tuple(
        f"{what} {value:.2f} {unit} > limit {limit:g} {unit}" for what, value, limit, unit in checks if value > limit
    )


def measure_edge_fitness(model: Any, record: Any, limits: EdgeLimits, *, repeats: int = 50) -> EdgeFitness:
    """Measure a fitted model on one record (a one-row DataFrame of the spec's features)."""
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    tracemalloc.start()
    try:
        loaded = pickle.loads(blob)  # noqa: S301 - our own bytes, just made
        loaded.predict_proba(record)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del loaded
    for _ in range(3):
        model.predict_proba(record)
    timings = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        model.predict_proba(record)
        timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    latency = statistics.median(timings)
    p95 = timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))]
    size_mb, memory_mb = len(blob) / MIB, peak / MIB
    return EdgeFitness(size_mb, latency, p95, memory_mb, limit_violations(size_mb, latency, memory_mb, limits))
