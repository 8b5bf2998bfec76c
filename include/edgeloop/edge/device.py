"""One device's logic, free of I/O: control orders, telemetry, heartbeats, error reports, the twin.

The agent process (`edgeloop.edge.agent`) and the fleet simulator's harness both drive
this class: they hand it control messages and sensor readings, do the I/O it asks for
(fetching and loading a model is done by the caller, who reports back with
`model_applied` or `model_failed`), and route the messages it returns: telemetry and
error reports to the store-and-forward queue, heartbeats and twin updates straight to
Kafka. So a simulated device and a real one run the same decisions.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgeloop.contract.keys import Keyring, Signer
from edgeloop.contract.messages import (
    Assignment,
    BadConfig,
    ControlRejected,
    DeviceState,
    iso_ms,
    parse_assignment,
    signed_json,
    validate_device_config,
)
from edgeloop.edge.config import AgentConfig, SchemaField, TelemetryPolicy

if TYPE_CHECKING:
    from edgeloop.edge.profile import RecordSampler, WindowProfiler

# Where each kind of message goes: the durable queue or straight to Kafka.
QUEUED_KINDS = ("telemetry", "errors", "profiles", "frames", "shadow")


class ServingModel(Protocol):
    """What a device serves: an `edgeloop.edge.runtime.OnnxModel` on an agent (the fleet harness may
    hand in a stand-in that crashes or answers badly, to play broken hardware)."""

    @property
    def version(self) -> str: ...

    @property
    def labels(self) -> Sequence[str]: ...

    def predict_proba(self, rows: np.ndarray, /) -> np.ndarray: ...


@dataclass(frozen=True)
class Outgoing:
    """A message for `<prefix>.<kind>`, keyed by the device id, with its creation time."""

    kind: str
    key: bytes
    value: bytes
    ts_ms: int


@dataclass
class ModelOrder:
    """An authorised assignment whose model the caller must fetch, verify, load and report back."""

    assignment: Assignment


@dataclass
class Counters:
    records: int = 0
    not_sent: int = 0  # records only in a profile (telemetry.mode profiles)
    profiles: int = 0
    errors: int = 0
    control_applied: int = 0
    control_refused: int = 0
    control_ignored: int = 0
    model_failures: int = 0
    inference_errors: int = 0
    shadow_reports: int = 0


@dataclass
class Twin:
    """What the control plane asked of this device, and what it runs."""

    desired_model: str | None = None
    desired_config_version: str | None = None
    desired_assignment: str | None = None
    desired_at: str | None = None
    reported_assignment: str | None = None
    status: str = "applied"
    reason: str | None = None
    reported_at: str | None = None
    applied_ids: list[str] = field(default_factory=list)
    sequence: int = 0  # the highest order sequence this device took: older or equal ones are replays


@dataclass(frozen=True)
class ControlVerdict:
    """A control message after verification: the assignment, or why it was refused."""

    offset: int
    assignment: Assignment | None = None
    rejected: ControlRejected | None = None


def verify_control(
    value: bytes | None,
    offset: int,
    trusted: Keyring,
    groups: Collection[str],
    pipeline: str,
    *,
    now: float | None = None,
) -> ControlVerdict:
    """Decode, authenticate and validate a control message for the devices of `pipeline`.

    The same for every device that trusts the same keys and runs the same pipeline, so a
    process that runs many devices verifies each message once and lets each device `decide`.
    """
    try:
        assignment = parse_assignment(value, trusted, groups, now=now)
    except ControlRejected as exc:
        return ControlVerdict(offset, rejected=exc)
    if assignment.pipeline != pipeline:
        reason = f"pipeline: the assignment is for {assignment.pipeline!r}, this device runs {pipeline!r}"
        refused = ControlRejected(reason, control_id=assignment.id, target=assignment.target, authenticated=True)
        return ControlVerdict(offset, rejected=refused)
    return ControlVerdict(offset, assignment=assignment)


class DeviceCore:
    """The decisions of one device. Not thread-safe: one caller thread drives it."""

    def __init__(
        self,
        device_id: str,
        group_id: str,
        pipeline: str,
        groups: Collection[str],
        schema: Sequence[SchemaField],
        trusted: Keyring,
        *,
        identity: Signer | None = None,
        telemetry_interval_s: float = 1.0,
        heartbeat_interval_s: float = 10.0,
        telemetry: TelemetryPolicy | None = None,
        clock: Any = time.time,
    ) -> None:
        self.device_id = device_id
        self.group_id = group_id
        self.pipeline = pipeline
        self.groups = set(groups)
        self.schema = list(schema)
        self.features = [f.name for f in self.schema if f.role == "feature"]
        self.trusted = trusted  # the public keys whose orders this device takes
        self.identity = identity  # this device's own key: it signs heartbeats, error reports and twin updates
        self.key = device_id.encode()
        self.clock = clock
        self.model: ServingModel | None = None
        self.config: dict[str, float] = {
            "telemetry_interval_s": telemetry_interval_s,
            "heartbeat_interval_s": heartbeat_interval_s,
        }
        self.config_version: str | None = None
        self.twin = Twin()
        self.counters = Counters()
        self.dropped = 0  # set by the caller from its queue
        self.seq = 0
        self.started_at = clock()
        self._conf_sum = 0.0
        self._conf_n = 0
        self._errors_since_beat = 0
        self.clock_offset_s = 0.0  # a simulated clock error (the fleet harness's skew): added to reported `ts`
        self.frame_prefix = ""  # a camera's frames: the pipeline's storage prefix, in front of each frame key
        self.last_record_id: str | None = None
        self.telemetry = telemetry or TelemetryPolicy()
        self.profiler: WindowProfiler | None = None
        self.sampler: RecordSampler | None = None
        self.local_drift: float | None = None  # the last closed window's PSI against the model's reference
        if self.telemetry.profiles:
            from edgeloop.edge.profile import RecordSampler, WindowProfiler

            policy = self.telemetry
            self.profiler = WindowProfiler(self.features, window_s=policy.window_s, k=policy.sketch_k, start=clock())
            self.sampler = RecordSampler(
                rate=policy.sample_rate,
                low_confidence=policy.low_confidence,
                drift_rate=policy.drift_sample_rate,
                seed=device_id,
            )

    @classmethod
    def for_config(cls, config: AgentConfig, trusted: Keyring, **kwargs: Any) -> DeviceCore:
        """The core of the device an agent config describes (ids, groups, schema, intervals)."""
        kwargs.setdefault("telemetry_interval_s", config.telemetry_interval_s)
        kwargs.setdefault("heartbeat_interval_s", config.heartbeat_interval_s)
        kwargs.setdefault("telemetry", config.telemetry)
        core = cls(config.device_id, config.group_id, config.pipeline, config.groups, config.schema, trusted, **kwargs)
        core.frame_prefix = config.frame_prefix
        return core

    # --- control ---------------------------------------------------------------

    @property
    def model_version(self) -> str | None:
        return self.model.version if self.model is not None else None

    def on_control(self, value: bytes | None, offset: int) -> tuple[ModelOrder | None, list[Outgoing]]:
        """Verify and decide on one control message (see `decide`)."""
        verdict = verify_control(value, offset, self.trusted, self.groups, self.pipeline, now=self.clock())
        return self.decide(verdict)

    def decide(self, verdict: ControlVerdict) -> tuple[ModelOrder | None, list[Outgoing]]:
        """Act on a verified control message.

        Return the model order to carry out (if the assignment names a model this device
        does not run) and the messages to send: a `bad_control` error report for a
        refused message that may address this device, a twin update for an applied or
        failed config. Assignments for other devices or groups are ignored and counted.

        An order whose sequence is not above the highest this device took is a replay
        (or out of order) and refused, with one exception: the order file of a DaemonSet
        pod (offset -1) read again after a restart, naming the order the device runs. An
        order it already applied that comes again with a newer sequence (a publisher's
        retry) is a no-op.
        """
        now = self.clock()
        if verdict.rejected is not None:
            exc = verdict.rejected
            if exc.target is not None and not exc.target.matches(self.device_id, self.group_id):
                self.counters.control_ignored += 1
                return None, []
            if exc.authenticated or exc.control_id is None:
                return None, [self._refuse(verdict.offset, exc.reason, exc.control_id, now)]
            # a forged message may carry a real order's id: said in the text, never as the order refused
            reason = f"{exc.reason} (the message says it is order {exc.control_id!r})"
            return None, [self._refuse(verdict.offset, reason, None, now)]
        assignment = verdict.assignment
        assert assignment is not None
        if not assignment.target.matches(self.device_id, self.group_id):
            self.counters.control_ignored += 1
            return None, []
        twin = self.twin
        if assignment.sequence <= twin.sequence:
            if verdict.offset < 0 and assignment.id == twin.reported_assignment:
                return None, []
            reason = (
                f"sequence: {assignment.sequence} is not after {twin.sequence}, the last order this device took"
                f" (a replayed or out-of-order message of order {assignment.id})"
            )
            # not named as refused: a copy of an order the device took says nothing about that order
            return None, [self._refuse(verdict.offset, reason, None, now)]
        twin.sequence = assignment.sequence
        if assignment.id in self.twin.applied_ids:
            return None, []
        self.twin.desired_assignment = assignment.id
        self.twin.desired_at = assignment.issued_at
        if assignment.model_version is not None:
            self.twin.desired_model = assignment.model_version
        if assignment.config_version is not None:
            self.twin.desired_config_version = assignment.config_version
        out: list[Outgoing] = []
        failures: list[str] = []
        if assignment.config is not None:
            try:
                self.apply_config(assignment.config, assignment.config_version)
            except BadConfig as exc:
                failures.append(str(exc))
                out.append(self.error_report("bad_config", f"assignment {assignment.id}: {exc}", now))
        if assignment.model_version is not None and self._needs_models(assignment):
            if failures:
                out.append(self._finish(assignment, failures, now))
                return None, out
            return ModelOrder(assignment), out
        if assignment.model_version is not None and assignment.shadow is None:
            self.model = serving_model(self.model)  # an order without a shadow ends the one running
        out.append(self._finish(assignment, failures, now))
        return None, out

    def _needs_models(self, assignment: Assignment) -> bool:
        """Whether the assignment's model, or its shadow challenger, is not the one this device runs."""
        if assignment.model_version != self.model_version:
            return True
        wanted = assignment.shadow.model_version if assignment.shadow is not None else None
        running = getattr(self.model, "challenger", None)
        return wanted is not None and (running is None or running.version != wanted)

    def _refuse(self, offset: int, reason: str, control_id: str | None, now: float) -> Outgoing:
        self.counters.control_refused += 1
        return self.error_report("bad_control", f"control offset {offset}: {reason}", now, control_id=control_id)

    def apply_config(self, config: Mapping[str, Any], config_version: str | None) -> None:
        """Apply device settings (all or none); raise BadConfig naming the setting that is wrong."""
        values = validate_device_config(config)
        self.config.update(values)
        self.config_version = config_version

    def model_applied(self, order: ModelOrder, model: ServingModel) -> Outgoing:
        """The caller loaded and self-tested the order's model: serve it from now on."""
        self.model = model
        return self._finish(order.assignment, [], self.clock())

    def model_failed(self, order: ModelOrder, reason: str) -> list[Outgoing]:
        """The order's model could not be had; keep serving the current model and report why."""
        now = self.clock()
        self.counters.model_failures += 1
        report = self.error_report("model_load", f"assignment {order.assignment.id}: {reason}", now)
        return [report, self._finish(order.assignment, [reason], now)]

    def restore_twin(self, desired: Mapping[str, Any], reported: Mapping[str, Any]) -> None:
        """Take up the twin as a device-state record last showed it (after a restart without local state).

        The reported assignment counts as applied, so reading it again is a no-op; the caller
        restores the model and config themselves (they need the bytes and the settings).
        """
        twin = self.twin
        twin.desired_model = _text(desired.get("model_version"))
        twin.desired_config_version = _text(desired.get("config_version"))
        twin.desired_assignment = _text(desired.get("assignment_id"))
        twin.desired_at = _text(desired.get("updated_at"))
        twin.reported_assignment = _text(reported.get("assignment_id"))
        twin.status = _text(reported.get("status")) or "applied"
        twin.reason = _text(reported.get("reason"))
        twin.reported_at = _text(reported.get("updated_at"))
        twin.applied_ids = [twin.reported_assignment] if twin.reported_assignment else []
        sequence = reported.get("sequence")
        twin.sequence = sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else 0

    def _finish(self, assignment: Assignment, failures: list[str], now: float) -> Outgoing:
        self.twin.applied_ids = [*self.twin.applied_ids[-63:], assignment.id]
        self.twin.reported_assignment = assignment.id
        self.twin.status, self.twin.reason = ("failed", "; ".join(failures)) if failures else ("applied", None)
        self.twin.reported_at = iso_ms(now)
        if not failures:
            self.counters.control_applied += 1
        return self.state_update(now)

    # --- readings ----------------------------------------------------------------

    def score(self, rows: np.ndarray) -> np.ndarray | None:
        """Probabilities for readings from the current model, or None without a model."""
        return None if self.model is None else self.model.predict_proba(rows)

    def observe(
        self,
        reading: Sequence[float],
        proba: Sequence[float] | None,
        now: float,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> Outgoing | None:
        """The telemetry record of one reading scored by the current model (`proba` None: no model).

        In profiles mode the reading goes into the window's profile, and the record is
        returned only if the sampler chose it (None otherwise); see `profiles_due`.
        `extra` sets fields of the schema that are neither features nor filled by their role
        (a camera's frame reference).
        """
        self.seq += 1
        now_ms = int(now * 1000)
        record_id = f"{self.device_id}-{now_ms}-{self.seq}"
        self.last_record_id = record_id
        prediction: str | None = None
        confidence: float | None = None
        if proba is not None and self.model is not None:
            best = int(np.argmax(proba))
            prediction = self.model.labels[best]
            confidence = round(float(proba[best]), 4)
            self._conf_sum += confidence
            self._conf_n += 1
        self.counters.records += 1
        reason = "all"
        if self.sampler is not None and self.profiler is not None:
            chosen = self.sampler.reason(confidence)
            self.profiler.add(reading, prediction, confidence, self.model_version, sent=chosen is not None)
            if chosen is None:
                self.counters.not_sent += 1
                return None
            reason = chosen
        record = self._record(record_id, iso_ms(now + self.clock_offset_s), reading, prediction, confidence, reason)
        for name, value in (extra or {}).items():
            if name in record:
                record[name] = value
        return Outgoing("telemetry", self.key, json.dumps(record).encode(), now_ms)

    def observe_frame(
        self, png: bytes, features: Mapping[str, float], proba: Sequence[float] | None, now: float
    ) -> list[Outgoing]:
        """A camera frame scored by the current model: the frame's message and the record that references it.

        `features` are the frame's features by name (an image model's `image_features`); the
        record takes those of the schema's features, and the frame's content-addressed key,
        digest and size in the fields of roles `image_ref` (the key) and `meta` named
        `*sha256` / `*bytes`. The frame goes on `frames`, bounded (`contract.frame`), queued
        like telemetry; in profiles mode both are sent only when the sampler chose the record.
        """
        from edgeloop.contract.frame import FrameHeader, encode_frame_message, frame_key

        missing = [f for f in self.features if f not in features]
        if missing:
            raise ValueError(f"frame features {missing} are missing (the model gives {sorted(features)})")
        reading = [float(features[f]) for f in self.features]
        digest = hashlib.sha256(png).hexdigest()
        reference = {
            "image_ref": frame_key(self.pipeline, digest, storage_prefix=self.frame_prefix),
            "sha256": digest,
            "bytes": len(png),
        }
        record = self.observe(reading, proba, now, extra=self._frame_fields(reference))
        if record is None:
            return []
        ts = iso_ms(now + self.clock_offset_s)
        header = FrameHeader(str(self.last_record_id), self.device_id, self.group_id, ts, digest, len(png))
        frame = Outgoing("frames", self.key, encode_frame_message(header, png), record.ts_ms)
        return [frame, record]

    def _frame_fields(self, reference: Mapping[str, Any]) -> dict[str, Any]:
        """The schema's fields for a frame reference: the `image_ref` field, and `meta` fields by name ending."""
        out: dict[str, Any] = {}
        for f in self.schema:
            if f.role == "image_ref":
                out[f.name] = reference["image_ref"]
            elif f.role == "meta" and f.name.endswith("sha256"):
                out[f.name] = reference["sha256"]
            elif f.role == "meta" and f.name.endswith("bytes"):
                out[f.name] = reference["bytes"]
        return out

    def profiles_due(self, now: float) -> list[Outgoing]:
        """The profiles of the window that ended by `now` (signed with the device's key), else nothing.

        Closing a window also scores it against the reference profile in the serving model:
        above `local_drift_threshold` the next window samples at `drift_sample_rate`.
        """
        if self.profiler is None or self.sampler is None or not self.profiler.due(now):
            return []
        from edgeloop.contract.profile import encode_profile
        from edgeloop.edge.profile import local_drift_score

        reference = getattr(self.model, "reference", None)
        if reference:
            window = {c: self.profiler.current_sketch(self.model_version, c) for c in reference}
            self.local_drift = local_drift_score(reference, window)
            self.sampler.drifting = self.local_drift > self.telemetry.local_drift_threshold
        profiles = self.profiler.close(now, device_id=self.device_id, group_id=self.group_id, pipeline=self.pipeline)
        self.counters.profiles += len(profiles)
        now_ms = int(now * 1000)
        return [Outgoing("profiles", self.key, encode_profile(p, self.identity), now_ms) for p in profiles]

    def shadow_due(self, now: float) -> list[Outgoing]:
        """The shadow report of the window that ended by `now`, when a challenger runs in shadow (signed)."""
        close = getattr(self.model, "close", None)
        if close is None:
            return []
        report = close(now, device_id=self.device_id, group_id=self.group_id, pipeline=self.pipeline)
        if report is None:
            return []
        self.counters.shadow_reports += 1
        return [Outgoing("shadow", self.key, report.to_wire(self.identity), int(now * 1000))]

    def inference_failed(self, reason: str, now: float) -> Outgoing:
        self.counters.inference_errors += 1
        return self.error_report("inference", f"model version {self.model_version}: inference failed: {reason}", now)

    def _record(
        self,
        record_id: str,
        ts: str,
        reading: Sequence[float],
        prediction: str | None,
        confidence: float | None,
        reason: str,
    ) -> dict[str, Any]:
        values = dict(zip(self.features, (round(float(v), 3) for v in reading), strict=True))
        by_role: dict[str, Any] = {
            "record_id": record_id,
            "device_id": self.device_id,
            "group_id": self.group_id,
            "timestamp": ts,
            "prediction": prediction,
            "confidence": confidence,
            "model_version": self.model_version,
            "config_version": self.config_version,
            "sample_reason": reason,
        }
        return {f.name: values[f.name] if f.role == "feature" else by_role.get(f.role) for f in self.schema}

    # --- reports -----------------------------------------------------------------

    def error_report(
        self, kind: str, message: str, now: float, *, record_id: str | None = None, control_id: str | None = None
    ) -> Outgoing:
        self.counters.errors += 1
        self._errors_since_beat += 1
        report = {
            "device_id": self.device_id,
            "group_id": self.group_id,
            "ts": iso_ms(now + self.clock_offset_s),
            "kind": kind,
            "message": message[:2000],
            "model_version": self.model_version,
            "config_version": self.config_version,
            "record_id": record_id,
            "control_id": control_id,
        }
        return Outgoing("errors", self.key, self._signed(report), int(now * 1000))

    def heartbeat(
        self, now: float, *, cpu_pct: float = 0.0, mem_mb: float = 0.0, temperature_c: float = 0.0
    ) -> Outgoing:
        confidence = self._conf_sum / self._conf_n if self._conf_n else None
        beat = {
            "device_id": self.device_id,
            "group_id": self.group_id,
            "ts": iso_ms(now + self.clock_offset_s),
            "status": "degraded" if self._errors_since_beat else "online",
            "cpu_pct": round(cpu_pct, 1),
            "mem_mb": round(mem_mb, 1),
            "temperature_c": round(temperature_c, 1),
            "model_version": self.model_version,
            "config_version": self.config_version,
            "assignment_id": self.twin.reported_assignment,
            "assignment_status": self.twin.status,
            "uptime_s": round(now - self.started_at, 1),
            "records": self.counters.records,
            "errors": self.counters.errors,
            "dropped": self.dropped,
            "confidence_mean": None if confidence is None else round(confidence, 4),
            "interval_s": self.config["heartbeat_interval_s"],
        }
        self._errors_since_beat = 0
        self._conf_sum, self._conf_n = 0.0, 0
        return Outgoing("health", self.key, self._signed(beat), int(now * 1000))

    def state_update(self, now: float) -> Outgoing:
        """The device-state (twin) record: desired as last ordered, reported as running."""
        twin = self.twin
        state = DeviceState(
            device_id=self.device_id,
            group_id=self.group_id,
            desired={
                "model_version": twin.desired_model or self.model_version,
                "config_version": twin.desired_config_version,
                "assignment_id": twin.desired_assignment,
                "updated_at": twin.desired_at,
            },
            reported={
                "model_version": self.model_version,
                "config_version": self.config_version,
                "assignment_id": twin.reported_assignment,
                "status": twin.status,
                "reason": twin.reason,
                "sequence": twin.sequence,
                "updated_at": twin.reported_at or iso_ms(now),
            },
            updated_at=iso_ms(now),
        )
        return Outgoing("device-state", self.key, self._signed(state.to_dict()), int(now * 1000))

    def _signed(self, body: dict[str, Any]) -> bytes:
        """A report as JSON, signed with the device's key when it has one (see edgeloop.contract.identity)."""
        return json.dumps(body).encode() if self.identity is None else signed_json(body, self.identity)


def serving_model(model: ServingModel | None) -> ServingModel | None:
    """The model that answers: the champion of a shadow evaluation, else the model itself."""
    return getattr(model, "champion", model)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
