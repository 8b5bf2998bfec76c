"""Fleet status and fleet health: per-group tables from device-state, heartbeats and error reports.

Definitions (all per group, at time `now`):

- devices: devices registered in device-state (tombstoned devices are gone).
- online / offline / stale: by the Kafka timestamp of a device's last heartbeat:
  online if within 3 heartbeat intervals, stale if older than `stale_after` (or
  not seen in the lookback of 2 x stale_after), offline in between.
- error rate: from the heartbeat counters (`records`, `errors`, cumulative since the
  device started) over the window: sum of error increases / (records + errors
  increases); counter resets (restarts) are handled like Prometheus counters.
- version skew: share of online devices whose reported model or config version
  differs from the desired one although the assignment is older than `skew_grace_s`.
- newly stale devices: devices whose last heartbeat is older than `stale_after`
  but still inside the lookback: they went silent recently and stayed silent.
- unknown devices: ids in heartbeats or error reports that device-state does not
  know (or with a group the spec does not have); counted, a sample listed.
- refused reports: heartbeats, error reports and device-state records that are not
  signed by their device as enrolled in the device registry (`unsigned`,
  `unknown_device`, `bad_signature`, `wrong_group`), or are unreadable or hold a
  value out of range (`bad_value`). They count for nothing above; they are counted by reason.
  A status reads of each device only the heartbeats it needs (every one in the window, then
  older ones down to the device's last usable one): refusals are counted among those.

A group is unhealthy when offline ratio > max_offline_ratio, error rate >
max_error_rate (with at least 20 inferences in the window), version skew >
max_version_skew, or it has newly stale devices. Each unhealthy group gets one
alert (kind "device", see edgeloop.events) naming every failed check.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from edgeloop.contract.identity import DeviceRegistry
from edgeloop.contract.keys import Keyring
from edgeloop.contract.messages import (
    MAX_DEVICE_MESSAGE_BYTES,
    DeviceState,
    RefusedReport,
    ReportChecker,
    device_message,
    iso_ms,
    parse_iso,
    require_signed,
)
from edgeloop.contract.safejson import JsonRefused, loads_object
from edgeloop.fleet.control import DeviceStates, FleetView, read_device_states
from edgeloop.fleet.registry import read_registry
from edgeloop.fleet.topics import TopicMissing, TopicRecord, read_topic
from edgeloop.spec import PipelineSpec

log = logging.getLogger(__name__)

MIN_INFERENCES = 20
ONLINE_INTERVALS = 3.0
REASON_ORDER = ("offline_ratio", "error_rate", "version_skew", "stale_devices")


@dataclass(frozen=True)
class Heartbeat:
    device_id: str
    group_id: str
    seen_ms: int
    interval_s: float
    records: int
    errors: int
    uptime_s: float
    model_version: str | None
    confidence_mean: float | None


class BadFeedback(ValueError):
    """A heartbeat or error report that cannot be read; the message names the field."""


_MAX_COUNTER = 2**53  # counters past this cannot be told apart as floats


def _number(body: dict[str, Any], name: str, where: str, default: float, low: float, high: float) -> float:
    """A finite number in [low, high] (missing or null: `default`); raise BadFeedback naming the field."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadFeedback(f"{where}.{name}: {type(value).__name__} is not a number")
    if not low <= value <= high:  # NaN and infinities never reach here: the decoder refuses them
        raise BadFeedback(f"{where}.{name}: {value!r} is outside [{low:g}, {high:g}]")
    return float(value)


def parse_heartbeat(record: TopicRecord, registry: ReportChecker | None = None) -> Heartbeat:
    """One heartbeat, every field checked by type and range; raise BadFeedback naming the field.

    With a `registry`, raise RefusedReport unless the heartbeat is signed by its enrolled device.
    """
    where = f"health[{record.partition}@{record.offset}]"
    body = device_message(record.value, where, BadFeedback)
    require_signed(registry, body, where)
    model_version = body.get("model_version")
    if model_version is not None and not isinstance(model_version, str):
        raise BadFeedback(f"{where}.model_version: {type(model_version).__name__} is not a string")
    confidence = body.get("confidence_mean")
    return Heartbeat(
        device_id=body["device_id"],
        group_id=body["group_id"],
        seen_ms=record.timestamp_ms,
        interval_s=_number(body, "interval_s", where, 10.0, 0.001, 86_400.0),
        records=int(_number(body, "records", where, 0, 0, _MAX_COUNTER)),
        errors=int(_number(body, "errors", where, 0, 0, _MAX_COUNTER)),
        uptime_s=_number(body, "uptime_s", where, 0.0, 0, 10 * 365 * 86_400.0),
        model_version=model_version,
        confidence_mean=None if confidence is None else _number(body, "confidence_mean", where, 0.0, 0.0, 1.0),
    )


