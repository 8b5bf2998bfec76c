"""Every writer of the alerts topic goes through one publisher: checked as the watchers check, one key rule.

Given alerts of each kind as their stages make them, when they are published, then each message is the
alert's JSON with sorted keys, keyed by the group it is about (else the pipeline), and a bad alert stops
the whole call before anything is sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgeloop import kafka
from edgeloop.events import AlertError, alert_key, parse_alert, publish_alerts
from edgeloop.spec import PipelineSpec, load_spec

DEMO = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "factory_maintenance.yaml"


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(DEMO)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[tuple[bytes | None, bytes | None]]]]:
    calls: list[tuple[str, list[tuple[bytes | None, bytes | None]]]] = []
    monkeypatch.setattr(kafka, "publish_messages", lambda config, topic, items, timeout: calls.append((topic, items)))
    return calls


def drift(spec: PipelineSpec, groups: list[str]) -> dict[str, Any]:
    return {"kind": "drift", "pipeline": spec.name, "alert_id": "drift:1", "groups": groups, "window": {}}


def test_each_kind_is_keyed_by_its_group_or_else_its_pipeline(spec: PipelineSpec) -> None:
    device = {"kind": "device", "pipeline": spec.name, "group": "plant-north", "reason": "error_rate"}
    model = {"kind": "model", "pipeline": spec.name, "version": "3", "decision": "reject"}
    rollout = {"kind": "rollout", "pipeline": spec.name, "groups": ["plant-north", "plant-south"]}
    assert alert_key(device) == b"plant-north"
    assert alert_key(drift(spec, ["plant-south"])) == b"plant-south"
    assert alert_key(drift(spec, ["plant-north", "plant-south"])) == spec.name.encode()
    assert alert_key(rollout) == spec.name.encode()
    assert alert_key(model) == spec.name.encode()


def test_published_alerts_are_their_json_with_sorted_keys_on_the_alerts_topic(spec: PipelineSpec, sent: list) -> None:
    alerts = [drift(spec, ["plant-north"]), {"pipeline": spec.name, "kind": "model", "version": "3"}]
    assert publish_alerts({}, spec, alerts) == 2
    [(topic, items)] = sent
    assert topic == spec.topic("alerts")
    assert items == [(alert_key(a), json.dumps(a, sort_keys=True).encode()) for a in alerts]
    assert [parse_alert(value) for _, value in items] == alerts


def test_one_bad_alert_stops_the_call_before_anything_is_sent(spec: PipelineSpec, sent: list) -> None:
    unknown_kind = {"kind": "weather", "pipeline": spec.name}
    with pytest.raises(AlertError, match="kind: 'weather' is not one of"):
        publish_alerts({}, spec, [drift(spec, ["plant-north"]), unknown_kind])
    with pytest.raises(AlertError, match="groups: not a list of group names"):
        publish_alerts({}, spec, [{**drift(spec, []), "groups": "plant-north"}])
    assert sent == []


def test_an_alert_of_another_pipeline_is_refused(spec: PipelineSpec, sent: list) -> None:
    with pytest.raises(AlertError, match="pipeline: 'elsewhere' on the alerts topic of 'factory_maintenance'"):
        publish_alerts({}, spec, [{"kind": "model", "pipeline": "elsewhere"}])
    assert sent == []


def test_no_alert_sends_nothing(spec: PipelineSpec, sent: list) -> None:
    assert publish_alerts({}, spec, []) == 0
    assert sent == []
