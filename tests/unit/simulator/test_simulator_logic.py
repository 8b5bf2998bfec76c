"""The simulator without a broker: device ids, records, bad records, offline buffers, option checks,
and the one code path: every simulated device is a DeviceCore, deciding and reporting as an agent does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.helpers.keys import INTRUDER, OPERATOR, TRUSTED, device_key
from tests.helpers.wire import Wire

from edgeloop.contract.messages import Assignment, DeviceState, Target, new_assignment, next_sequence, parse_iso
from edgeloop.edge.config import SchemaField
from edgeloop.edge.device import DeviceCore, Outgoing
from edgeloop.events import AlertError, alert_key, alert_message, parse_alert
from edgeloop.simulator.fleet import FleetSimulator, Outage, SimulatorOptions
from edgeloop.simulator.groundtruth import generated_ms
from edgeloop.simulator.models import CachedModelProvider, baseline_provider
from edgeloop.spec import PipelineSpec, load_spec
from edgeloop.training.sensors import DriftInjection, SensorProfile, sensor_profile

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
NO_BROKER = {"bootstrap.servers": "127.0.0.1:1"}  # the constructor never connects
KEY = TRUSTED
NOW = 1_767_225_600.0
DEVICE = "plant-north-00001"


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(DEMO)


class RecordingSensors:
    """The simulator's sensor profile, keeping every batch of readings it draws."""

    def __init__(self, inner: SensorProfile) -> None:
        self.inner = inner
        self.batches: list[np.ndarray] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def sample(self, *args: Any) -> np.ndarray:
        readings: np.ndarray = self.inner.sample(*args)
        self.batches.append(readings.copy())
        return readings


def simulator(spec: PipelineSpec, **options: object) -> FleetSimulator:
    provider = baseline_provider(sensor_profile(spec))
    return FleetSimulator(spec, NO_BROKER, provider, TRUSTED, SimulatorOptions(**options))  # type: ignore[arg-type]


@pytest.fixture
def booted(spec: PipelineSpec) -> Iterator[tuple[FleetSimulator, Wire, CachedModelProvider]]:
    """Ten simulated devices on a stand-in wire, a fixed clock, every version the rule model."""
    provider = baseline_provider(sensor_profile(spec), every_version=True)
    options = SimulatorOptions(devices=10, ground_truth=False, hold_states=True)
    sim = FleetSimulator(spec, NO_BROKER, provider, KEY, options, clock=lambda: NOW, operator=OPERATOR)
    wire = Wire()
    sim.producer = wire  # type: ignore[assignment]
    sim.executor = ThreadPoolExecutor(max_workers=1)
    yield sim, wire, provider
    sim.executor.shutdown()


def settle(sim: FleetSimulator) -> None:
    """Let the model loads the harness started finish, and hand the models to their devices."""
    wait(list(sim.loading.values()), timeout=10)
    sim._finish_loads(NOW)


def reference_core(spec: PipelineSpec, provider: CachedModelProvider) -> DeviceCore:
    """An agent's device core for DEVICE, on the same start model and clock as the simulator's."""
    core = DeviceCore(
        DEVICE,
        "plant-north",
        spec.name,
        [g.name for g in spec.groups],
        [SchemaField(f.name, f.role) for f in spec.schema_],
        KEY,
        identity=device_key(spec.name, DEVICE),
        clock=lambda: NOW,
    )
    core.model = provider.load("0")
    return core


def as_agent(core: DeviceCore, provider: CachedModelProvider, value: bytes, offset: int) -> list[Outgoing]:
    """What an agent's loop does with one control message (the model thread's work done at once)."""
    order, out = core.on_control(value, offset)
    if order is not None:
        out.append(core.model_applied(order, provider.load(str(order.assignment.model_version))))
    return out


