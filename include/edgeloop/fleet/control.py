"""Control plane helpers: publish assignments, read the device twin, check what is applied.

`push_assignment` publishes one signed assignment on `<prefix>.control` (key = the
target, e.g. `group:plant-north`). Each device that reads it (at once when online,
on reconnect otherwise) records it as its desired state in `<prefix>.device-state`,
applies it, and reports the applied versions there and in its heartbeats. `apply_progress` reads device-state and
says how many devices of the target report the assignment's versions; the config
push DAG and the rollout gate poll it (in a deferrable wait, not a sleeping worker).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.contract.identity import DeviceRegistry, claimed_group_outside
from edgeloop.contract.keys import Keyring, Signer
from edgeloop.contract.messages import (
    Assignment,
    BadDeviceState,
    DeviceState,
    RefusedReport,
    Target,
    new_assignment,
    parse_device_state,
)
from edgeloop.fleet.topics import (
    CompactedFollower,
    NewRecords,
    TopicMissing,
    TopicRecord,
    TopicTail,
    records_by_key,
)
from edgeloop.kafka import publish_messages
from edgeloop.spec import PipelineSpec


def push_assignment(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    signer: Signer,
    *,
    group: str | None = None,
    device: str | None = None,
    model_version: str | None = None,
    config: Mapping[str, Any] | None = None,
    config_version: str | None = None,
    issuer: str = "edgeloop",
    assignment_id: str | None = None,
    artifact: ArtifactRef | None = None,
) -> Assignment:
    """Publish a signed assignment to one group, one device, or (neither given) all devices.

    Re-publishing with the same `assignment_id` is harmless: devices apply an id once.
    Raise ValueError naming a bad argument, PublishError if Kafka does not acknowledge.
    """
    if group is not None and device is not None:
        raise ValueError("give a group or a device, not both")
    if group is not None and group not in {g.name for g in spec.groups}:
        raise ValueError(f"group: {group!r} is not a group of {spec.name}")
    target = Target("group", group) if group else Target("device", device) if device else Target("all")
    assignment = new_assignment(
        target,
        model_version=model_version,
        config=config,
        config_version=config_version,
        issuer=issuer,
        assignment_id=assignment_id,
        artifact=artifact,
        pipeline=spec.name,
    )
    publish_assignment(spec, kafka_config, signer, assignment)
    return assignment


def publish_assignment(
    spec: PipelineSpec, kafka_config: Mapping[str, Any], signer: Signer, assignment: Assignment
) -> None:
    """Publish an already built assignment, signed with `signer`."""
    publish_assignments(spec, kafka_config, signer, [assignment])


def publish_assignments(
    spec: PipelineSpec, kafka_config: Mapping[str, Any], signer: Signer, assignments: Iterable[Assignment]
) -> None:
    """Publish already built assignments, each signed with `signer` and keyed by its target, in one produce call."""
    messages = [(a.target.key.encode(), a.to_wire(signer)) for a in assignments]
    publish_messages(kafka_config, spec.topic("control"), messages)


def publish_raw_control(spec: PipelineSpec, kafka_config: Mapping[str, Any], values: Iterable[bytes | None]) -> None:
    """Publish raw control messages as they are (for tests and fault drills of the control plane)."""
    publish_messages(kafka_config, spec.topic("control"), [(b"raw", v) for v in values])


@dataclass
class DeviceStates:
    """The device-state topic read to its end: latest record per device, and what was unreadable."""

    devices: dict[str, DeviceState] = field(default_factory=dict)
    bad_records: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)  # records not signed by their enrolled device, by reason

    def in_group(self, group: str) -> list[DeviceState]:
        return [s for s in self.devices.values() if s.group_id == group]


def read_device_states(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    *,
    timeout: float = 60.0,
    registry: DeviceRegistry | None = None,
) -> DeviceStates:
    """Every device's latest desired and reported state (tombstones remove a device).

    With a `registry`, only records signed by their enrolled device count: per device the
    newest such record, so a forged record neither counts nor hides the real one; the
    others are counted in `refused` by reason.
    """
    try:
        history = records_by_key(kafka_config, spec.topic("device-state"), timeout=timeout)
    except TopicMissing:
        return DeviceStates()
    states = DeviceStates()
    for key, records in history.items():
        state, bad, refused = state_of(key, records, registry)
        states.bad_records.extend(bad)
        states.refused.update(refused)
        if state is not None:
            states.devices[state.device_id] = state
    return states


def state_of(
    key: bytes, records: list[tuple[int, bytes | None]], registry: DeviceRegistry | None
) -> tuple[DeviceState | None, list[str], Counter[str]]:
    """A device's state from its device-state records, oldest first: the newest one accepted (None after a
    tombstone or with none accepted); and the records passed over on the way: unreadable, refused by reason."""
    bad: list[str] = []
    refused: Counter[str] = Counter()
    for offset, value in reversed(records):
        if value is None:
            return None, bad, refused
        try:
            return parse_device_state(key, value, registry), bad, refused
        except BadDeviceState as exc:
            bad.append(f"{exc} (offset {offset})")
        except RefusedReport as exc:
            refused[exc.reason] += 1
    return None, bad, refused


class FleetView:
    """What a pipeline's fleet says, read once and then followed: the device registry, device-state,
    heartbeats and error reports.

    Each `refresh` reads only what was published since the last one and re-checks only the devices
    it touched (a device whose enrolment changed is re-checked in device-state too), so a rollout job
    or gate that polls a large fleet every second verifies each record once, not once a poll. What
    it returns is what `read_registry` and `read_device_states` would return at that moment;
    `feedback` is what reading the heartbeats and error reports from those moments on would return.

    With `groups`, the view holds the enrolments and device-state of the devices enrolled in those
    groups only: a device none of whose registry records claims one of them is passed over
    unverified (`contract.identity.claimed_group_outside`), so a rollout job or gate of a few
    groups of a large fleet verifies its own devices. A report of such a device that names one of
    the view's groups is refused as `wrong_group` (`DeviceRegistry.elsewhere`); its forged
    registry records are counted by a view of the whole fleet (fleet health), not by this one.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        kafka_config: Mapping[str, Any],
        trusted: Keyring,
        groups: Collection[str] | None = None,
    ) -> None:
        self.spec = spec
        self.trusted = trusted
        self.groups = frozenset(groups) if groups is not None else None
        self._enrolments = CompactedFollower(kafka_config, spec.topic("devices"))
        self._states = CompactedFollower(kafka_config, spec.topic("device-state"))
        self._registry_bad: dict[bytes, list[str]] = {}
        self._state_bad: dict[bytes, tuple[list[str], Counter[str]]] = {}
        self.registry = DeviceRegistry()
        self._devices: dict[str, DeviceState] = {}
        self._heartbeats = TopicTail(kafka_config, spec.topic("health"))
        self._errors = TopicTail(kafka_config, spec.topic("errors"))
        self._new_errors = NewRecords(kafka_config, spec.topic("errors"))

    def feedback(
        self, heartbeats_since_ms: int, errors_since_ms: int, *, timeout: float = 60.0
    ) -> tuple[list[TopicRecord], list[TopicRecord]]:
        """The heartbeats and the error reports published from those moments on (none for a missing topic)."""
        out = []
        for tail, since_ms in ((self._heartbeats, heartbeats_since_ms), (self._errors, errors_since_ms)):
            try:
                out.append(tail.read(since_ms, timeout=timeout))
            except TopicMissing:
                out.append([])
        return out[0], out[1]

    def error_reports(self, since_ms: int, *, timeout: float = 60.0) -> list[TopicRecord]:
        """The error reports published from `since_ms` on (none for a missing topic), without the heartbeats."""
        try:
            return self._errors.read(since_ms, timeout=timeout)
        except TopicMissing:
            return []

    def mark_error_reports(self, *, timeout: float = 60.0) -> None:
        """From now on `new_error_reports` returns the error reports published after this moment."""
        self._new_errors.start(timeout=timeout)

    def new_error_reports(self, *, timeout: float = 60.0) -> list[TopicRecord]:
        """The error reports published since the last call, or since `mark_error_reports` (none for a missing
        topic). Broker order, not device clocks: a report sent after the mark is read whatever its timestamp."""
        try:
            return self._new_errors.read(timeout=timeout)
        except TopicMissing:
            return []

    def refresh(self, *, timeout: float = 60.0) -> tuple[DeviceRegistry, DeviceStates]:
        from edgeloop.fleet.registry import enrolment_of

        enrolled = _changed_keys(self._enrolments, timeout)
        for key in enrolled:
            history = self._enrolments.history[key]
            device = key.decode("utf-8", "replace")
            elsewhere = None if self.groups is None else claimed_group_outside((v for _, v in history), self.groups)
            if elsewhere is not None:  # enrolled in none of the view's groups: not verified
                self.registry.devices.pop(device, None)
                self.registry.elsewhere[device] = elsewhere
                self._registry_bad.pop(key, None)
                continue
            self.registry.elsewhere.pop(device, None)
            enrolment, bad = enrolment_of(self.spec, self.trusted, key, history)
            _keep_if(self._registry_bad, key, bad)
            if enrolment is None:
                self.registry.devices.pop(device, None)
            else:
                self.registry.devices[enrolment.device_id] = enrolment
        self.registry.bad_records = [line for bad in self._registry_bad.values() for line in bad]
        for key in _changed_keys(self._states, timeout) | (enrolled & self._states.history.keys()):
            device = key.decode("utf-8", "replace")
            enrolled_as = self.registry.devices.get(device)
            state = None
            if self.groups is None or (enrolled_as is not None and enrolled_as.group_id in self.groups):
                state, bad, refused = state_of(key, self._states.history[key], self.registry)
                _keep_if(self._state_bad, key, (bad, refused) if bad or refused else None)
            else:
                self._state_bad.pop(key, None)
            if state is None:
                self._devices.pop(device, None)
            else:
                self._devices[state.device_id] = state
        states = DeviceStates(dict(self._devices))
        for bad, refused in self._state_bad.values():
            states.bad_records.extend(bad)
            states.refused.update(refused)
        return self.registry, states