@dataclass
class GroupStatus:
    group: str
    devices: int = 0
    online: int = 0
    offline: int = 0
    stale: int = 0
    desired_models: dict[str, int] = field(default_factory=dict)
    reported_models: dict[str, int] = field(default_factory=dict)
    desired_configs: dict[str, int] = field(default_factory=dict)
    reported_configs: dict[str, int] = field(default_factory=dict)
    in_sync: int = 0
    skewed: int = 0
    records: int = 0
    errors: int = 0
    error_reports: dict[str, int] = field(default_factory=dict)
    mean_confidence: float | None = None
    last_seen: str | None = None
    newly_stale: list[str] = field(default_factory=list)

    @property
    def offline_ratio(self) -> float:
        return (self.offline + self.stale) / self.devices if self.devices else 0.0

    @property
    def error_rate(self) -> float | None:
        total = self.records + self.errors
        return self.errors / total if total else None

    @property
    def version_skew(self) -> float:
        return self.skewed / self.online if self.online else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["offline_ratio"] = round(self.offline_ratio, 4)
        out["error_rate"] = None if self.error_rate is None else round(self.error_rate, 4)
        out["version_skew"] = round(self.version_skew, 4)
        return out


@dataclass
class FleetStatus:
    pipeline: str
    generated_at: str
    window_s: float
    groups: list[GroupStatus]
    unknown_devices: int = 0
    unknown_device_ids: list[str] = field(default_factory=list)
    bad_feedback: int = 0
    bad_state_records: int = 0
    refused_reports: dict[str, int] = field(default_factory=dict)  # by reason (see the module docstring)

    def group(self, name: str) -> GroupStatus:
        for group in self.groups:
            if group.group == name:
                return group
        raise KeyError(f"group {name!r} is not in the fleet status of {self.pipeline}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "generated_at": self.generated_at,
            "window_s": self.window_s,
            "groups": [g.to_dict() for g in self.groups],
            "unknown_devices": self.unknown_devices,
            "unknown_device_ids": self.unknown_device_ids,
            "bad_feedback": self.bad_feedback,
            "bad_state_records": self.bad_state_records,
            "refused_reports": dict(sorted(self.refused_reports.items())),
        }


def _delta(first: int, last: int) -> int:
    return last if last < first else last - first  # a counter that went down was reset


class _HeartbeatsInUse:
    """The heartbeats a status is read from, per message key newest first: every one in the window, then
    older ones only until the key's own device has a usable one there (its last beat before the window).

    A status needs no more of a device: its last beat (online, offline, stale) and its counters at the
    window's edges. Verifying and parsing only these is what keeps a reading of a large fleet short when
    the lookback holds many heartbeats a device. The caller reports each beat it could use with `used`.
    """

    def __init__(self, records: Iterable[TopicRecord], window_start: int, now_ms: int) -> None:
        by_key: dict[bytes | None, list[TopicRecord]] = {}
        for record in records:
            if record.timestamp_ms <= now_ms:  # a beat from the future is never read
                by_key.setdefault(record.key, []).append(record)
        self._by_key = by_key
        self._window_start = window_start
        self._done: set[bytes] = set()

    def __iter__(self) -> Iterator[TopicRecord]:
        for key, records in self._by_key.items():
            records.sort(key=lambda r: r.timestamp_ms, reverse=True)
            for record in records:
                if key is not None and key in self._done:
                    break
                yield record

    def used(self, record: TopicRecord, device_id: str) -> None:
        if record.key is not None and record.timestamp_ms < self._window_start and record.key == device_id.encode():
            self._done.add(record.key)


@dataclass
class _Refusals:
    """What a status could not count: reports of devices it does not know, unreadable ones, refused ones."""

    refusals: Counter[str]
    unknown: set[str] = field(default_factory=set)
    bad_feedback: int = 0


