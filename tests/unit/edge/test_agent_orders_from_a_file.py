"""An agent in a DaemonSet pod takes its order from a mounted file, and is ready only once it serves it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from tests.unit.edge.conftest import KEY

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.contract.messages import Target, new_assignment
from edgeloop.edge.agent import Agent
from edgeloop.edge.config import ConfigError, parse_config
from edgeloop.fleet.agents import agent_config
from edgeloop.spec import PipelineSpec


class Sent:
    """Stands in for the Kafka producer: keeps what the agent sends straight away (twin updates, heartbeats)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes, **_: Any) -> None:
        self.messages.append((topic, value))


def order(path: Path, version: str, data: bytes, digest: str | None = None) -> bytes:
    ref = ArtifactRef(path.as_uri(), digest or hashlib.sha256(data).hexdigest(), len(data))
    assignment = new_assignment(Target("group", "plant-north"), model_version=version, artifact=ref)
    return assignment.to_wire(KEY)


def carry_out_orders(agent: Agent) -> None:
    while agent.waiting_orders:
        agent._carry_out(agent.waiting_orders.pop())
    agent._finish_orders()


@pytest.fixture
def pod_agent(spec: PipelineSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Agent:
    monkeypatch.setenv("NODE_NAME", "edge-node-01")
    (tmp_path / "control.key").write_bytes(KEY)
    raw = agent_config(spec, "plant-north", "x", {"bootstrap.servers": "127.0.0.1:1"}, tmp_path / "state")
    del raw["device_id"]
    raw.update(
        device_id_env="NODE_NAME",
        control_key_file=str(tmp_path / "control.key"),
        control_topic=False,
        assignment_file=str(tmp_path / "assignment.json"),
    )
    agent = Agent(parse_config(raw))
    agent.producer = Sent()  # type: ignore[assignment]
    return agent


def test_the_order_in_the_file_is_verified_carried_out_and_then_the_pod_is_ready(
    pod_agent: Agent, baseline_model: bytes, tmp_path: Path
) -> None:
    (tmp_path / "m.onnx").write_bytes(baseline_model)
    assert pod_agent.config.device_id == "edge-node-01"
    assert not pod_agent.ready(), "no model yet"
    (tmp_path / "assignment.json").write_bytes(order(tmp_path / "m.onnx", "4", baseline_model))

    pod_agent._read_assignment_file(tmp_path / "assignment.json")
    assert not pod_agent.ready()
    carry_out_orders(pod_agent)

    assert pod_agent.core.model_version == "4"
    assert pod_agent.ready()


def test_a_bad_artifact_keeps_the_pod_unready_and_the_old_model_serving(
    pod_agent: Agent, baseline_model: bytes, tmp_path: Path
) -> None:
    (tmp_path / "m.onnx").write_bytes(baseline_model)
    (tmp_path / "assignment.json").write_bytes(order(tmp_path / "m.onnx", "4", baseline_model))
    pod_agent._read_assignment_file(tmp_path / "assignment.json")
    carry_out_orders(pod_agent)
    (tmp_path / "assignment.json").write_bytes(order(tmp_path / "m.onnx", "5", baseline_model, digest="0" * 64))

    pod_agent._read_assignment_file(tmp_path / "assignment.json")
    carry_out_orders(pod_agent)

    assert pod_agent.core.model_version == "4"
    assert not pod_agent.ready()
    states = [json.loads(v) for t, v in pod_agent.producer.messages if t.endswith(".device-state")]  # type: ignore[union-attr]
    assert states[-1]["reported"]["status"] == "failed"
    assert "does not match" in states[-1]["reported"]["reason"]


def test_a_device_id_from_the_environment_is_checked(spec: PipelineSpec, tmp_path: Path) -> None:
    raw = agent_config(spec, "plant-north", "x", {"bootstrap.servers": "127.0.0.1:1"}, tmp_path)
    del raw["device_id"]
    raw["device_id_env"] = "EDGELOOP_TEST_UNSET_NODE_NAME"
    with pytest.raises(ConfigError, match="device_id_env"):
        parse_config(raw)
