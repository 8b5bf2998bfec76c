"""The agent process: Kafka in and out, models on disk, a sensor or camera source, health over HTTP.

Lifecycle: `Agent(config).run()` starts, serves until SIGTERM or SIGINT, then drains
(stops reading, gives the sender a bounded time to empty the queue, saves its state)
and returns an exit code systemd understands (0 after a clean stop, 2 for a bad config,
1 for anything else so that `Restart=on-failure` restarts it).

Threads: the main loop (control messages, readings, heartbeats, twin updates), the
sender (queue to Kafka, exactly once, see `Sender`), a model worker (fetch, verify,
load, self-test; inference goes on meanwhile), the source reader (stdin only) and the
HTTP server. A camera's frames (an `images` source, `edgeloop.edge.images`) are taken in
the main loop, one queue commit each.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.contract.safejson import JsonRefused, loads_bounded
from edgeloop.edge.config import AgentConfig, ConfigError, load_config
from edgeloop.edge.device import QUEUED_KINDS, DeviceCore, ModelOrder, Outgoing, ServingModel, serving_model
from edgeloop.edge.fetch import FetchFailed, fetch_artifact
from edgeloop.edge.images import REJECT_REASONS, ImageSpool, RejectedFrame, SpoolFrame
from edgeloop.edge.outbox import Outbox, QueuedMessage
from edgeloop.edge.runtime import ModelCache, ModelRefused, OnnxModel
from edgeloop.edge.shadow import ShadowEvaluator
from edgeloop.edge.store import ModelStore, atomic_write

log = logging.getLogger("edgeloop.agent")

SEQ_HEADER = "edgeloop-seq"
HTTP_PORT_FILE = "http.port"  # in state_dir: the port the HTTP server bound (useful with http.port 0)
MAX_FUTURE_MS = 5 * 60 * 1000  # brokers refuse timestamps far ahead of their clock (log.message.timestamp.after.max.ms)
REFUSED_FOR_GOOD = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError.INVALID_TIMESTAMP}
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
LAST_FRAME_NOTE = "last_frame"  # the outbox note naming the spool file whose frame was queued last
FRAMES_PER_PASS = 16  # frames taken from the spool per pass of the main loop (orders and heartbeats go on)


def client_config(kafka: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {**dict(kafka), **extra}


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of a key: CRC32 modulo the partition count, like librdkafka's `consistent` partitioner."""
    return zlib.crc32(key) % partitions


def seq_of(message: Message) -> int | None:
    """The queue sequence number a message was sent with (its `edgeloop-seq` header), if any."""
    raw = message.headers() or []
    for name, value in raw.items() if isinstance(raw, dict) else raw:
        if name == SEQ_HEADER and isinstance(value, bytes) and value.isdigit():
            return int(value)
    return None


