"""The health gate after each wave: device feedback against the spec's thresholds.

During the soak the gate fails early on errors or failed applies; it passes only at
the end of the soak, when enough devices report the new version, few are offline and
confidence holds. A device that never reports the new version counts as failed then.

With the spec's rollout policy the gate also applies the abort criteria (`rollout.abort`, over
the wave's devices that finished: applied, failed, rejected or timed out) at every check, and at the end of the soak
`rollout.success_threshold` in place of `thresholds.min_applied_ratio`; their numbers go into
the decision (`policy`). Without them the decision is as before.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgeloop.rollout.policy import evaluate_abort, evaluate_success
from edgeloop.spec import AbortSpec, HealthThresholds


@dataclass(frozen=True)
class GroupReading:
    group: str
    devices: int
    applied: int
    failed: int
    offline_ratio: float
    error_rate: float | None
    mean_confidence: float | None
    timed_out: int = 0  # devices that neither applied, failed nor refused within `rollout.device_timeout`
    rejected: int = 0  # devices that refused their order (a signed refusal report), not counted in `failed`

    @property
    def applied_ratio(self) -> float:
        return self.applied / self.devices if self.devices else 0.0

    @property
    def failure_ratio(self) -> float:
        """Failed and refused applies over the devices (a device that never answered is not in it)."""
        return (self.failed + self.rejected) / self.devices if self.devices else 0.0


@dataclass(frozen=True)
class GateDecision:
    state: str  # "pass", "fail" or "wait"
    reasons: list[str] = field(default_factory=list)
    readings: list[GroupReading] = field(default_factory=list)
    policy: dict[str, Any] = field(default_factory=dict)  # the rollout policy's decisions, with their numbers

    @property
    def passed(self) -> bool:
        return self.state == "pass"

    def to_dict(self) -> dict[str, Any]:
        record = {
            "state": self.state,
            "reasons": self.reasons,
            "readings": [asdict(r) | {"applied_ratio": round(r.applied_ratio, 4)} for r in self.readings],
        }
        return record | ({"policy": self.policy} if self.policy else {})


def evaluate_gate(
    readings: list[GroupReading],
    thresholds: HealthThresholds,
    max_failure_ratio: float,
    soak_over: bool,
    *,
    abort: AbortSpec | None = None,
    success_threshold: float | None = None,
) -> GateDecision:
    """Decide pass / fail / wait from per-group readings (pure); `abort` and `success_threshold` from the
    spec's rollout policy, when it has them."""
    policy: dict[str, Any] = {}
    failures: list[str] = []
    if abort is not None:
        failed = sum(r.failed for r in readings)
        timed_out = sum(r.timed_out for r in readings)
        rejected = sum(r.rejected for r in readings)
        executed = sum(r.applied for r in readings) + failed + timed_out + rejected
        by_type = {"failed": failed, "timed_out": timed_out, "rejected": rejected}
        decision = evaluate_abort(executed, by_type, abort)
        policy["abort"] = decision.to_dict()
        if decision.abort:
            failures.append(f"abort criteria: {decision.reason}")
    for r in readings:
        if r.devices == 0:
            failures.append(f"{r.group}: no device of the group is known to the fleet")
            continue
        if r.failure_ratio > max_failure_ratio:
            refused = f", {r.rejected} refused the order" if r.rejected else ""
            failures.append(
                f"{r.group}: {r.failed}/{r.devices} devices failed to apply{refused} (max ratio {max_failure_ratio})"
            )
        if r.error_rate is not None and r.error_rate > thresholds.max_error_rate:
            failures.append(f"{r.group}: error rate {r.error_rate:.3f} > {thresholds.max_error_rate}")
    if failures:
        return GateDecision("fail", failures, readings, policy)
    if not soak_over:
        return GateDecision("wait", [], readings, policy)
    for r in readings:
        if success_threshold is not None:
            success = evaluate_success(r.devices, min(r.applied, r.devices), success_threshold)
            policy.setdefault("success", {})[r.group] = success.to_dict()
            if not success.met:
                failures.append(f"{r.group}: success threshold not met: {success.reason}")
        elif r.applied_ratio < thresholds.min_applied_ratio:
            failures.append(
                f"{r.group}: {r.applied}/{r.devices} devices report the new version "
                f"(ratio {r.applied_ratio:.3f} < {thresholds.min_applied_ratio})"
            )
        if r.offline_ratio > thresholds.max_offline_ratio:
            failures.append(f"{r.group}: offline ratio {r.offline_ratio:.3f} > {thresholds.max_offline_ratio}")
        if r.mean_confidence is not None and r.mean_confidence < thresholds.min_mean_confidence:
            failures.append(f"{r.group}: mean confidence {r.mean_confidence:.3f} < {thresholds.min_mean_confidence}")
    return GateDecision("fail" if failures else "pass", failures, readings, policy)
