"""Edge fitness on the ONNX file in onnxruntime: a busy machine cannot flip the latency verdict."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from edgeloop.spec import EdgeLimits, PipelineSpec
from edgeloop.training.estimators import for_inference, make_estimator
from edgeloop.training.fitness import (
    EdgeMeasurementError,
    measure_edge_fitness,
    session_memory_mb,
    time_calls,
)
from edgeloop.training.onnx_export import OnnxModel, export_onnx
from edgeloop.training.seed import make_seed_frame

LIMITS = EdgeLimits(max_model_mb=40, max_latency_ms=15, max_memory_mb=200)


class BusyMachine:
    """Clocks of a thread that works `cpu_ms` per call but waits `wait_ms` for a core before it finishes."""

    def __init__(self, cpu_ms: float, wait_ms: float) -> None:
        self.cpu_ns, self.wall_ns = 0, 0
        self.cpu_step, self.wait_step = int(cpu_ms * 1e6), int(wait_ms * 1e6)
        self.calls = 0

    def cpu(self) -> int:
        return self.cpu_ns

    def wall(self) -> int:
        return self.wall_ns

    def call(self) -> None:
        self.calls += 1
        self.cpu_ns += self.cpu_step
        self.wall_ns += self.cpu_step + self.wait_step


@pytest.fixture(scope="module")
def small_model(training_spec: PipelineSpec) -> Iterator[OnnxModel]:
    training = training_spec.training.model_copy(
        update={"estimator": "logistic_regression", "search_space": {}, "params": {}}
    )
    frame = make_seed_frame(training_spec, records=400)
    model = for_inference(make_estimator(training).fit(frame[training_spec.features], frame["label"]))
    yield export_onnx(model, training_spec.features, frame)


def test_waiting_for_a_core_does_not_count_as_latency() -> None:
    busy = BusyMachine(cpu_ms=2.0, wait_ms=40.0)  # 42 ms of wall time per call, 2 ms of work

    times = time_calls(busy.call, 200, cpu_clock=busy.cpu, wall_clock=busy.wall)

    assert busy.calls == 200 + 10  # the warm-up calls are not timed
    assert times.wall_p50_ms == pytest.approx(42.0)
    assert times.cpu_p50_ms == pytest.approx(2.0) and times.cpu_p95_ms == pytest.approx(2.0)


def test_a_sleeping_thread_uses_no_cpu_time() -> None:
    times = time_calls(lambda: time.sleep(0.02), 8, warmup=0)
    assert times.wall_p50_ms >= 20.0
    assert times.cpu_p95_ms < 5.0  # thread CPU time: the sleep is not the call's work


def test_the_verdict_on_an_onnx_file_does_not_flip_when_wall_time_is_inflated(small_model: OnnxModel) -> None:
    ticks = iter(range(0, 10**15, 50_000_000))  # every wall-clock reading 50 ms after the previous one

    fitness = measure_edge_fitness(
        small_model.data, [[1.0] * 6], LIMITS, calls=50, wall_clock=lambda: next(ticks), memory_probe=lambda d, n: 1.0
    )

    assert fitness.ok, fitness.violations
    assert fitness.latency_p95_ms < LIMITS.max_latency_ms


def test_the_tail_of_the_models_own_work_is_judged_not_its_median() -> None:
    slow_tail = iter([1.0] * 185 + [30.0] * 25)  # ms of CPU per call: 12% of calls are slow

    class TailClock:
        now = 0

        def cpu(self) -> int:
            return self.now

        def call(self) -> None:
            self.now += int(next(slow_tail) * 1e6)

    clock = TailClock()
    times = time_calls(clock.call, 200, warmup=10, cpu_clock=clock.cpu)
    assert times.cpu_p50_ms == pytest.approx(1.0) and times.cpu_p95_ms == pytest.approx(30.0)


def test_fitness_reports_the_file_size_and_what_loading_it_adds(small_model: OnnxModel) -> None:
    fitness = measure_edge_fitness(small_model.data, [[1.0] * 6], LIMITS, calls=20)
    assert fitness.model_mb == pytest.approx(small_model.size / 2**20)
    assert 0 <= fitness.memory_mb < 50  # a few kB of coefficients
    assert fitness.latency_ms <= fitness.latency_p95_ms
    unfit = measure_edge_fitness(small_model.data, [[1.0] * 6], LIMITS, calls=5, memory_probe=lambda d, n: 512.0)
    assert unfit.violations == ("memory 512.00 MB > limit 200 MB",)


def test_a_file_the_runtime_cannot_load_fails_the_memory_probe_with_the_reason() -> None:
    with pytest.raises(EdgeMeasurementError, match="memory probe: exited"):
        session_memory_mb(b"not an onnx file", 6)
