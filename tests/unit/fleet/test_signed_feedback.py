"""Device feedback counts only when its device signed it as enrolled: forged heartbeats cannot pass a canary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers.keys import INTRUDER, OPERATOR, TRUSTED, device_key

from edgeloop.contract.identity import DeviceRegistry, enrolment_record, parse_enrolment
from edgeloop.contract.keys import Signer, public_hex
from edgeloop.contract.messages import DeviceState, iso_ms, signed_json
from edgeloop.fleet.control import DeviceStates
from edgeloop.fleet.health import summarize_fleet
from edgeloop.fleet.topics import TopicRecord
from edgeloop.rollout.gate import GroupReading, evaluate_gate
from edgeloop.spec import PipelineSpec, load_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
NOW_MS = 1_767_225_600_000
CANARY = "line-canary"
DEVICES = [f"canary-{i}" for i in range(3)]


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(DEMO)


def enrolment(spec: PipelineSpec, signer: Signer, device: str, group: str, device_public: Signer) -> bytes:
    """The registry record for `device`, signed by `signer`, naming `device_public`'s public key."""
    return enrolment_record(
        signer,
        device_id=device,
        group_id=group,
        pipeline=spec.name,
        device_public_hex=public_hex(device_public.public),
        enrolled_at=iso_ms(NOW_MS / 1000),
    )


@pytest.fixture(scope="module")
def registry(spec: PipelineSpec) -> DeviceRegistry:
    enrolled = {}
    for device, group in [*((d, CANARY) for d in DEVICES), ("north-0", "plant-north")]:
        record = enrolment(spec, OPERATOR, device, group, device_key(spec.name, device))
        enrolled[device] = parse_enrolment(device.encode(), record, TRUSTED, spec.name)
    return DeviceRegistry(enrolled)


def heartbeat(device: str, group: str, age_s: float, records: int, errors: int, confidence: float) -> dict[str, object]:
    return {
        "device_id": device,
        "group_id": group,
        "records": records,
        "errors": errors,
        "uptime_s": 10_000.0,
        "interval_s": 10.0,
        "confidence_mean": confidence,
    }


def record(value: bytes, age_s: float, offset: int) -> TopicRecord:
    body = json.loads(value)
    return TopicRecord(0, offset, NOW_MS - int(age_s * 1000), body["device_id"].encode(), value)


def failing_canary(spec: PipelineSpec) -> list[TopicRecord]:
    """Each canary device: 70 records and 30 errors in the window (30% errors), confidence 0.2; signed."""
    out = []
    for device in DEVICES:
        key = device_key(spec.name, device)
        out.append(record(signed_json(heartbeat(device, CANARY, 70, 1000, 0, 0.2), key), 70, len(out)))
        out.append(record(signed_json(heartbeat(device, CANARY, 5, 1070, 30, 0.2), key), 5, len(out)))
    return out


def forged(spec: PipelineSpec) -> list[TopicRecord]:
    """What an attacker sends for canary-0: unsigned, signed with a key nobody enrolled, and signed by a device
    of another group claiming the canary group; all with a billion clean records and full confidence."""
    lie = heartbeat("canary-0", CANARY, 1, 10**9, 0, 1.0)
    return [
        record(json.dumps(lie).encode(), 1, 100),
        record(signed_json(lie, INTRUDER), 1, 101),
        record(signed_json({**lie, "device_id": "north-0"}, device_key(spec.name, "north-0")), 1, 102),
        record(signed_json({**lie, "device_id": "ghost-9"}, device_key(spec.name, "ghost-9")), 1, 103),
        record(json.dumps({**lie, "records": 1e300}).encode(), 1, 104),
    ]


def gate(spec: PipelineSpec, beats: list[TopicRecord], registry: DeviceRegistry | None) -> tuple[str, dict[str, int]]:
    states = DeviceStates({d: DeviceState(d, CANARY, {"model_version": "2"}, {"model_version": "2"}) for d in DEVICES})
    status = summarize_fleet(
        spec, states, beats, [], now_ms=NOW_MS, window_s=60.0, stale_after_s=120.0, registry=registry
    )
    health = status.group(CANARY)
    reading = GroupReading(CANARY, 3, 3, 0, health.offline_ratio, health.error_rate, health.mean_confidence)
    decision = evaluate_gate([reading], spec.rollout.thresholds, spec.rollout.max_failure_ratio, soak_over=True)
    return decision.state, status.refused_reports


def test_a_failing_canary_fails_its_gate(spec: PipelineSpec, registry: DeviceRegistry) -> None:
    assert gate(spec, failing_canary(spec), registry) == ("fail", {})


def test_forged_heartbeats_are_refused_counted_and_cannot_pass_a_failing_canary(
    spec: PipelineSpec, registry: DeviceRegistry
) -> None:
    beats = failing_canary(spec) + forged(spec)
    assert gate(spec, beats, None)[0] == "pass"  # without identities, one forged heartbeat turns the gate
    state, refused = gate(spec, beats, registry)
    assert state == "fail"
    assert refused == {"unsigned": 2, "bad_signature": 1, "wrong_group": 1, "unknown_device": 1}


