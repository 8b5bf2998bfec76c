"""Only versions the evaluation gate passed are rolled out; an admin's manual run may override, with a reason.

The rollout's plan step runs against a registry fake holding what the gate records on versions:
version 1 the first model (promoted, champion), 2 a rejected challenger, 3 a version the gate never
judged, 4 a promoted challenger.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from edgeloop.registry.tags import TAG_DECISION, TAG_FIRST_RUN, TAG_REASON
from edgeloop.rollout import steps
from edgeloop.rollout.admission import RolloutRefused, RunOrigin
from edgeloop.rollout.plan import RolloutPlanError
from edgeloop.spec import PipelineSpec, load_spec, parse_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
SPEC = load_spec(DEMO)
REJECTION = "f1_macro 0.7100 does not beat the champion's 0.8000 by the margin 0.01 (needs at least 0.8100)"
ADMINS = {"admin"}

ADMIN_RUN = RunOrigin("manual", "admin")
VIEWER_RUN = RunOrigin("manual", "viewer")
ASSET_RUN = RunOrigin("asset_triggered", None)


def is_admin(name: str) -> bool:
    return name in ADMINS


class FakeRegistry:
    """The few MlflowClient calls planning and promotion make, over versions with their gate tags."""

    tracking_uri = "http://mlflow.invalid"

    def __init__(self) -> None:
        self.tags: dict[str, dict[str, str]] = {
            "1": {TAG_DECISION: "promote", TAG_REASON: "first model", TAG_FIRST_RUN: "true"},
            "2": {TAG_DECISION: "reject", TAG_REASON: REJECTION},
            "3": {},
            "4": {TAG_DECISION: "promote", TAG_REASON: "beats the champion"},
        }
        self.aliases = {"champion": "1"}

    def get_model_version(self, name: str, version: str) -> Any:
        from mlflow.exceptions import MlflowException

        if str(version) not in self.tags:
            raise MlflowException(f"Model Version (name={name}, version={version}) not found")
        return SimpleNamespace(version=str(version), tags=dict(self.tags[str(version)]))

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        from mlflow.exceptions import MlflowException

        if alias not in self.aliases:
            raise MlflowException(f"alias {alias} not found", error_code="RESOURCE_DOES_NOT_EXIST")
        return self.get_model_version(name, self.aliases[alias])

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.tags[str(version)][key] = value

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[alias] = str(version)


class FakeS3:
    """put, get and list of objects in memory (what the audit parts need)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str = "") -> None:
        self.objects[Key] = Body

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        return {"Body": io.BytesIO(self.objects[Key])}

    def get_paginator(self, operation: str) -> Any:
        objects = self.objects

        class Pages:
            def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, Any]]:
                return [{"Contents": [{"Key": k} for k in sorted(objects) if k.startswith(Prefix)]}]

        return Pages()

    def part(self, step: str) -> dict[str, Any]:
        [key] = [k for k in self.objects if k.endswith(f"-{step}.json")]
        return dict(json.loads(self.objects[key]))


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> FakeRegistry:
    from edgeloop.registry import client

    fake = FakeRegistry()
    monkeypatch.setattr(client, "mlflow_client", lambda uri: fake)
    return fake


def plan(s3: Any, params: dict[str, Any], origin: RunOrigin, spec: PipelineSpec = SPEC) -> dict[str, Any]:
    return steps.plan_step(spec, s3, "http://mlflow.invalid", "manual__1", params, None, origin, is_admin=is_admin)


def test_a_rejected_challenger_is_refused_naming_version_decision_and_reason(registry: FakeRegistry) -> None:
    s3 = FakeS3()
    with pytest.raises(RolloutRefused) as refused:
        plan(s3, {"model_version": "2"}, ADMIN_RUN)
    message = str(refused.value)
    assert message.startswith("model_version: factory_maintenance version 2 did not pass the evaluation gate")
    assert "decided 'reject'" in message and REJECTION in message
    assert s3.objects == {}, "a refused rollout writes nothing"


def test_a_version_the_gate_never_judged_is_refused(registry: FakeRegistry) -> None:
    with pytest.raises(RolloutRefused, match=r"version 3 did not pass .* recorded no decision"):
        plan(FakeS3(), {"model_version": "3"}, ADMIN_RUN)


def test_an_asset_event_naming_a_rejected_version_is_refused_too(registry: FakeRegistry) -> None:
    with pytest.raises(RolloutRefused, match="version 2 did not pass"):
        steps.plan_step(SPEC, FakeS3(), "uri", "asset__1", {}, "2", ASSET_RUN, is_admin=is_admin)


def test_an_unknown_version_is_refused_as_not_in_the_registry(registry: FakeRegistry) -> None:
    with pytest.raises(RolloutPlanError, match="version 9 is not in the registry"):
        plan(FakeS3(), {"model_version": "9"}, ADMIN_RUN)


def test_promoted_versions_pass_whoever_started_the_run(registry: FakeRegistry) -> None:
    first = steps.plan_step(SPEC, FakeS3(), "uri", "asset__1", {}, "1", ASSET_RUN, is_admin=is_admin)
    assert first["gate"]["decision"] == "promote" and first["overrides"] == []
    assert first["previous_version"] == "0", "the first model rolls back to the on-device baseline"
    manual = plan(FakeS3(), {"model_version": "4"}, VIEWER_RUN)
    assert (manual["model_version"], manual["overrides"], manual["triggered_by"]) == ("4", [], "viewer")


