"""What each task of the `<pipeline>__rollout` DAG does (the DAG tasks are thin wrappers)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from edgeloop.rollout.audit import assemble_audit, now_iso, write_part
from edgeloop.rollout.job import assignment_id_for, rollout_id_for
from edgeloop.rollout.plan import plan_rollout
from edgeloop.spec import PipelineSpec


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
    started_by: str,
) -> dict[str, Any]:
    from edgeloop.fleet.messages import BASELINE_VERSION
    from edgeloop.registry.aliases import alias_version
    from edgeloop.training.tracking import mlflow_client

    version = str(params.get("model_version") or event_version or "")
    waves = plan_rollout(spec, version, params.get("groups") or None, str(params.get("skip_canary_reason") or ""))
    _check_version_exists(tracking_uri, spec.registry.model_name, version)
    rollout_id = rollout_id_for(spec.name, run_id)
    current = alias_version(mlflow_client(tracking_uri), spec.registry.model_name, "champion")
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
        "started_by": started_by,
        "skip_canary_reason": params.get("skip_canary_reason") or None,
        "planned_at": now_iso(),
    }
    write_part(s3, spec, rollout_id, 0, "plan", plan)
    return plan


def _check_version_exists(tracking_uri: str, model_name: str, version: str) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from edgeloop.rollout.plan import RolloutPlanError

    try:
        MlflowClient(tracking_uri=tracking_uri).get_model_version(model_name, version)
    except MlflowException as exc:
        raise RolloutPlanError(f"model_version: {model_name} version {version} is not in the registry") from exc


def apply_step(spec: PipelineSpec, s3: Any, plan: Mapping[str, Any], wave_index: int, context: Any) -> dict[str, Any]:
    from edgeloop.rollout.launch import launch_group

    wave = next(w for w in plan["waves"] if w["index"] == wave_index)
    version = plan["model_version"]
    applied_at = time.time()
    results = [launch_group(spec, group, version, wave_index, plan["rollout_id"], context) for group in wave["groups"]]
    outcome = {
        "wave": wave_index,
        "groups": list(wave["groups"]),
        "model_version": version,
        "assignment_ids": {g: assignment_id_for(plan["rollout_id"], g, version) for g in wave["groups"]},
        "applied_at": applied_at,
        "results": [_short(r) for r in results],
    }
    write_part(s3, spec, plan["rollout_id"], 10 + 2 * wave_index, f"apply-wave-{wave_index}", outcome)
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
    }


def record_gate(spec: PipelineSpec, s3: Any, rollout_id: str, gate: Mapping[str, Any]) -> None:
    write_part(s3, spec, rollout_id, 11 + 2 * int(gate["wave"]), f"gate-wave-{gate['wave']}", dict(gate))


def all_gates_passed(plan: Mapping[str, Any], gates: Mapping[int, Mapping[str, Any] | None]) -> bool:
    planned = [w["index"] for w in plan["waves"] if w["groups"]]
    return all((gates.get(i) or {}).get("state") == "pass" for i in planned)


def promote_step(
    spec: PipelineSpec, s3: Any, tracking_uri: str, plan: Mapping[str, Any], gates: Mapping[int, Any]
) -> dict[str, Any]:
    from edgeloop.registry.aliases import set_champion
    from edgeloop.training.tracking import mlflow_client

    set_champion(
        mlflow_client(tracking_uri), spec, plan["model_version"], expected_current=plan.get("champion_at_plan")
    )
    summary = {
        "outcome": "promoted",
        "model_version": plan["model_version"],
        "previous_version": plan["previous_version"],
        "champion": plan["model_version"],
        "finished_at": now_iso(),
    }
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
) -> dict[str, Any]:
    """Return every group this rollout touched to the previous champion, alert, and write the audit."""
    from edgeloop.fleet.control import publish_messages
    from edgeloop.rollout.launch import launch_group

    touched = [g for a in applies.values() if a for g in a["groups"]]
    previous = plan["previous_version"]
    reasons = [r for g in gates.values() if g for r in g.get("reasons", [])] or ["a wave did not complete"]
    restored = []
    if previous:
        for group in touched:
            result = launch_group(spec, group, previous, -1, plan["rollout_id"], context, rollback=True)
            restored.append(_short(result))
    summary = {
        "outcome": "rolled_back",
        "model_version": plan["model_version"],
        "previous_version": previous,
        "champion": previous,
        "rolled_back_groups": touched,
        "restored": restored,
        "reasons": reasons,
        "finished_at": now_iso(),
    }
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
    publish_messages(kafka_config, spec.topic("alerts"), [(spec.name.encode(), json.dumps(alert).encode())])
    return record