def _keep_if(table: dict[bytes, Any], key: bytes, value: Any) -> None:
    """`table[key] = value`, or no entry for an empty value (a poll then walks only the keys with something)."""
    if value:
        table[key] = value
    else:
        table.pop(key, None)


def _changed_keys(follower: CompactedFollower, timeout: float) -> set[bytes]:
    try:
        return follower.refresh(timeout=timeout)
    except TopicMissing:
        return set()


def forget_devices(spec: PipelineSpec, kafka_config: Mapping[str, Any], device_ids: Iterable[str]) -> None:
    """Decommission devices: tombstones in device-state, so status and health stop counting them."""
    publish_messages(kafka_config, spec.topic("device-state"), [(d.encode(), None) for d in device_ids])


@dataclass
class ApplyProgress:
    """How far one assignment got on the devices it addresses."""

    assignment_id: str
    target: str
    devices: int
    applied: list[str]
    failed: dict[str, str]
    pending: list[str]

    @property
    def applied_ratio(self) -> float:
        return len(self.applied) / self.devices if self.devices else 0.0

    @property
    def complete(self) -> bool:
        return self.devices > 0 and not self.pending and not self.failed

    def to_dict(self, max_ids: int = 50) -> dict[str, Any]:
        out = asdict(self)
        out["applied"] = len(self.applied)
        out["failed"] = dict(list(self.failed.items())[:max_ids])
        out["failed_count"] = len(self.failed)
        out["pending"] = self.pending[:max_ids]
        out["pending_count"] = len(self.pending)
        out["applied_ratio"] = round(self.applied_ratio, 4)
        return out


