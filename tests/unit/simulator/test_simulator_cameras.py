"""The simulator with a camera pipeline: each simulated device is a real DeviceCore with an image source
(a camera of `CameraRig`), which sends each frame and the record that references it exactly as an agent's
core does; ground truth names each frame's true part; a drift injection changes one group's camera from its
time on; the fleet starts on an image baseline fitted on seed frames."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tests.helpers.camera_models import vision_spec
from tests.helpers.keys import OPERATOR, TRUSTED, device_key
from tests.helpers.wire import Wire

from edgeloop.annotation.backend import OpenTask, ProjectRef
from edgeloop.annotation.bot import annotate_bot
from edgeloop.cli import fleet_main as main
from edgeloop.contract.frame import decode_frame_message, frame_key
from edgeloop.edge.config import SchemaField
from edgeloop.edge.device import DeviceCore, Outgoing
from edgeloop.simulator.baseline import camera_baseline_onnx
from edgeloop.simulator.cli import parse_drift
from edgeloop.simulator.fleet import FleetSimulator, SimulatorOptions
from edgeloop.simulator.models import CachedModelProvider, CameraModels, ModelFault, baseline_provider, camera_models
from edgeloop.spec import PipelineSpec, load_spec
from edgeloop.training.seed import SEED_FRAMES_PER_GROUP, make_seed_frames
from edgeloop.training.sensors import DriftInjection, sensor_profile
from edgeloop.vision.frames import LABELS, decode_png, group_conditions, inject_drift, make_frame, make_frames
from edgeloop.vision.model import image_metadata, pixel_rows

NO_BROKER = {"bootstrap.servers": "127.0.0.1:1"}
NOW = 1_767_225_600.0
DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return vision_spec()


@pytest.fixture(scope="module")
def cameras(spec: PipelineSpec) -> CameraModels:
    models = camera_models(spec)
    assert models is not None
    return models


def camera_fleet(
    spec: PipelineSpec,
    cameras: CameraModels,
    faults: dict[str, ModelFault] | None = None,
    **options: object,
) -> tuple[FleetSimulator, Wire, CachedModelProvider]:
    """A booted camera fleet on a stand-in wire with a fixed clock, every version the image baseline."""
    provider = baseline_provider(sensor_profile(spec), every_version=True, cameras=cameras, faults=faults)
    opts = SimulatorOptions(**{"devices": 6, **options})  # type: ignore[arg-type]
    sim = FleetSimulator(spec, NO_BROKER, provider, TRUSTED, opts, clock=lambda: NOW, operator=OPERATOR)
    wire = Wire()
    sim.producer = wire  # type: ignore[assignment]
    sim.executor = ThreadPoolExecutor(max_workers=1)
    sim.boot({}, [], NOW)
    return sim, wire, provider


@pytest.fixture
def fleet(spec: PipelineSpec, cameras: CameraModels) -> Iterator[tuple[FleetSimulator, Wire, CachedModelProvider]]:
    sim, wire, provider = camera_fleet(spec, cameras)
    yield sim, wire, provider
    assert sim.executor is not None
    sim.executor.shutdown()


def sent(wire: Wire, topic: str) -> list[bytes]:
    return [v or b"" for t, _, v in wire.sent if t == topic]


def test_each_camera_sends_what_an_agents_core_sends_for_the_same_frame(
    spec: PipelineSpec, fleet: tuple[FleetSimulator, Wire, CachedModelProvider]
) -> None:
    sim, wire, provider = fleet
    sim._emit_telemetry(np.arange(sim.n), NOW)
    assert sim.stats.frames == sim.stats.telemetry == sim.n and sim.stats.idle_cameras == 0
    for i, device in enumerate(sim.device_ids):
        group = sim.groups[int(sim.group_idx[i])]
        agent = DeviceCore(
            device,
            group,
            spec.name,
            sim.groups,
            [SchemaField(f.name, f.role) for f in spec.schema_],
            TRUSTED,
            identity=device_key(spec.name, device),
            clock=lambda: NOW,
        )
        agent.model = provider.load("0")
        agent.state_update(NOW)
        pixels = make_frame(device, 0, group_conditions(group)).pixels  # the camera's first frame
        proba, features = agent.model.predict_with_features(pixel_rows(pixels[None]))  # type: ignore[union-attr]
        values = dict(zip(agent.model.image_columns, features[0].tolist(), strict=True))  # type: ignore[union-attr]
        expected: list[Outgoing] = agent.observe_frame(png_of(pixels), values, proba[0], NOW)
        assert wire.of(device, sim.topics["frames"]) == [expected[0].value]
        assert wire.of(device, sim.telemetry_topic) == [expected[1].value]


def png_of(pixels: np.ndarray) -> bytes:
    from edgeloop.vision.frames import encode_png

    return encode_png(pixels)


def test_each_record_references_its_frame_and_ground_truth_names_the_part_in_it(
    spec: PipelineSpec, fleet: tuple[FleetSimulator, Wire, CachedModelProvider]
) -> None:
    sim, wire, _ = fleet
    sim._emit_telemetry(np.arange(sim.n), NOW)
    sim._emit_telemetry(np.arange(sim.n), NOW + 1)
    frames = {decode_frame_message(v)[0].record_id: decode_frame_message(v) for v in sent(wire, sim.topics["frames"])}
    records = [json.loads(v) for v in sent(wire, sim.telemetry_topic)]
    truth: dict[str, str] = {}
    for message in sent(wire, sim.truth_topic):
        truth.update(json.loads(message)["labels"])
    assert len(records) == len(frames) == len(truth) == 2 * sim.n
    for record in records:
        header, png = frames[record["record_id"]]
        assert record["frame_sha256"] == header.sha256 == hashlib.sha256(png).hexdigest()
        assert record["frame_key"] == frame_key(spec.name, header.sha256, storage_prefix=spec.storage.prefix)
        assert record["frame_bytes"] == len(png)
        index = sum(1 for r in records if r["device_id"] == record["device_id"] and r["ts"] < record["ts"])
        part = make_frame(record["device_id"], index, group_conditions(record["group_id"]))
        assert np.array_equal(decode_png(png), part.pixels)  # the frame is the camera's frame `index`
        assert truth[record["record_id"]] == part.label  # and ground truth names the part in it


def test_a_camera_drift_changes_only_its_groups_camera_and_only_from_its_time(
    spec: PipelineSpec, cameras: CameraModels
) -> None:
    drift = [DriftInjection("hall-east", "lighting", at_s=60.0)]
    sim, wire, _ = camera_fleet(spec, cameras, devices=12, drift=drift, ground_truth=False)
    clean = {g: group_conditions(g) for g in sim.groups}
    sim._emit_telemetry(np.arange(sim.n), NOW + 30)
    assert sim.cameras is not None and sim.cameras.conditions == clean
    sim._emit_telemetry(np.arange(sim.n), NOW + 61)
    assert sim.cameras.conditions == {**clean, "hall-east": inject_drift(clean["hall-east"], "lighting")}
    records = [json.loads(v) for v in sent(wire, sim.telemetry_topic)]

    def contrast(batch: list[dict[str, object]], group: str) -> float:
        return float(np.mean([r["contrast"] for r in batch if r["group_id"] == group]))

    before, after = records[: sim.n], records[sim.n :]
    assert contrast(after, "hall-east") < 0.7 * contrast(before, "hall-east")  # a failing lamp flattens the frames
    assert contrast(after, "hall-west") > 0.8 * contrast(before, "hall-west")

    sim.inject_drift([DriftInjection("hall-west", "focus")])  # as on SIGUSR1
    sim._drain_commands(NOW + 62)
    sim._emit_telemetry(np.arange(sim.n), NOW + 62)
    assert sim.cameras.conditions["hall-west"].blur == inject_drift(clean["hall-west"], "focus").blur
    assert sim.cameras.conditions["cell-canary"] == clean["cell-canary"]
    with pytest.raises(ValueError, match="not a camera drift"):
        sim.inject_drift([DriftInjection("hall-west", "brightness")])


@pytest.mark.parametrize(
    ("drift", "message"),
    [
        (DriftInjection("hall-east", "brightness"), "not a camera drift"),
        (DriftInjection("hall-east", "lighting", gain=2.0), "no gain or offset"),
        (DriftInjection("atlantis", "lighting"), "not a group"),
    ],
)
def test_a_drift_that_is_no_camera_change_is_refused(
    spec: PipelineSpec, cameras: CameraModels, drift: DriftInjection, message: str
) -> None:
    provider = baseline_provider(sensor_profile(spec), cameras=cameras)
    with pytest.raises(ValueError, match=message):
        FleetSimulator(spec, NO_BROKER, provider, TRUSTED, SimulatorOptions(devices=3, drift=[drift]))


def test_faulty_camera_models_are_device_faults_and_bad_records_spoil_only_the_record(
    spec: PipelineSpec, cameras: CameraModels
) -> None:
    sim, wire, _ = camera_fleet(spec, cameras, faults={"0": "crash"}, ground_truth=False)
    sim._emit_telemetry(np.arange(sim.n), NOW)
    reports = [json.loads(v) for v in sent(wire, sim.topics["errors"])]
    assert sorted(r["device_id"] for r in reports) == sorted(sim.device_ids)
    assert all(r["kind"] == "inference" and "injected crash" in r["message"] for r in reports)
    assert not sent(wire, sim.topics["frames"]) and not sent(wire, sim.telemetry_topic)

    sim, wire, _ = camera_fleet(spec, cameras, faults={"0": "bad"}, ground_truth=False)
    sim._emit_telemetry(np.arange(sim.n), NOW)
    records = [json.loads(v) for v in sent(wire, sim.telemetry_topic)]
    assert len(records) == sim.n and all(r["confidence"] < 0.5 for r in records)

    sim, wire, _ = camera_fleet(spec, cameras, bad_record_ratio=1.0, ground_truth=False)
    sim._emit_telemetry(np.arange(sim.n), NOW)
    assert all(decode_frame_message(v)[1] for v in sent(wire, sim.topics["frames"]))  # frames arrive whole
    spoilt = 0
    required = {f.name for f in spec.schema_ if not f.nullable}
    for value in sent(wire, sim.telemetry_topic):
        try:
            body = json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError):
            spoilt += 1
            continue
        spoilt += bool(required - set(body) or "n/a" in body.values())
    assert spoilt == sim.n


def test_an_offline_camera_buffers_its_frames_and_records_and_sends_them_in_order(
    fleet: tuple[FleetSimulator, Wire, CachedModelProvider],
) -> None:
    sim, wire, _ = fleet
    sim._disconnect(np.array([0]))
    sim._emit_telemetry(np.array([0]), NOW)
    sim._emit_telemetry(np.array([0]), NOW + 1)
    device = sim.device_ids[0]
    assert not wire.of(device, sim.telemetry_topic) and len(sim.buffers[0]) == 4
    sim._reconnect(np.array([0]), NOW + 2)
    topics = [t for t, k, _ in wire.sent if k == device.encode() and t in (sim.telemetry_topic, sim.topics["frames"])]
    assert topics == [sim.topics["frames"], sim.telemetry_topic] * 2


def test_the_camera_baseline_is_an_image_model_fitted_on_seed_frames(spec: PipelineSpec, cameras: CameraModels) -> None:
    meta = image_metadata(cameras.baseline)
    assert meta["shape"] == [64, 64] and len(cameras.features) == 64 * 64
    model = cameras.load("0")
    assert sorted(model.labels) == sorted(LABELS) == sorted(spec.annotation.labels)
    assert set(spec.features) <= set(model.image_columns)  # a camera's record takes its features from it
    seed = make_seed_frames(spec)
    assert len(seed.labels) == SEED_FRAMES_PER_GROUP * len(spec.groups)
    assert set(seed.groups) == {g.name for g in spec.groups}
    pixels, labels = make_frames("hall-west-00003", 0, 200, group_conditions("hall-west"))  # a fleet camera
    predicted = [model.labels[i] for i in model.predict_proba(pixel_rows(pixels)).argmax(axis=1)]
    assert np.mean([p == t for p, t in zip(predicted, labels, strict=True)]) >= 0.8
    assert camera_baseline_onnx(spec) == cameras.baseline  # the same file on every run
    assert camera_models(load_spec(DEMO)) is None  # sensors keep the rule model


def test_the_cli_takes_camera_drifts_and_refuses_a_sensor_drift_for_cameras(
    capsys: pytest.CaptureFixture[str],
) -> None:
    drift = parse_drift("hall-east:lighting@120s")
    assert (drift.group, drift.feature, drift.at_s) == ("hall-east", "lighting", 120.0)
    argv = ["simulate", "--pipeline", "visual_inspection", "--bootstrap", "127.0.0.1:1"]
    assert main([*argv, "--drift-on-signal", "hall-east:brightness:gain=2"]) == 2
    assert "not a camera drift" in capsys.readouterr().err


class CameraTasks:
    """An annotation backend stand-in: one open task per camera record, the labels submitted."""

    kind = "fake"

    def __init__(self, record_ids: list[str]) -> None:
        self.tasks = [OpenTask(i, rid, "batch-1") for i, rid in enumerate(record_ids)]
        self.submitted: dict[int, str] = {}

    def ensure_project(self, spec: PipelineSpec) -> ProjectRef:
        return ProjectRef(1, "p", "http://ls/projects/1")

    def open_tasks(self, project: ProjectRef, batch_id: str | None = None, limit: int | None = None) -> list[OpenTask]:
        return self.tasks

    def submit_labels(self, project: ProjectRef, labels: Mapping[int, str], *, annotator: str) -> int:
        self.submitted.update(labels)
        return len(labels)


def test_the_annotate_bot_labels_each_camera_task_with_the_part_in_its_frame(
    spec: PipelineSpec, fleet: tuple[FleetSimulator, Wire, CachedModelProvider]
) -> None:
    """The bot reads a camera record's truth by record id from the simulator's ground truth, as for sensors."""
    sim, wire, _ = fleet
    sim._emit_telemetry(np.arange(sim.n), NOW)
    records = [json.loads(v) for v in sent(wire, sim.telemetry_topic)]
    truth: dict[str, str] = {}
    for message in sent(wire, sim.truth_topic):  # what `groundtruth.true_labels` reads from the topic
        truth.update(json.loads(message)["labels"])
    backend = CameraTasks([r["record_id"] for r in records] + ["not-a-simulated-record"])
    counts = annotate_bot(spec, backend, true_labels=lambda ids: {i: truth[i] for i in ids if i in truth})  # type: ignore[arg-type]
    assert (counts["labelled"], counts["no_truth"]) == (len(records), 1)
    for task in backend.tasks[:-1]:
        record = next(r for r in records if r["record_id"] == task.record_id)
        part = make_frame(record["device_id"], 0, group_conditions(record["group_id"]))
        assert backend.submitted[task.task_id] == part.label
