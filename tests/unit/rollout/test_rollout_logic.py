"""Rollout planning, the health gate and the rendered job pods (no cluster: built offline and validated)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeloop.rollout.gate import GroupReading, evaluate_gate
from edgeloop.rollout.job import assignment_id_for, rollout_id_for
from edgeloop.rollout.plan import RolloutPlanError, plan_rollout, spec_waves
from edgeloop.spec import HealthThresholds, load_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"


@pytest.fixture(scope="module")
def spec():
    return load_spec(DEMO)


def test_waves_put_canary_first_then_groups_by_wave_number(spec) -> None:
    waves = spec_waves(spec)
    assert [(w.name, w.groups) for w in waves] == [
        ("canary", ("line-canary",)),
        ("wave_1", ("plant-north", "plant-south")),
    ]


def test_unknown_group_or_version_fails_before_any_change(spec) -> None:
    with pytest.raises(RolloutPlanError, match="not groups of"):
        plan_rollout(spec, "3", ["plant-east"])
    with pytest.raises(RolloutPlanError, match="not a registry version"):
        plan_rollout(spec, "latest")
    with pytest.raises(RolloutPlanError, match="not a registry version"):
        plan_rollout(spec, None)


def test_skipping_the_canary_needs_a_reason(spec) -> None:
    with pytest.raises(RolloutPlanError, match="skip_canary_reason"):
        plan_rollout(spec, "4", ["plant-north"])
    waves = plan_rollout(spec, "4", ["plant-north"], skip_canary_reason="hotfix for a crash, canary line is down")
    assert [w.groups for w in waves] == [(), ("plant-north",)]
    assert [w.groups for w in plan_rollout(spec, "4", ["line-canary"])] == [("line-canary",), ()]


def reading(**kw) -> GroupReading:
    base = dict(group="g", devices=20, applied=20, failed=0, offline_ratio=0.0, error_rate=0.0, mean_confidence=0.9)
    return GroupReading(**(base | kw))


T = HealthThresholds(min_applied_ratio=0.95, max_error_rate=0.02, max_offline_ratio=0.1, min_mean_confidence=0.5)


def test_gate_waits_during_soak_and_passes_at_its_end() -> None:
    assert evaluate_gate([reading(applied=5)], T, 0.05, soak_over=False).state == "wait"
    assert evaluate_gate([reading()], T, 0.05, soak_over=True).passed


def test_gate_fails_early_on_errors_or_failed_applies() -> None:
    early = evaluate_gate([reading(error_rate=0.3)], T, 0.05, soak_over=False)
    assert early.state == "fail" and "error rate 0.300" in early.reasons[0]
    failed = evaluate_gate([reading(failed=3)], T, 0.05, soak_over=False)
    assert failed.state == "fail" and "3/20 devices failed" in failed.reasons[0]


def test_devices_that_never_report_count_as_failed_after_the_soak() -> None:
    decision = evaluate_gate([reading(applied=17)], T, 0.05, soak_over=True)
    assert decision.state == "fail"
    assert "17/20 devices report the new version" in decision.reasons[0]


def test_gate_fails_on_offline_low_confidence_and_empty_groups() -> None:
    decision = evaluate_gate(
        [reading(group="a", offline_ratio=0.5), reading(group="b", mean_confidence=0.2), reading(group="c", devices=0)],
        T,
        0.05,
        soak_over=True,
    )
    assert decision.state == "fail"
    text = " ".join(decision.reasons)
    assert "c: no device" in text
    decision = evaluate_gate(
        [reading(group="a", offline_ratio=0.5), reading(group="b", mean_confidence=0.2)], T, 0.05, True
    )
    assert any("offline ratio 0.500" in r for r in decision.reasons)
    assert any("mean confidence 0.200" in r for r in decision.reasons)


def test_ids_are_stable_for_retries_and_distinct_per_rollout() -> None:
    first = rollout_id_for("factory_maintenance", "asset_triggered__2026-11-25")
    assert first == rollout_id_for("factory_maintenance", "asset_triggered__2026-11-25")
    assert first != rollout_id_for("factory_maintenance", "manual__2026-11-25")
    assert assignment_id_for(first, "plant-north", "4") != assignment_id_for(first, "plant-north", "4", rollback=True)


def _validate(manifest: dict, version: str) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("k8s_version", ["1.30.0", "1.33.0", "1.37.0"])
def test_rendered_job_pod_is_valid_hardened_and_holds_no_secret(spec, k8s_version: str) -> None:
    from edgeloop.rollout.pods import render_pod, rollout_pod_operator

    pod = render_pod(rollout_pod_operator(spec, "plant-north", "7", 1, "ro-123"))
    _validate(pod, k8s_version)
    container = pod["spec"]["containers"][0]
    assert container["args"][:2] == ["rollout-job", "--pipeline"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False
    assert pod["spec"]["serviceAccountName"] == "edgeloop-rollout"
    assert pod["metadata"]["namespace"] == "edge"
    secret_env = {e["name"]: e for e in container["env"] if "valueFrom" in e}
    assert secret_env["EDGELOOP_SIGNING_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "edgeloop-control",
        "key": "signing-key",
    }
    text = json.dumps(pod)
    for env_name in ("AIRFLOW_CONN_EDGELOOP_KAFKA", "EDGELOOP_SIGNING_KEY"):
        assert all("value" not in e for e in container["env"] if e["name"] == env_name)
    assert "password" not in text.lower() and "PRIVATE KEY" not in text
