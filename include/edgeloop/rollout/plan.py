"""Which groups go in which wave: `rollout.waves`, or canary groups first, then the rest by their `wave` number."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from edgeloop.rollout.policy import policy_waves
from edgeloop.spec import PipelineSpec


class RolloutPlanError(ValueError):
    """The requested rollout cannot start; nothing has been changed on any device."""


@dataclass(frozen=True)
class Wave:
    index: int
    groups: tuple[str, ...]
    canary: bool

    @property
    def name(self) -> str:
        return "canary" if self.canary else f"wave_{self.index}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spec_waves(spec: PipelineSpec) -> list[Wave]:
    """The waves of a full rollout, as the DAG is shaped: `rollout.waves` when the spec has them, else the
    canary wave (if any), then the other groups by `wave` number."""
    return [Wave(w.index, w.groups, w.canary) for w in policy_waves(spec)]


def plan_rollout(
    spec: PipelineSpec,
    model_version: str | None,
    groups: Sequence[str] | None = None,
    skip_canary_reason: str = "",
) -> list[Wave]:
    """The waves of one rollout, restricted to `groups`; raise RolloutPlanError before any change.

    Leaving out a canary group while rolling out to production groups needs a reason (and an
    admin: `rollout.admission`).
    """
    if not model_version or not str(model_version).isdigit():
        raise RolloutPlanError(f"model_version: {model_version!r} is not a registry version number")
    known = [g.name for g in spec.groups]
    wanted = list(groups) if groups else known
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise RolloutPlanError(f"groups: {unknown} are not groups of {spec.name} (known: {known})")
    waves = []
    for wave in spec_waves(spec):
        kept = tuple(g for g in wave.groups if g in wanted)
        waves.append(Wave(wave.index, kept, wave.canary))
    by_node = {g.name for g in spec.groups if g.strategy == "kubernetes"}
    for i, w in enumerate(spec.rollout.waves):
        shared = [g for g in waves[i].groups if g in by_node] if w.share is not None and w.share < 1 else []
        if shared:
            raise RolloutPlanError(
                f"rollout.waves[{i}].share: groups {shared} are ordered through their DaemonSet, which reaches every"
                " node of the group; a share wave needs kafka groups. Nothing was changed"
            )
    skipped_canary = left_out_canary(spec, waves)
    if skipped_canary and not skip_canary_reason.strip():
        production = [g for w in waves if not w.canary for g in w.groups]
        raise RolloutPlanError(
            f"canary group(s) {skipped_canary} left out of a rollout to {production}: give skip_canary_reason"
        )
    if not any(w.groups for w in waves):
        raise RolloutPlanError("no group left to roll out to")
    return waves


def left_out_canary(spec: PipelineSpec, waves: Sequence[Wave]) -> list[str]:
    """The canary groups a rollout leaves out while it goes to production groups (empty: canary first)."""
    if not any(w.groups for w in waves if not w.canary):
        return []
    canary = spec.rollout.canary_groups or [g for w in spec_waves(spec) if w.canary for g in w.groups]
    return [g for w in waves if w.canary for g in canary if g not in w.groups]
