"""What each task of the `<pipeline>__rollout` DAG does (the DAG tasks are thin wrappers)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from edgeloop.rollout.audit import assemble_audit, now_iso, write_part
from edgeloop.rollout.job import assignment_id_for, rollout_id_for
from edgeloop.rollout.plan import RolloutPlanError, left_out_canary, plan_rollout
from edgeloop.spec import PipelineSpec

if TYPE_CHECKING:
    from edgeloop.deployment import DeploymentSettings
    from edgeloop.rollout.admission import AdminCheck, RunOrigin

# Jobs of one wave that run at the same time (local processes or pods started by this task).
PARALLEL_JOBS = 8


class RolloutFailed(RuntimeError):
    """The rollout did not pass every gate; the groups it touched were rolled back."""


def model_version_from_events(events: Mapping[Any, Sequence[Any]] | None) -> str | None:
    """The newest version carried by a `model` asset event (extra `model_version`), if any."""
    found = None
    for asset_events in (events or {}).values():
        for event in asset_events:
            extra = getattr(event, "extra", None) or {}
            if extra.get("model_version"):
                found = str(extra["model_version"])
    return found


def plan_step(
    spec: PipelineSpec,
    s3: Any,
    tracking_uri: str,
    run_id: str,
    params: Mapping[str, Any],
    event_version: str | None,
    origin: RunOrigin,
    *,
    is_admin: AdminCheck | None = None,
    deployment: DeploymentSettings | None = None,
) -> dict[str, Any]:
    """Decide what this rollout does and write the plan part, or raise RolloutPlanError before any change.

    The version must be one the evaluation gate passed, rolled out canary first, with Kubernetes
    values the deployment allows; an admin's manual run may override the first two with a reason
    (`rollout.admission`). `is_admin` and `deployment` default to Airflow's users and EDGELOOP_DEPLOYMENT.
    """
    from edgeloop.airflow_users import is_admin as airflow_admin
    from edgeloop.contract.messages import BASELINE_VERSION
    from edgeloop.deployment import NotAllowed, require_allowed
    from edgeloop.registry.aliases import alias_version
    from edgeloop.registry.client import mlflow_client
    from edgeloop.rollout.admission import admin_override, admit_version, gate_record
    from edgeloop.rollout.policy import policy_record

    is_admin = is_admin or airflow_admin
    version = str(params.get("model_version") or event_version or "")
    skip_canary_reason = str(params.get("skip_canary_reason") or "")
    waves = plan_rollout(spec, version, params.get("groups") or None, skip_canary_reason)
    try:
        require_allowed(spec, deployment)
    except NotAllowed as exc:
        raise RolloutPlanError(str(exc)) from exc
    client = mlflow_client(tracking_uri)
    name = spec.registry.model_name
    gate = gate_record(client, name, version)
    overrides = []
    admitted = admit_version(gate, name, str(params.get("override_reason") or ""), origin, is_admin)
    if admitted:
        overrides.append(admitted)
    skipped = left_out_canary(spec, waves)
    if skipped:
        what = f"leaving out the canary group(s) {skipped}"
        overrides.append(admin_override("skip_canary_reason", skip_canary_reason, origin, is_admin, what))
    rollout_id = rollout_id_for(spec.name, run_id)
    current = alias_version(client, name, "champion")
    champion_at_plan = str(current.version) if current is not None else None
    # What devices go back to on a rollback: the champion, or the on-device baseline when the version
    # being rolled out is the first model (the gate made it champion before any device ran it).
    previous = champion_at_plan if champion_at_plan not in (None, version) else BASELINE_VERSION
    plan = {
        "rollout_id": rollout_id,
        "model_version": version,
        "champion_at_plan": champion_at_plan,
        "previous_version": previous,
        "waves": [w.to_dict() for w in waves],
        "started_by": origin.run_type,
        "triggered_by": origin.user,
        "gate": gate.to_dict(),
        "overrides": overrides,
        "skip_canary_reason": skip_canary_reason.strip() if skipped else None,
        "planned_at": now_iso(),
    }
    policy = policy_record(spec)
    if policy:  # what the spec's rollout policy asks, and what of it this rollout does not act on
        plan["policy"] = policy
    write_part(s3, spec, rollout_id, 0, "plan", plan)
    return plan


def launch_groups(
    spec: PipelineSpec,
    groups: Sequence[str],
    model_version: str,
    wave: int,
    rollout_id: str,
    context: Any,
    rollback: bool = False,
) -> list[dict[str, Any]]:
    """One job per group, up to PARALLEL_JOBS at a time (the groups of a wave go together, like pods).

    Every group's job is run even when another one fails; then the first failure is raised.
    """
    from edgeloop.rollout.launch import WaveJobs, launch_group

    if not groups:
        return []
    jobs = WaveJobs()  # what the wave's local jobs share, made once
    with ThreadPoolExecutor(max_workers=min(len(groups), PARALLEL_JOBS), thread_name_prefix="rollout-job") as pool:
        futures = [
            pool.submit(launch_group, spec, group, model_version, wave, rollout_id, context, rollback, jobs)
            for group in groups
        ]
    return [future.result() for future in futures]


def apply_step(spec: PipelineSpec, s3: Any, plan: Mapping[str, Any], wave_index: int, context: Any) -> dict[str, Any]:
    wave = next(w for w in plan["waves"] if w["index"] == wave_index)
    version = plan["model_version"]
    started_at = time.time()
    results = launch_groups(spec, wave["groups"], version, wave_index, plan["rollout_id"], context)
    outcome = wave_outcome(plan, wave, results)
    outcome["started_at"] = started_at
    write_part(s3, spec, plan["rollout_id"], 10 + 3 * wave_index, f"apply-wave-{wave_index}", outcome)
    return outcome


def wave_outcome(
    plan: Mapping[str, Any], wave: Mapping[str, Any], results: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The apply part of a wave: its groups, assignment ids, and for a share wave the devices it ordered
    (the gate reads only those); each group's policy decisions (share, paced batches, pauses, abort) with their
    numbers."""
    version = plan["model_version"]
    outcome = {
        "wave": wave["index"],
        "groups": list(wave["groups"]),
        "model_version": version,
        "assignment_ids": {g: assignment_id_for(plan["rollout_id"], g, version) for g in wave["groups"]},
        # the soak starts when the wave's jobs are done: every group's devices run the version from here
        "applied_at": time.time(),
        "results": [_short(r) for r in results],
    }
    shares = {str(r["group"]): list(r["devices"]) for r in results if r.get("devices") and r["share"]["share"] < 1}
    if shares:
        outcome["devices"] = shares
    policy = {
        str(r["group"]): {k: r[k] for k in ("share", "batches", "abort", "stopped", "pauses") if r.get(k)}
        for r in results
        if r.get("batches") or r.get("abort") or r.get("pauses")
    }
    if policy:
        outcome["policy"] = policy
    return outcome


