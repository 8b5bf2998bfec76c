"""The signing key is rotated on a running fleet: no agent restarts, none goes offline, the old key stops working.

Given six enrolled agent processes (two per group of the demo spec) on the stack's Kafka that
trust key A (their trusted-keys file), when

1. key B is added to every agent's trusted-keys file (the agents take it up while running),
2. a rollout of model "1" to every group is signed with key B,
3. key A is retired from the files, and an order signed with A is published,

then every agent applies the rollout signed by B, refuses the order signed by A (reporting
"is not a trusted key"), keeps serving model "1", and the fleet status (which counts only
reports signed by enrolled devices) shows every device online throughout, with no report
refused. The agents' processes are the same from start to end (no restart).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_testkit import (
    REPO,
    AgentProcess,
    delete_pipeline_topics,
    upload_artifact,
    wait_until,
    write_readings,
)

from edgeloop.contract.keys import SIGNING_KEY_ENV, TRUSTED_KEYS_ENV, Keyring, Signer
from edgeloop.fleet.agents import agent_config, enrol_device
from edgeloop.fleet.control import apply_progress, push_assignment
from edgeloop.fleet.health import fleet_status
from edgeloop.fleet.topics import read_topic
from edgeloop.kafka import ensure_pipeline_topics
from edgeloop.spec import PipelineSpec
from edgeloop.training.sensors import SensorProfile

pytestmark = pytest.mark.integration

PER_GROUP = 2


@pytest.fixture
def fleet(
    demo_spec: PipelineSpec, profile: SensorProfile, baseline_model: bytes, kafka_config: dict[str, Any], tmp_path: Path
) -> Iterator[tuple[PipelineSpec, list[AgentProcess], Path]]:
    spec = demo_spec.model_copy(
        update={"topics": demo_spec.topics.model_copy(update={"prefix": f"it_edge_keys_{uuid.uuid4().hex[:10]}"})}
    )
    ensure_pipeline_topics(spec, dict(kafka_config))
    yield spec, [], tmp_path
    delete_pipeline_topics(spec, kafka_config)


def write_trusted(files: list[Path], *keys: Signer) -> None:
    pem = Keyring.of([k.public for k in keys]).pem()
    for path in files:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pem)
        os.replace(tmp, path)


def test_a_key_is_rotated_without_a_restart_and_no_device_goes_offline(
    fleet: tuple[PipelineSpec, list[AgentProcess], Path],
    profile: SensorProfile,
    baseline_model: bytes,
    rollout_model: bytes,
    kafka_config: dict[str, Any],
    s3_client: Any,
    storage_area: tuple[str, str],
) -> None:
    spec, agents, folder = fleet
    key_a, key_b = Signer.generate(), Signer.generate()
    (folder / "baseline.onnx").write_bytes(baseline_model)
    env = {k: v for k, v in os.environ.items() if k not in (SIGNING_KEY_ENV, TRUSTED_KEYS_ENV)}
    env["PYTHONPATH"] = str(REPO / "include")
    trusted_files = []
    for group in (g.name for g in spec.groups):
        for index in range(PER_GROUP):
            device = f"{group}-{index:05d}"
            enrol_device(spec, kafka_config, key_a, group, device, folder / device / "device.key")
            trusted = folder / device / "trusted.pem"
            trusted_files.append(trusted)
            readings = write_readings(folder / f"{device}.jsonl", profile, group, 300, seed=len(agents))
            config = agent_config(
                spec,
                group,
                device,
                kafka_config,
                folder / device,
                trusted_keys_file=str(trusted),
                source={"kind": "replay", "path": str(readings)},
                telemetry_interval_s=0.5,
                heartbeat_interval_s=1.0,
                http={"host": "127.0.0.1", "port": 0},
                initial_model={"path": str(folder / "baseline.onnx"), "version": "0"},
            )
            agents.append(AgentProcess.write(config, env))
    write_trusted(trusted_files, key_a)
    status_keys = Keyring.of([key_a.public, key_b.public])  # the cloud side trusts both while rotating
    offline_seen: list[dict[str, int]] = []

    def every_device_online() -> bool:
        status = fleet_status(spec, kafka_config, status_keys, window_s=30, stale_after_s=30, timeout=30)
        online = {g.group: g.online for g in status.groups}
        if sum(online.values()) != len(agents) or status.refused_reports:
            offline_seen.append({**online, **status.refused_reports})
            return False
        return True

    try:
        for agent in agents:
            agent.start()
        wait_until("every agent serving", lambda: all((a.health() or {}).get("model_version") for a in agents), 60)
        pids = [a.process.pid for a in agents if a.process is not None]
        wait_until("every device online in the fleet status", every_device_online, 60, interval=2.0)

        write_trusted(trusted_files, key_a, key_b)  # step 1: add B everywhere
        bucket, prefix = storage_area
        ref = upload_artifact(s3_client, bucket, prefix, rollout_model)
        orders = [
            push_assignment(spec, kafka_config, key_b, group=g.name, model_version="1", artifact=ref)
            for g in spec.groups
        ]  # step 2: a rollout signed with B
        for order in orders:
            wait_until(
                f"{order.target.key} applied the order signed with the new key",
                lambda order=order: apply_progress(spec, kafka_config, order, status_keys, timeout=30).complete,
                90,
                interval=2.0,
            )
        assert every_device_online(), offline_seen[-1:]

        write_trusted(trusted_files, key_b)  # step 3: retire A
        offline_seen.clear()
        wait_until("every device still online", every_device_online, 30, interval=2.0)
        old = push_assignment(spec, kafka_config, key_a, config={"telemetry_interval_s": 0.25})

        def refused_by_everyone() -> bool:
            records = read_topic(kafka_config, spec.topic("errors"), timeout=30)
            reports = [json.loads(r.value or b"") for r in records]
            # the id is only in the text: a device names an order it refused only when a trusted key signed it
            about = [r for r in reports if r["kind"] == "bad_control" and f"order {old.id!r}" in r["message"]]
            refused = {r["device_id"] for r in about}
            return refused == {a.device_id for a in agents} and all(
                "is not a trusted key" in r["message"] and r.get("control_id") is None for r in about
            )

        wait_until("every agent refused the order signed with the retired key", refused_by_everyone, 60, interval=2.0)
        assert all((a.health() or {}).get("model_version") == "1" for a in agents)
        assert all((a.metrics() or {}).get("edgeloop_agent_control_refused_total", 0) >= 1 for a in agents)
        assert not apply_progress(spec, kafka_config, old, status_keys, timeout=30).applied
        assert every_device_online(), offline_seen[-1:]
        assert [a.process.pid for a in agents if a.process is not None and a.alive] == pids  # never restarted
    finally:
        for agent in agents:
            agent.ensure_stopped()
