"""The edge fleet simulator: a test harness of many real device cores in one compact loop.

Each simulated device is a `DeviceCore` (`edgeloop.edge.device`), the code an agent
runs: every decision (control verdicts, model orders, config changes, telemetry
records, error reports, heartbeats, twin updates) is the core's. The harness only
simulates what surrounds a device, vectorised over the fleet in numpy arrays:

- sensors: machine states, readings, per-device bias, drift injection, ground truth;
  or, for a camera pipeline (a spec with an `image_ref` field), cameras
  (`edgeloop.simulator.cameras.CameraRig`): what each camera sees, a drift injection that
  changes a group's camera (`GROUP:lighting|focus|lens_dirt`), ground truth; the
  device's core makes the frame's message and the record (`DeviceCore.observe_frame`);
- the network: online/offline, outages, a bounded in-memory store-and-forward buffer
  per device (`buffer_limit` per device and `buffer_total_limit` for the fleet; the
  oldest are dropped and counted), sent in order on reconnect, keyed by device id, and
  a `backlog` alert on `<prefix>.alerts` when a reconnect flushes at least
  `backlog_alert_records` telemetry records of a group (see edgeloop.events);
- clock skew (`DeviceCore.clock_offset_s`) and bad records (the bytes a device sends,
  corrupted on the way);
- the process around the cores: each control message is verified once for all devices
  (`verify_control`) and every addressed online device `decide`s on it; an offline
  device decides when it comes back, in log order, as an agent catching up from its
  control offset. Each model version is loaded once per process through the provider
  (in a small thread pool, so the loop never blocks on the registry), shared by every
  device that runs it, and handed to each device with `model_applied`/`model_failed`;
  one batched `predict_proba` per loaded version scores the due devices' readings, and
  each device's core turns its row into a record (`observe`). Model faults (the
  provider's crash/bad/load_error wrappers) stand for broken hardware.

Device identity: with the operator's key (`operator`), each device gets a key of its
own derived from it and is enrolled in the device registry at start (devices already
enrolled with that key are left alone), so its reports are signed as an enrolled
agent's are. Without it the devices send unsigned reports, which the cloud refuses.

At start the harness restores each device from its last device-state record (the
model and config it reported, its twin) and replays the control log from the
reported assignment on, as a restarted agent would from its control offset; refusals
from before the start are not reported again (an agent that saved its offset would
not see them again).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from edgeloop.contract.keys import Keyring, Signer, public_hex
from edgeloop.contract.messages import (
    BASELINE_VERSION,
    BadConfig,
    DeviceState,
    Target,
    iso_ms,
    parse_device_state,
)
from edgeloop.edge.config import SchemaField, TelemetryPolicy
from edgeloop.edge.device import QUEUED_KINDS, ControlVerdict, DeviceCore, ModelOrder, Outgoing, verify_control
from edgeloop.events import alert_message
from edgeloop.fleet.agents import telemetry_policy
from edgeloop.fleet.registry import enrol, read_registry
from edgeloop.fleet.topics import GROUND_TRUTH, TopicMissing, ensure_topics, read_topic, reader_config
from edgeloop.kafka import client_config
from edgeloop.simulator import groundtruth
from edgeloop.simulator.cameras import CameraRig, camera_rig, camera_step, check_camera_drift, is_camera_pipeline
from edgeloop.simulator.models import EdgeModel, ModelLoadError, ModelProvider
from edgeloop.spec import PipelineSpec
from edgeloop.training.sensors import DriftInjection, SensorProfile, apply_drift, check_drift, sensor_profile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outage:
    """Take a share of a group's devices (or of all) offline for a while, then reconnect them."""

    start_s: float
    duration_s: float
    group: str | None = None
    ratio: float = 1.0


@dataclass
class SimulatorOptions:
    devices: int | None = None  # total; None = the device counts of spec.groups
    telemetry_interval_s: float = 1.0
    heartbeat_interval_s: float = 10.0
    model_version: str | None = None  # start version; None = the provider's default (champion or baseline)
    drift: Sequence[DriftInjection] = ()
    bad_record_ratio: float = 0.0
    outages: Sequence[Outage] = ()
    clock_skew_s: float = 0.0  # skewed devices' clocks are off by up to this many seconds
    clock_skew_ratio: float = 0.1
    buffer_limit: int = 3600  # per device: an hour of telemetry at 1 record/s
    buffer_total_limit: int = 500_000  # all devices together (about 200 MB)
    backlog_alert_records: int = 1000  # a reconnect flushing this many records of a group announces a backlog
    seed: int = 0
    id_prefix: str = ""
    tick_s: float = 0.05
    ground_truth: bool = True
    create_topics: bool = True
    hold_states: bool = False  # machine states stay as drawn at start (controlled experiments: gain ratios, tests)


