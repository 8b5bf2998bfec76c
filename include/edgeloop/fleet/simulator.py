"""The edge fleet simulator: thousands of devices in one compact, vectorised loop.

No thread per device: per-device state lives in numpy arrays, and each step of the
loop handles the devices whose next reading is due, generating their sensor data,
running their model versions (one batched `predict_proba` per version) and
producing telemetry, heartbeats and error reports to Kafka. Model loads run in a
small thread pool so the loop never blocks on the registry.

Control plane: the simulator plays the cloud side of a device twin as well as the
devices. It reads `<prefix>.control` (replayed from the beginning at start, so a
restart keeps every assignment), records each authorised assignment as the desired
state of the devices it addresses in `<prefix>.device-state` (even for devices that
are offline), and the devices apply it when they are online and report it (the
reported half of the same record, plus their heartbeats). A message that is not
valid or not signed is rejected by every online device it addresses with a
`bad_control` error report.

Offline devices keep sensing and predicting; their telemetry and error reports are
buffered (up to `buffer_limit` per device and `buffer_total_limit` for the whole
simulated fleet, which bounds its memory; the oldest are dropped and counted) and sent in
order on reconnect, keyed by device id so that they stay in order in Kafka. When a
reconnect flushes at least `backlog_alert_records` telemetry records of a group, the
simulator announces it with a `backlog` alert on `<prefix>.alerts`, which starts an
ingestion run (see edgeloop.events).
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
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from edgeloop.contract.messages import (
    BASELINE_VERSION,
    Assignment,
    BadConfig,
    ControlRejected,
    DeviceState,
    iso_ms,
    parse_assignment,
    parse_device_state,
    validate_device_config,
)
from edgeloop.fleet import groundtruth
from edgeloop.fleet.models import EdgeModel, ModelLoadError, ModelProvider
from edgeloop.fleet.sensors import DriftInjection, SensorProfile, apply_drift, check_drift, sensor_profile
from edgeloop.fleet.topics import GROUND_TRUTH, TopicMissing, ensure_topics, producer_config, read_topic, reader_config
from edgeloop.spec import PipelineSpec

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


@dataclass
class _Twin:
    """Desired and reported state of one device (the simulator's copy of its device-state record)."""

    desired_model: str | None = None
    desired_config: dict[str, Any] | None = None
    desired_config_version: str | None = None
    desired_assignment: str | None = None
    desired_at: str | None = None
    reported_model: str | None = None
    reported_config_version: str | None = None
    reported_assignment: str | None = None
    status: str = "applied"
    reason: str | None = None
    reported_at: str | None = None
    failed_model: str | None = None  # desired versions that failed on this device are not retried
    failed_config: str | None = None
    failures: list[str] = field(default_factory=list)  # of the current desired assignment


def _producer_config(kafka_config: Mapping[str, Any]) -> dict[str, Any]:
    config = producer_config(kafka_config)
    config.setdefault("linger.ms", 20)
    config.setdefault("compression.type", "lz4")
    config.setdefault("enable.idempotence", True)
    config.setdefault("queue.buffering.max.messages", 500_000)
    config.setdefault("queue.buffering.max.kbytes", 131_072)
    return config


class FleetSimulator:
    """A simulated fleet for one pipeline spec. Use `run()`, or `start()` then `step()`."""

    def __init__(
        self,
        spec: PipelineSpec,
        kafka_config: Mapping[str, Any],
        provider: ModelProvider,
        control_key: bytes,
        options: SimulatorOptions | None = None,
        *,
        profile: SensorProfile | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.options = options or SimulatorOptions()
        self.kafka_config = dict(kafka_config)
        self.provider = provider
        self.control_key = control_key
        self.profile = profile or sensor_profile(spec)
        self.clock = clock
        opts = self.options
        check_drift(spec, opts.drift)
        groups = [g.name for g in spec.groups]
        for index, outage in enumerate(opts.outages):
            if outage.group is not None and outage.group not in groups:
                raise ValueError(f"outages[{index}].group: {outage.group!r} is not a group of {spec.name}")
        if opts.telemetry_interval_s <= 0 or opts.heartbeat_interval_s <= 0 or opts.tick_s <= 0:
            raise ValueError("telemetry_interval_s, heartbeat_interval_s and tick_s must be positive")
        self.groups = groups
        self.device_ids: list[str] = []
        group_of: list[int] = []
        for name, count in allocate_devices(spec, opts.devices):
            index = groups.index(name)
            self.device_ids.extend(device_id(opts.id_prefix, name, i) for i in range(count))
            group_of.extend([index] * count)
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
        self.tel_interval = np.full(n, opts.telemetry_interval_s)
        self.hb_interval = np.full(n, opts.heartbeat_interval_s)
        self.next_tel = np.zeros(n)
        self.next_hb = np.zeros(n)
        self.online = np.ones(n, dtype=bool)
        self.seq = np.zeros(n, dtype=np.int64)
        self.records = np.zeros(n, dtype=np.int64)
        self.errors = np.zeros(n, dtype=np.int64)
        self.errors_since_hb = np.zeros(n, dtype=np.int64)
        self.conf_sum = np.zeros(n)
        self.conf_n = np.zeros(n, dtype=np.int64)
        self.dropped = np.zeros(n, dtype=np.int64)
        self.started_at = np.zeros(n)
        self.group_records = np.zeros(len(groups), dtype=np.int64)
        self.versions: list[str] = []
        self.version_index: dict[str, int] = {}
        self.model_idx = np.zeros(n, dtype=np.int32)
        self.models: dict[str, EdgeModel] = {}
        self.config_version: list[str | None] = [None] * n
        self.twins = [_Twin() for _ in range(n)]
        self.buffers: dict[int, deque[tuple[str, bytes, bytes]]] = {}
        self.pending: set[int] = set()
        self.buffered_total = 0
        self.configs_seen: dict[str, dict[str, Any]] = {}
        self.load_failures: dict[str, str] = {}
        self.loading: dict[str, Future[EdgeModel]] = {}
        self.stats = SimulationStats(devices=n)
        self.commands: queue.SimpleQueue[tuple[str, list[Any]]] = queue.SimpleQueue()
        self.injected_drift: list[DriftInjection] = []
        self.outage_done: set[int] = set()
        self.outage_devices: dict[int, np.ndarray] = {}
        self.telemetry_topic = spec.topic("telemetry")
        self.health_topic = spec.topic("health")
        self.errors_topic = spec.topic("errors")
        self.state_topic = spec.topic("device-state")
        self.control_topic = spec.topic("control")
        self.truth_topic = spec.topic(GROUND_TRUTH)
        self._plan = self._telemetry_plan()
        self.producer: Producer | None = None
        self.consumer: Consumer | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.t0 = 0.0

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Create topics (optional), restore the twin from Kafka, register every device."""
        if self.options.create_topics:
            ensure_topics(self.spec, self.kafka_config, ground_truth=self.options.ground_truth)
        self.producer = Producer({**_producer_config(self.kafka_config), "on_delivery": self._on_delivery})
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="model-load")
        now = self.clock()
        self.t0 = now
        restored = self._restore_reported()
        start_offset = self._replay_control()
        default = self.options.model_version or self.provider.default_version()
        for i in range(self.n):
            twin = self.twins[i]
            version = restored.get(i) or default
            model = self._load_now(version, i) or self._load_now(BASELINE_VERSION, i)
            if model is None:
                raise ModelLoadError("the baseline model (version 0) cannot be loaded")
            self.model_idx[i] = self._version_slot(model.version)
            twin.reported_model = model.version
            if twin.reported_config_version and twin.reported_config_version in self.configs_seen:
                self._apply_config_values(i, self.configs_seen[twin.reported_config_version])
                self.config_version[i] = twin.reported_config_version
            else:
                twin.reported_config_version = None
            if twin.desired_model is None:
                twin.desired_model = twin.reported_model
            if self._needs_work(twin):
                self.pending.add(i)
            twin.reported_at = iso_ms(now)
            self._write_state(i, now)
        now = self.clock()  # registration may take a while with many devices
        offsets = self.rng.random(self.n)
        self.next_tel = now + offsets * self.tel_interval
        self.next_hb = now + self.rng.random(self.n) * self.hb_interval  # spread evenly, like a real fleet
        self.started_at[:] = now
        self.consumer = Consumer(reader_config(self.kafka_config))
        self.consumer.assign([TopicPartition(self.control_topic, 0, start_offset)])

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
        """Start drift injections now (e.g. on SIGUSR1 in the demo), in addition to the configured ones."""
        self.commands.put(("drift", list(injections)))

    def set_offline(self, device_ids: Sequence[str]) -> None:
        self.commands.put(("offline", list(device_ids)))

    def set_online(self, device_ids: Sequence[str]) -> None:
        self.commands.put(("online", list(device_ids)))

    # --- the loop -------------------------------------------------------------------

    def step(self, now: float | None = None) -> None:
        """One pass: commands, control messages, outages, model loads, pending applies, due devices."""
        now = self.clock() if now is None else now
        self.stats.steps += 1
        self._drain_commands(now)
        self._poll_control(now)
        self._run_outages(now)
        self._finish_loads(now)
        if self.pending:
            self._apply_pending(now)
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
        """Send now if the device is online, else buffer it (bounded, oldest dropped)."""
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
                self.online[indices] = False
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
                self.online[chosen] = False
                log.info("fleet simulator: outage %d: %d devices offline", number, chosen.size)
            elif number in self.outage_devices and elapsed >= outage.start_s + outage.duration_s:
                self._reconnect(self.outage_devices.pop(number), now)
                self.outage_done.add(number)

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
            if self._needs_work(self.twins[i]):
                self.pending.add(i)
        for group, (devices, records) in flushed.items():
            if records >= self.options.backlog_alert_records:
                self._announce_backlog(self.groups[group], devices, records, now)

    def _announce_backlog(self, group: str, devices: int, records: int, now: float) -> None:
        """A `backlog` alert (edgeloop.events): reconnected devices sent buffered data, ingest now."""
        alert = {
            "kind": "backlog",
            "pipeline": self.spec.name,
            "group": group,
            "reason": "devices reconnected and sent buffered telemetry",
            "readings": {"devices": devices, "records": records},
            "at": iso_ms(now),
        }
        self._produce(self.spec.topic("alerts"), group.encode(), json.dumps(alert).encode())
        self.stats.backlog_alerts += 1

    # --- control plane ----------------------------------------------------------------

    def _restore_reported(self) -> dict[int, str]:
        """Reported state of our devices from device-state (what they ran before a restart)."""
        restored: dict[int, str] = {}
        try:
            records = list(read_topic(self.kafka_config, self.state_topic, timeout=120.0))
        except TopicMissing:
            return restored
        latest: dict[bytes, bytes | None] = {}
        for record in records:
            if record.key is not None:
                latest[record.key] = record.value
        for key, value in latest.items():
            i = self.index_of.get(key.decode("utf-8", "replace"))
            if i is None or value is None:
                continue
            try:
                state = parse_device_state(key, value)
            except ValueError as exc:
                log.warning("fleet simulator: ignoring device-state record: %s", exc)
                continue
            twin = self.twins[i]
            reported = state.reported
            if isinstance(reported.get("model_version"), str):
                restored[i] = reported["model_version"]
            twin.reported_config_version = reported.get("config_version")
            twin.reported_assignment = reported.get("assignment_id")
        return restored

    def _replay_control(self) -> int:
        """Desired state from the whole control log (old rejects are not re-reported)."""
        next_offset = OFFSET_BEGINNING
        try:
            for record in read_topic(self.kafka_config, self.control_topic, timeout=120.0):
                next_offset = record.offset + 1
                try:
                    assignment = parse_assignment(record.value, self.control_key, self.groups)
                except ControlRejected:
                    continue
                self._set_desired(assignment, self.clock(), write=False)
        except TopicMissing:
            pass
        return next_offset

    def _poll_control(self, now: float) -> None:
        assert self.consumer is not None
        for message in self.consumer.consume(num_messages=100, timeout=0):
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("fleet simulator: control topic: %s", error)
                continue
            self.stats.control_messages += 1
            try:
                assignment = parse_assignment(message.value(), self.control_key, self.groups)
            except ControlRejected as exc:
                self.stats.control_rejected += 1
                self._reject(exc, message.offset() or 0, now)
                continue
            self._set_desired(assignment, now, write=True)

    def _addressed(self, assignment_target: Any) -> np.ndarray:
        if assignment_target is None or assignment_target.kind == "all":
            return np.arange(self.n)
        if assignment_target.kind == "group":
            if assignment_target.id in self.groups:
                return self.members[self.groups.index(assignment_target.id)]
            return np.zeros(0, dtype=np.int64)
        i = self.index_of.get(assignment_target.id)
        return np.array([i] if i is not None else [], dtype=np.int64)

    def _reject(self, exc: ControlRejected, offset: int, now: float) -> None:
        """Every online device the message addresses (all, if unreadable) reports the rejection."""
        addressed = self._addressed(exc.target)
        for i in addressed[self.online[addressed]].tolist():
            self._error(
                i,
                "bad_control",
                f"control message at offset {offset} rejected: {exc.reason}",
                now,
                control_id=exc.control_id,
            )

    def _set_desired(self, assignment: Assignment, now: float, *, write: bool) -> None:
        if assignment.config is not None and assignment.config_version is not None:
            self.configs_seen[assignment.config_version] = dict(assignment.config)
        if assignment.model_version is not None:
            self.load_failures.pop(assignment.model_version, None)  # a new assignment retries a failed load
            if assignment.artifact is not None:
                self.provider.offer(assignment.model_version, assignment.artifact)
        stamp = assignment.issued_at
        for i in self._addressed(assignment.target).tolist():
            twin = self.twins[i]
            if twin.desired_assignment == assignment.id:
                continue
            if assignment.model_version is not None:
                twin.desired_model = assignment.model_version
                twin.failed_model = None
            if assignment.config is not None:
                twin.desired_config = dict(assignment.config)
                twin.desired_config_version = assignment.config_version
                twin.failed_config = None
            twin.desired_assignment = assignment.id
            twin.desired_at = stamp
            twin.failures = []
            if self._needs_work(twin):
                twin.status, twin.reason = "pending", None
                self.pending.add(i)
            else:
                twin.reported_assignment = assignment.id
                twin.status, twin.reason = "applied", None
            if write:
                self._write_state(i, now)

    @staticmethod
    def _needs_work(twin: _Twin) -> bool:
        """Something desired is not applied yet and has not already failed on this device."""
        model = twin.desired_model is not None and twin.desired_model not in (twin.reported_model, twin.failed_model)
        config = twin.desired_config_version is not None and twin.desired_config_version not in (
            twin.reported_config_version,
            twin.failed_config,
        )
        return model or config

    def _apply_pending(self, now: float) -> None:
        done = []
        for i in self.pending:
            if not self.online[i]:
                continue
            twin = self.twins[i]
            waiting = False
            if twin.desired_model is not None and twin.desired_model not in (twin.reported_model, twin.failed_model):
                waiting = self._apply_model(i, twin, now)
            if twin.desired_config_version is not None and twin.desired_config_version not in (
                twin.reported_config_version,
                twin.failed_config,
            ):
                self._apply_config(i, twin, now)
            if waiting:
                continue
            done.append(i)
            twin.reported_assignment = twin.desired_assignment
            if twin.failures:
                twin.status, twin.reason = "failed", "; ".join(twin.failures)
            else:
                twin.status, twin.reason = "applied", None
            twin.reported_at = iso_ms(now)
            self._write_state(i, now)
            self.next_hb[i] = now  # report at once, like a twin update
        self.pending.difference_update(done)

    def _apply_model(self, i: int, twin: _Twin, now: float) -> bool:
        """Switch device i to its desired model; return True while the model is still loading."""
        version = twin.desired_model
        assert version is not None
        if version in self.models:
            self.model_idx[i] = self._version_slot(version)
            twin.reported_model = version
            return False
        if version in self.load_failures:
            twin.failed_model = version  # keeps running the model it has
            twin.failures.append(self.load_failures[version])
            self._error(i, "model_load", self.load_failures[version], now)
            return False
        if version not in self.loading:
            assert self.executor is not None
            self.loading[version] = self.executor.submit(self.provider.load, version)
        return True

    def _apply_config(self, i: int, twin: _Twin, now: float) -> None:
        try:
            self._apply_config_values(i, twin.desired_config or {})
        except BadConfig as exc:
            twin.failed_config = twin.desired_config_version  # keeps running the config it has
            twin.failures.append(str(exc))
            self._error(i, "bad_config", f"assignment {twin.desired_assignment}: {exc}", now)
            return
        self.config_version[i] = twin.desired_config_version
        twin.reported_config_version = twin.desired_config_version

    def _apply_config_values(self, i: int, config: Mapping[str, Any]) -> None:
        values = validate_device_config(config)
        if "telemetry_interval_s" in values:
            self.tel_interval[i] = values["telemetry_interval_s"]
            self.next_tel[i] = min(self.next_tel[i], self.clock() + values["telemetry_interval_s"])
        if "heartbeat_interval_s" in values:
            self.hb_interval[i] = values["heartbeat_interval_s"]

    def _finish_loads(self, now: float) -> None:
        for version, future in list(self.loading.items()):
            if not future.done():
                continue
            del self.loading[version]
            try:
                self.models[version] = future.result()
            except Exception as exc:  # any loader failure becomes a model_load error report
                self.load_failures[version] = str(exc) if isinstance(exc, ModelLoadError) else repr(exc)
                log.warning("fleet simulator: model version %s failed to load: %s", version, exc)

    def _load_now(self, version: str, i: int) -> EdgeModel | None:
        if version in self.models:
            return self.models[version]
        if version in self.load_failures:
            return None
        try:
            self.models[version] = self.provider.load(version)
        except Exception as exc:  # a start version that cannot load: report and fall back
            self.load_failures[version] = str(exc)
            self._error(i, "model_load", str(exc), self.clock())
            return None
        return self.models[version]

    def _version_slot(self, version: str) -> int:
        slot = self.version_index.get(version)
        if slot is None:
            slot = len(self.versions)
            self.versions.append(version)
            self.version_index[version] = slot
        return slot

    def _write_state(self, i: int, now: float) -> None:
        twin = self.twins[i]
        state = DeviceState(
            device_id=self.device_ids[i],
            group_id=self.groups[self.group_idx[i]],
            desired={
                "model_version": twin.desired_model,
                "config_version": twin.desired_config_version,
                "assignment_id": twin.desired_assignment,
                "updated_at": twin.desired_at,
            },
            reported={
                "model_version": twin.reported_model,
                "config_version": twin.reported_config_version,
                "assignment_id": twin.reported_assignment,
                "status": twin.status,
                "reason": twin.reason,
                "updated_at": twin.reported_at,
            },
            updated_at=iso_ms(now),
        )
        self._produce(self.state_topic, self.keys[i], state.to_wire())
        self.stats.state_updates += 1

    # --- feedback -------------------------------------------------------------------

    def _error(
        self,
        i: int,
        kind: str,
        message: str,
        now: float,
        *,
        record_id: str | None = None,
        control_id: str | None = None,
    ) -> None:
        report = {
            "device_id": self.device_ids[i],
            "group_id": self.groups[self.group_idx[i]],
            "ts": iso_ms(now + self.skew[i]),
            "kind": kind,
            "message": message,
            "model_version": self.versions[self.model_idx[i]] if self.versions else None,
            "config_version": self.config_version[i],
            "record_id": record_id,
            "control_id": control_id,
        }
        self._send(i, self.errors_topic, json.dumps(report).encode())
        self.errors[i] += 1
        self.errors_since_hb[i] += 1
        self.stats.errors += 1

    def _telemetry_plan(self) -> list[tuple[str, str, int]]:
        """(field, role, feature column) for each schema field, in schema order."""
        features = self.spec.features
        return [(f.name, f.role, features.index(f.name) if f.role == "feature" else -1) for f in self.spec.schema_]

    def _emit_telemetry(self, due: np.ndarray, now: float) -> None:
        profile = self.profile
        if not self.options.hold_states:
            self.state[due] = profile.step_states(self.state[due], self.rng)
        states = self.state[due]
        groups = self.group_idx[due]
        readings = profile.sample(states, self.bias[due], self.group_offsets[groups], self.rng)
        elapsed = now - self.t0
        for g in np.unique(groups).tolist():
            active = [d for d in (*self.options.drift, *self.injected_drift) if d.group == self.groups[g]]
            active = [d for d in active if d.active(elapsed, int(self.group_records[g]))]
            if active:
                rows = groups == g
                readings[rows] = apply_drift(readings[rows], list(profile.features), active)
        predictions: list[str | None] = [None] * due.size
        confidences = np.zeros(due.size)
        failures: dict[int, str] = {}
        model_slots = self.model_idx[due]
        for slot in np.unique(model_slots).tolist():
            rows = np.flatnonzero(model_slots == slot)
            model = self.models[self.versions[slot]]
            try:
                proba = model.predict_proba(readings[rows])
            except Exception as exc:  # a model that raises is an inference error, never a crash
                reason = f"model version {self.versions[slot]}: inference failed: {exc}"
                for r in rows.tolist():
                    failures[r] = reason
                continue
            best = proba.argmax(axis=1)
            labels = list(model.labels)
            confidences[rows] = proba[np.arange(rows.size), best]
            for r, b in zip(rows.tolist(), best.tolist(), strict=True):
                predictions[r] = labels[b]
        now_ms = int(now * 1000)
        self.seq[due] += 1
        seqs = self.seq[due].tolist()
        values = np.round(readings, 3).tolist()
        truth: list[tuple[str, str]] = []
        labels_all = profile.labels
        bad = self.rng.random(due.size) < self.options.bad_record_ratio if self.options.bad_record_ratio else None
        base_ts = iso_ms(now)
        skew = self.skew
        ok_rows = []
        for r, i in enumerate(due.tolist()):
            device_id = self.device_ids[i]
            rid = f"{device_id}-{now_ms}-{seqs[r]}"
            truth.append((rid, labels_all[states[r]]))
            if r in failures:
                self._error(i, "inference", failures[r], now, record_id=rid)
                continue
            ok_rows.append(r)
            ts = base_ts if skew[i] == 0.0 else iso_ms(now + skew[i])
            confidence = round(float(confidences[r]), 4)
            record = self._record(i, rid, ts, values[r], prediction=predictions[r], confidence=confidence)
            payload = self._corrupt(record) if bad is not None and bad[r] else json.dumps(record).encode()
            self._send(i, self.telemetry_topic, payload)
        if ok_rows:
            ok = np.array(ok_rows)
            self.records[due[ok]] += 1
            self.conf_sum[due[ok]] += confidences[ok]
            self.conf_n[due[ok]] += 1
            self.stats.telemetry += len(ok_rows)
        np.add.at(self.group_records, groups, 1)
        step = self.tel_interval[due]
        nxt = self.next_tel[due] + step
        behind = nxt < now - 5 * step
        self.next_tel[due] = np.where(behind, now + step, nxt)
        if self.options.ground_truth and truth:
            for value in groundtruth.truth_messages(truth, now_ms, now_ms):
                self._produce(self.truth_topic, None, value, now_ms)
                self.stats.truth_messages += 1

    def _record(
        self, i: int, rid: str, ts: str, features: list[float], *, prediction: str | None, confidence: float
    ) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for name, role, column in self._plan:
            if role == "feature":
                record[name] = features[column]
            elif role == "record_id":
                record[name] = rid
            elif role == "device_id":
                record[name] = self.device_ids[i]
            elif role == "group_id":
                record[name] = self.groups[self.group_idx[i]]
            elif role == "timestamp":
                record[name] = ts
            elif role == "prediction":
                record[name] = prediction
            elif role == "confidence":
                record[name] = confidence
            elif role == "model_version":
                record[name] = self.versions[self.model_idx[i]]
            elif role == "config_version":
                record[name] = self.config_version[i]
            else:
                record[name] = None
        return record

    def _corrupt(self, record: dict[str, Any]) -> bytes:
        """A bad record, of one of several kinds a real gateway sends after a firmware bug."""
        kind = int(self.rng.integers(4))
        names = [name for name, role, _ in self._plan if role in ("feature", "timestamp", "device_id")]
        name = names[int(self.rng.integers(len(names)))]
        if kind == 0:
            record.pop(name, None)
            return json.dumps(record).encode()
        if kind == 1:
            record[name] = "n/a"
            return json.dumps(record).encode()
        if kind == 2:
            return json.dumps(record).encode()[: max(10, int(self.rng.integers(10, 60)))]
        return b"\xff\xfe" + json.dumps(record).encode()[2:]

    def _emit_heartbeats(self, beats: np.ndarray, now: float) -> None:
        for i in beats.tolist():
            twin = self.twins[i]
            conf = self.conf_sum[i] / self.conf_n[i] if self.conf_n[i] else None
            load = float(self.rng.random())
            beat = {
                "device_id": self.device_ids[i],
                "group_id": self.groups[self.group_idx[i]],
                "ts": iso_ms(now + self.skew[i]),
                "status": "degraded" if self.errors_since_hb[i] else "online",
                "cpu_pct": round(18.0 + 30.0 * load, 1),
                "mem_mb": round(140.0 + 12.0 * len(self.models) + 10.0 * load, 1),
                "temperature_c": round(46.0 + 8.0 * load, 1),
                "model_version": self.versions[self.model_idx[i]],
                "config_version": self.config_version[i],
                "assignment_id": twin.reported_assignment,
                "assignment_status": twin.status,
                "uptime_s": round(now - self.started_at[i], 1),
                "records": int(self.records[i]),
                "errors": int(self.errors[i]),
                "dropped": int(self.dropped[i]),
                "confidence_mean": None if conf is None else round(float(conf), 4),
                "interval_s": float(self.hb_interval[i]),
            }
            self._produce(self.health_topic, self.keys[i], json.dumps(beat).encode())
        self.stats.heartbeats += beats.size
        self.errors_since_hb[beats] = 0
        self.conf_sum[beats] = 0.0
        self.conf_n[beats] = 0
        self.next_hb[beats] = now + self.hb_interval[beats]


def simulate(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    *,
    control_key: bytes,
    devices: int | None = None,
    provider: ModelProvider | None = None,
    duration_s: float | None = None,
    options: SimulatorOptions | None = None,
    stop: threading.Event | None = None,
) -> SimulationStats:
    """Run a simulated fleet for `duration_s` seconds (or until `stop` is set); return its counts.

    `provider` defaults to the built-in baseline model only (version "0"); pass
    `mlflow_provider(...)` to run registry models.
    """
    from edgeloop.fleet.models import baseline_provider

    opts = options or SimulatorOptions()
    if devices is not None:
        opts.devices = devices
    profile = sensor_profile(spec)
    chosen = provider if provider is not None else baseline_provider(profile)
    simulator = FleetSimulator(spec, kafka_config, chosen, control_key, opts, profile=profile)
    return simulator.run(duration_s, stop)
