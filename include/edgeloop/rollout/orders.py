"""A kafka wave's device orders: which devices get one, when, and what became of each.

A wave orders devices one by one (device-targeted signed orders on the `control` topic) when the
spec's rollout policy asks for it: a share of a group (`rollout.waves[].share`, the devices
`policy.select_share` picks from the group's members in device-state) or a rate
(`rollout.rate`, batches at the seconds `policy.pacing_schedule` gives). A wave of a whole group
then also orders the group itself, so that a device that joins it or comes back later reads the
group's desired model from the group's order (the device twin). Without either, the group is
ordered at once, as before.

Each device's order is classified with `policy.classify_execution` (`order_outcome` reads what
the device said: applied, `failed` with its twin's reason, or `rejected` when it refused the order,
by a signed `bad_control` error report naming the order or a `rejected`/`refused` status; an order
it neither applied nor answered within `rollout.device_timeout` is `timed_out`, for good), tallied,
and checked against the abort criteria (`rollout.abort`) before each batch and at each poll: an
abort stops the wave before its next batch. Every paced batch and the abort decision come back
with their numbers, for the rollout's audit parts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from edgeloop.rollout.policy import (
    DeviceExecution,
    ExecutionTally,
    classify_execution,
    evaluate_abort,
    pacing_schedule,
    policy_waves,
    select_share,
    tally_executions,
)
from edgeloop.spec import PipelineSpec

if TYPE_CHECKING:
    from edgeloop.contract.artifact import ArtifactRef
    from edgeloop.contract.identity import DeviceRegistry
    from edgeloop.contract.keys import Signer
    from edgeloop.contract.messages import DeviceState
    from edgeloop.fleet.control import DeviceStates, FleetView
    from edgeloop.fleet.topics import TopicRecord

REFUSED_STATUSES = ("rejected", "refused")  # a reported status that says the device refused the order
_REFUSAL_KIND = b'"bad_control"'  # how a device core writes the kind of a refused order's report (json.dumps)


def wave_share(spec: PipelineSpec, wave: int, group: str) -> float | None:
    """The share of `group` that wave number `wave` of the policy reaches (None: all of it, and for a rollback)."""
    if wave < 0 or not spec.rollout.waves:
        return None
    waves = policy_waves(spec)
    if wave >= len(waves) or group not in waves[wave].groups:
        return None
    share = waves[wave].share
    return None if share is None or share >= 1 else share


def ordered_one_by_one(spec: PipelineSpec, share: float | None, paced: bool = True) -> bool:
    """Whether a wave orders its devices by device (a share, or a rate when `paced`) rather than its group at once."""
    return share is not None or (paced and spec.rollout.rate is not None)


def device_order_id(assignment_id: str, device_id: str) -> str:
    """The id of one device's order in a wave: the same on a re-run, so a device applies it once."""
    return f"{assignment_id}.{device_id}"


def order_ids_of(assignment_id: str, device_id: str) -> set[str]:
    """The ids a device's order in a wave may have: the group's order, or its own."""
    return {assignment_id, device_order_id(assignment_id, device_id)}


def order_outcome(
    state: DeviceState | None, model_version: str, order_ids: set[str], refusal: str | None = None
) -> tuple[str | None, str | None]:
    """What a device says about its order, and why: ("applied", None), ("failed", its twin's reason) when
    it took the order but could not apply it, ("rejected", the reason) when it refused the order (a
    `refusal` from its error reports, or a `rejected`/`refused` status in its twin), or (None, None)."""
    reported = state.reported if state is not None else {}
    if reported.get("model_version") == model_version:
        return "applied", None
    status = reported.get("status")
    ours = reported.get("assignment_id") in order_ids
    if ours and status == "failed":
        return "failed", str(reported.get("reason") or "") or None
    if ours and status in REFUSED_STATUSES:
        return "rejected", str(reported.get("reason") or "") or None
    if refusal is not None:
        return "rejected", refusal
    return None, None


def refused_orders(
    records: Iterable[TopicRecord], registry: DeviceRegistry, order_ids: Callable[[str], set[str]]
) -> dict[str, str]:
    """Devices that refused their order, with the reason: a `bad_control` error report signed by the device
    whose `control_id` is one of `order_ids(device)` (an unsigned or foreign report counts for nothing)."""
    from edgeloop.contract.messages import MAX_DEVICE_MESSAGE_BYTES
    from edgeloop.contract.safejson import JsonRefused, loads_object

    refused: dict[str, str] = {}
    for record in records:
        # Most error reports are a model's errors, 100,000s of them after a crashing model: only a report that
        # spells its kind plainly is parsed (a device that escapes it counts as silent, and times out).
        if record.value is None or _REFUSAL_KIND not in record.value:
            continue
        try:
            body = loads_object(record.value, max_bytes=MAX_DEVICE_MESSAGE_BYTES)
        except JsonRefused:
            continue
        device = body.get("device_id")
        if body.get("kind") != "bad_control" or not isinstance(device, str) or registry.check(body) is not None:
            continue
        if body.get("control_id") in order_ids(device):
            refused.setdefault(device, str(body.get("message") or "refused")[:300])
    return refused


