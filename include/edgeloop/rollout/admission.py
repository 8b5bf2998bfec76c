"""What a rollout may start with: a version the evaluation gate passed, rolled out canary first.

The evaluation gate records its decision on the model version (`edgeloop.gate.decision`,
with its reason). Every rollout run, however it was started (the `model` asset, a manual
trigger, a hand-made asset event), reads that record and refuses a version whose decision is
not "promote" (a rejected challenger, a version the gate never judged).

Two rules can be bent, each by an Airflow admin only, in a run they triggered by hand, with a
reason: rolling out a version the gate did not pass (`override_reason`) and leaving out the
canary wave (`skip_canary_reason`). Each override (rule, reason, who) goes into the plan and
the rollout's audit record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from edgeloop.registry.tags import TAG_DECISION, TAG_REASON
from edgeloop.rollout.plan import RolloutPlanError

PASSED = "promote"
MANUAL = "manual"  # Airflow's DagRunType.MANUAL: a run someone triggered (UI, REST API, CLI)

AdminCheck = Callable[[str], bool]  # user name -> is an Airflow admin


class RolloutRefused(RolloutPlanError):
    """The rollout would walk around a gate; the message names the version or rule, and why."""


@dataclass(frozen=True)
class RunOrigin:
    """How a rollout run started: its run type and, for a manual run, the user who triggered it."""

    run_type: str
    user: str | None = None

    @classmethod
    def of(cls, dag_run: Any) -> RunOrigin:
        run_type = getattr(dag_run, "run_type", None)
        user = getattr(dag_run, "triggering_user_name", None)
        return cls(str(getattr(run_type, "value", run_type) or "unknown"), str(user) if user else None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateRecord:
    """The evaluation gate's decision recorded on a model version (None: the gate never judged it)."""

    version: str
    decision: str | None
    reason: str | None

    @property
    def passed(self) -> bool:
        return self.decision == PASSED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gate_record(client: Any, model_name: str, version: str) -> GateRecord:
    """Read the gate's decision off `model_name` version `version`; RolloutPlanError if there is no such version."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_model_version(model_name, version)
    except MlflowException as exc:
        raise RolloutPlanError(f"model_version: {model_name} version {version} is not in the registry") from exc
    tags = dict(found.tags or {})
    return GateRecord(str(version), tags.get(TAG_DECISION), tags.get(TAG_REASON))


def admin_override(param: str, reason: str, origin: RunOrigin, is_admin: AdminCheck, what: str) -> dict[str, Any]:
    """The record of an override an admin asked for in a manual run; RolloutRefused for anyone else.

    `param` is the run param that carries the reason; `what` says what is being overridden.
    """
    reason = reason.strip()
    if not reason:
        raise RolloutRefused(f"{param}: {what} needs a reason")
    if origin.run_type != MANUAL or not origin.user:
        raise RolloutRefused(
            f"{param}: {what} needs an Airflow admin who triggers the run by hand; "
            f"this run is {origin.run_type!r}, triggered by {origin.user or 'no user'}"
        )
    if not is_admin(origin.user):
        raise RolloutRefused(f"{param}: {what} needs an Airflow admin; {origin.user!r} is not one")
    return {"param": param, "overrides": what, "reason": reason, "by": origin.user, "run_type": origin.run_type}


def admit_version(
    record: GateRecord, model_name: str, override_reason: str, origin: RunOrigin, is_admin: AdminCheck
) -> dict[str, Any] | None:
    """None when the gate passed the version; an admin's override record; RolloutRefused otherwise."""
    if record.passed:
        return None
    verdict = (
        f"the evaluation gate decided {record.decision!r} (reason: {record.reason or 'none recorded'})"
        if record.decision
        else "the evaluation gate recorded no decision on it"
    )
    if not override_reason.strip():
        raise RolloutRefused(
            f"model_version: {model_name} version {record.version} did not pass the evaluation gate: {verdict}. "
            "Only versions the gate promoted are rolled out"
        )
    try:
        return admin_override(
            "override_reason", override_reason, origin, is_admin, f"rolling out version {record.version} ({verdict})"
        )
    except RolloutRefused as exc:
        raise RolloutRefused(f"model_version: {model_name} version {record.version} was refused; {exc}") from exc