class Sender:
    """Moves queued messages to Kafka exactly once, in order, surviving kill -9 and broker outages.

    Before a batch is produced, the end offsets of the partitions it goes to are written
    to the queue's in-flight note. A batch that Kafka fully acknowledges is deleted from
    the queue with the note. If anything is left uncertain (a crash, a delivery error,
    a timeout), the next attempt first reads those partitions from the noted offsets and
    deletes from the queue every message of this device (by key and the `edgeloop-seq`
    header) that already arrived, then sends the rest. Kafka's idempotent producer keeps
    retries within one attempt from duplicating.
    """

    def __init__(self, config: AgentConfig, outbox: Outbox, stop: threading.Event, producer: Producer) -> None:
        self.config = config
        self.outbox = outbox
        self.stop = stop
        self.key = config.device_id.encode()
        self.producer = producer
        self.reader = Consumer(
            client_config(
                config.kafka,
                **{"group.id": f"edgeloop-agent-{config.device_id}", "enable.auto.commit": False},
                **{"enable.partition.eof": True, "auto.offset.reset": "earliest"},
            )
        )
        self._partitions: dict[str, int] = {}
        self.sent = 0
        self.recovered = 0
        self.refused = 0  # messages the broker refuses for good (too large, invalid): dropped and counted
        self.connected = False
        self.last_error: str | None = None

    def partition(self, topic: str) -> int:
        if topic not in self._partitions:
            metadata = self.reader.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"topic {topic} is not there"))
            self._partitions[topic] = partition_for(self.key, len(metadata.partitions))
        return self._partitions[topic]

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if not self.step():
                    self.stop.wait(0.2)
                self.connected = True
            except KafkaException as exc:
                self.connected = False
                self.last_error = str(exc)
                log.warning("sender: Kafka unreachable (%s); the queue keeps %d messages", exc, self.outbox.rows)
                self.stop.wait(2.0)

    def drain(self, timeout_s: float) -> None:
        """Send what is queued for up to `timeout_s` (on a clean stop)."""
        deadline = time.monotonic() + timeout_s
        while self.outbox.rows and time.monotonic() < deadline:
            try:
                self.step()
            except KafkaException:
                return

    def step(self) -> bool:
        """Reconcile if needed, then send one batch; return False when there was nothing to send."""
        if self.outbox.inflight() is not None:
            self.reconcile()
        batch = self.outbox.peek(self.config.send_batch)
        if not batch:
            return False
        topics = sorted({m.topic for m in batch})
        starts = {f"{t}|{self.partition(t)}": self._end_offset(t, self.partition(t)) for t in topics}
        self.outbox.set_inflight({"upto": batch[-1].seq, "starts": starts})
        failures: list[str] = []
        refused: list[int] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is None:
                return
            failures.append(str(error))
            if error.code() in REFUSED_FOR_GOOD:
                seq = seq_of(message)
                if seq is not None:
                    refused.append(seq)

        now_ms = int(time.time() * 1000)
        for message in batch:
            self._produce(message, delivered, now_ms)
        remaining = self.producer.flush(30.0)
        if refused:
            self.outbox.ack(refused)
            self.refused += len(refused)
            log.error("sender: the broker refused %d messages for good; dropped and counted", len(refused))
        if remaining or failures:
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, f"{remaining} undelivered, {failures[:1]}"))
        self.outbox.ack([m.seq for m in batch], clear_inflight=True)
        self.sent += len(batch)
        return True

    def _produce(self, message: QueuedMessage, delivered: Any, now_ms: int) -> None:
        # A device clock ahead of the broker's would have every batch refused: send time then (the record keeps its ts).
        timestamp = message.ts_ms if message.ts_ms <= now_ms + MAX_FUTURE_MS else now_ms
        while True:
            try:
                self.producer.produce(
                    message.topic,
                    message.value,
                    message.key,
                    partition=self.partition(message.topic),
                    timestamp=timestamp,
                    headers=[(SEQ_HEADER, str(message.seq).encode())],
                    on_delivery=delivered,
                )
                return
            except BufferError:
                self.producer.poll(0.1)

    def _end_offset(self, topic: str, partition: int) -> int:
        _low, high = self.reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
        return int(high)

    def reconcile(self) -> None:
        """Delete from the queue what an uncertain attempt already delivered (see the class docstring)."""
        note = self.outbox.inflight()
        if note is None:
            return
        upto = int(note["upto"])
        arrived: list[int] = []
        for where, start in dict(note["starts"]).items():
            topic, _, partition = where.rpartition("|")
            arrived.extend(self._seqs_in(topic, int(partition), int(start), upto))
        self.outbox.ack(arrived, clear_inflight=True)
        self.recovered += len(arrived)
        if arrived:
            log.info("sender: %d messages had arrived before the interruption; not sending them again", len(arrived))

    def _seqs_in(self, topic: str, partition: int, start: int, upto: int) -> Iterator[int]:
        end = self._end_offset(topic, partition)
        if end <= start:
            return
        self.reader.assign([TopicPartition(topic, partition, start)])
        try:
            position = start
            while position < end:
                message = self.reader.poll(5.0)
                if message is None:
                    raise KafkaException(
                        KafkaError(KafkaError._TIMED_OUT, f"reading {topic}[{partition}] at {position}")
                    )
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        break
                    raise KafkaException(error)
                position = int(message.offset() or 0) + 1
                if message.key() != self.key:
                    continue
                seq = seq_of(message)
                if seq is not None and seq <= upto:
                    yield seq
        finally:
            self.reader.unassign()

    def close(self) -> None:
        self.reader.close()


