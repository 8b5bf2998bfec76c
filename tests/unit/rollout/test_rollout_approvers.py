"""The approval before production waves names its respondents: only the spec's approvers may answer it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgeloop.factory.stages import build_rollout
from edgeloop.spec import PipelineSpec, load_all, parse_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"


def demo_with(**rollout: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEMO.read_text())
    data["rollout"].update(rollout)
    return data


def spec_with(**rollout: Any) -> PipelineSpec:
    return parse_spec(yaml.safe_dump(demo_with(**rollout)), DEMO)


def test_the_approval_task_is_assigned_to_the_specs_approvers_only() -> None:
    dag = build_rollout(spec_with(approval_required=True, approvers=["alice", "ops.lead"]))
    task: Any = dag.get_task("approve_production")
    assert task.assigned_users == [{"id": "alice", "name": "alice"}, {"id": "ops.lead", "name": "ops.lead"}]
    assert task.upstream_task_ids == {"gate_canary"}
    assert dag.get_task("apply_wave_1").upstream_task_ids == {"approve_production", "plan"}


def test_without_approval_there_is_no_approval_task() -> None:
    dag = build_rollout(spec_with(approval_required=False, approvers=["alice"]))
    assert "approve_production" not in dag.task_ids


def test_a_spec_asking_for_approval_from_nobody_does_not_load(tmp_path: Path) -> None:
    (tmp_path / "factory_maintenance.yaml").write_text(yaml.safe_dump(demo_with(approval_required=True)))
    loaded = load_all(tmp_path)
    assert loaded.specs == []
    assert [(e.location, e.message) for e in loaded.errors] == [
        ("rollout.approvers", "Value error, approval_required needs at least one Airflow user who may approve")
    ]
