"""The shadow wave's orders: the champion keeps serving, the challenger runs beside it, the same ids on a re-run,
and the orders that end it; and the agent's view of a shadow order on the wire."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tests.helpers.keys import OPERATOR, TRUSTED

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.contract.messages import ControlRejected, ShadowOrder, Target, new_assignment, parse_assignment
from edgeloop.rollout.shadow import ShadowTargets, shadow_targets
from edgeloop.rollout.shadow_wave import shadow_assignments, shadow_deadline_s
from edgeloop.spec import PipelineSpec, parse_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
GROUPS = ["plant-north", "plant-south", "line-canary"]
PLAN = {"rollout_id": "ro-0123456789ab", "previous_version": "3", "model_version": "4"}


def artifact(version: str) -> ArtifactRef:
    return ArtifactRef(f"http://models.example/v{version}.onnx", version * 64, 1000 + int(version))


def resolve(group: str, version: str) -> ArtifactRef:
    return artifact(version)


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    data = yaml.safe_load(DEMO.read_text())
    data["rollout"]["shadow"] = {"enabled": True, "window": "30s", "min_windows": 4}
    return parse_spec(yaml.safe_dump(data))


def test_the_shadow_wave_takes_the_first_waves_groups_and_waits_two_windows_past_its_minimum(
    spec: PipelineSpec,
) -> None:
    targets = shadow_targets(spec)
    assert targets == ShadowTargets(("line-canary",), None, 30.0)
    assert shadow_deadline_s(spec) == 30.0 * 6


def test_a_group_shadow_order_serves_the_champion_and_names_the_challenger(spec: PipelineSpec) -> None:
    targets = ShadowTargets(("plant-north",), None, 30.0)
    (order,) = shadow_assignments(spec, PLAN, targets, {}, resolve)
    assert order.target == Target("group", "plant-north") and order.id == "ro-0123456789ab.plant-north.s4"
    assert (order.model_version, order.artifact) == ("3", artifact("3"))
    assert order.shadow == ShadowOrder("4", artifact("4"), 30.0)
    read = parse_assignment(order.to_wire(OPERATOR), TRUSTED, GROUPS)
    assert read.shadow == order.shadow
    (ended,) = shadow_assignments(spec, PLAN, targets, {}, resolve, end=True)
    assert ended.id == "ro-0123456789ab.plant-north.se4" and ended.shadow is None and ended.model_version == "3"


def test_a_share_shadows_on_chosen_devices_with_the_same_ids_on_a_rerun(spec: PipelineSpec) -> None:
    targets = ShadowTargets(("plant-north",), 0.25, 30.0)
    devices = {"plant-north": [f"plant-north-{i:05d}" for i in range(20)]}
    first = shadow_assignments(spec, PLAN, targets, devices, resolve)
    again = shadow_assignments(spec, PLAN, targets, {"plant-north": list(reversed(devices["plant-north"]))}, resolve)
    assert len(first) == 5 and all(a.target.kind == "device" for a in first)
    assert [a.id for a in first] == [a.id for a in again]
    assert {a.id for a in first} == {f"ro-0123456789ab.plant-north.s4.{a.target.id}" for a in first}


def _wire(shadow: object, model_version: str | None = "3") -> bytes:
    body = new_assignment(
        Target("group", "plant-north"), model_version=model_version, config={"telemetry_interval_s": 1.0}, pipeline="p"
    ).payload()
    body["shadow"] = shadow
    from edgeloop.contract.messages import signed_json

    return signed_json(body, OPERATOR)


GOOD = {"model_version": "4", "artifact": artifact("4").to_dict(), "window_s": 60}


@pytest.mark.parametrize(
    ("shadow", "model_version", "reason"),
    [
        ("4", "3", "shadow: not an object"),
        ({**GOOD, "extra": 1}, "3", "shadow: unknown fields ['extra']"),
        ({**GOOD, "model_version": "3"}, "3", "shadow.model_version: 3 needs a different model_version"),
        (GOOD, None, "shadow.model_version: 4 needs a different model_version"),
        ({**GOOD, "window_s": 0}, "3", "shadow.window_s: 0 is not a number of seconds"),
        ({**GOOD, "window_s": True}, "3", "shadow.window_s: True"),
        ({**GOOD, "artifact": {"url": "ftp://x"}}, "3", "shadow.artifact"),
    ],
)
def test_a_bad_shadow_order_is_refused_naming_its_field(shadow: object, model_version: str | None, reason: str) -> None:
    with pytest.raises(ControlRejected) as refused:
        parse_assignment(_wire(shadow, model_version), TRUSTED, GROUPS)
    assert reason in refused.value.reason


def test_a_shadow_order_on_the_wire_keeps_its_fields() -> None:
    read = parse_assignment(_wire(GOOD), TRUSTED, GROUPS)
    assert read.shadow == ShadowOrder("4", artifact("4"), 60.0)
    assert json.loads(_wire(GOOD))["shadow"]["window_s"] == 60
