"""Rollout presets: three ready policies a non-expert can pick from, each explained.

A preset decides the waves (a canary group first, then the others together or one
by one), how long each wave soaks, the health gate thresholds, and whether a person
approves before the wide waves (and who may). The result is the `groups` and `rollout` sections of
a spec; the user can still edit every value in the YAML.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

PresetId = Literal["cautious", "standard", "fast"]
PRESET_IDS: tuple[PresetId, ...] = get_args(PresetId)
GROUP_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
GROUP_LABEL = "edgeloop.dev/group"


@dataclass(frozen=True)
class RolloutPreset:
    id: PresetId
    title: str
    explanation: str
    one_wave_per_group: bool
    soak: str
    thresholds: dict[str, float]
    max_failure_ratio: float
    max_unavailable: str
    approval_required: bool
    timeout: str
    policy: dict[str, Any]  # rollout policy fields (abort criteria, device timeout, rate); no shadow wave: see README

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "explanation": self.explanation,
            "rollout": self.rollout_section([]),
        }

    def rollout_section(self, canary_groups: Sequence[str], approvers: Sequence[str] = ()) -> dict[str, Any]:
        """The spec's `rollout` section; `approvers` (Airflow user names) go in when the preset asks for approval."""
        section: dict[str, Any] = {
            "canary_groups": list(canary_groups),
            "soak": self.soak,
            "thresholds": dict(self.thresholds),
            "max_failure_ratio": self.max_failure_ratio,
            "max_unavailable": self.max_unavailable,
            "approval_required": self.approval_required,
            "timeout": self.timeout,
        }
        if self.approval_required:
            section["approvers"] = list(approvers)
        return section | {key: dict(value) if isinstance(value, dict) else value for key, value in self.policy.items()}


PRESETS: dict[PresetId, RolloutPreset] = {
    "cautious": RolloutPreset(
        id="cautious",
        title="Cautious",
        explanation=(
            "The canary group gets the new model first and runs it for 30 minutes. Then one of the named "
            "approvers approves, and the other groups follow one at a time, each watched for 30 minutes. Strict "
            "health gates: at most 1% errors, 5% devices offline, 98% of devices must apply the model. Orders go "
            "out at 100 devices a minute; the rollout stops once 10 devices have executed and 2% of them failed. Slow, "
            "safest for critical sites."
        ),
        one_wave_per_group=True,
        soak="30m",
        thresholds={
            "min_applied_ratio": 0.98,
            "max_error_rate": 0.01,
            "max_offline_ratio": 0.05,
            "min_mean_confidence": 0.6,
        },
        max_failure_ratio=0.02,
        max_unavailable="5%",
        approval_required=True,
        timeout="1h",
        policy={
            "rate": {"per_minute": 100},
            "abort": {"failure_threshold_pct": 2, "min_executed": 10},
            "device_timeout": "30m",
        },
    ),
    "standard": RolloutPreset(
        id="standard",
        title="Standard",
        explanation=(
            "The canary group runs the new model for 10 minutes; if its health gate passes (at most 2% errors, "
            "10% offline, 95% applied) every other group gets it in one wave. A failed gate rolls back "
            "automatically, and so does a failure of 5% of the devices that executed once 20 have. A good default."
        ),
        one_wave_per_group=False,
        soak="10m",
        thresholds={
            "min_applied_ratio": 0.95,
            "max_error_rate": 0.02,
            "max_offline_ratio": 0.1,
            "min_mean_confidence": 0.5,
        },
        max_failure_ratio=0.05,
        max_unavailable="10%",
        approval_required=False,
        timeout="30m",
        policy={"abort": {"failure_threshold_pct": 5, "min_executed": 20}, "device_timeout": "20m"},
    ),
    "fast": RolloutPreset(
        id="fast",
        title="Fast",
        explanation=(
            "A 2 minute canary, then every other group at once with up to 25% of devices updating together. "
            "Lenient gates (5% errors, 20% offline, 90% applied); the rollout stops once 50 devices have executed "
            "and 10% of them failed. For test fleets and non-critical models."
        ),
        one_wave_per_group=False,
        soak="2m",
        thresholds={
            "min_applied_ratio": 0.9,
            "max_error_rate": 0.05,
            "max_offline_ratio": 0.2,
            "min_mean_confidence": 0.4,
        },
        max_failure_ratio=0.1,
        max_unavailable="25%",
        approval_required=False,
        timeout="20m",
        policy={"abort": {"failure_threshold_pct": 10, "min_executed": 50}},
    ),
}


class RolloutPlanError(ValueError):
    """Groups and a canary choice that cannot make a rollout; the message names the field."""


@dataclass(frozen=True)
class GroupChoice:
    name: str
    devices: int = 0


def group_name_from_id(group_id: str) -> str | None:
    """The spec group name for a group id seen on the cluster, or None if the id cannot be one.

    Devices report their group id and the stages compare it with the spec's group names,
    so a group is only proposed under its exact id; ids such as 'Plant_North' are left out
    (with a note) rather than renamed into a group no device reports.
    """
    return group_id if GROUP_NAME.match(group_id) else None


def pick_canary(groups: Sequence[GroupChoice]) -> str | None:
    """The default canary: the smallest group (by devices, then name), when there are at least two."""
    if len(groups) < 2:
        return None
    return min(groups, key=lambda g: (g.devices, g.name)).name


def plan_rollout(
    groups: Sequence[GroupChoice], preset: RolloutPreset, canary: str | None, approvers: Sequence[str] = ()
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The spec's `groups` (with waves) and `rollout` sections for a preset.

    `approvers`: the Airflow users who may approve, for a preset that asks for approval (the spec
    requires at least one then).
    """
    names = [g.name for g in groups]
    for i, group in enumerate(groups):
        if not GROUP_NAME.match(group.name):
            raise RolloutPlanError(
                f"groups[{i}].name: '{group.name}' must be lower case letters, digits and '-' ({GROUP_NAME.pattern})"
            )
    if len(set(names)) != len(names):
        raise RolloutPlanError("groups: group names must be unique")
    if canary is not None and canary not in names:
        raise RolloutPlanError(f"canary: '{canary}' is not one of the groups {names}")
    canary_groups = [canary] if canary is not None and len(groups) > 1 else []
    rest = sorted((g for g in groups if g.name not in canary_groups), key=lambda g: (g.devices, g.name))
    waves = {name: 0 for name in canary_groups}
    first = 1 if canary_groups else 0
    for i, group in enumerate(rest):
        waves[group.name] = first + (i if preset.one_wave_per_group else 0)
    section = [
        {
            "name": g.name,
            "selector": {GROUP_LABEL: g.name},
            "wave": waves[g.name],
            "devices": g.devices,
        }
        for g in groups
    ]
    return section, preset.rollout_section(canary_groups, approvers)