def control_log(spec: PipelineSpec) -> list[bytes]:
    north = Target("group", "plant-north")
    return [
        new_assignment(north, model_version="3", assignment_id="asg-model", pipeline=spec.name).to_wire(OPERATOR),
        new_assignment(north, model_version="4", assignment_id="asg-forged", pipeline=spec.name).to_wire(INTRUDER),
        new_assignment(
            Target("all"), config={"telemetry_interval_s": 2}, assignment_id="asg-cfg", pipeline=spec.name
        ).to_wire(OPERATOR),
        Assignment(
            "asg-bad-cfg",
            north,
            "2026-01-01T00:00:00Z",
            "t",
            spec.name,
            next_sequence(),
            "2026-01-02T00:00:00Z",
            None,
            {"telemetry_interval_s": 0},
            "cfg-0",
        ).to_wire(OPERATOR),
    ]


def test_devices_get_stable_ids_per_group(spec: PipelineSpec) -> None:
    sim = simulator(spec, devices=10, id_prefix="b1-")
    assert sim.n == 10
    assert sim.device_ids[0] == "b1-line-canary-00000"
    assert sum(d.startswith("b1-plant-north-") for d in sim.device_ids) == 5
    assert [len(m) for m in sim.members] == [1, 5, 4] or [len(m) for m in sim.members] == [1, 4, 5]
    assert [c.device_id for c in sim.cores] == sim.device_ids  # one device core per simulated device


def test_a_simulated_device_decides_and_reports_like_a_device_core(
    spec: PipelineSpec, booted: tuple[FleetSimulator, Wire, CachedModelProvider]
) -> None:
    """The one code path: fed the same control messages and readings, a simulated device and an
    agent's DeviceCore end with the same twin and config and send the same bytes."""
    sim, wire, provider = booted
    sensors = RecordingSensors(sim.profile)
    sim.profile = sensors  # type: ignore[assignment]
    sim.boot({}, [], NOW)
    i = sim.index_of[DEVICE]
    agent = reference_core(spec, provider)
    expected: list[Outgoing] = [agent.state_update(NOW)]
    assert "signature" in json.loads(expected[0].value)  # both sign with the device's own key
    for offset, value in enumerate(control_log(spec)):
        sim.on_control(value, offset, NOW)
        settle(sim)
        expected += as_agent(agent, provider, value, offset)
    sim._emit_telemetry(np.arange(sim.n), NOW)
    reading = sensors.batches[-1][i]
    expected.append(agent.observe(reading, agent.model.predict_proba(reading[None, :])[0], NOW))  # type: ignore[union-attr]

    got = {topic: wire.of(DEVICE, sim.topics[topic]) for topic in ("device-state", "errors", "telemetry")}
    for topic, values in got.items():
        assert values == [m.value for m in expected if m.kind == topic], topic
    assert sim.cores[i].twin == agent.twin
    assert sim.cores[i].config == agent.config and sim.cores[i].config_version == agent.config_version
    assert sim.cores[i].model_version == agent.model_version == "3"
    assert [json.loads(e)["kind"] for e in got["errors"]] == ["bad_control", "bad_config"]
    assert sim.tel_interval[i] == 2.0  # the harness schedules readings as the device's config says
    assert sim.stats.control_messages == 4 and sim.stats.control_rejected == 1

    sim._emit_heartbeats(np.array([i]), NOW)
    beat = json.loads(wire.of(DEVICE, sim.health_topic)[-1])
    reference = json.loads(agent.heartbeat(NOW).value)
    simulated_hardware = {"cpu_pct", "mem_mb", "temperature_c", "signature"}  # the signature covers them
    assert {k: v for k, v in beat.items() if k not in simulated_hardware} == {
        k: v for k, v in reference.items() if k not in simulated_hardware
    }


