"""The shadow wave on the real broker with real agent processes: a challenger proves itself before it serves.

Given 6 `edgeloop.edge.agent` processes of plant-north on the stack's Kafka (topics of their own,
the shadow topic among them), serving the baseline model "0", with the challengers' ONNX files in
the stack's S3:

1. a challenger that disagrees with the champion on the group's inputs (the other demo model: it
   labels about a quarter of these readings as the champion does) is run in shadow, its signed
   reports read, and the wave stops it on agreement; the shadow is ended, and no device ever
   reported serving it;
2. a challenger that answers as the champion does passes the shadow wave, and the next wave (a
   rollout job's wave) puts it on every device.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from agent_testkit import (
    AgentProcess,
    delete_pipeline_topics,
    delete_prefix,
    replay_agent,
    upload_artifact,
    wait_until,
)

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.contract.keys import Keyring, Signer
from edgeloop.fleet.control import read_device_states
from edgeloop.fleet.registry import read_registry
from edgeloop.fleet.topics import read_topic
from edgeloop.kafka import ensure_pipeline_topics
from edgeloop.rollout.job import run_wave_job
from edgeloop.rollout.shadow import shadow_targets
from edgeloop.rollout.shadow_wave import end_shadow, start_shadow, wait_for_shadow
from edgeloop.spec import PipelineSpec, ShadowSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GROUP = "plant-north"
FLEET = 6


@dataclass
class ShadowFleet:
    spec: PipelineSpec
    kafka: dict[str, Any]
    key: Signer
    artifacts: dict[str, ArtifactRef | None]  # by version: "0" the baseline on every device
    agents: list[AgentProcess]
    started_ms: int

    @property
    def trusted(self) -> Keyring:
        return Keyring.of([self.key.public])

    def resolve(self, group: str, version: str) -> ArtifactRef | None:
        return self.artifacts[version]

    def versions(self) -> dict[str, Any]:
        states = read_device_states(self.spec, self.kafka, timeout=30)
        return {d: s.reported.get("model_version") for d, s in states.devices.items()}

    def ever_served(self, version: str, since_ms: int) -> list[str]:
        """The devices whose device-state ever reported serving `version` since `since_ms`."""
        records = read_topic(self.kafka, self.spec.topic("device-state"), since_ms=since_ms, timeout=30)
        bodies = [json.loads(r.value or b"{}") for r in records]
        return sorted({b["device_id"] for b in bodies if (b.get("reported") or {}).get("model_version") == version})


@pytest.fixture(scope="module")
def fleet(
    demo_spec: PipelineSpec,
    profile: Any,
    baseline_model: bytes,
    rollout_model: bytes,
    kafka_config: dict[str, Any],
    s3_client: Any,
    stack_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ShadowFleet]:
    run = uuid.uuid4().hex[:10]
    bucket, prefix = stack_env.get("EDGELOOP_BUCKET", "edgeloop"), f"it/shadow-wave/{run}"
    shadow = ShadowSpec(enabled=True, groups=[GROUP], window=timedelta(seconds=3), min_windows=8)
    spec = demo_spec.model_copy(
        update={
            "topics": demo_spec.topics.model_copy(update={"prefix": f"it_shadow_{run}"}),
            "storage": demo_spec.storage.model_copy(update={"bucket": bucket, "prefix": f"{prefix}/lake"}),
            "rollout": demo_spec.rollout.model_copy(update={"timeout": timedelta(seconds=90), "shadow": shadow}),
        }
    )
    ensure_pipeline_topics(spec, kafka_config)
    folder = tmp_path_factory.mktemp("shadow-wave")
    baseline = folder / "baseline-v0.onnx"
    baseline.write_bytes(baseline_model)
    artifacts: dict[str, ArtifactRef | None] = {
        "0": None,
        "4": upload_artifact(s3_client, bucket, prefix, rollout_model),  # disagrees with the champion
        "5": upload_artifact(s3_client, bucket, prefix, baseline_model),  # answers as the champion does
    }
    here = ShadowFleet(spec, dict(kafka_config), Signer.generate(), artifacts, [], int(time.time() * 1000))
    for index in range(FLEET):
        device = f"{GROUP}-{index:05d}"
        agent = replay_agent(
            spec, kafka_config, here.key, GROUP, device, folder, profile, baseline, seed=index, telemetry_interval_s=0.5
        )
        here.agents.append(agent)
    for agent in here.agents:
        agent.start()
    try:
        wait_until(
            f"{FLEET} agents on model 0 (device-state)",
            lambda: list(here.versions().values()).count("0") == FLEET,
            timeout=180,
            interval=2,
        )
        yield here
    except BaseException:
        for agent in here.agents:
            print(f"--- {agent.device_id} (alive={agent.alive})\n{agent.log_tail()}")
        raise
    finally:
        for agent in here.agents:
            agent.ensure_stopped()
        delete_pipeline_topics(spec, kafka_config)
        delete_prefix(s3_client, bucket, prefix + "/")


def shadow_wave(fleet: ShadowFleet, challenger: str) -> tuple[dict[str, Any], Any, Any]:
    """Order, wait for the decision (60 s at most), end: what the rollout DAG's shadow task does."""
    spec = fleet.spec
    plan = {"rollout_id": f"ro-{uuid.uuid4().hex[:12]}", "previous_version": "0", "model_version": challenger}
    targets = shadow_targets(spec)
    assert targets is not None and targets.groups == (GROUP,)
    registry = read_registry(spec, fleet.kafka, fleet.trusted, timeout=30)
    orders = start_shadow(spec, fleet.kafka, fleet.key, plan, targets, registry, fleet.resolve)
    decision, refused = wait_for_shadow(
        spec,
        fleet.kafka,
        lambda: read_registry(spec, fleet.kafka, fleet.trusted, timeout=30),
        orders,
        deadline_s=90,
        poll_s=1.0,
    )
    end_shadow(spec, fleet.kafka, fleet.key, plan, targets, orders, fleet.resolve)
    assert refused == {}
    return plan, orders, decision