@dataclass
class SimulationStats:
    devices: int = 0
    elapsed_s: float = 0.0
    steps: int = 0
    telemetry: int = 0
    frames: int = 0
    idle_cameras: int = 0
    profiles: int = 0
    heartbeats: int = 0
    errors: int = 0
    state_updates: int = 0
    truth_messages: int = 0
    control_messages: int = 0
    control_rejected: int = 0
    buffered: int = 0
    dropped: int = 0
    backlog_alerts: int = 0
    delivery_failures: int = 0
    max_lag_s: float = 0.0

    @property
    def messages(self) -> int:
        return self.telemetry + self.heartbeats + self.errors + self.state_updates

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "messages": self.messages}


def device_id(prefix: str, group: str, index: int) -> str:
    """A simulated device's id: stable across restarts, so a restarted fleet keeps its twins."""
    return f"{prefix}{group}-{index:05d}"


def simulated_device_ids(spec: PipelineSpec, total: int | None, prefix: str = "") -> set[str]:
    """The ids a simulator with `total` devices (and this id prefix) runs."""
    return {device_id(prefix, name, i) for name, count in allocate_devices(spec, total) for i in range(count)}


def allocate_devices(spec: PipelineSpec, total: int | None) -> list[tuple[str, int]]:
    """Devices per group: the spec's counts, or `total` split in the same proportions."""
    counts = [(g.name, g.devices) for g in spec.groups]
    if total is None:
        return counts
    if total < 0:
        raise ValueError(f"devices: {total} is negative")
    weights = np.array([c for _, c in counts], dtype=float)
    if weights.sum() == 0:
        weights = np.ones(len(counts))
    exact = weights / weights.sum() * total
    share = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - share))[: total - share.sum()]:
        share[index] += 1
    return [(name, int(n)) for (name, _), n in zip(counts, share, strict=True)]


def _producer_config(kafka_config: Mapping[str, Any]) -> dict[str, Any]:
    config = client_config(kafka_config)
    config.setdefault("linger.ms", 20)
    config.setdefault("compression.type", "lz4")
    config.setdefault("enable.idempotence", True)
    config.setdefault("queue.buffering.max.messages", 500_000)
    config.setdefault("queue.buffering.max.kbytes", 131_072)
    return config


def check_injections(spec: PipelineSpec, drift: Sequence[DriftInjection]) -> None:
    """Raise ValueError naming a drift injection that does not fit `spec`: a camera change for a camera
    pipeline (`edgeloop.simulator.cameras.check_camera_drift`), a feature for a sensor pipeline."""
    if is_camera_pipeline(spec):
        check_camera_drift(spec, drift)
    else:
        check_drift(spec, drift)


def check_options(spec: PipelineSpec, opts: SimulatorOptions) -> None:
    """Raise ValueError naming the option that does not fit `spec` (drift, outage groups, intervals)."""
    check_injections(spec, opts.drift)
    groups = [g.name for g in spec.groups]
    for index, outage in enumerate(opts.outages):
        if outage.group is not None and outage.group not in groups:
            raise ValueError(f"outages[{index}].group: {outage.group!r} is not a group of {spec.name}")
    if opts.telemetry_interval_s <= 0 or opts.heartbeat_interval_s <= 0 or opts.tick_s <= 0:
        raise ValueError("telemetry_interval_s, heartbeat_interval_s and tick_s must be positive")


def place_devices(spec: PipelineSpec, opts: SimulatorOptions) -> tuple[list[str], list[int]]:
    """The simulated device ids, group by group, and each one's group index in `spec.groups`."""
    groups = [g.name for g in spec.groups]
    device_ids: list[str] = []
    group_of: list[int] = []
    for name, count in allocate_devices(spec, opts.devices):
        device_ids.extend(device_id(opts.id_prefix, name, i) for i in range(count))
        group_of.extend([groups.index(name)] * count)
    return device_ids, group_of