def test_an_offline_device_decides_on_reconnect_in_log_order(
    spec: PipelineSpec, booted: tuple[FleetSimulator, Wire, CachedModelProvider]
) -> None:
    sim, wire, provider = booted
    sim.boot({}, [], NOW)
    i = sim.index_of[DEVICE]
    sim._disconnect(np.array([i]))
    log = control_log(spec)
    for offset, value in enumerate(log):
        sim.on_control(value, offset, NOW)
        settle(sim)
    peer = sim.cores[sim.index_of["plant-north-00002"]]
    assert peer.model_version == "3" and peer.twin.reported_assignment == "asg-bad-cfg"
    # The offline device knows nothing yet: no twin update, no desired version written for it.
    assert len(wire.of(DEVICE, sim.state_topic)) == 1 and sim.cores[i].twin.desired_model is None
    sim._emit_telemetry(np.array([i]), NOW)
    assert not wire.of(DEVICE, sim.telemetry_topic) and len(sim.buffers[i]) == 1

    sim._reconnect(np.array([i]), NOW)
    settle(sim)
    agent = reference_core(spec, provider)
    for offset, value in enumerate(log):
        as_agent(agent, provider, value, offset)
    assert sim.cores[i].twin == agent.twin and sim.cores[i].model_version == "3"
    sent = [(t, k) for t, k, _ in wire.sent if k == DEVICE.encode()]
    assert sent[1] == (sim.telemetry_topic, DEVICE.encode())  # the buffered record goes out before the catch-up
    errors = [json.loads(e)["kind"] for e in wire.of(DEVICE, sim.topics["errors"])]
    assert errors == ["bad_control", "bad_config"]  # an agent catching up reads the refused message too


def test_a_restart_restores_each_twin_and_replays_only_what_a_device_missed(
    spec: PipelineSpec, booted: tuple[FleetSimulator, Wire, CachedModelProvider]
) -> None:
    sim, wire, _ = booted
    log = list(enumerate(control_log(spec)))
    later = new_assignment(
        Target("device", DEVICE), model_version="6", assignment_id="asg-later", pipeline=spec.name
    ).to_wire(OPERATOR)
    log.append((len(log), later))
    twin = DeviceState(
        DEVICE,
        "plant-north",
        desired={"model_version": "3", "config_version": "cfg-0", "assignment_id": "asg-bad-cfg"},
        reported={"model_version": "3", "config_version": None, "assignment_id": "asg-bad-cfg", "status": "failed"},
    )
    sim.boot({DEVICE: twin}, log, NOW)
    core = sim.cores[sim.index_of[DEVICE]]
    assert core.model_version == "6" and core.twin.reported_assignment == "asg-later"
    assert core.twin.desired_config_version == "cfg-0"
    assert not wire.of(DEVICE, sim.topics["errors"])  # what it had decided before is not decided again
    (state,) = wire.of(DEVICE, sim.state_topic)  # one twin update per device at start
    assert json.loads(state)["reported"]["model_version"] == "6"
    fresh = sim.cores[sim.index_of["plant-north-00002"]]  # no twin yet: catches up on the whole log
    assert fresh.model_version == "3" and fresh.config["telemetry_interval_s"] == 2.0
    assert [json.loads(e)["kind"] for e in wire.of("plant-north-00002", sim.topics["errors"])] == ["bad_config"]


def test_a_version_is_loaded_once_for_every_device_that_runs_it(spec: PipelineSpec) -> None:
    provider = baseline_provider(sensor_profile(spec), every_version=True, faults={"7": "load_error"})
    loads: list[str] = []
    load = provider.load
    provider.load = lambda version: loads.append(version) or load(version)  # type: ignore[method-assign]
    sim = FleetSimulator(spec, NO_BROKER, provider, KEY, SimulatorOptions(devices=10), clock=lambda: NOW)
    wire = Wire()
    sim.producer = wire  # type: ignore[assignment]
    sim.executor = ThreadPoolExecutor(max_workers=1)
    sim.boot({}, [], NOW)
    for offset, (target, version) in enumerate([(Target("all"), "5"), (Target("group", "plant-north"), "7")]):
        sim.on_control(new_assignment(target, model_version=version, pipeline=spec.name).to_wire(OPERATOR), offset, NOW)
        settle(sim)
    sim.executor.shutdown()
    assert loads == ["0", "5", "7"]
    assert len({id(c.model) for c in sim.cores}) == 1 and sim.cores[0].model_version == "5"
    north = [d for d in sim.device_ids if d.startswith("plant-north")]
    reported = [json.loads(wire.of(d, sim.state_topic)[-1])["reported"] for d in north]
    assert {(r["model_version"], r["status"]) for r in reported} == {("5", "failed")}  # the current one serves
    assert all("version 7: injected load failure" in r["reason"] for r in reported)
    reports = [json.loads(wire.of(d, sim.topics["errors"])[-1]) for d in north]
    assert {r["kind"] for r in reports} == {"model_load"}