def test_a_registry_record_must_be_signed_by_the_operator(spec: PipelineSpec) -> None:
    from edgeloop.contract.identity import BadEnrolment

    rogue = enrolment(spec, INTRUDER, "rogue-1", CANARY, INTRUDER)
    with pytest.raises(BadEnrolment, match="is not a trusted key"):
        parse_enrolment(b"rogue-1", rogue, TRUSTED, spec.name)
    genuine = enrolment(spec, OPERATOR, "rogue-1", CANARY, INTRUDER)
    with pytest.raises(BadEnrolment, match="differs from the record's key"):
        parse_enrolment(b"canary-0", genuine, TRUSTED, spec.name)  # a valid record re-keyed to another device
    with pytest.raises(BadEnrolment, match="does not verify"):
        parse_enrolment(b"rogue-1", genuine.replace(CANARY.encode(), b"plant-north"), TRUSTED, spec.name)


def test_the_refusal_metric_knows_every_reason() -> None:
    from edgeloop.contract.identity import REFUSAL_REASONS
    from edgeloop.metrics.catalogue import REPORT_REFUSALS

    assert set(REPORT_REFUSALS) == {*REFUSAL_REASONS, "bad_value"}


def test_a_report_verified_before_is_not_trusted_once_changed(spec: PipelineSpec, registry: DeviceRegistry) -> None:
    """Verifications are remembered (readers poll the same window); the memory is keyed by what was signed."""
    body = json.loads(signed_json(heartbeat("canary-1", CANARY, 5, 10, 0, 0.9), device_key(spec.name, "canary-1")))
    assert registry.check(body) is None and registry.check(dict(body)) is None
    assert registry.check({**body, "errors": 1}) == "bad_signature"
    assert registry.check({**body, "signature": body["signature"][:-4] + "AAA="}) == "bad_signature"


def test_a_reading_verifies_only_the_heartbeats_it_uses(spec: PipelineSpec, registry: DeviceRegistry) -> None:
    """Each device's beats in the window, then older ones only down to its last usable one: forged beats older
    than that are never verified, a forged one in the way is refused and the next older beat is the baseline."""
    beats = failing_canary(spec)
    older = heartbeat("canary-0", CANARY, 200, 0, 0, 1.0)  # before the window, behind canary-0's baseline
    beats += [record(json.dumps(older).encode(), 200 + i, 200 + i) for i in range(50)]
    assert gate(spec, beats, registry) == ("fail", {})
    # canary-1's newest beat before the window is forged: refused, and the beat below it is its baseline
    key = device_key(spec.name, "canary-1")
    baseline = record(signed_json(heartbeat("canary-1", CANARY, 90, 1000, 0, 0.2), key), 90, 300)
    forged_edge = record(json.dumps(heartbeat("canary-1", CANARY, 65, 1069, 0, 0.2)).encode(), 65, 301)
    without = [b for b in failing_canary(spec) if not (b.key == b"canary-1" and b.timestamp_ms < NOW_MS - 60_000)]
    state, refused = gate(spec, [*without, baseline, forged_edge], registry)
    assert (state, refused) == ("fail", {"unsigned": 1})
    states = DeviceStates({d: DeviceState(d, CANARY, {"model_version": "2"}, {"model_version": "2"}) for d in DEVICES})
    status = summarize_fleet(
        spec,
        states,
        [*without, baseline, forged_edge],
        [],
        now_ms=NOW_MS,
        window_s=60.0,
        stale_after_s=120.0,
        registry=registry,
    )
    assert (status.group(CANARY).records, status.group(CANARY).errors) == (210, 90)  # 70 + 30 a device


def test_a_reader_of_some_groups_leaves_the_others_enrolments_unverified(spec: PipelineSpec) -> None:
    """A device none of whose registry records claims one of the reader's groups cannot be enrolled in them:
    its records are not verified; any record claiming one of them (forged or not) makes the reader verify."""
    from edgeloop.contract.identity import claimed_group_outside

    north = enrolment(spec, OPERATOR, "north-1", "plant-north", device_key(spec.name, "north-1"))
    forged = enrolment(spec, INTRUDER, "north-1", CANARY, INTRUDER)
    canary = {CANARY}
    assert claimed_group_outside([north], canary) == "plant-north"
    assert claimed_group_outside([north, b"{not json", b"[]"], canary) == "plant-north"  # unreadable: no claim
    assert claimed_group_outside([forged, north], canary) is None  # a claim on the canary: verify them all
    assert claimed_group_outside([north, None], canary) is None  # removed
    assert claimed_group_outside([b"{not json"], canary) is None  # nothing readable: verify (and refuse) it

    # a report of such a device naming a reader's group is refused as wrong_group, one of another unknown device
    reader = DeviceRegistry(elsewhere={"north-1": "plant-north"})
    body = json.loads(signed_json(heartbeat("north-1", CANARY, 5, 10, 0, 0.9), device_key(spec.name, "north-1")))
    assert reader.check(body) == "wrong_group"
    assert reader.check({**body, "device_id": "north-9"}) == "unknown_device"
