"""An agent refuses what it must not serve, says why, and the model it has keeps serving.

Given one agent (in this process, on the stack's Kafka with topics of its own, artifacts
in the stack's S3) that replays readings on model "1", rolled out to its group from S3,
when an assignment arrives that it must refuse:

- checksum mismatch, truncated download, an artifact onnxruntime cannot load, a model
  whose golden self-test fails: an error report `model_load` on `<prefix>.errors` with
  the reason, and device-state `reported.status == "failed"` with the same reason;
- an assignment for another pipeline (signed with the right key): an error report
  `bad_control` with the reason; the twin is not touched (the order was never for it);
- an assignment for another group: ignored and not reported; the twin is unchanged and
  `/metrics` counts it in `edgeloop_agent_control_ignored_total` and nowhere else;

then `/healthz` still says model "1" and the telemetry made after the refusal carries
`model_version: "1"`.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_testkit import (
    agent_health,
    agent_metrics,
    delete_pipeline_topics,
    upload_artifact,
    wait_until,
    write_readings,
)
from tests.helpers.edge_models import tampered_golden
from tests.helpers.keys import OPERATOR, TRUSTED

from edgeloop.contract.artifact import ArtifactRef, sha256_hex
from edgeloop.contract.messages import Assignment, Target, new_assignment
from edgeloop.edge.agent import Agent
from edgeloop.edge.config import parse_config
from edgeloop.fleet.agents import agent_config, enrol_device
from edgeloop.fleet.control import publish_assignment, push_assignment, read_device_states
from edgeloop.fleet.topics import ensure_topics, read_topic
from edgeloop.spec import PipelineSpec
from edgeloop.training.sensors import SensorProfile

pytestmark = pytest.mark.integration

GROUP = "plant-north"
DEVICE = "plant-north-00001"
KEY = OPERATOR  # signs the orders; the agent trusts its public key


@dataclass(frozen=True)
class Deployment:
    """One agent under test and what it is connected to."""

    spec: PipelineSpec
    kafka: dict[str, Any]
    agent: Agent
    port: int
    bucket: str
    prefix: str
    s3: Any

    def health(self) -> dict[str, Any]:
        return agent_health(self.port) or {}

    def metrics(self) -> dict[str, float]:
        return agent_metrics(self.port) or {}

    def errors(self) -> list[dict[str, Any]]:
        records = read_topic(self.kafka, self.spec.topic("errors"), timeout=30)
        return [json.loads(r.value or b"") for r in records if r.key == DEVICE.encode()]

    def twin(self) -> dict[str, Any]:
        state = read_device_states(self.spec, self.kafka, timeout=30).devices.get(DEVICE)
        return dict(state.reported) if state is not None else {}

    def telemetry_since(self, since_ms: int) -> list[dict[str, Any]]:
        records = read_topic(self.kafka, self.spec.topic("telemetry"), since_ms=since_ms, timeout=30)
        return [json.loads(r.value or b"") for r in records]


@pytest.fixture
def deployment(
    demo_spec: PipelineSpec,
    profile: SensorProfile,
    baseline_model: bytes,
    rollout_model: bytes,
    kafka_config: dict[str, Any],
    s3_client: Any,
    storage_area: tuple[str, str],
    tmp_path: Path,
) -> Iterator[Deployment]:
    """The agent on model "1" (rolled out from S3), on fresh topics of the shared broker (deleted afterwards)."""
    prefix_topics = f"it_edge_refusal_{uuid.uuid4().hex[:10]}"
    spec = demo_spec.model_copy(
        update={"topics": demo_spec.topics.model_copy(update={"prefix": prefix_topics, "partitions": 2})}
    )
    ensure_topics(spec, kafka_config, ground_truth=False)
    (tmp_path / "trusted.pem").write_bytes(TRUSTED.pem())
    enrol_device(spec, kafka_config, OPERATOR, GROUP, DEVICE, tmp_path / "state" / "device.key")
    (tmp_path / "baseline.onnx").write_bytes(baseline_model)
    raw = agent_config(
        spec,
        GROUP,
        DEVICE,
        kafka_config,
        tmp_path / "state",
        trusted_keys_file=str(tmp_path / "trusted.pem"),
        source={"kind": "replay", "path": str(write_readings(tmp_path / "readings.jsonl", profile, GROUP, 200, 7))},
        telemetry_interval_s=0.1,
        heartbeat_interval_s=1.0,
        http={"host": "127.0.0.1", "port": 0},
        initial_model={"path": str(tmp_path / "baseline.onnx"), "version": "0"},
    )
    agent = Agent(parse_config(raw))
    agent.start()
    serving = threading.Thread(target=agent.serve, name="agent-under-test", daemon=True)
    serving.start()
    bucket, prefix = storage_area
    assert agent.http is not None
    here = Deployment(spec, kafka_config, agent, agent.http.server_address[1], bucket, prefix, s3_client)
    try:
        wait_until("the agent to serve model 0", lambda: here.health().get("model_version") == "0", timeout=30)
        ref = upload_artifact(s3_client, bucket, prefix, rollout_model)
        first = push_assignment(spec, kafka_config, KEY, group=GROUP, model_version="1", artifact=ref)
        wait_until(
            "model 1 applied (device-state)",
            lambda: here.twin().get("assignment_id") == first.id and here.twin().get("status") == "applied",
            timeout=60,
            interval=1.0,
        )
        assert here.health()["model_version"] == "1"
        yield here
    finally:
        agent.stop.set()
        serving.join(10)
        agent.shutdown()
        delete_pipeline_topics(spec, kafka_config)


def model_order(here: Deployment, ref: ArtifactRef) -> Assignment:
    return push_assignment(here.spec, here.kafka, KEY, group=GROUP, model_version="2", artifact=ref)


def checksum_mismatch(here: Deployment, model: bytes) -> Assignment:
    ref = upload_artifact(here.s3, here.bucket, here.prefix, model)
    return model_order(here, ArtifactRef(ref.url, sha256_hex(model + b"tampered"), ref.size))


def truncated_download(here: Deployment, model: bytes) -> Assignment:
    ref = upload_artifact(here.s3, here.bucket, here.prefix, model)
    return model_order(here, ArtifactRef(ref.url, ref.sha256, ref.size + 4096))


def unloadable_artifact(here: Deployment, model: bytes) -> Assignment:
    return model_order(here, upload_artifact(here.s3, here.bucket, here.prefix, os.urandom(len(model))))


def self_test_failure(here: Deployment, model: bytes) -> Assignment:
    return model_order(here, upload_artifact(here.s3, here.bucket, here.prefix, tampered_golden(model)))


def other_pipeline(here: Deployment, model: bytes) -> Assignment:
    ref = upload_artifact(here.s3, here.bucket, here.prefix, model)
    order = new_assignment(Target("group", GROUP), model_version="2", artifact=ref, pipeline="hvac_monitoring")
    publish_assignment(here.spec, here.kafka, KEY, order)
    return order


def other_group(here: Deployment, model: bytes) -> Assignment:
    ref = upload_artifact(here.s3, here.bucket, here.prefix, model)
    return push_assignment(here.spec, here.kafka, KEY, group="plant-south", model_version="2", artifact=ref)


@dataclass(frozen=True)
class Refusal:
    send: Callable[[Deployment, bytes], Assignment]
    kind: str | None  # the error report's kind; None: not reported
    reason: str | None  # in the report's message (and the twin's reason when the twin says failed)
    twin_failed: bool


REFUSALS = {
    "checksum mismatch": Refusal(checksum_mismatch, "model_load", "does not match the assignment's", True),
    "truncated download": Refusal(truncated_download, "model_load", "truncated download", True),
    "artifact onnxruntime cannot load": Refusal(
        unloadable_artifact, "model_load", "onnxruntime cannot load the artifact", True
    ),
    "self-test failure": Refusal(self_test_failure, "model_load", "self-test failed", True),
    "assignment for another pipeline": Refusal(
        other_pipeline, "bad_control", "the assignment is for 'hvac_monitoring'", False
    ),
    "assignment for another group": Refusal(other_group, None, None, False),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_assignment_is_reported_and_the_old_model_keeps_serving(
    deployment: Deployment, baseline_model: bytes, case: str
) -> None:
    here, refusal = deployment, REFUSALS[case]
    twin_before = here.twin()
    metrics_before = here.metrics()

    order = refusal.send(here, baseline_model)
    sent_at_ms = int(time.time() * 1000)

    if refusal.kind is not None:

        def reported() -> dict[str, Any] | None:
            for report in here.errors():
                if report["kind"] == refusal.kind and order.id in f"{report['message']} {report['control_id']}":
                    return report
            return None

        report = wait_until(f"the {refusal.kind} report of {case}", reported, timeout=45, interval=1.0)
        assert refusal.reason in report["message"], report
        assert report["model_version"] == "1", "the report names the model that still serves"
    else:
        wait_until(
            "the agent to count the assignment as ignored",
            lambda: (
                here.metrics().get("edgeloop_agent_control_ignored_total", 0)
                == metrics_before["edgeloop_agent_control_ignored_total"] + 1
            ),
            timeout=30,
        )
        assert not [r for r in here.errors() if order.id in f"{r['message']} {r['control_id']}"], "not reported"

    if refusal.twin_failed:
        twin = wait_until(
            "device-state to report the failure",
            lambda: (t := here.twin()).get("assignment_id") == order.id and t.get("status") == "failed" and t,
            timeout=30,
            interval=1.0,
        )
        assert refusal.reason in twin["reason"] and twin["model_version"] == "1", twin
    else:
        twin = here.twin()
        assert twin["assignment_id"] == twin_before["assignment_id"] and twin["status"] == "applied", twin
        assert twin["model_version"] == "1"

    # The old model still serves: the agent says so, and so does every record made after the refusal.
    assert here.health()["model_version"] == "1"
    later = wait_until(
        "telemetry made after the refusal",
        lambda: records if len(records := here.telemetry_since(sent_at_ms + 500)) >= 10 else None,
        timeout=30,
        interval=1.0,
    )
    assert {r["model_version"] for r in later} == {"1"}

    metrics = here.metrics()
    counted = {
        "model_load": "edgeloop_agent_model_failures_total",
        "bad_control": "edgeloop_agent_control_refused_total",
        None: "edgeloop_agent_control_ignored_total",
    }
    for name in counted.values():
        grew = metrics[name] - metrics_before[name]
        assert grew == (1 if name == counted[refusal.kind] else 0), f"{name} grew by {grew}"