def assignment_progress(assignment: Assignment, states: DeviceStates) -> ApplyProgress:
    """Which addressed devices report the assignment's versions, failed it, or have not yet (pure)."""
    applied: list[str] = []
    failed: dict[str, str] = {}
    pending: list[str] = []
    for state in sorted(states.devices.values(), key=lambda s: s.device_id):
        if not assignment.target.matches(state.device_id, state.group_id):
            continue
        reported = state.reported
        model_ok = assignment.model_version is None or reported.get("model_version") == assignment.model_version
        config_ok = assignment.config_version is None or reported.get("config_version") == assignment.config_version
        if model_ok and config_ok:
            applied.append(state.device_id)
        elif reported.get("assignment_id") == assignment.id and reported.get("status") == "failed":
            failed[state.device_id] = str(reported.get("reason") or "failed")
        else:
            pending.append(state.device_id)
    total = len(applied) + len(failed) + len(pending)
    return ApplyProgress(assignment.id, assignment.target.key, total, applied, failed, pending)


def apply_progress(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    assignment: Assignment,
    trusted: Keyring,
    *,
    timeout: float = 60.0,
    view: FleetView | None = None,
) -> ApplyProgress:
    """Read the registry and device-state; report how many addressed, enrolled devices applied `assignment`.

    A caller that polls passes the same `view` each time: then each poll reads only what is new.
    """
    _, states = (view or FleetView(spec, kafka_config, trusted)).refresh(timeout=timeout)
    return assignment_progress(assignment, states)


def assignment_from_dict(data: Mapping[str, Any]) -> Assignment:
    """Rebuild an Assignment from `Assignment.to_dict()` (e.g. passed through XCom)."""
    target = data["target"]
    return Assignment(
        id=data["id"],
        target=Target(target["kind"], target.get("id")),
        issued_at=data["issued_at"],
        issuer=data["issuer"],
        pipeline=data["pipeline"],
        sequence=int(data["sequence"]),
        expires_at=data["expires_at"],
        model_version=data.get("model_version"),
        config=data.get("config"),
        config_version=data.get("config_version"),
        artifact=ArtifactRef.from_dict(data["artifact"]) if data.get("artifact") else None,
    )
