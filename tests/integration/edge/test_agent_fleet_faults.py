"""Twenty agent processes, a rollout, kill -9 of five, a broker down for a minute: every record lands once.

Given 20 `edgeloop.edge.agent` processes on loopback (the demo spec's three groups, each
agent replaying its own readings at 5 per second, on the baseline model "0") and this
test's own Kafka broker, when model "1" is rolled out from the stack's S3 to every group,
five agents are killed with SIGKILL mid-stream (each the moment its sender has a batch in
flight, as far as the test sees within 10 s), the broker is killed and kept down for
more than 60 s while the other fifteen keep scoring into their queues, then the broker and
the five agents are started again (same configs, same state folders), everything drains
and every agent is stopped with SIGTERM, then the telemetry topic holds every record each
agent produced exactly once, and so does object storage after the project's ingest.

What each agent produced is knowable from the agent itself, strictly: a record's id is
`<device>-<epoch ms>-<seq>`, where seq counts the device's readings, and the outbox
commits the last queued seq together with the record (`Outbox.counter("record_seq")`).
A reading whose record was not committed when kill -9 struck never left the process:
its seq is minted again after the restart (with a new timestamp, so a new id), and it
leaves no gap. So for every device the seqs in the topic must be exactly 1..N, where N
is the outbox's counter after the clean stop (cross-checked against the seq the agent
saves on SIGTERM, against `edgeloop_agent_records_total` read just before SIGTERM, and,
for a killed agent, against the counter read from its queue file right after the kill):
no duplicate id, no gap, nothing extra.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from agent_testkit import (
    REPO,
    AgentProcess,
    PrivateKafka,
    queue_at_rest,
    upload_artifact,
    wait_until,
    write_readings,
)

from edgeloop.contract.keys import SIGNING_KEY_ENV, TRUSTED_KEYS_ENV, Signer, public_hex
from edgeloop.fleet.agents import agent_config, enrol_device
from edgeloop.fleet.control import assignment_progress, push_assignment, read_device_states
from edgeloop.fleet.topics import read_topic
from edgeloop.kafka import ensure_pipeline_topics
from edgeloop.spec import PipelineSpec
from edgeloop.training.sensors import SensorProfile

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GROUP_SIZES = {"line-canary": 6, "plant-north": 7, "plant-south": 7}
KILLED = 5
READING_INTERVAL_S = 0.2  # 5 readings per second per agent
OUTAGE_S = 62.0
SETTLED_QUEUE_ROWS = 5  # a drained queue holds at most about a second of new readings


def fleet_spec(spec: PipelineSpec, bucket: str, prefix: str) -> PipelineSpec:
    run = prefix.rsplit("/", 1)[-1]
    return spec.model_copy(
        update={
            "topics": spec.topics.model_copy(update={"prefix": f"it_edge_fleet_{run}"}),
            "storage": spec.storage.model_copy(update={"bucket": bucket, "prefix": f"{prefix}/lake"}),
        }
    )


def start_fleet(
    spec: PipelineSpec, kafka: dict[str, str], profile: SensorProfile, baseline: bytes, key: Signer, folder: Path
) -> list[AgentProcess]:
    """Enrolled agent processes; they trust `key`'s public half only (they never see the key itself)."""
    baseline_path = folder / "baseline-v0.onnx"
    baseline_path.write_bytes(baseline)
    env = {**os.environ, "PYTHONPATH": str(REPO / "include"), TRUSTED_KEYS_ENV: public_hex(key.public)}
    env.pop(SIGNING_KEY_ENV, None)
    agents = []
    for group, size in GROUP_SIZES.items():
        for index in range(size):
            device = f"{group}-{index:05d}"
            enrol_device(spec, kafka, key, group, device, folder / device / "device.key")
            readings = write_readings(folder / f"{device}.jsonl", profile, group, 300, seed=len(agents))
            config = agent_config(
                spec,
                group,
                device,
                kafka,
                folder / device,
                source={"kind": "replay", "path": str(readings)},
                telemetry_interval_s=READING_INTERVAL_S,
                heartbeat_interval_s=5.0,
                http={"host": "127.0.0.1", "port": 0},
                initial_model={"path": str(baseline_path), "version": "0"},
            )
            agents.append(AgentProcess.write(config, env))
    for agent in agents:
        agent.start()
    return agents


def queued_rows(agents: list[AgentProcess]) -> dict[str, int | None]:
    return {a.device_id: (h or {}).get("queue_rows") for a, h in ((a, a.health()) for a in agents)}