def summarize_fleet(
    spec: PipelineSpec,
    states: DeviceStates,
    heartbeats: Iterable[TopicRecord],
    errors: Iterable[TopicRecord],
    *,
    now_ms: int,
    window_s: float,
    stale_after_s: float,
    skew_grace_s: float = 60.0,
    registry: DeviceRegistry | None = None,
) -> FleetStatus:
    """The per-group fleet status from already read topic records (pure: no Kafka here).

    With a `registry`, only reports signed by their enrolled device count (the others are
    counted in `refused_reports`, with those `states` refused when it was read).
    """
    group_names = [g.name for g in spec.groups]
    window_start = now_ms - int(window_s * 1000)
    left_out = _Refusals(Counter(states.refused))
    beats = _device_beats(heartbeats, states, group_names, registry, window_start, now_ms, left_out)
    error_kinds = _error_kinds(errors, states, group_names, registry, window_start, now_ms, left_out)
    groups = {name: GroupStatus(name) for name in group_names}
    confidences: dict[str, list[float]] = {name: [] for name in group_names}
    last_seen: dict[str, int] = {}
    for state in states.devices.values():
        status = groups.get(state.group_id)
        if status is None:
            continue
        device_beats = sorted(beats.get(state.device_id, []), key=lambda b: b.seen_ms)
        _count_device(status, state, device_beats, now_ms, window_start, stale_after_s, skew_grace_s)
        if device_beats:
            last_seen[state.group_id] = max(last_seen.get(state.group_id, 0), device_beats[-1].seen_ms)
            in_window = [b.confidence_mean for b in device_beats if b.seen_ms >= window_start]
            confidences[state.group_id].extend(c for c in in_window if c is not None)
    for name, status in groups.items():
        status.error_reports = dict(sorted(error_kinds[name].items()))
        values = confidences[name]
        status.mean_confidence = round(math.fsum(values) / len(values), 4) if values else None  # fsum: order-free
        status.last_seen = iso_ms(last_seen[name] / 1000) if name in last_seen else None
        status.newly_stale.sort()
    return FleetStatus(
        pipeline=spec.name,
        generated_at=iso_ms(now_ms / 1000),
        window_s=window_s,
        groups=list(groups.values()),
        unknown_devices=len(left_out.unknown),
        unknown_device_ids=sorted(left_out.unknown)[:20],
        bad_feedback=left_out.bad_feedback,
        bad_state_records=len(states.bad_records),
        refused_reports=dict(left_out.refusals),
    )


def _device_beats(
    heartbeats: Iterable[TopicRecord],
    states: DeviceStates,
    group_names: list[str],
    registry: DeviceRegistry | None,
    window_start: int,
    now_ms: int,
    left_out: _Refusals,
) -> dict[str, list[Heartbeat]]:
    """Each known device's usable heartbeats (those a status needs, see _HeartbeatsInUse)."""
    beats: dict[str, list[Heartbeat]] = {}
    in_use = _HeartbeatsInUse(heartbeats, window_start, now_ms)
    for record in in_use:
        try:
            beat = parse_heartbeat(record, registry)
        except RefusedReport as exc:
            left_out.refusals[exc.reason] += 1
            continue
        except BadFeedback as exc:
            left_out.bad_feedback += 1
            if registry is not None:
                left_out.refusals["bad_value"] += 1
            log.debug("%s", exc)
            continue
        in_use.used(record, beat.device_id)
        known = states.devices.get(beat.device_id)
        if known is None or beat.group_id not in group_names:
            left_out.unknown.add(beat.device_id)
            continue
        beats.setdefault(beat.device_id, []).append(beat)
    return beats


def _error_kinds(
    errors: Iterable[TopicRecord],
    states: DeviceStates,
    group_names: list[str],
    registry: DeviceRegistry | None,
    window_start: int,
    now_ms: int,
    left_out: _Refusals,
) -> dict[str, Counter[str]]:
    """Per group, the error reports of the window by kind."""
    kinds: dict[str, Counter[str]] = {g: Counter() for g in group_names}
    for record in errors:
        if not window_start <= record.timestamp_ms <= now_ms:
            continue
        try:
            body = loads_object(record.value, max_bytes=MAX_DEVICE_MESSAGE_BYTES)
        except JsonRefused:
            left_out.bad_feedback += 1
            continue
        if not isinstance(body.get("device_id"), str):
            left_out.bad_feedback += 1
            continue
        refused = registry.check(body) if registry is not None else None
        if refused is not None:
            left_out.refusals[refused] += 1
            continue
        state = states.devices.get(body["device_id"])
        if state is None or state.group_id not in kinds:
            left_out.unknown.add(body["device_id"])
            continue
        kinds[state.group_id][str(body.get("kind"))] += 1
    return kinds


