"""The rollout policy (`rollout.waves`, `rate`, `abort`, `success_threshold`, `device_timeout`) as pure decisions.

Which groups and which share of their devices each wave reaches, the second at which each device
gets its order, whether the rollout must stop, whether a wave may advance, which devices timed out,
and what a device that joins a group (or comes back) late is given. Nothing here reads a clock, a
topic or a store: the caller passes what it observed, and every decision comes back as a small frozen
dataclass holding the numbers that led to it (`to_dict`, for the rollout's audit record). The
rollout job acts on them through `rollout.orders`, the gate through `rollout.gate`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from fractions import Fraction
from typing import Any

from edgeloop.spec import FAILURE_TYPES, AbortSpec, PipelineSpec, RateSpec

EXECUTION_STATES = ("applied", "failed", "rejected", "timed_out", "in_progress")
POLICY_FIELDS = ("waves", "rate", "abort", "success_threshold", "device_timeout", "shadow")
# what the rollout DAG does not act on yet (see the README's rollout policy reference)
NOT_ENFORCED: tuple[str, ...] = ()


class _Decision:
    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = asdict(self)  # type: ignore[call-overload]
        return record


def policy_record(spec: PipelineSpec) -> dict[str, Any]:
    """The policy fields a spec sets (none: an empty dict), and which of them the rollout DAG does not act on
    yet, for the plan's audit part."""
    given = spec.rollout.model_dump(mode="json", include=set(POLICY_FIELDS), exclude_defaults=True)
    if not given:
        return {}
    return {"given": given, "not_enforced": [name for name in NOT_ENFORCED if name in given]}


# --- waves and shares --------------------------------------------------------------


@dataclass(frozen=True)
class RolloutWave(_Decision):
    """One wave of the policy: its groups and the share of each group's devices it reaches (None: all)."""

    index: int
    groups: tuple[str, ...]
    share: float | None
    canary: bool

    @property
    def name(self) -> str:
        return "canary" if self.canary else f"wave_{self.index}"


def policy_waves(spec: PipelineSpec) -> list[RolloutWave]:
    """The waves of `rollout.waves`, or without it the waves of `canary_groups` and group `wave` numbers.

    `groups: all` is every group no earlier wave took to all of its devices. With `rollout.waves`
    the first of several waves is the canary wave (the approval, when asked for, comes after it).
    """
    if not spec.rollout.waves:
        return _group_number_waves(spec)
    names = [g.name for g in spec.groups]
    reached: dict[str, float] = {}
    waves = []
    several = len(spec.rollout.waves) > 1
    for index, wave in enumerate(spec.rollout.waves):
        left = tuple(n for n in names if reached.get(n, 0.0) < 1)
        groups = left if wave.groups == "all" else tuple(wave.groups)
        for group in groups:
            reached[group] = max(reached.get(group, 0.0), 1.0 if wave.share is None else wave.share)
        waves.append(RolloutWave(index, groups, wave.share, canary=several and index == 0))
    return waves


def _group_number_waves(spec: PipelineSpec) -> list[RolloutWave]:
    """Without `rollout.waves`: the canary wave (if any), then the other groups by their `wave` number."""
    canary = tuple(g.name for g in spec.groups if g.name in spec.rollout.canary_groups)
    rest = [g for g in spec.groups if g.name not in canary]
    waves = [RolloutWave(0, canary, None, canary=True)] if canary else []
    for number in sorted({g.wave for g in rest}):
        waves.append(RolloutWave(len(waves), tuple(g.name for g in rest if g.wave == number), None, canary=False))
    return waves


