"""Simulator pieces that need no broker: device ids, records, bad records, offline buffers, option checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeloop.fleet.models import baseline_provider
from edgeloop.fleet.sensors import DriftInjection, sensor_profile
from edgeloop.fleet.simulator import FleetSimulator, Outage, SimulatorOptions
from edgeloop.spec import PipelineSpec, load_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
NO_BROKER = {"bootstrap.servers": "127.0.0.1:1"}  # the constructor never connects


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(DEMO)


def simulator(spec: PipelineSpec, **options: object) -> FleetSimulator:
    provider = baseline_provider(sensor_profile(spec))
    return FleetSimulator(spec, NO_BROKER, provider, b"key", SimulatorOptions(**options))  # type: ignore[arg-type]


def test_devices_get_stable_ids_per_group(spec: PipelineSpec) -> None:
    sim = simulator(spec, devices=10, id_prefix="b1-")
    assert sim.n == 10
    assert sim.device_ids[0] == "b1-line-canary-00000"
    assert sum(d.startswith("b1-plant-north-") for d in sim.device_ids) == 5
    assert [len(m) for m in sim.members] == [1, 5, 4] or [len(m) for m in sim.members] == [1, 4, 5]


def test_a_record_has_every_schema_field(spec: PipelineSpec) -> None:
    sim = simulator(spec, devices=3)
    sim.versions, sim.model_idx[:] = ["0"], 0
    record = sim._record(1, "rid-1", "2026-01-01T00:00:00.000Z", [1.0] * 6, prediction="wear", confidence=0.7)
    assert list(record) == [f.name for f in spec.schema_]
    assert record["device_id"] == sim.device_ids[1] and record["group_id"] == "plant-north"
    assert (record["prediction"], record["confidence"], record["model_version"]) == ("wear", 0.7, "0")
    assert record["config_version"] is None and record["rpm"] == 1.0


def test_bad_records_are_really_bad(spec: PipelineSpec) -> None:
    sim = simulator(spec, devices=3)
    sim.versions, sim.model_idx[:] = ["0"], 0
    required = {f.name for f in spec.schema_ if not f.nullable}
    for _ in range(40):
        record = sim._record(0, "rid", "2026-01-01T00:00:00.000Z", [1.0] * 6, prediction="normal", confidence=0.9)
        payload = sim._corrupt(record)
        try:
            body = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        missing = required - set(body)
        wrong = [k for k, v in body.items() if v == "n/a"]
        assert missing or wrong, body


def test_offline_buffers_are_bounded_per_device_and_in_total(spec: PipelineSpec) -> None:
    sim = simulator(spec, devices=3, buffer_limit=4, buffer_total_limit=6)
    sim.online[:] = False
    for n in range(6):
        sim._send(0, "t", f"a{n}".encode())
    assert [v for _, _, v in sim.buffers[0]] == [b"a2", b"a3", b"a4", b"a5"]  # the oldest were dropped
    for n in range(4):
        sim._send(1, "t", f"b{n}".encode())
    assert sim.buffered_total == 6
    assert [v for _, _, v in sim.buffers[1]] == [b"b2", b"b3"]
    sim._send(2, "t", b"c0")  # the fleet budget is spent and device 2 has nothing to give up
    assert not sim.buffers.get(2)
    assert sim.dropped.tolist() == [2, 2, 1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"drift": [DriftInjection("atlantis", "rpm")]}, "drift"),
        ({"outages": [Outage(0, 10, group="atlantis")]}, "outages"),
        ({"telemetry_interval_s": 0}, "positive"),
    ],
)
def test_bad_options_are_refused(spec: PipelineSpec, options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulator(spec, **options)