def _count_device(
    status: GroupStatus,
    state: DeviceState,
    device_beats: list[Heartbeat],
    now_ms: int,
    window_start: int,
    stale_after_s: float,
    skew_grace_s: float,
) -> None:
    """Add one device to its group's status: versions, online / offline / stale, skew, window counters."""
    status.devices += 1
    for table, value in (
        (status.desired_models, state.desired.get("model_version")),
        (status.reported_models, state.reported.get("model_version")),
        (status.desired_configs, state.desired.get("config_version")),
        (status.reported_configs, state.reported.get("config_version")),
    ):
        if value is not None:
            table[str(value)] = table.get(str(value), 0) + 1
    status.in_sync += int(state.in_sync)
    if not device_beats:
        status.stale += 1
        return
    last = device_beats[-1]
    age_s = (now_ms - last.seen_ms) / 1000
    if age_s > stale_after_s:
        status.stale += 1
        status.newly_stale.append(state.device_id)
    elif age_s > ONLINE_INTERVALS * last.interval_s:
        status.offline += 1
    else:
        status.online += 1
        if not state.in_sync and _assigned_before(state, now_ms, skew_grace_s):
            status.skewed += 1
    in_window = [b for b in device_beats if b.seen_ms >= window_start]
    if not in_window:
        return
    before = [b for b in device_beats if b.seen_ms < window_start]
    final = in_window[-1]
    if before:
        first_records, first_errors = before[-1].records, before[-1].errors
    elif final.uptime_s * 1000 <= final.seen_ms - window_start + 1000:
        first_records, first_errors = 0, 0  # started inside the window: count from zero
    else:
        first_records, first_errors = in_window[0].records, in_window[0].errors
    status.records += _delta(first_records, final.records)
    status.errors += _delta(first_errors, final.errors)


def _assigned_before(state: DeviceState, now_ms: int, skew_grace_s: float) -> bool:
    """Whether the device's desired state is older than the grace period (or its age unknown)."""
    desired_at = state.desired.get("updated_at")
    if not isinstance(desired_at, str):
        return True
    try:
        return now_ms / 1000 - parse_iso(desired_at) > skew_grace_s
    except ValueError:
        return True


def fleet_status(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    trusted: Keyring,
    *,
    now: float | None = None,
    window_s: float | None = None,
    stale_after_s: float | None = None,
    skew_grace_s: float = 60.0,
    timeout: float = 120.0,
    states: DeviceStates | None = None,
    lookback_s: float | None = None,
    groups: Collection[str] | None = None,
    registry: DeviceRegistry | None = None,
    view: FleetView | None = None,
) -> FleetStatus:
    """Read the device registry, device-state, heartbeats and error reports from Kafka; return the per-group
    status, counting only reports signed by their enrolled devices (enrolments signed by a `trusted` key).

    Defaults come from `spec.fleet_health` (window = stale_after); heartbeats are read
    back 2 x stale_after (`lookback_s`) so that newly stale devices are seen. A caller that
    has just read the registry and device-state passes them as `registry` and `states`; one that reads
    again and again passes the same `view` instead, and each reading then reads only what is new. With
    `groups`, only those groups are summarised (the others show no device): the feedback of
    other devices is skipped before it is parsed, which is most of the work on a large fleet.
    """
    stale_after = stale_after_s if stale_after_s is not None else spec.fleet_health.stale_after.total_seconds()
    window = window_s if window_s is not None else stale_after
    now_ms = int((now if now is not None else time.time()) * 1000)
    lookback = lookback_s if lookback_s is not None else 2 * stale_after
    lookback_ms = now_ms - int(max(window, lookback) * 1000)
    errors_since_ms = now_ms - int(window * 1000)
    if view is not None and (registry is None or states is None):
        registry, states = view.refresh(timeout=timeout)
    if registry is None:
        registry = read_registry(spec, kafka_config, trusted, timeout=timeout)
    if states is None:
        states = read_device_states(spec, kafka_config, timeout=timeout, registry=registry)
    keys = None
    if groups is not None:
        wanted = set(groups)
        states = DeviceStates(
            {d: s for d, s in states.devices.items() if s.group_id in wanted}, list(states.bad_records), states.refused
        )
        keys = {device.encode() for device in states.devices}
    if view is not None:
        heartbeats, errors = view.feedback(lookback_ms, errors_since_ms, timeout=timeout)
    else:
        heartbeats = _read_or_empty(kafka_config, spec.topic("health"), lookback_ms, timeout)
        errors = _read_or_empty(kafka_config, spec.topic("errors"), errors_since_ms, timeout)
    if keys is not None:
        heartbeats = [r for r in heartbeats if r.key in keys]
        errors = [r for r in errors if r.key in keys]
    return summarize_fleet(
        spec,
        states,
        heartbeats,
        errors,
        now_ms=now_ms,
        window_s=window,
        stale_after_s=stale_after,
        skew_grace_s=skew_grace_s,
        registry=registry,
    )


