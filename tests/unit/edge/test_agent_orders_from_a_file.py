"""An agent in a DaemonSet pod takes its order from a mounted file, and is ready only once it serves it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.keys import INTRUDER, OPERATOR, TRUSTED
from tests.unit.edge.conftest import PIPELINE

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.contract.keys import Keyring, Signer
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


def order(path: Path, version: str, data: bytes, digest: str | None = None, signer: Signer = OPERATOR) -> bytes:
    ref = ArtifactRef(path.as_uri(), digest or hashlib.sha256(data).hexdigest(), len(data))
    assignment = new_assignment(Target("group", "plant-north"), model_version=version, artifact=ref, pipeline=PIPELINE)
    return assignment.to_wire(signer)


def carry_out_orders(agent: Agent) -> None:
    while agent.waiting_orders:
        agent._carry_out(agent.waiting_orders.pop())
    agent._finish_orders()


@pytest.fixture
def pod_agent(spec: PipelineSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Agent:
    monkeypatch.setenv("NODE_NAME", "edge-node-01")
    (tmp_path / "trusted.pem").write_bytes(TRUSTED.pem())
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "edge-node-01.key").write_bytes(Signer.generate().private_pem())  # the Secret's item
    raw = agent_config(spec, "plant-north", "x", {"bootstrap.servers": "127.0.0.1:1"}, tmp_path / "state")
    del raw["device_id"]
    raw.update(
        device_id_env="NODE_NAME",
        trusted_keys_file=str(tmp_path / "trusted.pem"),
        identity_key_file=str(tmp_path / "keys" / "{device_id}.key"),
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


def test_a_key_added_to_the_trusted_file_is_taken_up_and_a_retired_one_refused(
    pod_agent: Agent, baseline_model: bytes, tmp_path: Path
) -> None:
    (tmp_path / "m.onnx").write_bytes(baseline_model)
    new_key = Signer.generate()
    trusted = tmp_path / "trusted.pem"
    (tmp_path / "assignment.json").write_bytes(order(tmp_path / "m.onnx", "4", baseline_model, signer=new_key))
    pod_agent.reload_trusted_keys()
    pod_agent._read_assignment_file(tmp_path / "assignment.json")
    assert pod_agent.waiting_orders == [] and pod_agent.core.counters.control_refused == 1

    trusted.write_bytes(Keyring.of([OPERATOR.public, new_key.public]).pem())  # rotation, step 1: add the new key
    pod_agent.assignment_stamp = None
    pod_agent.reload_trusted_keys()
    pod_agent._read_assignment_file(tmp_path / "assignment.json")
    carry_out_orders(pod_agent)
    assert pod_agent.core.model_version == "4"

    trusted.write_bytes(Keyring.of([new_key.public]).pem() + b"\n")  # step 2: retire the old key
    pod_agent.reload_trusted_keys()
    assert pod_agent.core.trusted.ids == [new_key.key_id]
    (tmp_path / "assignment.json").write_bytes(order(tmp_path / "m.onnx", "5", baseline_model))
    pod_agent._read_assignment_file(tmp_path / "assignment.json")
    assert pod_agent.waiting_orders == [] and pod_agent.core.model_version == "4"
    assert pod_agent.core.counters.control_refused == 2


def test_an_agent_without_its_own_key_does_not_start(spec: PipelineSpec, tmp_path: Path) -> None:
    (tmp_path / "trusted.pem").write_bytes(TRUSTED.pem())
    raw = agent_config(spec, "plant-north", "d-1", {"bootstrap.servers": "127.0.0.1:1"}, tmp_path / "state")
    raw["trusted_keys_file"] = str(tmp_path / "trusted.pem")
    with pytest.raises(ConfigError, match="enrol the device first"):
        Agent(parse_config(raw))
    raw["trusted_keys_file"] = str(tmp_path / "none.pem")
    with pytest.raises(ConfigError, match="cannot read"):
        parse_config(raw).trusted_keys()
    assert INTRUDER.key_id not in TRUSTED.ids


def test_a_device_id_from_the_environment_is_checked(spec: PipelineSpec, tmp_path: Path) -> None:
    raw = agent_config(spec, "plant-north", "x", {"bootstrap.servers": "127.0.0.1:1"}, tmp_path)
    del raw["device_id"]
    raw["device_id_env"] = "EDGELOOP_TEST_UNSET_NODE_NAME"
    with pytest.raises(ConfigError, match="device_id_env"):
        parse_config(raw)