def share_score(rollout_id: str, device_id: str) -> float:
    """A device's place in [0, 1) for one rollout: the same on every run, different between rollouts."""
    digest = hashlib.sha256(f"{rollout_id}/{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class ShareSelection(_Decision):
    """The devices of a group that a share wave reaches, in the order they get their orders."""

    rollout_id: str
    group: str
    share: float
    devices: int
    selected: tuple[str, ...]


def select_share(rollout_id: str, group: str, device_ids: Iterable[str], share: float | None) -> ShareSelection:
    """The `share` of a group's devices (at least one when the group has any), chosen by `share_score`.

    A re-run with the same devices picks the same ones, and a larger share of the same rollout
    keeps every device a smaller one picked (2% of a group, then 10%, then all of it).
    """
    wanted = 1.0 if share is None else share
    if not 0 < wanted <= 1:
        raise ValueError(f"share: {share} is not in (0, 1]")
    unique = sorted(set(device_ids))
    count = len(unique) if wanted >= 1 else math.ceil(round(wanted * len(unique), 9))
    ranked = sorted(unique, key=lambda device: (share_score(rollout_id, device), device))
    return ShareSelection(rollout_id, group, wanted, len(unique), tuple(ranked[:count]))


# --- pacing ----------------------------------------------------------------------


@dataclass(frozen=True)
class RateStep(_Decision):
    """The order rate in force after `count` devices were ordered (or applied, by `criterion`)."""

    per_minute: int
    steps: int
    criterion: str  # "fixed", "ordered" or "applied"
    count: int


def rate_at(rate: RateSpec, ordered: int, applied: int) -> RateStep:
    """The rate after `ordered` devices got their order and `applied` applied it.

    Fixed: `per_minute`. Exponential: `base_per_minute`, times `increment_factor` (rounded up to a
    whole device) for each `step_up_after_devices` ordered or `step_up_after_success` applied,
    never above `per_minute`.
    """
    exp = rate.exponential
    if exp is None:
        return RateStep(rate.per_minute, 0, "fixed", ordered)
    if exp.step_up_after_devices is not None:
        criterion, count, every = "ordered", ordered, exp.step_up_after_devices
    else:
        criterion, count, every = "applied", applied, int(exp.step_up_after_success or 1)
    per_minute, steps = min(exp.base_per_minute, rate.per_minute), 0
    for _ in range(count // every):
        if per_minute >= rate.per_minute:
            break
        per_minute = min(rate.per_minute, math.ceil(round(per_minute * exp.increment_factor, 9)))
        steps += 1
    return RateStep(per_minute, steps, criterion, count)


@dataclass(frozen=True)
class Batch(_Decision):
    """The devices that get their order in second `at_s` of a wave, at the rate then in force (None: unpaced)."""

    at_s: int
    devices: tuple[str, ...]
    per_minute: int | None


AppliedBy = Callable[[int, float], int]  # (devices ordered so far, seconds into the wave) -> devices applied


def pacing_schedule(devices: Sequence[str], rate: RateSpec | None, applied: AppliedBy | None = None) -> Iterator[Batch]:
    """When each device gets its order: batches by whole second from the wave's start.

    Without a rate every device is ordered at once (the rollout as it was). With one, device i+1
    follows device i by 60 / (the rate after i+1 orders) seconds, so no 60-second window holds more
    than `per_minute` orders. `applied` says how many devices applied by then (for
    `step_up_after_success`); without it every ordered device counts as applied at once.
    """
    if not devices:
        return
    if rate is None:
        yield Batch(0, tuple(devices), None)
        return
    at = Fraction(0)
    current: list[str] = []
    second, per_minute = 0, rate.per_minute
    for ordered, device in enumerate(devices):
        if current and math.floor(at) != second:
            yield Batch(second, tuple(current), per_minute)
            current = []
        if not current:
            second = math.floor(at)
            per_minute = rate_at(rate, ordered, applied(ordered, float(at)) if applied else ordered).per_minute
        current.append(device)
        done = ordered + 1
        step = rate_at(rate, done, applied(done, float(at)) if applied else done)
        at += Fraction(60, step.per_minute)
    yield Batch(second, tuple(current), per_minute)


# --- per-device outcome: timeouts ---------------------------------------------------


@dataclass(frozen=True)
class DeviceExecution(_Decision):
    """What became of one device's order: applied, failed, rejected, timed_out or in_progress."""

    device_id: str
    state: str
    elapsed_s: float
    timeout_s: float | None
    reason: str


def classify_execution(
    device_id: str,
    status: str | None,
    ordered_at: float,
    now: float,
    timeout: timedelta | None,
    reported_at: float | None = None,
    detail: str | None = None,
) -> DeviceExecution:
    """One device's order at `now`: its reported `status` ("applied", "failed", "rejected"; None: no word yet).

    "failed": the device took the order but could not apply it; "rejected": it refused the order.
    With a `timeout` an order not applied within it has timed out (a failure), and stays so: an
    apply reported (`reported_at`) after the deadline does not count as applied; a device that said
    no (failed, rejected) did answer, so it is not timed out. `detail` is the device's reason.
    """
    if status not in (None, "applied", "failed", "rejected"):
        raise ValueError(f"status: {status!r} is not applied, failed, rejected or None")
    limit = None if timeout is None else timeout.total_seconds()
    elapsed = round(max(0.0, (now if reported_at is None else reported_at) - ordered_at), 3)
    late = limit is not None and elapsed > limit and (status is None or reported_at is not None)
    if late and status in (None, "applied"):
        return DeviceExecution(device_id, "timed_out", elapsed, limit, f"no apply within {limit:g} s of its order")
    if status is None:
        return DeviceExecution(device_id, "in_progress", elapsed, limit, "no report yet")
    return DeviceExecution(device_id, status, elapsed, limit, f"reported {status}" + (f": {detail}" if detail else ""))


@dataclass(frozen=True)
class ExecutionTally(_Decision):
    """The outcomes of a wave's orders: how many devices were targeted, finished, applied, failed by type."""

    targeted: int
    executed: int
    applied: int
    in_progress: int
    failed_by_type: dict[str, int] = field(default_factory=dict)


def tally_executions(executions: Iterable[DeviceExecution]) -> ExecutionTally:
    """Count device outcomes; `executed` is every device that reached an end state (applied or a failure)."""
    counts = dict.fromkeys(EXECUTION_STATES, 0)
    for execution in executions:
        counts[execution.state] += 1
    targeted = sum(counts.values())
    failed: dict[str, int] = {kind: counts[kind] for kind in FAILURE_TYPES}
    return ExecutionTally(targeted, targeted - counts["in_progress"], counts["applied"], counts["in_progress"], failed)


# --- abort and success ---------------------------------------------------------------


@dataclass(frozen=True)
class AbortDecision(_Decision):
    abort: bool
    executed: int
    failures: int
    failure_pct: float
    threshold_pct: float | None
    min_executed: int | None
    counted_types: tuple[str, ...]
    reason: str


def evaluate_abort(executed: int, failed_by_type: Mapping[str, int], policy: AbortSpec | None) -> AbortDecision:
    """Whether the abort criteria stop the rollout: at least `min_executed` devices finished and the
    failures of the counted types are at least `failure_threshold_pct` percent of them."""
    unknown = sorted(set(failed_by_type) - set(FAILURE_TYPES))
    if unknown:
        raise ValueError(f"failed_by_type: {unknown} are not failure types {list(FAILURE_TYPES)}")
    if executed < 0 or any(n < 0 for n in failed_by_type.values()) or sum(failed_by_type.values()) > executed:
        raise ValueError(f"executed {executed} must be at least the failures {dict(failed_by_type)}, none negative")
    if policy is None:
        failures = sum(failed_by_type.values())
        pct = round(100 * failures / executed, 3) if executed else 0.0
        return AbortDecision(False, executed, failures, pct, None, None, (), "no abort criteria in the spec")
    types = tuple(policy.failure_types)
    failures = sum(failed_by_type.get(kind, 0) for kind in types)
    pct = round(100 * failures / executed, 3) if executed else 0.0
    numbers = (executed, failures, pct, policy.failure_threshold_pct, policy.min_executed, types)
    if executed < policy.min_executed:
        return AbortDecision(False, *numbers, f"{executed} devices finished, fewer than {policy.min_executed}")
    if pct >= policy.failure_threshold_pct:
        reason = (
            f"{failures} of {executed} finished devices failed ({', '.join(types)}): {pct:g}% >= "
            f"{policy.failure_threshold_pct:g}%"
        )
        return AbortDecision(True, *numbers, reason)
    return AbortDecision(False, *numbers, f"{pct:g}% failed, under {policy.failure_threshold_pct:g}%")


@dataclass(frozen=True)
class SuccessDecision(_Decision):
    met: bool
    targeted: int
    applied: int
    ratio: float
    threshold: float
    reason: str


def evaluate_success(targeted: int, applied: int, threshold: float) -> SuccessDecision:
    """Whether enough of a wave's targeted devices applied the version for the next wave to start."""
    if targeted < 0 or not 0 <= applied <= max(targeted, 0):
        raise ValueError(f"applied {applied} must be between 0 and targeted {targeted}")
    if targeted == 0:
        return SuccessDecision(False, 0, 0, 0.0, threshold, "the wave reached no device")
    ratio = round(applied / targeted, 4)
    met = applied / targeted >= threshold
    word = ">=" if met else "<"
    return SuccessDecision(
        met, targeted, applied, ratio, threshold, f"{applied}/{targeted} applied ({ratio} {word} {threshold})"
    )


# --- late joiners --------------------------------------------------------------------


def desired_by_group(
    waves: Sequence[RolloutWave], previous_version: str, model_version: str, ordered_waves: int, rolled_back: bool
) -> dict[str, str]:
    """The model every device of each group should run, from the rollout's state.

    A group's desired version is the new one once a wave that takes all of its devices (no share)
    has been ordered (`ordered_waves`: how many waves were), the previous one before, and the
    previous one everywhere after a rollback. A share wave alone leaves its group's version as it was.
    """
    desired = {group: previous_version for wave in waves for group in wave.groups}
    if rolled_back:
        return desired
    for wave in waves[:ordered_waves]:
        if wave.share is None or wave.share >= 1:
            desired.update(dict.fromkeys(wave.groups, model_version))
    return desired


@dataclass(frozen=True)
class JoinerOrder(_Decision):
    device_id: str
    group: str
    reported_version: str | None
    desired_version: str | None
    assign: bool
    reason: str


def late_joiner_order(
    device_id: str, group: str, reported_version: str | None, desired: Mapping[str, str]
) -> JoinerOrder:
    """What a device that joins its group, or comes back online, is ordered: its group's desired model
    (`desired_by_group`) when it runs another one; nothing when it runs it, or its group has none."""
    wanted = desired.get(group)
    if wanted is None:
        return JoinerOrder(device_id, group, reported_version, None, False, f"group {group} has no desired model")
    if reported_version == wanted:
        return JoinerOrder(device_id, group, reported_version, wanted, False, f"already runs {wanted}")
    reason = f"runs {reported_version or 'no model'}, group {group} wants {wanted}"
    return JoinerOrder(device_id, group, reported_version, wanted, True, reason)