class ReplaySource:
    """Readings from a JSON-lines file (a list of numbers, or an object by feature name), looped."""

    def __init__(self, path: Path, features: list[str], loop: bool = True) -> None:
        self.rows: list[list[float]] = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                self.rows.append(parse_reading(line.encode(), features))
            except ValueError as exc:
                raise ConfigError(f"source.path: {path} line {number}: {exc}") from None
        if not self.rows:
            raise ConfigError(f"source.path: {path} holds no readings")
        self.loop = loop
        self.index = 0

    def next(self) -> list[float] | None:
        if self.index >= len(self.rows):
            if not self.loop:
                return None
            self.index = 0
        row = self.rows[self.index]
        self.index += 1
        return row


def parse_reading(line: bytes, features: list[str]) -> list[float]:
    """One reading from a JSON line; raise ValueError naming what is wrong."""
    try:
        body = loads_bounded(line, max_bytes=64 * 1024, max_depth=4)
    except JsonRefused as exc:
        raise ValueError(str(exc)) from None
    values = [body.get(f) for f in features] if isinstance(body, dict) else body
    if not isinstance(values, list) or len(values) != len(features):
        raise ValueError(f"a reading needs {len(features)} values ({features})")
    out = []
    for name, value in zip(features, values, strict=True):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ValueError(f"{name}: {value!r} is not a finite number")
        out.append(float(value))
    return out


