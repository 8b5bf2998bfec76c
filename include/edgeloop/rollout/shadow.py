"""The shadow gate: from the devices' shadow reports, may the challenger serve (spec `rollout.shadow`)?

Pure: the caller reads the reports (`edgeloop.contract.shadow.parse_shadow_report`, signed by
enrolled devices) and passes them in. Reports of another challenger version are left out, and a
device's window counts once however often it was sent. Agreement, confidence and error rate are
taken over every input of every window; the latency ratio is the median of the windows' ratios
(one busy device does not decide for the fleet).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeloop.contract.shadow import ShadowReport
from edgeloop.spec import PipelineSpec, ShadowSpec


@dataclass(frozen=True)
class ShadowTargets:
    """Who shadows the challenger: these groups, all their devices or a share of each (`policy.select_share`)."""

    groups: tuple[str, ...]
    share: float | None
    window_s: float


def shadow_targets(spec: PipelineSpec) -> ShadowTargets | None:
    """The shadow wave of a spec (None when `rollout.shadow` is off): its groups, or the first wave's."""
    from edgeloop.rollout.policy import policy_waves

    shadow = spec.rollout.shadow
    if not shadow.enabled:
        return None
    waves = policy_waves(spec)
    groups = tuple(shadow.groups) or (waves[0].groups if waves else ())
    return ShadowTargets(groups, shadow.share, shadow.window.total_seconds())


@dataclass(frozen=True)
class ShadowDecision:
    state: str  # "pass", "fail" or "wait"
    challenger_version: str
    windows: int
    devices: int
    records: int
    agreement: float | None
    mean_confidence_delta: float | None
    latency_ratio: float | None
    error_rate: float | None
    reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.state == "pass"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unique_windows(reports: Iterable[ShadowReport], challenger_version: str) -> list[ShadowReport]:
    """The reports of `challenger_version` that saw inputs, one per device and window start (the last sent)."""
    kept: dict[tuple[str, str], ShadowReport] = {}
    for report in reports:
        if report.challenger_version == challenger_version and report.records > 0:
            kept[(report.device_id, report.window_start)] = report
    return list(kept.values())


def evaluate_shadow(reports: Iterable[ShadowReport], challenger_version: str, policy: ShadowSpec) -> ShadowDecision:
    """Wait for `min_windows` device windows, then pass when agreement, confidence drop, latency ratio
    and challenger error rate are all within the spec's thresholds, else fail naming each one crossed."""
    windows = unique_windows(reports, challenger_version)
    records = sum(r.records for r in windows)
    answered = sum(r.answered for r in windows)
    errors = sum(r.challenger_errors for r in windows)
    agreement = round(sum(r.agreements for r in windows) / answered, 4) if answered else None
    deltas = [(r.mean_confidence_delta, r.answered) for r in windows if r.mean_confidence_delta is not None]
    weight = sum(n for _, n in deltas)
    delta = round(math.fsum(d * n for d, n in deltas) / weight, 4) if weight else None
    ratios = [r.latency_ratio for r in windows if r.latency_ratio is not None]
    latency_ratio = round(statistics.median(ratios), 4) if ratios else None
    error_rate = round(errors / records, 4) if records else None
    numbers = (len(windows), len({r.device_id for r in windows}), records, agreement, delta, latency_ratio, error_rate)
    if len(windows) < policy.min_windows:
        reason = f"{len(windows)} of {policy.min_windows} device windows reported"
        return ShadowDecision("wait", challenger_version, *numbers, reasons=[reason])
    reasons = []
    if agreement is None or agreement < policy.min_agreement:
        reasons.append(f"agreement with the champion {agreement} < {policy.min_agreement}")
    if delta is not None and delta < -policy.max_confidence_drop:
        reasons.append(f"mean confidence {delta:+} against the champion, more than {policy.max_confidence_drop} lower")
    if latency_ratio is not None and latency_ratio > policy.max_latency_ratio:
        reasons.append(f"p95 latency {latency_ratio}x the champion's > {policy.max_latency_ratio}x")
    if error_rate is not None and error_rate > policy.max_error_rate:
        reasons.append(f"challenger error rate {error_rate} > {policy.max_error_rate}")
    return ShadowDecision("fail" if reasons else "pass", challenger_version, *numbers, reasons=reasons)