@dataclass
class WaveExecutions:
    """The wave's orders so far: when each device was ordered, and the devices that reached an end state."""

    model_version: str
    assignment_id: str
    timeout: timedelta | None
    ordered_at: dict[str, float] = field(default_factory=dict)
    ended: dict[str, DeviceExecution] = field(default_factory=dict)
    group: str | None = None  # a group order: every member device counts as ordered at `group_ordered_at`
    group_ordered_at: float = 0.0

    def order_ids(self, device_id: str) -> set[str]:
        return order_ids_of(self.assignment_id, device_id)

    def observe(
        self, states: DeviceStates, now: float, refusals: Mapping[str, str] | None = None
    ) -> list[DeviceExecution]:
        """Every ordered device's execution at `now`; an end state once reached stays (a late apply is timed_out).

        `refusals` are the devices that refused their order, with the reason (`refused_orders`).
        """
        if self.group is not None:
            for state in states.in_group(self.group):
                self.ordered_at.setdefault(state.device_id, self.group_ordered_at)
        out = []
        for device, at in self.ordered_at.items():
            if device in self.ended:
                out.append(self.ended[device])
                continue
            refusal = (refusals or {}).get(device)
            reported = states.devices.get(device)
            status, reason = order_outcome(reported, self.model_version, self.order_ids(device), refusal)
            execution = classify_execution(device, status, at, now, self.timeout, detail=reason)
            if execution.state != "in_progress":
                self.ended[device] = execution
            out.append(execution)
        return out


def progress_record(executions: Sequence[DeviceExecution], tally: ExecutionTally) -> dict[str, Any]:
    """The wave's progress in the shape `fleet.control.ApplyProgress.to_dict` has (for the apply part)."""
    failed = {e.device_id: e.reason for e in executions if e.state not in ("applied", "in_progress")}
    pending = [e.device_id for e in executions if e.state == "in_progress"]
    return {
        "devices": tally.targeted,
        "applied": tally.applied,
        "failed": dict(list(failed.items())[:50]),
        "failed_count": len(failed),
        "pending": pending[:50],
        "pending_count": len(pending),
        "applied_ratio": round(tally.applied / tally.targeted, 4) if tally.targeted else 0.0,
        "executions": tally.to_dict(),
    }


def publish_device_orders(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    signer: Signer,
    devices: Sequence[str],
    model_version: str,
    assignment_id: str,
    artifact: ArtifactRef | None,
) -> None:
    """One signed device-targeted order per device, in one produce call (one batch of the schedule)."""
    from edgeloop.contract.messages import Target, new_assignment
    from edgeloop.fleet.control import publish_assignments

    orders = [
        new_assignment(
            Target("device", device),
            model_version=model_version,
            issuer="rollout",
            assignment_id=device_order_id(assignment_id, device),
            artifact=artifact,
            pipeline=spec.name,
        )
        for device in devices
    ]
    publish_assignments(spec, kafka_config, signer, orders)