def test_the_plan_records_the_rollout_policy_and_what_the_dag_does_not_act_on(registry: FakeRegistry) -> None:
    assert "policy" not in plan(FakeS3(), {"model_version": "4"}, VIEWER_RUN)
    data = yaml.safe_load(DEMO.read_text())
    data["rollout"] |= {"abort": {"failure_threshold_pct": 5, "min_executed": 50}, "device_timeout": "10m"}
    s3 = FakeS3()
    planned = plan(s3, {"model_version": "4"}, VIEWER_RUN, parse_spec(yaml.safe_dump(data)))
    assert planned["policy"] == {
        "given": {"abort": {"failure_threshold_pct": 5.0, "min_executed": 50}, "device_timeout": "PT10M"},
        "not_enforced": [],
    }
    assert s3.part("plan")["policy"] == planned["policy"]


def test_an_admin_override_is_honoured_and_recorded_in_the_audit(
    registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeloop.drift import alert_state

    s3 = FakeS3()
    planned = plan(
        s3, {"model_version": "2", "override_reason": "  INC-42: the gate's eval split is stale  "}, ADMIN_RUN
    )
    [override] = planned["overrides"]
    assert override["param"] == "override_reason" and override["by"] == "admin"
    assert override["reason"] == "INC-42: the gate's eval split is stale"
    assert "version 2" in override["overrides"] and "reject" in override["overrides"]
    assert s3.part("plan")["overrides"] == [override]

    monkeypatch.setattr(alert_state, "close_drift_alerts", lambda *args, **kwargs: [])
    record = steps.promote_step(SPEC, s3, "uri", planned, {0: {"state": "pass"}, 1: {"state": "pass"}})
    assert record["overrides"] == [override]
    assert [s["overrides"] for s in record["steps"] if s["step"] == "plan"] == [[override]]
    assert registry.aliases["champion"] == "2"


@pytest.mark.parametrize(
    ("origin", "why"),
    [
        (VIEWER_RUN, "needs an Airflow admin; 'viewer' is not one"),
        (RunOrigin("manual", None), "triggered by no user"),
        (RunOrigin("asset_triggered", "admin"), "this run is 'asset_triggered'"),
    ],
)
def test_an_override_by_anyone_but_an_admin_in_a_manual_run_is_refused(
    registry: FakeRegistry, origin: RunOrigin, why: str
) -> None:
    s3 = FakeS3()
    with pytest.raises(RolloutRefused) as refused:
        plan(s3, {"model_version": "2", "override_reason": "trust me"}, origin)
    assert "model_version: factory_maintenance version 2 was refused" in str(refused.value)
    assert why in str(refused.value)
    assert s3.objects == {}


def test_an_override_without_a_reason_is_no_override(registry: FakeRegistry) -> None:
    with pytest.raises(RolloutRefused, match="did not pass the evaluation gate"):
        plan(FakeS3(), {"model_version": "2", "override_reason": "   "}, ADMIN_RUN)


def test_skipping_the_canary_needs_an_admin_and_a_recorded_reason(registry: FakeRegistry) -> None:
    params = {"model_version": "4", "groups": ["plant-north"], "skip_canary_reason": "canary line is down"}
    with pytest.raises(RolloutRefused, match=r"skip_canary_reason: .* needs an Airflow admin; 'viewer' is not one"):
        plan(FakeS3(), params, VIEWER_RUN)
    with pytest.raises(RolloutRefused, match=r"skip_canary_reason: .* this run is 'asset_triggered'"):
        plan(FakeS3(), params, RunOrigin("asset_triggered", None))
    with pytest.raises(RolloutPlanError, match="give skip_canary_reason"):
        plan(FakeS3(), {**params, "skip_canary_reason": ""}, ADMIN_RUN)

    s3 = FakeS3()
    planned = plan(s3, params, ADMIN_RUN)
    [override] = planned["overrides"]
    assert (override["param"], override["by"], override["reason"]) == (
        "skip_canary_reason",
        "admin",
        params["skip_canary_reason"],
    )
    assert "line-canary" in override["overrides"]
    assert s3.part("plan")["skip_canary_reason"] == "canary line is down"


def test_a_canary_only_rollout_skips_nothing_and_needs_no_admin(registry: FakeRegistry) -> None:
    planned = plan(FakeS3(), {"model_version": "4", "groups": ["line-canary"]}, VIEWER_RUN)
    assert planned["overrides"] == [] and planned["skip_canary_reason"] is None


def test_both_overrides_in_one_admin_run_are_both_recorded(registry: FakeRegistry) -> None:
    params = {
        "model_version": "3",
        "override_reason": "hotfix registered by hand",
        "groups": ["plant-north"],
        "skip_canary_reason": "canary line is down",
    }
    planned = plan(FakeS3(), params, ADMIN_RUN)
    assert [o["param"] for o in planned["overrides"]] == ["override_reason", "skip_canary_reason"]


def test_the_run_origin_is_read_off_the_dag_run() -> None:
    run = SimpleNamespace(run_type=SimpleNamespace(value="manual"), triggering_user_name="admin")
    assert RunOrigin.of(run) == RunOrigin("manual", "admin")
    assert RunOrigin.of(SimpleNamespace(run_type="asset_triggered")) == RunOrigin("asset_triggered", None)


def test_a_spec_with_no_canary_group_needs_no_override(registry: FakeRegistry) -> None:
    data = yaml.safe_load(DEMO.read_text())
    data["rollout"]["canary_groups"] = []
    spec = parse_spec(yaml.safe_dump(data), DEMO)
    planned = plan(FakeS3(), {"model_version": "4", "groups": ["plant-north"]}, VIEWER_RUN, spec)
    assert planned["overrides"] == []