def test_a_challenger_that_disagrees_on_the_groups_inputs_is_stopped_before_any_device_serves_it(
    fleet: ShadowFleet,
) -> None:
    plan, orders, decision = shadow_wave(fleet, "4")
    print(f"\nshadow of a disagreeing challenger: {decision.to_dict()}")
    assert decision.state == "fail", decision
    assert decision.agreement is not None and decision.agreement < 0.6
    assert any("agreement with the champion" in reason for reason in decision.reasons)
    assert decision.windows >= 8 and decision.devices >= 2
    assert orders.orders == {GROUP: [f"{plan['rollout_id']}.{GROUP}.s4"]}
    assert fleet.ever_served("4", fleet.started_ms) == []  # no device served the challenger, not even for a moment
    # the end order is applied by every device: they serve the champion alone again
    wait_until(
        "every device on the end-of-shadow order",
        lambda: all(
            s.reported.get("assignment_id") == f"{plan['rollout_id']}.{GROUP}.se4"
            for s in read_device_states(fleet.spec, fleet.kafka, timeout=30).devices.values()
        ),
        timeout=60,
        interval=1,
    )
    assert set(fleet.versions().values()) == {"0"}
    health = [agent.health() for agent in fleet.agents]
    assert all(h is not None and h["model_version"] == "0" for h in health)


def test_a_challenger_that_answers_as_the_champion_passes_to_the_next_wave(fleet: ShadowFleet) -> None:
    plan, _orders, decision = shadow_wave(fleet, "5")
    print(f"\nshadow of a challenger like the champion: {decision.to_dict()}")
    assert decision.state == "pass", decision
    assert decision.agreement == 1.0 and decision.reasons == []
    ref = fleet.artifacts["5"]
    assert ref is not None
    result = run_wave_job(
        fleet.spec,
        fleet.kafka,
        fleet.key,
        GROUP,
        "5",
        plan["rollout_id"],
        artifacts=lambda _version: ref,
        trusted_keys=fleet.trusted,
        wave=0,
    )
    assert result["progress"]["applied"] == FLEET, result
    assert set(fleet.versions().values()) == {"5"}
