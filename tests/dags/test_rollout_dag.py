"""The rollout DAG's shape: plan, (shadow), then per wave apply and its health gate, (the approval before the
first production wave), then promote and rollback, which both run whatever the waves did."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeloop.spec import parse_spec

DEMO = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "factory_maintenance.yaml"


def rollout_dag(**rollout: object):
    from edgeloop.factory.stages import build_rollout

    data = yaml.safe_load(DEMO.read_text())
    data["rollout"] |= rollout
    return build_rollout(parse_spec(yaml.safe_dump(data)))


def upstream(dag, task_id: str) -> set[str]:
    return set(dag.get_task(task_id).upstream_task_ids)


def test_each_wave_is_an_apply_then_its_gate_and_the_run_ends_in_promote_or_rollback() -> None:
    dag = rollout_dag()
    assert set(dag.task_ids) == {
        "plan",
        "apply_canary",
        "gate_canary",
        "apply_wave_1",
        "gate_wave_1",
        "promote",
        "rollback",
    }
    assert upstream(dag, "apply_canary") == {"plan"}
    assert upstream(dag, "gate_canary") == {"apply_canary"}
    assert upstream(dag, "apply_wave_1") == {"gate_canary", "plan"}
    assert upstream(dag, "promote") == upstream(dag, "rollback") == {"gate_wave_1", "plan"}
    for wave in ("canary", "wave_1"):
        gate = dag.get_task(f"gate_{wave}")
        assert gate.apply_task_id == f"apply_{wave}" and gate.trigger_rule == "none_failed"
        assert dag.get_task(f"apply_{wave}").trigger_rule == "none_failed"
    assert dag.get_task("promote").trigger_rule == dag.get_task("rollback").trigger_rule == "all_done"


@pytest.mark.parametrize("shadow", [False, True])
def test_the_approval_stands_before_the_first_production_wave_only(shadow: bool) -> None:
    extra = {"shadow": {"enabled": True, "window": "10s", "min_windows": 2}} if shadow else {}
    dag = rollout_dag(approval_required=True, approvers=["admin"], **extra)
    assert [t for t in dag.task_ids if "approve" in t] == ["approve_production"]
    assert upstream(dag, "approve_production") == {"gate_canary"}
    assert upstream(dag, "apply_wave_1") == {"approve_production", "plan"}
    assert upstream(dag, "apply_canary") == ({"shadow", "plan"} if shadow else {"plan"})
    assert ("shadow" in dag.task_ids) is shadow