def test_every_record_lands_once_through_kill_9_and_a_broker_outage(
    private_kafka: PrivateKafka,
    demo_spec: PipelineSpec,
    profile: SensorProfile,
    baseline_model: bytes,
    rollout_model: bytes,
    s3_client: Any,
    storage_area: tuple[str, str],
    tmp_path: Path,
) -> None:
    bucket, prefix = storage_area
    spec = fleet_spec(demo_spec, bucket, prefix)
    kafka = {"bootstrap.servers": private_kafka.bootstrap}
    ensure_pipeline_topics(spec, kafka)
    key = Signer.generate()
    folder = tmp_path / "agents"
    folder.mkdir()
    agents = start_fleet(spec, kafka, profile, baseline_model, key, folder)
    victims = agents[:: len(agents) // KILLED][:KILLED]
    survivors = [a for a in agents if a not in victims]
    figures: dict[str, Any] = {"agents": len(agents), "killed": len(victims)}
    try:
        # Given 20 agents serving the baseline model ...
        wait_until(
            "every agent to serve model 0 (/healthz)",
            lambda: all((a.health() or {}).get("model_version") == "0" for a in agents),
            timeout=150,
        )

        # ... when model 1 is rolled out from S3 to every group, every agent reports it in its twin.
        ref = upload_artifact(s3_client, bucket, prefix, rollout_model)
        orders = [
            push_assignment(spec, kafka, key, group=group, model_version="1", artifact=ref) for group in GROUP_SIZES
        ]

        def rolled_out() -> list[Any] | None:
            states = read_device_states(spec, kafka, timeout=30)
            progress = [assignment_progress(order, states) for order in orders]
            return progress if all(p.complete for p in progress) else None

        progress = wait_until("model 1 applied on every device (device-state)", rolled_out, timeout=90, interval=2)
        assert sum(p.devices for p in progress) == len(agents)
        assert all((a.health() or {}).get("model_version") == "1" for a in agents)

        wait_until(
            "every agent to have sent records",
            lambda: all((a.metrics() or {}).get("edgeloop_agent_sent_total", 0) >= 25 for a in agents),
            timeout=60,
        )

        # Mid-stream: kill -9 five agents (each while a batch is in flight, if that is seen within 10 s),
        # then kill the broker and keep it down for more than a minute.
        figures["killed_in_flight"] = sum(agent.kill_in_flight(within=10.0) for agent in victims)
        killed_at = time.time()
        at_kill = {a.device_id: queue_at_rest(a.state_dir) for a in victims}
        private_kafka.kill()
        outage_started = time.monotonic()
        seen_unreachable: set[str] = set()
        while time.monotonic() - outage_started < OUTAGE_S:
            time.sleep(min(5.0, max(0.0, OUTAGE_S - (time.monotonic() - outage_started))))
            for agent in survivors:
                health = agent.health() or {}
                if health.get("kafka") == "unreachable":
                    seen_unreachable.add(agent.device_id)
        figures["outage_s"] = round(time.monotonic() - outage_started, 1)
        backlog = queued_rows(survivors)
        assert seen_unreachable == {a.device_id for a in survivors}, "every survivor noticed the outage"
        assert all(rows is not None and rows >= 100 for rows in backlog.values()), f"queues kept filling: {backlog}"

        # Then the broker and the five agents start again (same data, port, configs and state folders).
        starting = time.monotonic()
        private_kafka.start()
        restarted = time.monotonic()
        figures["broker_start_s"] = round(restarted - starting, 1)
        for agent in victims:
            agent.start()
        backlog = queued_rows(survivors)
        figures["backlog_at_restart"] = sum(r or 0 for r in backlog.values()) + sum(q.rows for q in at_kill.values())
        drain_samples: list[tuple[float, int]] = []

        def drained() -> bool:
            rows = queued_rows(agents)
            total = sum(r for r in rows.values() if r is not None)
            drain_samples.append((time.monotonic() - restarted, total))
            return all(r is not None and r <= SETTLED_QUEUE_ROWS for r in rows.values())

        wait_until("every queue to drain after the restart", drained, timeout=150, interval=0.5)
        figures["drain_s"] = round(time.monotonic() - restarted, 1)
        figures["drain_rate_per_s"] = round(figures["backlog_at_restart"] / figures["drain_s"])
        figures["peak_drain_rate_per_s"] = round(peak_drain_rate(drain_samples))
        assert all((a.health() or {}).get("model_version") == "1" for a in victims), "model 1 survives kill -9"

        # Every agent stops with SIGTERM and drains; exit code 0.
        records_before_stop = {a.device_id: (a.metrics() or {})["edgeloop_agent_records_total"] for a in agents}
        for agent in agents:
            agent.terminate()
        codes = {a.device_id: a.wait(60) for a in agents}
        assert set(codes.values()) == {0}, codes
    except BaseException:
        for agent in agents:
            print(f"--- {agent.device_id} (alive={agent.alive})\n{agent.log_tail()}")
        raise
    finally:
        for agent in agents:
            agent.ensure_stopped()

    # What each agent produced, from its own durable state.
    produced: dict[str, int] = {}
    for agent in agents:
        rest = queue_at_rest(agent.state_dir)
        assert rest.rows == 0, f"{agent.device_id}: {rest.rows} messages still queued after the drain"
        assert rest.dropped == 0, f"{agent.device_id}: the queue dropped {rest.dropped} messages"
        saved = json.loads((agent.state_dir / "agent-state.json").read_text())
        assert saved["seq"] - 1000 == rest.record_seq, "the seq saved on SIGTERM is the last queued one"
        since_start = records_before_stop[agent.device_id]
        if agent in victims:
            assert rest.record_seq >= at_kill[agent.device_id].record_seq + since_start
        else:
            assert rest.record_seq >= since_start
        produced[agent.device_id] = rest.record_seq

    # Then the telemetry topic holds each of those records exactly once ...
    records = [json.loads(r.value or b"") for r in read_topic(kafka, spec.topic("telemetry"), timeout=90)]
    ids = Counter(r["record_id"] for r in records)
    duplicates = {i: n for i, n in ids.items() if n > 1}
    by_device: dict[str, dict[int, dict[str, Any]]] = {}
    for record in records:
        device, stamp, seq = record["record_id"].rsplit("-", 2)
        assert device == record["device_id"] and int(stamp) > 0
        by_device.setdefault(device, {})[int(seq)] = record
    gaps = {d: sorted(set(range(1, n + 1)) - set(by_device.get(d, {}))) for d, n in produced.items()}
    extra = {d: sorted(set(seqs) - set(range(1, produced.get(d, 0) + 1))) for d, seqs in by_device.items()}
    figures.update(records=len(records), unique_ids=len(ids), duplicates=len(duplicates))
    figures["gaps"] = sum(len(g) for g in gaps.values())
    print(f"\nfleet faults: {json.dumps(figures)}")
    assert not duplicates, f"record ids twice in Kafka: {list(duplicates.items())[:5]}"
    assert not any(gaps.values()), f"produced, not in Kafka: { {d: g[:5] for d, g in gaps.items() if g} }"
    assert not any(extra.values()), f"in Kafka, not counted: { {d: e[:5] for d, e in extra.items() if e} }"
    assert len(ids) == sum(produced.values())

    for device, seqs in by_device.items():
        versions = [seqs[s]["model_version"] for s in sorted(seqs)]
        assert versions == sorted(versions) and versions[-1] == "1", f"{device}: model 1, once served, stays"
    for agent in victims:
        seqs = by_device[agent.device_id]
        last = at_kill[agent.device_id].record_seq
        stamps = {s: int(r["record_id"].rsplit("-", 2)[1]) for s, r in seqs.items()}
        assert max(stamps[s] for s in seqs if s <= last) <= killed_at * 1000 + 1
        assert min(stamps[s] for s in seqs if s > last) >= killed_at * 1000, "after kill -9 the seq goes on"

    # ... and after ingest, so does object storage (Parquet under the spec's storage prefix).
    from benchmarks.soak_ingest import read_back

    from edgeloop.ingest import ingest_topic

    summary = ingest_topic(spec, "telemetry", consumer_config=kafka, s3=s3_client, max_duration=120)
    assert summary["lag_total"] == 0 and summary["dead_letters"] == 0, summary
    stored = read_back(s3_client, spec, spec.topic("telemetry"))
    assert stored.record_ids == ids and set(stored.record_ids.values()) == {1}
    print(f"ingest: {summary['records']} records in {len(summary['objects'])} objects, {summary['duration_s']} s")


def peak_drain_rate(samples: list[tuple[float, int]]) -> float:
    """The fastest fall of the fleet's queued rows between two samples, in rows per second."""
    rates = [(rows - later) / (t2 - t1) for (t1, rows), (t2, later) in itertools.pairwise(samples) if t2 > t1]
    return max([0.0, *rates])