class Agent:
    """One device's agent process (see the module docstring)."""

    def __init__(self, config: AgentConfig, *, models: ModelCache | None = None) -> None:
        self.config = config
        self.stop = threading.Event()
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_path = config.state_dir / "agent-state.json"
        self.outbox = Outbox(
            config.state_dir / "outbox.sqlite",
            max_bytes=config.queue_max_bytes,
            synchronous=config.queue_synchronous,
        )
        self.store = ModelStore(config.state_dir / "models")
        self.models = models or ModelCache()
        self.core = DeviceCore.for_config(config, config.trusted_keys(), identity=config.identity())
        self.keys_stamp = self._keys_stamp()
        self.control_offset = -1
        self.readings: queue.SimpleQueue[list[float]] = queue.SimpleQueue()
        self.orders: queue.SimpleQueue[tuple[ModelOrder, ServingModel | None, str | None]] = queue.SimpleQueue()
        self.busy_order: ModelOrder | None = None
        self.waiting_orders: list[ModelOrder] = []
        self.source: ReplaySource | None = None
        self.spool: ImageSpool | None = None
        self.frames_taken = 0
        self.frames_rejected: Counter[str] = Counter()
        self.spool_idle_logged = False
        self.sender: Sender | None = None
        self.sender_thread: threading.Thread | None = None
        self.producer: Producer | None = None
        self.control: Consumer | None = None
        self.http: ThreadingHTTPServer | None = None
        self.bad_readings = 0
        self.assignment_stamp: int | None = None

    # --- start -------------------------------------------------------------------

    def start(self) -> None:
        self._restore_state()
        self._load_current_model()
        self.open_source()
        cfg = self.config
        # Heartbeats and twin updates get a producer of their own. Shared with the sender, a heartbeat queued through
        # an outage timed out in flight after it, librdkafka bumped the epoch and sent the sender's in-flight batch
        # again under new sequence numbers: duplicates that no reconciliation sees (tests/integration/edge).
        self.producer = Producer(client_config(cfg.kafka, **{"linger.ms": 20, "message.timeout.ms": 60_000}))
        self.control = Consumer(
            client_config(
                cfg.kafka,
                **{"group.id": f"edgeloop-agent-control-{cfg.device_id}", "enable.auto.commit": False},
                **{"auto.offset.reset": "earliest"},
            )
        )
        if cfg.control_topic:
            start = self.control_offset + 1 if self.control_offset >= 0 else OFFSET_BEGINNING
            self.control.assign([TopicPartition(cfg.topic("control"), 0, start)])
        sender_producer = Producer(
            client_config(
                cfg.kafka,
                **{"enable.idempotence": True, "acks": "all", "linger.ms": 20, "message.timeout.ms": 20_000},
            )
        )
        self.sender = Sender(cfg, self.outbox, self.stop, sender_producer)
        self.sender_thread = threading.Thread(target=self.sender.run, name="sender", daemon=True)
        self.sender_thread.start()
        if cfg.http_port is not None:
            self.http = health_server(self, cfg.http_host, cfg.http_port)
            # Port 0 asks the system for a free port; the bound one is written where a supervisor can read it.
            atomic_write(cfg.state_dir / HTTP_PORT_FILE, f"{self.http.server_address[1]}\n".encode())
            threading.Thread(target=self.http.serve_forever, name="http", daemon=True).start()
        self._direct(self.core.state_update(time.time()))
        log.info(
            "agent %s (%s/%s) started on model %s; %d messages queued",
            cfg.device_id,
            cfg.pipeline,
            cfg.group_id,
            self.core.model_version,
            self.outbox.rows,
        )

    def open_source(self) -> None:
        """Open the config's source: a replay file, a stdin reader thread, a camera's spool directory."""
        source = self.config.source
        if source.kind == "replay":
            assert source.path is not None
            self.source = ReplaySource(Path(source.path), self.config.features[:], source.loop)
        elif source.kind == "stdin":
            threading.Thread(target=self._read_stdin, name="source", daemon=True).start()
        elif source.kind == "images":
            assert source.path is not None
            directory = Path(source.path)
            try:
                self.spool = ImageSpool(directory, source.frame_shape, keep_done=source.keep_done)
            except OSError as exc:
                raise ConfigError(f"source.path: cannot use {directory} as the camera's spool: {exc}") from None
            if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
                # taken frames are removed and bad ones moved aside: a read-only spool would send them again
                raise ConfigError(f"source.path: {directory} must be readable and writable by the agent")

    def _restore_state(self) -> None:
        # The last queued record's seq is committed with it, so it is exact even after kill -9.
        queued_seq = self.outbox.counter("record_seq")
        if queued_seq is not None:
            self.core.seq = queued_seq
        if not self.state_path.exists():
            return
        body = json.loads(self.state_path.read_text())
        twin = self.core.twin
        self.control_offset = int(body.get("control_offset", -1))
        twin.applied_ids = list(body.get("applied_ids", []))
        twin.desired_model = body.get("desired_model")
        twin.desired_assignment = body.get("desired_assignment")
        twin.desired_config_version = body.get("desired_config_version")
        twin.reported_assignment = body.get("reported_assignment")
        twin.status, twin.reason = body.get("status", "applied"), body.get("reason")
        twin.sequence = int(body.get("sequence", 0))
        if queued_seq is None:
            self.core.seq = int(body.get("seq", 0))
        if body.get("config"):
            self.core.apply_config(body["config"], body.get("config_version"))

    def save_state(self) -> None:
        twin = self.core.twin
        body = {
            "control_offset": self.control_offset,
            "applied_ids": twin.applied_ids,
            "desired_model": twin.desired_model,
            "desired_assignment": twin.desired_assignment,
            "desired_config_version": twin.desired_config_version,
            "reported_assignment": twin.reported_assignment,
            "status": twin.status,
            "reason": twin.reason,
            "sequence": twin.sequence,
            "config": self.core.config,
            "config_version": self.core.config_version,
            "seq": self.core.seq + 1000,  # record ids stay unique even if the last saves were lost
        }
        atomic_write(self.state_path, json.dumps(body).encode())

    def load_model(self, data: bytes, version: str) -> OnnxModel:
        """Load and self-test a model for this device; ModelRefused when it does not fit it (a camera's model
        takes the frame's pixels and gives every feature of the schema, a sensor device's takes the features)."""
        model = self.models.load(data, version, self.config.model_inputs)
        if self.config.camera:
            missing = [f for f in self.config.features if f not in model.image_columns]
            if missing:
                raise ModelRefused(
                    f"model version {version}: not an image model giving this camera's features"
                    f" (missing {missing[:5]}{'...' if len(missing) > 5 else ''})"
                )
        return model

    def _load_current_model(self) -> None:
        for slot in (self.store.current, self.store.previous):
            if slot is None:
                continue
            try:
                self.core.model = self.load_model(self.store.read(slot), slot.version)
                if slot is self.store.previous:
                    self.store.rollback()
                return
            except (OSError, ModelRefused) as exc:
                log.error("model version %s on disk cannot serve: %s", slot.version, exc)
        initial = self.config.initial_model
        if initial is not None:
            try:
                data = Path(initial.path).read_bytes()
                self.core.model = self.load_model(data, initial.version)
            except OSError as exc:
                raise ConfigError(f"initial_model.path: cannot read {initial.path}: {exc.strerror}") from None
            except ModelRefused as exc:
                raise ConfigError(f"initial_model: {exc}") from None
            self.store.install(initial.version, data)

    # --- the loop ----------------------------------------------------------------

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        try:
            self.start()
            self.serve()
        except ConfigError as exc:
            log.error("config: %s", exc)
            return EXIT_CONFIG
        except Exception:  # systemd restarts on a non-zero exit; the traceback goes to the journal
            log.exception("agent %s stopped on an error", self.config.device_id)
            return EXIT_FAILED
        finally:
            self.shutdown()
        return EXIT_OK

    def serve(self) -> None:
        next_reading = next_beat = time.time()
        while not self.stop.is_set():
            now = time.time()
            self.poll_control()
            self._finish_orders()
            if self.source is not None and now >= next_reading:
                row = self.source.next()
                if row is not None:
                    self.handle_readings(np.asarray([row]), now)
                interval = self.core.config["telemetry_interval_s"]
                next_reading = max(next_reading + interval, now - interval)
            self._drain_fed(now)
            if self.spool is not None:
                self.take_frames(now)
            if now >= next_beat:
                self.core.dropped = self.outbox.dropped
                self._direct(self.core.heartbeat(now, mem_mb=rss_mb()))
                next_beat = now + self.core.config["heartbeat_interval_s"]
            assert self.producer is not None
            self.producer.poll(0)
            wake = min(next_reading if self.source else now + 0.05, next_beat, now + 0.05)
            self.stop.wait(max(0.0, wake - time.time()))

    def feed(self, row: list[float]) -> None:
        """A reading from outside (an `external` source: a harness or a sensor driver in the same process)."""
        self.readings.put(row)

    def _drain_fed(self, now: float) -> None:
        rows = []
        while True:
            try:
                rows.append(self.readings.get_nowait())
            except queue.Empty:
                break
        if rows:
            self.handle_readings(np.asarray(rows, dtype=np.float64), now)

    def handle_readings(self, rows: np.ndarray, now: float) -> None:
        """Score readings with the current model and queue their telemetry (or an inference error)."""
        try:
            proba = self.core.score(rows)
        except Exception as exc:  # a model that raises is an error report, never a crash of the agent
            self.enqueue([self.core.inference_failed(str(exc)[:300], now)])
            return
        observed = (self.core.observe(row, None if proba is None else proba[i], now) for i, row in enumerate(rows))
        self.enqueue([m for m in observed if m is not None] + self.core.profiles_due(now) + self.core.shadow_due(now))

    def take_frames(self, now: float) -> int:
        """Score and queue the spool's finished frames (up to `FRAMES_PER_PASS`); return how many were taken.

        Each frame is one queue commit that also notes its file's name; the file goes only after that
        commit, so a file found again after a crash is the one noted, and is removed without a second
        record. Without a model the frames wait in the spool (a camera's record needs the model's features).
        """
        assert self.spool is not None
        if self.core.model is None:
            if not self.spool_idle_logged:
                log.warning("images: no model serves yet; frames wait in %s", self.spool.directory)
                self.spool_idle_logged = True
            return 0
        self.spool_idle_logged = False
        taken = 0
        for path in self.spool.pending(FRAMES_PER_PASS):
            if path.name == self.outbox.note(LAST_FRAME_NOTE):
                self.spool.finish(path)  # queued before an interruption: only its removal was missing
                continue
            try:
                frame = self.spool.read(path)
            except RejectedFrame as exc:
                self._reject_frame(path, exc)
                continue
            self.observe_frame(frame, now)
            taken += 1
        return taken

    def observe_frame(self, frame: SpoolFrame, now: float) -> None:
        """Score one frame with the serving model, queue its frame message and record, then remove its file."""
        from edgeloop.vision.model import pixel_rows

        assert self.spool is not None
        model: Any = serving_model(self.core.model)
        try:
            proba, features = model.predict_with_features(pixel_rows(frame.pixels[None]))
            values = dict(zip(model.image_columns, features[0].tolist(), strict=True))
            messages = self.core.observe_frame(frame.png, values, proba[0], now)
        except Exception as exc:  # a model that raises is an error report and a rejected frame, never a crash
            reason = f"inference: model version {self.core.model_version}: {str(exc)[:300]}"
            self.enqueue([self.core.inference_failed(str(exc)[:300], now)], notes={LAST_FRAME_NOTE: frame.path.name})
            self._reject_frame(frame.path, RejectedFrame("inference", reason))
            return
        messages += self.core.profiles_due(now) + self.core.shadow_due(now)
        self.enqueue(messages, notes={LAST_FRAME_NOTE: frame.path.name})
        self.spool.finish(frame.path)
        self.frames_taken += 1

    def _reject_frame(self, path: Path, exc: RejectedFrame) -> None:
        assert self.spool is not None
        kept = self.spool.reject(path, f"{exc.reason}: {exc}")
        self.frames_rejected[exc.reason] += 1
        log.warning("images: %s rejected (%s): %s%s", path.name, exc.reason, exc, "" if kept else " (deleted)")

    def enqueue(self, messages: list[Outgoing], *, notes: Mapping[str, str] | None = None) -> None:
        queued = [(self.config.topic(m.kind), m.key, m.value, m.ts_ms) for m in messages if m.kind in QUEUED_KINDS]
        self.outbox.put(queued, counters={"record_seq": self.core.seq}, notes=notes)
        for message in messages:
            if message.kind not in QUEUED_KINDS:
                self._direct(message)

    def _direct(self, message: Outgoing) -> None:
        assert self.producer is not None
        try:
            self.producer.produce(self.config.topic(message.kind), message.value, message.key, timestamp=message.ts_ms)
        except BufferError:
            log.warning("producer queue full: %s message dropped (it is resent with the next state)", message.kind)

    def _keys_stamp(self) -> tuple[int, int] | None:
        path = self.config.trusted_keys_file
        try:
            info = Path(path).stat() if path else None
        except OSError:
            return None
        return None if info is None else (info.st_mtime_ns, info.st_size)

    def reload_trusted_keys(self) -> None:
        """Take up a changed trusted-keys file (a key added or retired) without a restart; a bad file is logged
        and the keys in use are kept."""
        stamp = self._keys_stamp()
        if stamp == self.keys_stamp:
            return
        self.keys_stamp = stamp
        try:
            keys = self.config.trusted_keys()
        except ConfigError as exc:
            log.error("trusted keys not changed: %s", exc)
            return
        if keys.ids != self.core.trusted.ids:
            log.info("trusted keys now %s (were %s)", keys.ids, self.core.trusted.ids)
            self.core.trusted = keys

    def poll_control(self) -> None:
        assert self.control is not None
        self.reload_trusted_keys()
        if self.config.assignment_file is not None:
            self._read_assignment_file(Path(self.config.assignment_file))
        for message in self.control.consume(num_messages=100, timeout=0) if self.config.control_topic else []:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("control: %s", error)
                continue
            offset = int(message.offset() or 0)
            order, out = self.core.on_control(message.value(), offset)
            self.control_offset = offset
            if order is not None:
                self.waiting_orders = [order]  # the newest order wins
            self.enqueue(out)
            self.save_state()
        if self.waiting_orders and self.busy_order is None:
            self.busy_order = self.waiting_orders.pop()
            threading.Thread(target=self._carry_out, args=(self.busy_order,), name="model", daemon=True).start()

    def _read_assignment_file(self, path: Path) -> None:
        """An order from a file (a ConfigMap mounted in a DaemonSet pod), checked like one from the topic."""
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            return  # no order yet: serve the model on disk
        if stamp == self.assignment_stamp:
            return
        self.assignment_stamp = stamp
        value = path.read_bytes()[: 64 * 1024 + 1]
        order, out = self.core.on_control(value, -1)
        if order is not None:
            self.waiting_orders = [order]
        self.enqueue(out)
        self.save_state()

    def ready(self) -> bool:
        """Serving, and serving what the assignment file orders (a DaemonSet's readiness probe)."""
        if self.core.model is None:
            return False
        if self.config.assignment_file is None:
            return True
        twin = self.core.twin
        return twin.reported_assignment == twin.desired_assignment and twin.status == "applied"

    def _carry_out(self, order: ModelOrder) -> None:
        """Fetch, verify, load, self-test and keep an ordered model, and its shadow challenger if it names one
        (in the model thread). The model this device serves already is not fetched again."""
        assignment = order.assignment
        version = str(assignment.model_version)
        try:
            serving = serving_model(self.core.model)
            if serving is not None and serving.version == version:
                model = serving
            else:
                data = self._fetch(version, assignment.artifact)
                model = self.load_model(data, version)
                self.store.install(version, data)
            if assignment.shadow is not None:
                shadow = assignment.shadow
                challenger = self.load_model(self._fetch(shadow.model_version, shadow.artifact), shadow.model_version)
                model = ShadowEvaluator(model, challenger, window_s=shadow.window_s, start=self.core.clock())
            self.orders.put((order, model, None))
        except (FetchFailed, ModelRefused, OSError) as exc:
            self.orders.put((order, None, str(exc)))

    def _fetch(self, version: str, artifact: ArtifactRef | None) -> bytes:
        """The verified bytes of a model version's artifact; raise ModelRefused, FetchFailed."""
        if artifact is None:
            raise ModelRefused(f"model version {version}: the assignment carries no artifact")
        if artifact.size > self.config.max_artifact_bytes:
            raise ModelRefused(
                f"model version {version}: artifact of {artifact.size} bytes is over this device's"
                f" limit of {self.config.max_artifact_bytes}"
            )
        return fetch_artifact(artifact, timeout_s=self.config.download_timeout_s)

    def _finish_orders(self) -> None:
        while True:
            try:
                order, model, reason = self.orders.get_nowait()
            except queue.Empty:
                return
            self.busy_order = None
            if model is not None:
                self.enqueue([self.core.model_applied(order, model)])
                log.info("model version %s serves (assignment %s)", model.version, order.assignment.id)
            else:
                self.enqueue(self.core.model_failed(order, str(reason)))
                log.warning("assignment %s refused: %s", order.assignment.id, reason)
            self.save_state()

    def shutdown(self) -> None:
        self.stop.set()
        if self.sender_thread is not None:
            self.sender_thread.join(45.0)  # a drain beside a running step would send that step's batch twice
        if self.sender is not None and not (self.sender_thread is not None and self.sender_thread.is_alive()):
            self.sender.drain(timeout_s=10.0)
            self.sender.close()
        if self.producer is not None:
            self.producer.flush(5.0)
        if self.control is not None:
            self.control.close()
        if self.http is not None:
            self.http.shutdown()
        self.save_state()
        self.outbox.close()

    def _read_stdin(self) -> None:
        for line in sys.stdin.buffer:
            try:
                self.feed(parse_reading(line, self.config.features))
            except ValueError as exc:
                self.bad_readings += 1
                log.warning("stdin reading refused: %s", exc)

    # --- health ------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        sender = self.sender
        return {
            "device_id": self.config.device_id,
            "group_id": self.config.group_id,
            "model_version": self.core.model_version,
            "kafka": "connected" if sender is not None and sender.connected else "unreachable",
            "queue_rows": self.outbox.rows,
            "queue_bytes": self.outbox.bytes,
            "twin": {"assignment_id": self.core.twin.reported_assignment, "status": self.core.twin.status},
        }

    def metrics_text(self) -> str:
        counters = self.core.counters
        sender = self.sender
        labels = f'device="{self.config.device_id}",group="{self.config.group_id}"'
        lines = [
            ("edgeloop_agent_records_total", "counter", counters.records),
            ("edgeloop_agent_records_not_sent_total", "counter", counters.not_sent),
            ("edgeloop_agent_profiles_total", "counter", counters.profiles),
            ("edgeloop_agent_shadow_reports_total", "counter", counters.shadow_reports),
            ("edgeloop_agent_local_drift_score", "gauge", self.core.local_drift or 0.0),
            ("edgeloop_agent_errors_total", "counter", counters.errors),
            ("edgeloop_agent_control_refused_total", "counter", counters.control_refused),
            ("edgeloop_agent_control_ignored_total", "counter", counters.control_ignored),
            ("edgeloop_agent_model_failures_total", "counter", counters.model_failures),
            ("edgeloop_agent_sent_total", "counter", sender.sent if sender else 0),
            ("edgeloop_agent_queue_messages", "gauge", self.outbox.rows),
            ("edgeloop_agent_queue_bytes", "gauge", self.outbox.bytes),
            ("edgeloop_agent_queue_dropped_total", "counter", self.outbox.dropped),
            ("edgeloop_agent_resident_memory_mb", "gauge", round(rss_mb(), 1)),
        ]
        out = []
        for name, kind, value in lines:
            out += [f"# TYPE {name} {kind}", f"{name}{{{labels}}} {value}"]
        if self.spool is not None:
            out += [
                "# TYPE edgeloop_agent_frames_total counter",
                f"edgeloop_agent_frames_total{{{labels}}} {self.frames_taken}",
                "# TYPE edgeloop_agent_frames_rejected_total counter",
            ]
            out += [
                f'edgeloop_agent_frames_rejected_total{{{labels},reason="{r}"}} {self.frames_rejected[r]}'
                for r in REJECT_REASONS
            ]
        version = self.core.model_version or "none"
        out += [
            "# TYPE edgeloop_agent_model_info gauge",
            f'edgeloop_agent_model_info{{{labels},version="{version}"}} 1',
        ]
        return "\n".join(out) + "\n"


def health_server(agent: Agent, host: str, port: int) -> ThreadingHTTPServer:
    """`/healthz` (JSON), `/readyz` (503 until it serves what it is ordered), `/metrics` (Prometheus); read-only."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200
            if self.path == "/healthz":
                body, kind = json.dumps(agent.health()).encode(), "application/json"
            elif self.path == "/readyz":
                ready = agent.ready()
                body, kind, status = (b"ready\n" if ready else b"not ready\n"), "text/plain", 200 if ready else 503
            elif self.path == "/metrics":
                body, kind = agent.metrics_text().encode(), "text/plain; version=0.0.4"
            else:
                self.send_error(404)
                return
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return ThreadingHTTPServer((host, port), Handler)


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux), 0 where /proc is not there."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="edgeloop-agent", description="Run edgeloop's edge agent on this device.")
    parser.add_argument("--config", required=True, help="the agent's config file (YAML or JSON)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        agent = Agent(config)
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