def test_a_crashing_model_is_an_inference_error_of_each_device(spec: PipelineSpec) -> None:
    provider = baseline_provider(sensor_profile(spec), faults={"0": "crash"})
    sim = FleetSimulator(spec, NO_BROKER, provider, KEY, SimulatorOptions(devices=4), clock=lambda: NOW)
    wire = Wire()
    sim.producer = wire  # type: ignore[assignment]
    sim.boot({}, [], NOW)
    sim._emit_telemetry(np.arange(4), NOW)
    reports = [json.loads(v or b"") for t, _, v in wire.sent if t == sim.topics["errors"]]
    assert sorted(r["device_id"] for r in reports) == sorted(sim.device_ids)
    assert all(r["kind"] == "inference" and "injected crash" in r["message"] for r in reports)
    assert [c.counters.errors for c in sim.cores] == [1] * 4 and sim.stats.telemetry == 0


def test_a_record_has_every_schema_field_and_skewed_devices_stamp_their_own_time(spec: PipelineSpec) -> None:
    options = SimulatorOptions(devices=3, clock_skew_s=100.0, clock_skew_ratio=1.0)
    sim = FleetSimulator(spec, NO_BROKER, baseline_provider(sensor_profile(spec)), KEY, options, clock=lambda: NOW)
    wire = Wire()
    sim.producer = wire  # type: ignore[assignment]
    sim.boot({}, [], NOW)
    sim._emit_telemetry(np.arange(3), NOW)
    records = [json.loads(v or b"") for t, _, v in wire.sent if t == sim.telemetry_topic]
    assert len(records) == 3 and all(list(r) == [f.name for f in spec.schema_] for r in records)
    role = {f.role: f.name for f in spec.schema_}
    for record, skew in zip(records, sim.skew.tolist(), strict=True):
        assert record[role["model_version"]] == "0" and record[role["config_version"]] is None
        assert generated_ms(record[role["record_id"]]) == int(NOW * 1000)  # ids carry the generation time
        assert abs(parse_iso(record[role["timestamp"]]) - (NOW + skew)) < 0.002  # the device's skewed clock
    assert len({round(s) for s in sim.skew.tolist()}) == 3
    truth = [json.loads(v or b"") for t, _, v in wire.sent if t == sim.truth_topic]
    assert set(truth[0]["labels"]) == {r[role["record_id"]] for r in records}


def test_bad_records_are_really_bad(spec: PipelineSpec) -> None:
    sim = simulator(spec, devices=3)
    core = sim.cores[0]
    core.model = sim.provider.load("0")
    required = {f.name for f in spec.schema_ if not f.nullable}
    for _ in range(40):
        value = core.observe([1.0] * 6, [0.1, 0.2, 0.7], NOW).value
        payload = sim._corrupt(value)
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


def test_a_backlog_alert_is_checked_and_keyed_like_every_alert(
    booted: tuple[FleetSimulator, Wire, CachedModelProvider],
) -> None:
    sim, wire, _ = booted
    sim._announce_backlog("plant-north", 2, 40, NOW)
    [(key, value)] = [(k, v) for topic, k, v in wire.sent if topic == sim.spec.topic("alerts")]
    alert = parse_alert(value)
    assert (alert["kind"], alert["group"]) == ("backlog", "plant-north")
    assert alert["readings"] == {"devices": 2, "records": 40}
    assert (key, value) == alert_message(sim.spec, alert)
    assert key == alert_key(alert) == b"plant-north"
    assert sim.stats.backlog_alerts == 1


def test_a_backlog_alert_that_the_watchers_would_refuse_is_not_sent(
    booted: tuple[FleetSimulator, Wire, CachedModelProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, wire, _ = booted
    monkeypatch.setattr("edgeloop.events.ALERT_KINDS", ("drift",))
    with pytest.raises(AlertError, match="kind"):
        sim._announce_backlog("plant-north", 2, 40, NOW)
    assert not [sent for sent in wire.sent if sent[0] == sim.spec.topic("alerts")]
