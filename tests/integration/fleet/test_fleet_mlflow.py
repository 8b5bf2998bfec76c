"""Devices run real registry models: the champion at start, an assigned version later, a missing one fails."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fleet_testkit import eventually, records

from edgeloop.fleet.control import apply_progress, push_assignment, read_device_states
from edgeloop.fleet.models import SklearnEdgeModel, mlflow_provider
from edgeloop.fleet.sensors import sensor_profile
from edgeloop.fleet.simulator import FleetSimulator, SimulatorOptions
from edgeloop.spec import PipelineSpec

pytestmark = pytest.mark.integration


@pytest.fixture
def registered(spec: PipelineSpec, stack_env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """A registered model with two versions trained on simulated readings; `champion` on version 1."""
    import mlflow
    import mlflow.sklearn
    import pandas as pd
    from mlflow.tracking import MlflowClient
    from sklearn.tree import DecisionTreeClassifier

    uri = stack_env["MLFLOW_TRACKING_URI"]
    mlflow.set_tracking_uri(uri)
    name = f"it_fleet_{uuid.uuid4().hex[:8]}"
    profile = sensor_profile(spec)
    rng = np.random.default_rng(0)
    states = profile.initial_states(3000, rng)
    readings = profile.sample(states, profile.device_bias(3000, rng), np.zeros(len(profile.features)), rng)
    frame = pd.DataFrame(readings, columns=list(profile.features))
    labels = np.asarray(profile.labels)[states]
    for depth in (6, 2):
        with mlflow.start_run():
            estimator = DecisionTreeClassifier(max_depth=depth, random_state=0).fit(frame, labels)
            mlflow.sklearn.log_model(
                estimator,
                name="model",
                registered_model_name=name,
                skops_trusted_types=["sklearn.tree._tree.Tree"],
                pip_requirements=["scikit-learn"],  # skips the slow requirement inference
            )
    client = MlflowClient(uri)
    client.set_registered_model_alias(name, "champion", "1")
    yield name, uri
    client.delete_registered_model(name)


@pytest.fixture
def fleet(
    spec: PipelineSpec, kafka_config: dict[str, Any], control_key: bytes, registered: tuple[str, str]
) -> Iterator[FleetSimulator]:
    name, uri = registered
    provider = mlflow_provider(name, sensor_profile(spec), uri)
    options = SimulatorOptions(devices=6, telemetry_interval_s=0.2, heartbeat_interval_s=0.5, tick_s=0.02)
    simulator = FleetSimulator(spec, kafka_config, provider, control_key, options)
    stop = threading.Event()
    thread = threading.Thread(target=simulator.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    eventually(lambda: simulator.stats.steps > 0, 60, what="simulator started")
    yield simulator
    stop.set()
    thread.join(60)


def test_devices_run_registry_models(
    spec: PipelineSpec,
    kafka_config: dict[str, Any],
    control_key: bytes,
    registered: tuple[str, str],
    fleet: FleetSimulator,
) -> None:
    assert isinstance(fleet.models["1"], SklearnEdgeModel)
    states = read_device_states(spec, kafka_config).devices
    assert {s.reported["model_version"] for s in states.values()} == {"1"}  # the champion

    second = push_assignment(spec, kafka_config, control_key, group="plant-north", model_version="2")
    eventually(lambda: apply_progress(spec, kafka_config, second).complete, 60, what="version 2 loaded and applied")

    missing = push_assignment(spec, kafka_config, control_key, group="plant-south", model_version="99")
    failed = eventually(
        lambda: len(f := apply_progress(spec, kafka_config, missing).failed) == 2 and f,
        60,
        what="plant-south reports that version 99 cannot load",
    )
    assert all("version 99" in reason for reason in failed.values())
    telemetry = [json.loads(r.value or b"") for r in records(kafka_config, spec.topic("telemetry"))]
    latest = {t["device_id"]: t for t in telemetry}
    assert {t["model_version"] for d, t in latest.items() if d.startswith("plant-north")} == {"2"}
    assert {t["model_version"] for d, t in latest.items() if d.startswith("plant-south")} == {"1"}  # kept running
    errors = [json.loads(r.value or b"") for r in records(kafka_config, spec.topic("errors"))]
    assert {e["device_id"] for e in errors if e["kind"] == "model_load"} == set(failed)
