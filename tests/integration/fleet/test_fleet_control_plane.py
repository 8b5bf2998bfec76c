"""The control plane on a real Kafka: assignments, the device twin, offline devices, bad control messages."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]
from fleet_testkit import eventually, keyring, records, running_fleet

from edgeloop.contract.keys import Signer
from edgeloop.contract.messages import Target, new_assignment, parse_iso, sign
from edgeloop.events import parse_alert
from edgeloop.fleet.control import (
    apply_progress,
    publish_assignment,
    publish_raw_control,
    push_assignment,
    read_device_states,
)
from edgeloop.fleet.health import fleet_status
from edgeloop.fleet.registry import read_registry
from edgeloop.fleet.topics import TopicRecord, ensure_topics
from edgeloop.simulator.fleet import Outage
from edgeloop.simulator.groundtruth import generated_ms, true_labels
from edgeloop.spec import PipelineSpec
from edgeloop.training.sensors import DriftInjection

pytestmark = pytest.mark.integration


def group_devices(spec: PipelineSpec, group: str) -> list[str]:
    count = next(g.devices for g in spec.groups if g.name == group)
    return [f"{group}-{i:05d}" for i in range(count)]


def seq_of(record_id: str) -> int:
    return int(record_id.rsplit("-", 1)[1])


def test_topics_are_created_once_with_a_compacted_device_state(
    spec: PipelineSpec, kafka_config: dict[str, Any]
) -> None:
    first = ensure_topics(spec, kafka_config)
    assert set(first.values()) == {"created"} and len(first) == len(spec.all_topics) + 1  # and the ground truth
    assert set(ensure_topics(spec, kafka_config).values()) == {"exists"}
    admin = AdminClient(kafka_config)
    topics = admin.list_topics(timeout=10).topics
    assert len(topics[spec.topic("control")].partitions) == 1
    assert len(topics[spec.topic("devices")].partitions) == 1
    assert len(topics[spec.topic("telemetry")].partitions) == spec.topics.partitions
    for kind in ("device-state", "devices"):
        resource = ConfigResource(ResourceType.TOPIC, spec.topic(kind))
        config = admin.describe_configs([resource])[resource].result(timeout=10)
        assert config["cleanup.policy"].value == "compact", kind


def test_a_group_applies_a_model_assignment_and_reports_it(
    spec: PipelineSpec, kafka_config: dict[str, Any], operator: Signer
) -> None:
    north = group_devices(spec, "plant-north")
    with running_fleet(spec, kafka_config, operator):
        assignment = push_assignment(
            spec, kafka_config, operator, group="plant-north", model_version="3", issuer="test"
        )
        progress = eventually(
            lambda: (p := apply_progress(spec, kafka_config, assignment, keyring(operator))).complete and p,
            what="plant-north reports version 3",
        )
        assert progress.applied == north and progress.devices == 3

        def reported_in_heartbeats() -> bool:
            beats = [json.loads(r.value or b"") for r in records(kafka_config, spec.topic("health"))]
            latest = {b["device_id"]: b for b in beats}
            return all(latest[d]["model_version"] == "3" and latest[d]["assignment_id"] == assignment.id for d in north)

        eventually(reported_in_heartbeats, what="heartbeats of plant-north report version 3")
        status = fleet_status(spec, kafka_config, keyring(operator), window_s=10)

    north_status = status.group("plant-north")
    assert north_status.desired_models == {"3": 3} and north_status.reported_models == {"3": 3}
    assert north_status.in_sync == 3 and north_status.online == 3
    for other in ("line-canary", "plant-south"):
        assert status.group(other).reported_models == {"0": 3} and status.group(other).in_sync == 3
    telemetry = [json.loads(r.value or b"") for r in records(kafka_config, spec.topic("telemetry"))]
    north_versions = [t["model_version"] for t in telemetry if t["device_id"] in north]
    assert north_versions[-1] == "3" and "0" in north_versions  # switched from the baseline to version 3
    assert {t["model_version"] for t in telemetry if t["device_id"] not in north} == {"0"}
    assert set(telemetry[0]) == {f.name for f in spec.schema_}


def test_offline_device_applies_on_reconnect_and_sends_its_buffer_in_order(
    spec: PipelineSpec, kafka_config: dict[str, Any], operator: Signer
) -> None:
    device = "plant-north-00000"
    with running_fleet(spec, kafka_config, operator) as fleet:
        time.sleep(1.0)
        fleet.set_offline([device])
        time.sleep(0.3)
        offline_ms = int(time.time() * 1000)
        assignment = push_assignment(spec, kafka_config, operator, group="plant-north", model_version="4")
        progress = eventually(
            lambda: (
                (p := apply_progress(spec, kafka_config, assignment, keyring(operator))).pending == [device]
                and len(p.applied) == 2
                and p
            ),
            what="the two online devices apply, the offline one waits",
        )
        twin = read_device_states(spec, kafka_config).devices[device]
        # Like an agent, an offline device learns of the assignment only when it reads it: its twin is unchanged.
        assert twin.desired["model_version"] == "0" and twin.reported["model_version"] == "0"
        time.sleep(1.5)  # the offline device keeps sensing: ~7 readings buffered
        online_ms = int(time.time() * 1000)
        fleet.set_online([device])
        progress = eventually(
            lambda: (p := apply_progress(spec, kafka_config, assignment, keyring(operator))).complete and p,
            what="the reconnected device applies the assignment",
        )
        assert progress.applied == group_devices(spec, "plant-north")
        time.sleep(0.5)
    mine = [r for r in records(kafka_config, spec.topic("telemetry")) if r.key == device.encode()]
    bodies = [json.loads(r.value or b"") for r in mine]
    seqs = [seq_of(b["record_id"]) for b in bodies]
    assert seqs == list(range(1, len(seqs) + 1)), "telemetry arrived out of order or with gaps"
    buffered = [
        (r, b)
        for r, b in zip(mine, bodies, strict=True)
        if offline_ms <= (generated_ms(b["record_id"]) or 0) < online_ms
    ]
    assert len(buffered) >= 5
    assert all(r.timestamp_ms >= online_ms - 50 for r, _ in buffered), "buffered records were sent while offline"
    assert {b["model_version"] for _, b in buffered} == {"0"}
    assert bodies[-1]["model_version"] == "4"


def test_malformed_and_unauthorised_control_messages_are_rejected_and_reported(
    spec: PipelineSpec, kafka_config: dict[str, Any], operator: Signer
) -> None:
    """Every refusal class on the real broker: each refused by the devices it may address, reported with its
    reason, counted; the fleet keeps what it runs and still takes a good order after them."""
    north = Target("group", "plant-north")
    good = new_assignment(north, model_version="3", assignment_id="asg-bad-1", pipeline=spec.name).payload()

    def signed(body: dict[str, Any], signer: Signer = operator) -> bytes:
        body = {**body, "key_id": signer.key_id}
        return json.dumps({**body, "signature": sign(body, signer)}).encode()

    forged = json.loads(signed(good))
    forged["model_version"] = "4"  # the operator's key id and signature, on another body
    expired = new_assignment(north, model_version="3", pipeline=spec.name, issued_at=time.time() - 7200, ttl_s=3600)
    other_pipeline = new_assignment(north, model_version="3", pipeline="someone_elses_pipeline")
    raw = [
        b"definitely not json",  # offset 0: unreadable, every device reports it
        b"[1, 2, 3]",  # 1
        json.dumps(good).encode(),  # 2: unsigned
        signed(good, Signer.generate()),  # 3: a key id no device trusts
        json.dumps(forged).encode(),  # 4: forged signature
        signed({**good, "model_version": "latest"}),  # 5
        signed({**good, "target": {"kind": "group", "id": "atlantis"}}),  # 6: unknown group, all devices report
        signed({**good, "command": "reboot"}),  # 7
        expired.to_wire(operator),  # 8
        other_pipeline.to_wire(operator),  # 9
    ]
    expected = {
        0: ("not JSON", 9),
        1: ("not a JSON object", 9),
        2: ("signature: missing", 3),
        3: ("is not a trusted key", 3),
        4: ("does not verify", 3),
        5: ("model_version", 3),
        6: ("not a group of this pipeline", 9),
        7: ("unknown fields", 3),
        8: ("the order expired", 3),
        9: ("the assignment is for 'someone_elses_pipeline'", 3),
    }
    bad_config = new_assignment(
        Target("group", "line-canary"),
        assignment_id="asg-bad-config",
        issuer="test",
        pipeline=spec.name,
        config={"telemetry_interval_s": 1},
    )
    bad_config = dataclasses.replace(bad_config, config={"telemetry_interval_s": 0}, config_version="cfg-broken")
    older = new_assignment(Target("all"), model_version="2", issuer="test", pipeline=spec.name)  # issued first
    with running_fleet(spec, kafka_config, operator) as fleet:
        publish_raw_control(spec, kafka_config, raw)
        publish_assignment(spec, kafka_config, operator, bad_config)  # offset 10
        failed = eventually(
            lambda: len(f := apply_progress(spec, kafka_config, bad_config, keyring(operator)).failed) == 3 and f,
            what="the canary devices report the bad config as failed",
        )
        after = push_assignment(spec, kafka_config, operator, model_version="5", issuer="test")  # offset 11
        eventually(
            lambda: apply_progress(spec, kafka_config, after, keyring(operator)).complete,
            what="the fleet still applies a good one",
        )
        # replays: the same order again (same sequence), and a valid order older than it
        publish_raw_control(spec, kafka_config, [after.to_wire(operator), older.to_wire(operator)])  # 12, 13
        expected[12] = ("replayed or out-of-order", 9)
        expected[13] = ("replayed or out-of-order", 9)
        eventually(lambda: fleet.stats.control_messages >= 14, what="the replays read by the fleet")
        assert fleet.stats.control_rejected == len(raw)
    assert sorted(failed) == group_devices(spec, "line-canary")
    assert all("telemetry_interval_s" in reason for reason in failed.values())
    trusted = keyring(operator)
    states = read_device_states(spec, kafka_config, registry=read_registry(spec, kafka_config, trusted))
    assert len(states.devices) == 9 and not states.refused
    assert {s.reported["model_version"] for s in states.devices.values()} == {"5"}  # no replay moved a device
    canary = states.in_group("line-canary")
    assert all(s.reported["status"] == "applied" and s.reported["assignment_id"] == after.id for s in canary)
    assert all(s.reported["config_version"] is None and not s.in_sync for s in canary)  # the bad config stays unapplied
    reports = [json.loads(r.value or b"") for r in records(kafka_config, spec.topic("errors"))]
    by_offset: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for report in reports:
        match = re.match(r"control offset (\d+): ", report["message"])
        if report["kind"] == "bad_control" and match:
            by_offset[int(match.group(1))].append(report)
    assert sorted(by_offset) == sorted(expected)
    for offset, (reason, devices) in expected.items():
        assert len({r["device_id"] for r in by_offset[offset]}) == devices, offset
        assert all(reason in r["message"] for r in by_offset[offset]), (offset, by_offset[offset][0]["message"])
    kinds = Counter(r["kind"] for r in reports)
    assert kinds["bad_config"] == 3
    status = fleet_status(spec, kafka_config, trusted, window_s=60)
    assert status.refused_reports == {}  # every report above came signed by its enrolled device


def test_the_twin_survives_a_simulator_restart_and_catches_up(
    spec: PipelineSpec, kafka_config: dict[str, Any], operator: Signer
) -> None:
    with running_fleet(spec, kafka_config, operator):
        first = push_assignment(spec, kafka_config, operator, model_version="2", issuer="test")
        eventually(
            lambda: apply_progress(spec, kafka_config, first, keyring(operator)).complete, what="version 2 everywhere"
        )
    # while the whole fleet is down (hours, for a real fleet), south is assigned version 6
    later = push_assignment(spec, kafka_config, operator, group="plant-south", model_version="6", issuer="test")
    assert not apply_progress(spec, kafka_config, later, keyring(operator)).complete
    with running_fleet(spec, kafka_config, operator):
        eventually(
            lambda: apply_progress(spec, kafka_config, later, keyring(operator)).complete,
            what="version 6 applied after restart",
        )
        states = read_device_states(spec, kafka_config).devices
    assert {s.reported["model_version"] for s in states.values() if s.group_id != "plant-south"} == {"2"}
    assert all(s.in_sync for s in states.values())


def test_ground_truth_is_hidden_but_readable_by_annotators(
    spec: PipelineSpec, kafka_config: dict[str, Any], operator: Signer
) -> None:
    with running_fleet(spec, kafka_config, operator):
        time.sleep(2.0)
    telemetry = [json.loads(r.value or b"") for r in records(kafka_config, spec.topic("telemetry"))]
    assert not any("label" in t or "true_label" in t for t in telemetry)
    sample = telemetry[:: max(1, len(telemetry) // 60)]
    labels = true_labels(spec, kafka_config, [t["record_id"] for t in sample] + ["not-a-simulated-id"])
    assert set(labels) == {t["record_id"] for t in sample}
    assert set(labels.values()) <= set(spec.annotation.labels)
    agreement = sum(labels[t["record_id"]] == t["prediction"] for t in sample) / len(sample)
    assert agreement > 0.6, "the hidden labels do not match the readings the baseline model saw"


def test_drift_bad_records_outage_and_clock_skew(
    spec: PipelineSpec, kafka_config: dict[str, Any], operator: Signer
) -> None:
    options: dict[str, Any] = {
        "drift": [DriftInjection("plant-south", "vibration_rms", gain=3.0, at_s=2.0)],
        "outages": [Outage(start_s=1.0, duration_s=2.0, group="line-canary")],
        "bad_record_ratio": 0.2,
        "clock_skew_s": 120.0,
        "clock_skew_ratio": 1.0,
        "backlog_alert_records": 5,
        "hold_states": True,  # 3 devices a group: a machine moving to "fault" would swamp the gain
    }
    with running_fleet(spec, kafka_config, operator, **options) as fleet:
        time.sleep(5.0)
        t0_ms = int(fleet.t0 * 1000)
    good: list[tuple[TopicRecord, dict[str, Any]]] = []
    bad = 0
    required = {f.name for f in spec.schema_ if not f.nullable}
    for record in records(kafka_config, spec.topic("telemetry")):
        try:
            body = json.loads(record.value or b"")
        except (UnicodeDecodeError, json.JSONDecodeError):
            bad += 1
            continue
        if required - set(body) or "n/a" in body.values():
            bad += 1
        else:
            good.append((record, body))
    assert 0.1 < bad / (bad + len(good)) < 0.3

    def mean_rms(group: str, after: bool) -> float:
        values = [
            b["vibration_rms"]
            for _, b in good
            if b["group_id"] == group and ((generated_ms(b["record_id"]) or 0) >= t0_ms + 2100) == after
        ]
        return sum(values) / len(values)

    assert mean_rms("plant-south", True) / mean_rms("plant-south", False) > 2.0
    assert 0.5 < mean_rms("plant-north", True) / mean_rms("plant-north", False) < 1.6

    canary = [(r, b) for r, b in good if b["group_id"] == "line-canary"]
    during = [(r, b) for r, b in canary if t0_ms + 1100 < (generated_ms(b["record_id"]) or 0) < t0_ms + 2900]
    assert during and all(r.timestamp_ms >= t0_ms + 2900 for r, _ in during), "outage telemetry was not buffered"
    beats = [r for r in records(kafka_config, spec.topic("health")) if (r.key or b"").startswith(b"line-canary")]
    assert not [r for r in beats if t0_ms + 1200 < r.timestamp_ms < t0_ms + 2900], "offline devices sent heartbeats"

    backlog = [parse_alert(r.value) for r in records(kafka_config, spec.topic("alerts"))]
    assert [(a["kind"], a["group"], a["readings"]["devices"]) for a in backlog] == [("backlog", "line-canary", 3)]
    assert backlog[0]["readings"]["records"] >= 15

    skews = [abs(parse_iso(b["ts"]) * 1000 - (generated_ms(b["record_id"]) or 0)) for _, b in good]
    assert max(skews) > 10_000 and max(skews) <= 120_000 + 1


def test_a_followed_fleet_view_reads_what_a_fresh_read_does(
    spec: PipelineSpec, kafka_config: dict[str, Any], operator: Signer
) -> None:
    """A FleetView refreshed after each change holds the same registry and device states as reading both topics
    anew: new states, a forged state on top of a good one, a decommissioned device, a device enrolled again with
    another key (its old signed state no longer counts) and a registry tombstone."""
    from edgeloop.contract.keys import public_hex
    from edgeloop.fleet.control import FleetView, forget_devices
    from edgeloop.fleet.registry import enrol
    from edgeloop.kafka import publish_messages

    trusted = keyring(operator)
    view = FleetView(spec, kafka_config, trusted)
    north_view = FleetView(spec, kafka_config, trusted, groups=["plant-north"])

    def same_as_fresh() -> tuple[int, int]:
        registry, states = view.refresh(timeout=30)
        fresh_registry = read_registry(spec, kafka_config, trusted, timeout=30)
        fresh = read_device_states(spec, kafka_config, timeout=30, registry=fresh_registry)
        assert registry.devices.keys() == fresh_registry.devices.keys()
        assert sorted(registry.bad_records) == sorted(fresh_registry.bad_records)
        assert states.devices == fresh.devices
        assert (sorted(states.bad_records), states.refused) == (sorted(fresh.bad_records), fresh.refused)
        # a view of one group holds that group's devices and their states as the whole fleet's view does, and of
        # the others only the group their records claim (not verified)
        north_registry, north_states = north_view.refresh(timeout=30)
        enrolled = {d for d, e in fresh_registry.devices.items() if e.group_id == "plant-north"}
        assert north_registry.devices.keys() == enrolled
        assert north_registry.elsewhere.keys() == fresh_registry.devices.keys() - enrolled
        assert north_states.devices == {d: s for d, s in fresh.devices.items() if d in enrolled}
        return len(registry.devices), len(states.devices)

    assert same_as_fresh() == (0, 0)  # no topic yet
    with running_fleet(spec, kafka_config, operator) as fleet:
        push_assignment(spec, kafka_config, operator, group="plant-north", model_version="3", issuer="test")
        eventually(lambda: same_as_fresh() == (9, 9), what="every device enrolled and reporting")
        first = fleet.stats.steps
        for _ in range(3):  # the view's heartbeats and error reports, followed, read what a fresh read does
            time.sleep(1.5)
            now = time.time() - 1.0
            followed = fleet_status(spec, kafka_config, trusted, now=now, view=view, timeout=30)
            fresh_status = fleet_status(spec, kafka_config, trusted, now=now, timeout=30)
            assert followed.to_dict() == fresh_status.to_dict()
            assert sum(g.online for g in followed.groups) == 9
    assert first > 0
    north = group_devices(spec, "plant-north")
    good = view.refresh(timeout=30)[1].devices[north[0]]
    forged = dict(good.to_dict(), reported={"model_version": "666"})
    publish_messages(kafka_config, spec.topic("device-state"), [(north[0].encode(), json.dumps(forged).encode())])
    forget_devices(spec, kafka_config, [north[1]])
    enrol(
        spec, kafka_config, operator, [(north[2], "plant-north", public_hex(Signer.generate().public))], now=time.time()
    )
    publish_messages(kafka_config, spec.topic("devices"), [(b"ghost-1", b"{not json")])
    assert same_as_fresh() == (9, 7)  # north-1 forgotten, north-2's state is signed by its old key now
    registry, states = view.refresh(timeout=30)
    assert states.devices[north[0]] == good and states.refused["unsigned"] == 1
    assert north[2] in registry.devices and north[2] not in states.devices
    publish_messages(kafka_config, spec.topic("devices"), [(north[2].encode(), None)])
    assert same_as_fresh() == (8, 7)


def test_new_error_reports_are_the_ones_published_after_the_mark_whatever_their_time(
    spec: PipelineSpec, kafka_config: dict[str, Any], operator: Signer
) -> None:
    """What a rollout job reads back: the error reports published after its mark, in broker order. A report
    stamped an hour back by its device's clock is still read; one published before the mark never is."""
    from confluent_kafka import Producer

    from edgeloop.fleet.control import FleetView
    from edgeloop.kafka import client_config

    topic = spec.topic("errors")
    producer = Producer(client_config(kafka_config))

    def publish(*values: bytes, timestamp_ms: int = 0) -> None:
        for value in values:
            producer.produce(topic, value, b"d-1", timestamp=timestamp_ms)
        assert producer.flush(30) == 0

    view = FleetView(spec, kafka_config, keyring(operator))
    view.mark_error_reports(timeout=30)  # no topic yet: read from its first record once it exists
    ensure_topics(spec, kafka_config)
    publish(b"a", b"b")
    assert sorted(r.value for r in view.new_error_reports(timeout=30)) == [b"a", b"b"]
    assert view.new_error_reports(timeout=30) == []

    later = FleetView(spec, kafka_config, keyring(operator))
    later.mark_error_reports(timeout=30)
    publish(b"late", timestamp_ms=int((time.time() - 3600) * 1000))
    assert [r.value for r in later.new_error_reports(timeout=30)] == [b"late"]
    assert [r.value for r in view.new_error_reports(timeout=30)] == [b"late"]
