"""Helpers for the fleet integration tests: a simulator in a thread, polling, topic reads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from edgeloop.contract.keys import Keyring, Signer
from edgeloop.fleet.topics import TopicRecord, read_topic
from edgeloop.simulator.fleet import FleetSimulator, SimulatorOptions
from edgeloop.simulator.models import ModelFault, baseline_provider
from edgeloop.spec import PipelineSpec
from edgeloop.training.sensors import sensor_profile

T = TypeVar("T")


def keyring(operator: Signer) -> Keyring:
    """What the cloud side trusts in a test: the operator's public key."""
    return Keyring.of([operator.public])


def eventually(check: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.3, what: str = "") -> T:
    """Poll `check` until it returns something truthy; fail with `what` and the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not within {timeout}s: {what} (last: {last!r})")


def records(kafka_config: Mapping[str, Any], topic: str) -> list[TopicRecord]:
    return list(read_topic(kafka_config, topic, timeout=30))


@contextmanager
def running_fleet(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    operator: Signer,
    *,
    faults: Mapping[str, ModelFault] | None = None,
    **options: Any,
) -> Iterator[FleetSimulator]:
    """A simulator in a background thread (every version is the rule model unless faulted)."""
    provider = baseline_provider(sensor_profile(spec), faults=faults, every_version=True)
    settings = {"telemetry_interval_s": 0.2, "heartbeat_interval_s": 0.5, "tick_s": 0.02, **options}
    simulator = FleetSimulator(
        spec, kafka_config, provider, keyring(operator), SimulatorOptions(**settings), operator=operator
    )
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            simulator.run(stop=stop)
        except BaseException as exc:  # surfaced in the test below
            failures.append(exc)

    thread = threading.Thread(target=run, name="fleet-simulator", daemon=True)
    thread.start()
    eventually(lambda: simulator.stats.steps > 0 or failures, 60, what="simulator started")
    try:
        yield simulator
    finally:
        stop.set()
        thread.join(60)
    assert not failures, f"the simulator crashed: {failures[0]!r}"
    assert not thread.is_alive(), "the simulator did not stop"