def _read_or_empty(kafka_config: Mapping[str, Any], topic: str, since_ms: int, timeout: float) -> list[TopicRecord]:
    """The topic's records since `since_ms` (none if the topic does not exist)."""
    try:
        return list(read_topic(kafka_config, topic, since_ms=since_ms, timeout=timeout))
    except TopicMissing:
        return []


# --- health decisions and alerts -------------------------------------------------------------


@dataclass(frozen=True)
class HealthCheck:
    name: str
    value: float
    threshold: float
    ok: bool


def group_checks(spec: PipelineSpec, status: GroupStatus) -> list[HealthCheck]:
    """The fleet-health checks of one group against `spec.fleet_health` (pure)."""
    limits = spec.fleet_health
    if status.devices == 0:
        return []
    checks = [
        HealthCheck(
            "offline_ratio",
            status.offline_ratio,
            limits.max_offline_ratio,
            status.offline_ratio <= limits.max_offline_ratio,
        ),
        HealthCheck(
            "version_skew", status.version_skew, limits.max_version_skew, status.version_skew <= limits.max_version_skew
        ),
        HealthCheck("stale_devices", float(len(status.newly_stale)), 0.0, not status.newly_stale),
    ]
    rate = status.error_rate
    if rate is not None and status.records + status.errors >= MIN_INFERENCES:
        checks.append(HealthCheck("error_rate", rate, limits.max_error_rate, rate <= limits.max_error_rate))
    return sorted(checks, key=lambda c: REASON_ORDER.index(c.name))


def device_alerts(spec: PipelineSpec, status: FleetStatus) -> list[dict[str, Any]]:
    """One `device` alert per unhealthy group, in the format of edgeloop.events (pure)."""
    alerts = []
    for group in status.groups:
        failed = [c for c in group_checks(spec, group) if not c.ok]
        if not failed:
            continue
        summary = "; ".join(f"{c.name} {c.value:.4g} > {c.threshold:.4g}" for c in failed)
        alerts.append(
            {
                "kind": "device",
                "pipeline": spec.name,
                "id": f"device:{spec.name}:{group.group}:{status.generated_at}",
                "at": status.generated_at,
                "group": group.group,
                "reason": failed[0].name,
                "reasons": [c.name for c in failed],
                "summary": f"group {group.group}: {summary}",
                "readings": {
                    "devices": group.devices,
                    "online": group.online,
                    "offline": group.offline,
                    "stale": group.stale,
                    "offline_ratio": round(group.offline_ratio, 4),
                    "error_rate": None if group.error_rate is None else round(group.error_rate, 4),
                    "records": group.records,
                    "errors": group.errors,
                    "error_reports": group.error_reports,
                    "version_skew": round(group.version_skew, 4),
                    "reported_models": group.reported_models,
                    "desired_models": group.desired_models,
                    "newly_stale": group.newly_stale[:20],
                    "mean_confidence": group.mean_confidence,
                },
                "thresholds": {
                    "max_offline_ratio": spec.fleet_health.max_offline_ratio,
                    "max_error_rate": spec.fleet_health.max_error_rate,
                    "max_version_skew": spec.fleet_health.max_version_skew,
                    "stale_after_s": spec.fleet_health.stale_after.total_seconds(),
                },
                "window_s": status.window_s,
            }
        )
    return alerts