class FleetSimulator:
    """A simulated fleet for one pipeline spec. Use `run()`, or `start()` then `step()`."""

    def __init__(
        self,
        spec: PipelineSpec,
        kafka_config: Mapping[str, Any],
        provider: ModelProvider,
        trusted: Keyring,
        options: SimulatorOptions | None = None,
        *,
        profile: SensorProfile | None = None,
        clock: Callable[[], float] = time.time,
        operator: Signer | None = None,
    ) -> None:
        self.spec = spec
        self.options = options or SimulatorOptions()
        self.kafka_config = dict(kafka_config)
        self.provider = provider
        self.trusted = trusted
        self.operator = operator
        self.profile = profile or sensor_profile(spec)
        self.clock = clock
        opts = self.options
        check_options(spec, opts)
        self.groups = groups = [g.name for g in spec.groups]
        self.device_ids, group_of = place_devices(spec, opts)
        n = len(self.device_ids)
        self.n = n
        self.index_of = {d: i for i, d in enumerate(self.device_ids)}
        self.keys = [d.encode() for d in self.device_ids]
        self.group_idx = np.array(group_of, dtype=np.int32)
        self.members = [np.flatnonzero(self.group_idx == g) for g in range(len(groups))]
        self.rng = np.random.default_rng(opts.seed)
        rng = self.rng
        self.state = self.profile.initial_states(n, rng)
        self.bias = self.profile.device_bias(n, rng)
        self.group_offsets = np.array([self.profile.group_offsets[g] for g in groups]) if groups else np.zeros((0, 0))
        skewed = rng.random(n) < opts.clock_skew_ratio
        self.skew = np.where(skewed, rng.uniform(-opts.clock_skew_s, opts.clock_skew_s, n), 0.0)
        self.cameras: CameraRig | None = camera_rig(spec) if is_camera_pipeline(spec) else None
        self.camera_drift_done: set[int] = set()  # indexes into (*options.drift, *injected_drift) already applied
        self.cores = self._device_cores(group_of)
        # The harness's schedule: each device's intervals as its core's config says.
        self.tel_interval = np.full(n, opts.telemetry_interval_s)
        self.hb_interval = np.full(n, opts.heartbeat_interval_s)
        self.next_tel = np.zeros(n)
        self.next_hb = np.zeros(n)
        self.online = np.ones(n, dtype=bool)
        self.dropped = np.zeros(n, dtype=np.int64)
        self.group_records = np.zeros(len(groups), dtype=np.int64)
        # Loaded versions, shared by the devices that run them; model_idx batches predictions per version.
        self.versions: list[str] = []
        self.version_index: dict[str, int] = {}
        self.model_idx = np.zeros(n, dtype=np.int32)
        self.models: dict[str, EdgeModel] = {}
        self.load_failures: dict[str, str] = {}
        self.loading: dict[str, Future[EdgeModel]] = {}
        self.orders: dict[int, ModelOrder] = {}  # device -> its newest model order not yet carried out
        self.waiting: dict[str, set[int]] = {}  # version being loaded -> devices whose order names it
        # The control log as verified once for all devices; `behind[i]`: the first verdict device i has not decided.
        self.verdicts: list[ControlVerdict] = []
        self.behind: dict[int, int] = {}
        self.buffers: dict[int, deque[tuple[str, bytes, bytes]]] = {}
        self.buffered_total = 0
        self.stats = SimulationStats(devices=n)
        self.commands: queue.SimpleQueue[tuple[str, list[Any]]] = queue.SimpleQueue()
        self.injected_drift: list[DriftInjection] = []
        self.outage_done: set[int] = set()
        self.outage_devices: dict[int, np.ndarray] = {}
        kinds = ("telemetry", "health", "errors", "device-state", "profiles", *(("frames",) if self.cameras else ()))
        self.topics = {kind: spec.topic(kind) for kind in kinds}
        self.telemetry_topic = spec.topic("telemetry")
        self.health_topic = spec.topic("health")
        self.state_topic = spec.topic("device-state")
        self.control_topic = spec.topic("control")
        self.truth_topic = spec.topic(GROUND_TRUTH)
        self.producer: Producer | None = None
        self.consumer: Consumer | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.t0 = 0.0

    def _device_cores(self, group_of: list[int]) -> list[DeviceCore]:
        """One real device core per simulated device, in its group, with its clock skew and identity key."""
        spec, opts, operator = self.spec, self.options, self.operator
        schema = [SchemaField(f.name, f.role) for f in spec.schema_]
        telemetry = TelemetryPolicy(**telemetry_policy(spec))
        cores: list[DeviceCore] = []
        for i, device in enumerate(self.device_ids):
            core = DeviceCore(
                device,
                self.groups[group_of[i]],
                spec.name,
                self.groups,
                schema,
                self.trusted,
                identity=operator.derive(f"{spec.name}/{device}") if operator is not None else None,
                telemetry_interval_s=opts.telemetry_interval_s,
                heartbeat_interval_s=opts.heartbeat_interval_s,
                telemetry=telemetry,
                clock=self.clock,
            )
            core.clock_offset_s = float(self.skew[i])
            if self.cameras is not None:
                core.frame_prefix = spec.storage.prefix  # frame keys as ingest stores the frames
            cores.append(core)
        return cores

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Create topics (optional), restore each device from its twin and the control log, register it."""
        if self.options.create_topics:
            ensure_topics(self.spec, self.kafka_config, ground_truth=self.options.ground_truth)
        self.enrol()
        self.producer = Producer({**_producer_config(self.kafka_config), "on_delivery": self._on_delivery})
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="model-load")
        twins = self._read_twins()
        history, start_offset = self._read_control()
        self.boot(twins, history, self.clock())
        self.consumer = Consumer(reader_config(self.kafka_config))
        self.consumer.assign([TopicPartition(self.control_topic, 0, start_offset)])

    def enrol(self) -> int:
        """Enrol the devices whose derived key the registry does not hold yet; return how many."""
        if self.operator is None:
            return 0
        registry = read_registry(self.spec, self.kafka_config, self.trusted, timeout=120.0)
        missing = []
        for i, core in enumerate(self.cores):
            assert core.identity is not None
            known = registry.devices.get(self.device_ids[i])
            key_id = core.identity.key_id
            if known is None or known.key_id != key_id or known.group_id != core.group_id:
                missing.append((self.device_ids[i], core.group_id, public_hex(core.identity.public)))
        return enrol(self.spec, self.kafka_config, self.operator, missing, now=self.clock()) if missing else 0

    def boot(self, twins: Mapping[str, DeviceState], history: Sequence[tuple[int, bytes | None]], now: float) -> None:
        """Bring every device up: its last twin, its model and config, the control log it missed; report the twin.

        `twins` are the devices' last device-state records, `history` the control log
        (offset, value) so far. Needs `self.producer` (a real one after `start`, or a stand-in).
        """
        self.t0 = now
        self.verdicts = [self._verify(value, offset) for offset, value in history]
        last_seen: dict[str, int] = {}
        configs: dict[str, Mapping[str, Any]] = {}
        for index, verdict in enumerate(self.verdicts):
            assignment = verdict.assignment
            if assignment is None:
                continue
            last_seen[assignment.id] = index
            if assignment.config is not None and assignment.config_version is not None:
                configs[assignment.config_version] = assignment.config
        default = self.options.model_version or self.provider.default_version()
        for i, core in enumerate(self.cores):
            twin = twins.get(self.device_ids[i])
            version = default
            if twin is not None:
                core.restore_twin(twin.desired, twin.reported)
                reported = twin.reported
                if isinstance(reported.get("model_version"), str):
                    version = reported["model_version"]
                config_version = reported.get("config_version")
                if isinstance(config_version, str) and config_version in configs:
                    try:
                        core.apply_config(configs[config_version], config_version)
                    except BadConfig as exc:  # the rules changed since it was applied: the defaults stay
                        log.warning("fleet simulator: %s keeps the default config: %s", self.device_ids[i], exc)
            model = self._load_now(version, i, now) or self._load_now(BASELINE_VERSION, i, now)
            if model is None:
                raise ModelLoadError("the baseline model (version 0) cannot be loaded")
            self._serve(i, model)
            reported_assignment = core.twin.reported_assignment
            self.behind[i] = last_seen.get(reported_assignment, -1) + 1 if reported_assignment else 0
        for i in range(self.n):
            self._catch_up(i, now, booting=True)
        for i in list(self.orders):
            order = self.orders.pop(i)
            version = str(order.assignment.model_version)
            model = self._load_now(version, i, now, report=False)
            if model is not None:
                self.cores[i].model_applied(order, model)
                self._serve(i, model)
            else:
                self._emit(i, self.cores[i].model_failed(order, self.load_failures[version]), direct=False)
        for i, core in enumerate(self.cores):
            self._sync_schedule(i, now)
            self._emit(i, [core.state_update(now)])
        now = self.clock()  # registration may take a while with many devices
        self.next_tel = now + self.rng.random(self.n) * self.tel_interval
        self.next_hb = now + self.rng.random(self.n) * self.hb_interval  # spread evenly, like a real fleet
        for core in self.cores:
            core.started_at = now

    def close(self, timeout: float = 30.0) -> None:
        """Flush what is produced and release the clients (buffered offline data stays unsent)."""
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        if self.producer is not None:
            remaining = self.producer.flush(timeout)
            if remaining:
                log.error("fleet simulator: %d messages not delivered after %.0fs", remaining, timeout)
                self.stats.delivery_failures += remaining
            self.producer = None
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None
        self.stats.buffered = sum(len(b) for b in self.buffers.values())
        self.stats.dropped = int(self.dropped.sum())

    def run(self, duration_s: float | None = None, stop: threading.Event | None = None) -> SimulationStats:
        """Start, step until `duration_s` passes or `stop` is set, close; return the counts."""
        try:
            self.start()
            end = None if duration_s is None else self.t0 + duration_s
            while not (stop is not None and stop.is_set()):
                now = self.clock()
                if end is not None and now >= end:
                    break
                self.step(now)
                # Batch due devices into steps at least tick_s apart; wake at least every 4 ticks for control.
                tick = self.options.tick_s
                wake = min(max(float(self.next_tel.min(initial=now + 1.0)), now + tick), now + 4 * tick)
                if end is not None:
                    wake = min(wake, end)
                delay = wake - self.clock()
                if delay > 0:
                    if stop is not None:
                        stop.wait(delay)
                    else:
                        time.sleep(delay)
        finally:
            self.stats.elapsed_s = self.clock() - self.t0
            self.close()
        return self.stats

    # --- commands from other threads (tests, CLI signals) -----------------------------

    def inject_drift(self, injections: Sequence[DriftInjection]) -> None:
        """Start drift injections now (e.g. on SIGUSR1 in the demo), in addition to the configured ones.

        Raise ValueError, in the caller's thread, for an injection that does not fit the spec.
        """
        check_injections(self.spec, injections)
        self.commands.put(("drift", list(injections)))

    def set_offline(self, device_ids: Sequence[str]) -> None:
        self.commands.put(("offline", list(device_ids)))

    def set_online(self, device_ids: Sequence[str]) -> None:
        self.commands.put(("online", list(device_ids)))

    # --- the loop -------------------------------------------------------------------

    def step(self, now: float | None = None) -> None:
        """One pass: commands, control messages, outages, model loads, due devices."""
        now = self.clock() if now is None else now
        self.stats.steps += 1
        self._drain_commands(now)
        self._poll_control(now)
        self._run_outages(now)
        self._finish_loads(now)
        due = np.flatnonzero(self.next_tel <= now)
        if due.size:
            self.stats.max_lag_s = max(self.stats.max_lag_s, float(now - self.next_tel[due].min()))
            self._emit_telemetry(due, now)
        beats = np.flatnonzero((self.next_hb <= now) & self.online)
        if beats.size:
            self._emit_heartbeats(beats, now)
        assert self.producer is not None
        self.producer.poll(0)

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, timestamp_ms: int | None = None) -> None:
        assert self.producer is not None
        while True:
            try:
                if timestamp_ms is None:
                    self.producer.produce(topic, value, key)
                else:
                    self.producer.produce(topic, value, key, timestamp=timestamp_ms)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.stats.delivery_failures += 1
            if self.stats.delivery_failures <= 5:
                log.error("fleet simulator: delivery to %s failed: %s", message.topic(), error)

    def _send(self, i: int, topic: str, value: bytes) -> None:
        """The network: send now if the device is online, else buffer it (bounded, oldest dropped)."""
        if self.online[i]:
            self._produce(topic, self.keys[i], value)
            return
        buffer = self.buffers.setdefault(i, deque())
        if len(buffer) >= self.options.buffer_limit or self.buffered_total >= self.options.buffer_total_limit:
            self.dropped[i] += 1
            if not buffer:
                return
            buffer.popleft()
            self.buffered_total -= 1
        buffer.append((topic, self.keys[i], value))
        self.buffered_total += 1

    def _emit(self, i: int, messages: Sequence[Outgoing], *, direct: bool = True) -> None:
        """Route what a device's core returns: telemetry and error reports through the device's buffer,
        twin updates and heartbeats straight to Kafka while online (`direct=False`: drop those)."""
        for message in messages:
            kind = message.kind
            if kind in QUEUED_KINDS:
                self._send(i, self.topics[kind], message.value)
                if kind == "errors":
                    self.stats.errors += 1
                elif kind == "profiles":
                    self.stats.profiles += 1
                elif kind == "frames":
                    self.stats.frames += 1
                else:
                    self.stats.telemetry += 1
            elif direct and self.online[i]:
                self._produce(self.topics[kind], message.key, message.value)
                if kind == "device-state":
                    self.stats.state_updates += 1
                else:
                    self.stats.heartbeats += 1

    # --- connectivity -----------------------------------------------------------------

    def _drain_commands(self, now: float) -> None:
        while True:
            try:
                command, device_ids = self.commands.get_nowait()
            except queue.Empty:
                return
            if command == "drift":
                self.injected_drift.extend(device_ids)
                log.info("fleet simulator: drift injected now: %s", device_ids)
                continue
            unknown = [d for d in device_ids if d not in self.index_of]
            if unknown:
                log.warning("fleet simulator: %s for unknown devices %s ignored", command, unknown[:5])
            indices = np.array([self.index_of[d] for d in device_ids if d in self.index_of], dtype=np.int64)
            if command == "offline":
                self._disconnect(indices)
            else:
                self._reconnect(indices, now)

    def _run_outages(self, now: float) -> None:
        elapsed = now - self.t0
        for number, outage in enumerate(self.options.outages):
            if number in self.outage_done:
                continue
            if number not in self.outage_devices and elapsed >= outage.start_s:
                pool = np.arange(self.n) if outage.group is None else self.members[self.groups.index(outage.group)]
                chosen = pool[self.rng.random(pool.size) < outage.ratio]
                self.outage_devices[number] = chosen
                self._disconnect(chosen)
                log.info("fleet simulator: outage %d: %d devices offline", number, chosen.size)
            elif number in self.outage_devices and elapsed >= outage.start_s + outage.duration_s:
                self._reconnect(self.outage_devices.pop(number), now)
                self.outage_done.add(number)

    def _disconnect(self, indices: np.ndarray) -> None:
        """Cut devices off: from now on they buffer what they send and read no control messages."""
        position = len(self.verdicts)
        for i in indices[self.online[indices]].tolist():
            self.behind.setdefault(i, position)
        self.online[indices] = False

    def _reconnect(self, indices: np.ndarray, now: float) -> None:
        flushed: dict[int, list[int]] = {}  # group -> [devices, telemetry records]
        for i in indices.tolist():
            if self.online[i]:
                continue
            self.online[i] = True
            buffer = self.buffers.pop(i, deque())
            self.buffered_total -= len(buffer)
            for topic, key, value in buffer:
                self._produce(topic, key, value)
            if buffer:
                counts = flushed.setdefault(int(self.group_idx[i]), [0, 0])
                counts[0] += 1
                counts[1] += sum(1 for topic, _, _ in buffer if topic == self.telemetry_topic)
            self.next_hb[i] = now
            self._catch_up(i, now)
            if i in self.orders:
                self._carry_out(i, now)
        for group, (devices, records) in flushed.items():
            if records >= self.options.backlog_alert_records:
                self._announce_backlog(self.groups[group], devices, records, now)

    def _announce_backlog(self, group: str, devices: int, records: int, now: float) -> None:
        """A `backlog` alert: reconnected devices sent buffered data, ingest now.

        Checked and keyed by `edgeloop.events.alert_message` (the rule of `publish_alerts`), then sent on the
        harness's own asynchronous producer with the devices' messages.
        """
        alert = {
            "kind": "backlog",
            "pipeline": self.spec.name,
            "group": group,
            "reason": "devices reconnected and sent buffered telemetry",
            "readings": {"devices": devices, "records": records},
            "at": iso_ms(now),
        }
        key, value = alert_message(self.spec, alert)
        self._produce(self.spec.topic("alerts"), key, value)
        self.stats.backlog_alerts += 1

    # --- control: verified once, decided by each device's core ---------------------------

    def _read_twins(self) -> dict[str, DeviceState]:
        """The last device-state record of each of our devices (what it ran before a restart)."""
        latest: dict[bytes, bytes | None] = {}
        try:
            for record in read_topic(self.kafka_config, self.state_topic, timeout=120.0):
                if record.key is not None:
                    latest[record.key] = record.value
        except TopicMissing:
            return {}
        twins: dict[str, DeviceState] = {}
        for key, value in latest.items():
            if value is None or key.decode("utf-8", "replace") not in self.index_of:
                continue
            try:
                state = parse_device_state(key, value)
            except ValueError as exc:
                log.warning("fleet simulator: ignoring device-state record: %s", exc)
                continue
            twins[state.device_id] = state
        return twins

    def _read_control(self) -> tuple[list[tuple[int, bytes | None]], int]:
        """The control log so far, and the offset to read on from."""
        history: list[tuple[int, bytes | None]] = []
        try:
            for record in read_topic(self.kafka_config, self.control_topic, timeout=120.0):
                history.append((record.offset, record.value))
        except TopicMissing:
            pass
        return history, history[-1][0] + 1 if history else OFFSET_BEGINNING

    def _verify(self, value: bytes | None, offset: int) -> ControlVerdict:
        """Verify a control message once for every device; an authorised model order names the artifact."""
        verdict = verify_control(value, offset, self.trusted, self.groups, self.spec.name, now=self.clock())
        assignment = verdict.assignment
        if assignment is not None and assignment.model_version is not None and assignment.artifact is not None:
            self.provider.offer(assignment.model_version, assignment.artifact)
        return verdict

    def _poll_control(self, now: float) -> None:
        assert self.consumer is not None
        for message in self.consumer.consume(num_messages=100, timeout=0):
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("fleet simulator: control topic: %s", error)
                continue
            self.on_control(message.value(), message.offset() or 0, now)

    def on_control(self, value: bytes | None, offset: int, now: float) -> None:
        """A new control message: verify it once, then every addressed online device decides on it."""
        self.stats.control_messages += 1
        verdict = self._verify(value, offset)
        self.verdicts.append(verdict)
        if verdict.assignment is not None:
            target: Target | None = verdict.assignment.target
            if verdict.assignment.model_version is not None:
                self.load_failures.pop(verdict.assignment.model_version, None)  # a new assignment retries a load
        else:
            self.stats.control_rejected += 1
            target = verdict.rejected.target if verdict.rejected is not None else None
        addressed = self._addressed(target)
        for i in addressed[self.online[addressed]].tolist():
            self._decide(i, verdict, now)

    def _addressed(self, target: Target | None) -> np.ndarray:
        """The devices a target may address (all, when a refused message's target is unreadable)."""
        if target is None or target.kind == "all":
            return np.arange(self.n)
        if target.kind == "group":
            if target.id in self.groups:
                return self.members[self.groups.index(target.id)]
            return np.zeros(0, dtype=np.int64)
        i = self.index_of.get(str(target.id))
        return np.array([i] if i is not None else [], dtype=np.int64)

    def _catch_up(self, i: int, now: float, *, booting: bool = False) -> None:
        """Device i decides, in log order, every control message it missed (at boot: not old refusals)."""
        start = self.behind.pop(i, None)
        if start is None:
            return
        for verdict in self.verdicts[start:]:
            if booting and verdict.assignment is None:
                continue
            self._decide(i, verdict, now, booting=booting)

    def _decide(self, i: int, verdict: ControlVerdict, now: float, *, booting: bool = False) -> None:
        order, out = self.cores[i].decide(verdict)
        self._sync_schedule(i, now)
        self._emit(i, out, direct=not booting)  # at boot one twin update per device follows
        if order is not None:
            self.orders[i] = order  # the newest order wins, as on an agent
            if not booting:
                self._carry_out(i, now)

    def _sync_schedule(self, i: int, now: float) -> None:
        """The harness schedules readings and heartbeats at the intervals the device's config sets."""
        config = self.cores[i].config
        telemetry, heartbeat = config["telemetry_interval_s"], config["heartbeat_interval_s"]
        if telemetry != self.tel_interval[i]:
            self.tel_interval[i] = telemetry
            self.next_tel[i] = min(self.next_tel[i], now + telemetry)
        if heartbeat != self.hb_interval[i]:
            self.hb_interval[i] = heartbeat

    # --- models: loaded once per process, handed to each device -------------------------

    def _carry_out(self, i: int, now: float) -> None:
        """Hand device i the model its newest order names: loaded, failed, or (still loading) later."""
        order = self.orders[i]
        version = str(order.assignment.model_version)
        if version in self.models:
            del self.orders[i]
            model = self.models[version]
            self._emit(i, [self.cores[i].model_applied(order, model)])
            self._serve(i, model)
        elif version in self.load_failures:
            del self.orders[i]
            self._emit(i, self.cores[i].model_failed(order, self.load_failures[version]))
        else:
            self.waiting.setdefault(version, set()).add(i)
            if version not in self.loading:
                assert self.executor is not None
                self.loading[version] = self.executor.submit(self.provider.load, version)

    def _finish_loads(self, now: float) -> None:
        for version, future in list(self.loading.items()):
            if not future.done():
                continue
            del self.loading[version]
            try:
                self.models[version] = future.result()
            except Exception as exc:  # any loader failure is the devices' model_load report
                self.load_failures[version] = str(exc) if isinstance(exc, ModelLoadError) else repr(exc)
                log.warning("fleet simulator: model version %s failed to load: %s", version, exc)
            for i in sorted(self.waiting.pop(version, ())):
                order = self.orders.get(i)
                if order is not None and order.assignment.model_version == version and self.online[i]:
                    self._carry_out(i, now)  # offline devices take it when they reconnect

    def _load_now(self, version: str, i: int, now: float, *, report: bool = True) -> EdgeModel | None:
        """Load a version in the loop (at boot); a failure is device i's model_load report, once per version."""
        if version in self.models:
            return self.models[version]
        if version in self.load_failures:
            return None
        try:
            self.models[version] = self.provider.load(version)
        except Exception as exc:  # a start version that cannot load: report and fall back
            self.load_failures[version] = str(exc) if isinstance(exc, ModelLoadError) else repr(exc)
            if report:
                self._emit(i, [self.cores[i].error_report("model_load", self.load_failures[version], now)])
            return None
        return self.models[version]

    def _serve(self, i: int, model: EdgeModel) -> None:
        self.cores[i].model = model
        slot = self.version_index.get(model.version)
        if slot is None:
            slot = len(self.versions)
            self.versions.append(model.version)
            self.version_index[model.version] = slot
        self.model_idx[i] = slot

    # --- sensors, inference, feedback ------------------------------------------------------

    def _emit_telemetry(self, due: np.ndarray, now: float) -> None:
        """The due devices observe (a sensor reading or a camera frame each), then the schedule and ground truth."""
        groups = self.group_idx[due]
        truth = self._observe_frames(due, now) if self.cameras is not None else self._observe_readings(due, groups, now)
        np.add.at(self.group_records, groups, 1)
        step = self.tel_interval[due]
        nxt = self.next_tel[due] + step
        behind = nxt < now - 5 * step
        self.next_tel[due] = np.where(behind, now + step, nxt)
        if self.options.ground_truth and truth:
            now_ms = int(now * 1000)
            for message in groundtruth.truth_messages(truth, now_ms, now_ms):
                self._produce(self.truth_topic, None, message, now_ms)
                self.stats.truth_messages += 1

    def _observe_frames(self, due: np.ndarray, now: float) -> list[tuple[str, str]]:
        """Each due camera takes a frame; its core scores it and reports; returns (record id, true label) pairs."""
        assert self.cameras is not None
        self._apply_camera_drift(now)
        devices = due.tolist()
        step = camera_step([self.cores[i] for i in devices], self.cameras, now)
        bad = self.rng.random(due.size) < self.options.bad_record_ratio if self.options.bad_record_ratio else None
        for r, message in step.messages:
            spoilt = message.kind == "telemetry" and bad is not None and bool(bad[r])
            self._emit(devices[r], [replace(message, value=self._corrupt(message.value)) if spoilt else message])
        self.stats.idle_cameras += step.idle
        for i in devices:
            if self.cores[i].profiler is not None:
                self._emit(i, self.cores[i].profiles_due(now))
        return step.truth

    def _apply_camera_drift(self, now: float) -> None:
        """Change the cameras of each group whose drift injection became active (once per injection)."""
        assert self.cameras is not None
        elapsed = now - self.t0
        for index, item in enumerate((*self.options.drift, *self.injected_drift)):
            if index in self.camera_drift_done:
                continue
            if item.active(elapsed, int(self.group_records[self.groups.index(item.group)])):
                self.cameras.inject(item.group, item.feature)
                self.camera_drift_done.add(index)
                log.info("fleet simulator: camera drift %s on %s", item.feature, item.group)

    def _observe_readings(self, due: np.ndarray, groups: np.ndarray, now: float) -> list[tuple[str, str]]:
        """Each due sensor device reads its sensors; one batched inference per loaded model; its core reports."""
        profile = self.profile
        if not self.options.hold_states:
            self.state[due] = profile.step_states(self.state[due], self.rng)
        states = self.state[due]
        readings = profile.sample(states, self.bias[due], self.group_offsets[groups], self.rng)
        elapsed = now - self.t0
        for g in np.unique(groups).tolist():
            active = [d for d in (*self.options.drift, *self.injected_drift) if d.group == self.groups[g]]
            active = [d for d in active if d.active(elapsed, int(self.group_records[g]))]
            if active:
                rows = groups == g
                readings[rows] = apply_drift(readings[rows], list(profile.features), active)
        devices = due.tolist()
        labels = profile.labels
        true_states = states.tolist()
        bad = self.rng.random(due.size) < self.options.bad_record_ratio if self.options.bad_record_ratio else None
        truth: list[tuple[str, str]] = []
        cores = self.cores
        topic = self.telemetry_topic
        model_slots = self.model_idx[due]
        for slot in np.unique(model_slots).tolist():
            rows = np.flatnonzero(model_slots == slot)
            try:  # one batched inference per loaded model over its due devices
                proba = self.models[self.versions[slot]].predict_proba(readings[rows])
            except Exception as exc:  # a model that raises is each device's inference error, never a crash
                reason = str(exc)[:300]
                for r in rows.tolist():
                    self._emit(devices[r], [cores[devices[r]].inference_failed(reason, now)])
                continue
            for r, row_proba in zip(rows.tolist(), proba, strict=True):
                i = devices[r]
                core = cores[i]
                message = core.observe(readings[r], row_proba, now)
                if message is not None:
                    value = message.value
                    truth.append((str(core.last_record_id), labels[true_states[r]]))
                    self._send(i, topic, self._corrupt(value) if bad is not None and bad[r] else value)
                    self.stats.telemetry += 1
                if core.profiler is not None:
                    self._emit(i, core.profiles_due(now))
        return truth

    def _corrupt(self, value: bytes) -> bytes:
        """The bytes of a record spoilt on the way, like a gateway's after a firmware bug."""
        record = json.loads(value)
        kind = int(self.rng.integers(4))
        names = [f.name for f in self.spec.schema_ if f.role in ("feature", "timestamp", "device_id")]
        name = names[int(self.rng.integers(len(names)))]
        if kind == 0:
            record.pop(name, None)
            return json.dumps(record).encode()
        if kind == 1:
            record[name] = "n/a"
            return json.dumps(record).encode()
        if kind == 2:
            return value[: max(10, int(self.rng.integers(10, 60)))]
        return b"\xff\xfe" + value[2:]

    def _emit_heartbeats(self, beats: np.ndarray, now: float) -> None:
        """Each device's core reports its heartbeat; the harness makes up its cpu, memory and temperature."""
        loads = self.rng.random(beats.size).tolist()
        memory = 140.0 + 12.0 * len(self.models)
        topic = self.health_topic
        for i, load in zip(beats.tolist(), loads, strict=True):
            core = self.cores[i]
            core.dropped = int(self.dropped[i])
            beat = core.heartbeat(
                now, cpu_pct=18.0 + 30.0 * load, mem_mb=memory + 10.0 * load, temperature_c=46.0 + 8.0 * load
            )
            self._produce(topic, beat.key, beat.value)
        self.stats.heartbeats += beats.size
        self.next_hb[beats] = now + self.hb_interval[beats]


def simulate(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    *,
    trusted: Keyring,
    operator: Signer | None = None,
    devices: int | None = None,
    provider: ModelProvider | None = None,
    duration_s: float | None = None,
    options: SimulatorOptions | None = None,
    stop: threading.Event | None = None,
) -> SimulationStats:
    """Run a simulated fleet for `duration_s` seconds (or until `stop` is set); return its counts.

    `provider` defaults to the built-in baseline model only (version "0": the rule model, or
    for a camera pipeline the image baseline); pass `onnx_provider(...)` to run registry
    models (their ONNX files, as agents do).
    """
    from edgeloop.simulator.models import baseline_provider, camera_models

    opts = options or SimulatorOptions()
    if devices is not None:
        opts.devices = devices
    profile = sensor_profile(spec)
    chosen = provider if provider is not None else baseline_provider(profile, cameras=camera_models(spec))
    simulator = FleetSimulator(spec, kafka_config, chosen, trusted, opts, profile=profile, operator=operator)
    return simulator.run(duration_s, stop)
