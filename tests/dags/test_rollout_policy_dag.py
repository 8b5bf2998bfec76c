"""The rollout DAG takes its waves from `rollout.waves` when a spec has them."""

from __future__ import annotations

from pathlib import Path

import yaml

from edgeloop.spec import parse_spec

DEMO = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "factory_maintenance.yaml"


def test_waves_of_whole_groups_become_the_rollout_dags_waves() -> None:
    from edgeloop.factory.stages import build_rollout

    data = yaml.safe_load(DEMO.read_text())
    for group in data["groups"]:
        group.pop("wave")
    data["rollout"] |= {
        "canary_groups": [],
        "approval_required": True,
        "approvers": ["admin"],
        "waves": [{"groups": ["plant-north"]}, {"groups": ["line-canary"]}, {"groups": "all"}],
    }
    dag = build_rollout(parse_spec(yaml.safe_dump(data)))
    assert {"apply_canary", "gate_canary", "apply_wave_1", "apply_wave_2", "approve_production"} <= set(dag.task_ids)
    assert dag.get_task("approve_production").upstream_task_ids == {"gate_canary"}
    assert dag.get_task("apply_wave_2").upstream_task_ids == {"gate_wave_1", "plan"}


def test_a_shadow_wave_stands_between_the_plan_and_the_first_wave() -> None:
    from edgeloop.factory.stages import build_rollout

    data = yaml.safe_load(DEMO.read_text())
    plain = build_rollout(parse_spec(yaml.safe_dump(data)))
    data["rollout"]["shadow"] = {"enabled": True, "window": "10s", "min_windows": 2}
    spec = parse_spec(yaml.safe_dump(data))
    dag = build_rollout(spec)
    assert "shadow" not in plain.task_ids and spec.topic("shadow") in spec.all_topics
    first = dag.get_task("apply_canary")
    assert first.upstream_task_ids == {"shadow", "plan"}
    assert dag.get_task("shadow").upstream_task_ids == {"plan"}
    assert first.trigger_rule == "none_failed"  # a failed shadow wave stops every wave behind it