def _short(result: Mapping[str, Any]) -> dict[str, Any]:
    progress = result.get("progress") or {}
    return {
        "group": result.get("group"),
        "strategy": result.get("strategy"),
        "duration_s": result.get("duration_s"),
        "devices": progress.get("devices", result.get("desired")),
        "applied": progress.get("applied", result.get("updated")),
        "failed": progress.get("failed_count"),
        "pending": progress.get("pending_count"),
        "executions": progress.get("executions"),
        "failures": progress.get("failed"),  # device -> why: failed, rejected (its refusal) or timed out (first 50)
    }


def record_gate(spec: PipelineSpec, s3: Any, rollout_id: str, gate: Mapping[str, Any]) -> None:
    write_part(s3, spec, rollout_id, 11 + 3 * int(gate["wave"]), f"gate-wave-{gate['wave']}", dict(gate))


def record_approval(
    spec: PipelineSpec, s3: Any, plan: Mapping[str, Any], approval: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The human answer before the production waves (the approval task's XCom) as an audit part; None if none."""
    if not approval or not approval.get("chosen_options"):
        return None
    chosen = [str(option) for option in approval["chosen_options"]]
    user = approval.get("responded_by_user") or {}
    decision = {
        "decision": "approved" if chosen == ["Approve"] else "rejected",
        "chosen_options": chosen,
        "responded_by": user.get("name") or user.get("id"),
        "responded_at": str(approval.get("responded_at")),
    }
    production = [int(w["index"]) for w in plan["waves"] if not w["canary"]] or [0]
    # just before the first production wave's apply part (10 + 3 x wave)
    write_part(s3, spec, plan["rollout_id"], 9 + 3 * min(production), "approval", decision)
    return decision


def all_gates_passed(plan: Mapping[str, Any], gates: Mapping[int, Mapping[str, Any] | None]) -> bool:
    planned = [w["index"] for w in plan["waves"] if w["groups"]]
    return all((gates.get(i) or {}).get("state") == "pass" for i in planned)


def promote_step(
    spec: PipelineSpec,
    s3: Any,
    tracking_uri: str,
    plan: Mapping[str, Any],
    gates: Mapping[int, Any],
    approval: Mapping[str, Any] | None = None,
    shadow: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Move `champion` to the rolled-out version, close the drift alerts it answered, write the audit.

    `approval`: the approval task's XCom when the spec asks for one (who approved, when); `shadow`:
    the shadow wave's record when the spec has one.
    """
    from edgeloop.registry.aliases import set_champion
    from edgeloop.registry.client import mlflow_client

    set_champion(
        mlflow_client(tracking_uri), spec, plan["model_version"], expected_current=plan.get("champion_at_plan")
    )
    summary = {
        "outcome": "promoted",
        "model_version": plan["model_version"],
        "previous_version": plan["previous_version"],
        "champion": plan["model_version"],
        "overrides": list(plan.get("overrides") or []),
        "finished_at": now_iso(),
    }
    decision = record_approval(spec, s3, plan, approval)
    if decision:
        summary["approval"] = decision
    if shadow:
        summary["shadow"] = _shadow_summary(shadow)
    # the retrained model now runs everywhere: the drift alerts it answered are done
    from datetime import UTC, datetime

    from edgeloop.drift.alert_state import close_drift_alerts

    summary["closed_drift_alerts"] = close_drift_alerts(
        s3,
        spec.storage.bucket,
        spec,
        datetime.now(UTC),
        reason=f"champion {plan['model_version']} on every group",
        groups=["*"],
    )
    write_part(s3, spec, plan["rollout_id"], 90, "promote", summary)
    return assemble_audit(s3, spec, plan["rollout_id"], summary)


def rollback_step(
    spec: PipelineSpec,
    s3: Any,
    kafka_config: Mapping[str, Any],
    plan: Mapping[str, Any],
    applies: Mapping[int, Mapping[str, Any] | None],
    gates: Mapping[int, Mapping[str, Any] | None],
    context: Any,
    approval: Mapping[str, Any] | None = None,
    shadow: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return every group this rollout touched to the previous champion, alert, and write the audit.

    `approval`: the approval task's XCom when the spec asks for one; a rejection is the reason then.
    `shadow`: the shadow wave's record; when it failed, no device served the version (`stopped_in_shadow`).
    """
    from edgeloop.events import publish_alerts

    touched = [g for a in applies.values() if a for g in a["groups"]]
    previous = plan["previous_version"]
    reasons = [r for g in gates.values() if g for r in g.get("reasons", [])]
    decision = record_approval(spec, s3, plan, approval)
    if decision and decision["decision"] == "rejected":
        who = decision["responded_by"] or "nobody before the approval timeout"
        reasons.insert(0, f"production waves rejected at approval by {who}")
    shadow_failed = shadow is not None and shadow.get("state") != "pass"
    if shadow is not None and shadow_failed:
        reasons = [f"shadow wave: {r}" for r in shadow.get("reasons") or ["no decision"]] + reasons
    reasons = reasons or ["a wave did not complete"]
    restored = []
    if previous:
        results = launch_groups(spec, touched, previous, -1, plan["rollout_id"], context, rollback=True)
        restored = [_short(result) for result in results]
    summary = {
        "outcome": "stopped_in_shadow" if shadow_failed and not touched else "rolled_back",
        "model_version": plan["model_version"],
        "previous_version": previous,
        "champion": previous,
        "rolled_back_groups": touched,
        "restored": restored,
        "reasons": reasons,
        "overrides": list(plan.get("overrides") or []),
        "finished_at": now_iso(),
    }
    if decision:
        summary["approval"] = decision
    if shadow:
        summary["shadow"] = _shadow_summary(shadow)
    write_part(s3, spec, plan["rollout_id"], 95, "rollback", summary)
    record = assemble_audit(s3, spec, plan["rollout_id"], summary)
    alert = {
        "kind": "rollout",
        "pipeline": spec.name,
        "rollout_id": plan["rollout_id"],
        "model_version": plan["model_version"],
        "groups": touched,
        "reasons": reasons,
        "severity": "critical",
    }
    publish_alerts(kafka_config, spec, [alert])
    return record


def _shadow_summary(shadow: Mapping[str, Any]) -> dict[str, Any]:
    """The shadow wave's numbers for the rollout's summary (the whole record is its own audit part)."""
    keys = ("state", "windows", "devices", "records", "agreement", "mean_confidence_delta", "latency_ratio")
    return {
        **{k: shadow.get(k) for k in keys},
        "error_rate": shadow.get("error_rate"),
        "reasons": shadow.get("reasons"),
    }