@dataclass
class PacedWave:
    """One group's wave ordered device by device, with what it needs to publish and to read back."""

    spec: PipelineSpec
    kafka_config: Mapping[str, Any]
    signer: Signer
    view: FleetView
    group: str
    executions: WaveExecutions
    artifact: ArtifactRef | None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    poll_s: float = 1.0
    batches: list[dict[str, Any]] = field(default_factory=list)
    abort: dict[str, Any] = field(default_factory=dict)
    paused: Callable[[], bool] | None = None  # the pipeline's pause flag (`rollout.pause`)
    pauses: list[dict[str, Any]] = field(default_factory=list)
    # the refusals found so far; each poll reads only the error reports published since the last one
    _refused: dict[str, str] = field(default_factory=dict)
    _marked: bool = False

    def mark(self) -> None:
        """Mark the error reports' end before the wave's first order: a refusal of one of its orders can only
        be published after it, whatever the device's clock says, so nothing before the mark is read (after a
        crashing model that is 100,000s of reports). Idempotent."""
        if not self._marked:
            self.view.mark_error_reports(timeout=30)
            self._marked = True

    def hold(self, deadline: float) -> float | None:
        """Wait while the rollouts are paused; the seconds held, or None when the deadline (monotonic) came first."""
        if self.paused is None or not self.paused():
            return 0.0
        since = self.clock()
        while self.paused():
            if time.monotonic() >= deadline:
                self.pauses.append({"at": since, "held_s": round(self.clock() - since, 3), "resumed": False})
                return None
            self.sleep(self.poll_s)
        held = self.clock() - since
        self.pauses.append(
            {"at": since, "held_s": round(held, 3), "resumed": True, "ordered": len(self.executions.ordered_at)}
        )
        return held

    def check(self) -> tuple[list[DeviceExecution], ExecutionTally, bool]:
        """Read device-state once; the executions, their tally, and whether the wave must stop (abort or failures)."""
        registry, states = self.view.refresh(timeout=30)
        executions = self.executions.observe(states, self.clock(), self.refusals(registry))
        tally = tally_executions(executions)
        decision = evaluate_abort(tally.executed, tally.failed_by_type, self.spec.rollout.abort)
        self.abort = decision.to_dict()
        failures = sum(tally.failed_by_type.values())
        too_many = bool(tally.targeted) and failures / tally.targeted > self.spec.rollout.max_failure_ratio
        return executions, tally, decision.abort or too_many

    def refusals(self, registry: DeviceRegistry) -> dict[str, str]:
        """The ordered devices that refused their order (signed `bad_control` reports published since `mark`)."""
        if not self._marked:
            raise RuntimeError(f"group {self.group}: the error reports were not marked before the first order")
        new = self.view.new_error_reports(timeout=30)
        for device, reason in refused_orders(new, registry, self.executions.order_ids).items():
            self._refused.setdefault(device, reason)
        return dict(self._refused)

    def publish(self, devices: Sequence[str], timeout_s: float) -> bool:
        """Order `devices` by the pacing schedule; False when the wave stopped (abort, failures, time) first."""
        start, slip = self.clock(), 0.0
        deadline = time.monotonic() + timeout_s
        applied = [0]
        schedule = pacing_schedule(devices, self.spec.rollout.rate, lambda n, _at: min(n, applied[0]))
        for batch in schedule:
            while True:  # read device-state (abort?) while waiting; the last sleep ends at the batch's second
                held = self.hold(deadline)
                if held is None:
                    return False
                slip += held  # a pause delays the rest of the schedule
                _, tally, stop = self.check()
                applied[0] = tally.applied
                if stop or self.clock() - start >= timeout_s:
                    return False
                wait = start + batch.at_s + slip - self.clock()
                if wait > self.poll_s:
                    self.sleep(self.poll_s)
                    continue
                self.sleep(max(0.0, wait))
                held = self.hold(deadline)  # paused at the batch's second: read everything again after it
                if held is None:
                    return False
                if held:
                    slip += held
                    continue
                break
            sent = self.clock()
            # a batch sent late delays the rest as much: no gap between two batches is shorter than scheduled
            slip = max(slip, sent - start - batch.at_s)
            version, ident = self.executions.model_version, self.executions.assignment_id
            publish_device_orders(
                self.spec, self.kafka_config, self.signer, batch.devices, version, ident, self.artifact
            )
            self.executions.ordered_at.update(dict.fromkeys(batch.devices, sent))
            self.batches.append(
                {
                    "at_s": batch.at_s,
                    "sent_s": round(sent - start, 3),
                    "devices": len(batch.devices),
                    "per_minute": batch.per_minute,
                    "ordered": len(self.executions.ordered_at),
                    "applied": tally.applied,
                }
            )
        return True

    def wait(self, deadline: float) -> tuple[list[DeviceExecution], ExecutionTally, bool]:
        """Poll until every ordered device ended, the wave must stop, or the deadline (monotonic) passes."""
        while True:
            executions, tally, stop = self.check()
            if stop or (tally.targeted and not tally.in_progress) or time.monotonic() >= deadline:
                return executions, tally, stop
            self.sleep(self.poll_s)


def run_paced_wave(
    wave: PacedWave, rollout_id: str, share: float | None, timeout_s: float
) -> tuple[dict[str, Any], bool]:
    """Order the wave's devices (a share of the group's members, or all of them), wait for them; the record
    of what was decided, and whether the whole group should now be ordered too (a whole-group wave that held)."""
    deadline = time.monotonic() + timeout_s
    wave.mark()
    _, states = wave.view.refresh(timeout=30)
    members = [s.device_id for s in states.in_group(wave.group)]
    selection = select_share(rollout_id, wave.group, members, share)
    finished = wave.publish(selection.selected, timeout_s)
    executions, tally, stop = wave.wait(deadline)
    record = {
        "devices": list(selection.selected),
        "share": {"share": selection.share, "members": selection.devices, "selected": len(selection.selected)},
        "batches": wave.batches,
        "abort": wave.abort,
        "pauses": wave.pauses,
        "stopped": stop or not finished,
        "progress": progress_record(executions, tally),
    }
    return record, finished and not stop and share is None