def health_report_key(spec: PipelineSpec, generated_at: str) -> str:
    """Object key of a fleet-health report: one per evaluation time, so a re-run overwrites it."""
    moment = datetime.fromtimestamp(parse_iso(generated_at), UTC)
    return f"{spec.storage_prefix('reports')}/fleet/dt={moment:%Y-%m-%d}/fleet-health-{moment:%H%M%S}.json"


def write_health_report(
    s3_client: Any, spec: PipelineSpec, status: FleetStatus, alerts: Sequence[Mapping[str, Any]]
) -> str:
    """Write the status and alerts as JSON to object storage; return the key."""
    key = health_report_key(spec, status.generated_at)
    body = json.dumps({"status": status.to_dict(), "alerts": list(alerts)}, indent=2, sort_keys=True).encode()
    s3_client.put_object(Bucket=spec.storage.bucket, Key=key, Body=body, ContentType="application/json")
    return key


def run_fleet_health(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    trusted: Keyring,
    *,
    s3_client: Any | None = None,
    now: float | None = None,
    publish: bool = True,
) -> dict[str, Any]:
    """The fleet-health task: status, alerts published, report written; a small summary dict."""
    status = fleet_status(spec, kafka_config, trusted, now=now)
    alerts = device_alerts(spec, status)
    from edgeloop.events import publish_alerts

    published = publish_alerts(kafka_config, spec, alerts) if publish else 0
    key = write_health_report(s3_client, spec, status, alerts) if s3_client is not None else None
    return {
        "pipeline": spec.name,
        "generated_at": status.generated_at,
        "groups": {
            g.group: {"devices": g.devices, "online": g.online, "error_rate": g.error_rate} for g in status.groups
        },
        "alerts": [{"group": a["group"], "reasons": a["reasons"]} for a in alerts],
        "published": published,
        "unknown_devices": status.unknown_devices,
        "refused_reports": status.refused_reports,
        "report_key": key,
    }


# --- rendering -------------------------------------------------------------------------------


def _versions(table: Mapping[str, int]) -> str:
    if not table:
        return "-"
    return ",".join(f"{v}x{n}" for v, n in sorted(table.items(), key=lambda item: (-item[1], item[0])))


def render_status_text(status: FleetStatus) -> str:
    """A fixed-width table, one row per group, for `edgeloop fleet status`."""
    header = (
        f"{'group':<16} {'devices':>7} {'online':>6} {'offline':>7} {'stale':>5}  "
        f"{'model desired -> reported':<30} {'in sync':>9} {'err rate':>8} {'conf':>5}  last seen"
    )
    lines = [f"fleet {status.pipeline} at {status.generated_at} (window {status.window_s:.0f}s)", header]
    for g in status.groups:
        models = f"{_versions(g.desired_models)} -> {_versions(g.reported_models)}"
        rate = "-" if g.error_rate is None else f"{g.error_rate:.2%}"
        conf = "-" if g.mean_confidence is None else f"{g.mean_confidence:.2f}"
        lines.append(
            f"{g.group:<16} {g.devices:>7} {g.online:>6} {g.offline:>7} {g.stale:>5}  {models:<30} "
            f"{f'{g.in_sync}/{g.devices}':>9} {rate:>8} {conf:>5}  {g.last_seen or '-'}"
        )
    if status.unknown_devices or status.bad_feedback or status.bad_state_records or status.refused_reports:
        lines.append(
            f"unknown devices in feedback: {status.unknown_devices} {status.unknown_device_ids[:5]}; "
            f"unreadable feedback: {status.bad_feedback}; unreadable device-state records: {status.bad_state_records}"
            f"; refused reports: {dict(sorted(status.refused_reports.items())) or 0}"
        )
    return "\n".join(lines)


def render_status_json(status: FleetStatus) -> str:
    return json.dumps(status.to_dict(), indent=2, sort_keys=True)


def record_fleet_metrics(batch: Any, status: FleetStatus) -> None:
    """Per-group fleet gauges come from the exporter; the DAG records that it ran (`batch`: a BatchMetrics)."""
    batch.mark_success("fleet_health")
