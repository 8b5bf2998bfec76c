"""Fleet health on a real Kafka: one alert for the group whose model crashes, none for the others."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fleet_testkit import eventually, keyring, records, running_fleet

from edgeloop.contract.keys import Signer
from edgeloop.events import parse_alert
from edgeloop.fleet.control import apply_progress, push_assignment
from edgeloop.fleet.health import fleet_status, run_fleet_health
from edgeloop.kafka import publish_messages
from edgeloop.spec import PipelineSpec

pytestmark = pytest.mark.integration


def test_exactly_one_alert_for_the_group_pushed_over_its_error_rate(
    spec: PipelineSpec, kafka_config: dict[str, Any], operator: Signer, s3_client: Any
) -> None:
    with running_fleet(spec, kafka_config, operator, faults={"9": "crash"}):
        crash = push_assignment(spec, kafka_config, operator, group="plant-south", model_version="9")
        eventually(
            lambda: apply_progress(spec, kafka_config, crash, keyring(operator)).complete,
            what="the crashing version is applied",
        )
        eventually(
            lambda: (fleet_status(spec, kafka_config, keyring(operator)).group("plant-south").errors or 0) >= 30,
            what="inference errors reported in heartbeats",
        )
        # feedback from a device nobody registered
        ghost = {"device_id": "ghost-0001", "group_id": "plant-south", "records": 1, "errors": 0}
        publish_messages(kafka_config, spec.topic("health"), [(b"ghost-0001", json.dumps(ghost).encode())])
        summary = run_fleet_health(spec, kafka_config, keyring(operator), s3_client=s3_client)

    assert summary["alerts"] == [{"group": "plant-south", "reasons": ["error_rate"]}]
    assert summary["refused_reports"] == {"unsigned": 1}  # the ghost's heartbeat counts for nothing
    published = [parse_alert(r.value) for r in records(kafka_config, spec.topic("alerts"))]
    assert len(published) == 1
    alert = published[0]
    assert (alert["kind"], alert["pipeline"], alert["group"], alert["reason"]) == (
        "device",
        spec.name,
        "plant-south",
        "error_rate",
    )
    assert alert["readings"]["error_rate"] > spec.fleet_health.max_error_rate
    assert alert["readings"]["error_reports"]["inference"] >= 30
    report = json.loads(s3_client.get_object(Bucket=spec.storage.bucket, Key=summary["report_key"])["Body"].read())
    assert report["alerts"] == published
    groups = {g["group"]: g for g in report["status"]["groups"]}
    assert groups["plant-north"]["error_rate"] == 0.0 and groups["line-canary"]["online"] == 3


def test_forged_heartbeats_on_the_broker_cannot_pass_a_failing_canary(
    spec: PipelineSpec, kafka_config: dict[str, Any], operator: Signer
) -> None:
    """The canary's model crashes on every reading; an attacker floods the health topic with heartbeats for the
    canary's devices claiming a billion clean records at full confidence: unsigned, signed with a key nobody
    enrolled, signed by an enrolled device of another group, and from a device nobody enrolled. The gate reads
    the broker and fails the canary, counting each forged report by its reason."""
    from edgeloop.contract.messages import signed_json
    from edgeloop.rollout.gate import evaluate_gate
    from edgeloop.rollout.job import read_group_readings

    canary = "line-canary"
    with running_fleet(spec, kafka_config, operator, faults={"9": "crash"}) as fleet:
        crash = push_assignment(spec, kafka_config, operator, group=canary, model_version="9")
        eventually(
            lambda: apply_progress(spec, kafka_config, crash, keyring(operator)).complete,
            what="the crashing version is applied on the canary",
        )
        victims = [d for d in fleet.device_ids if d.startswith(canary)]
        north = next(i for i, d in enumerate(fleet.device_ids) if d.startswith("plant-north"))
        lie = {"group_id": canary, "records": 10**9, "errors": 0, "confidence_mean": 1.0, "interval_s": 10.0}
        forged: list[tuple[bytes, bytes]] = []  # keyed by the victim's id, as a forger would
        for device in victims:
            body = {**lie, "device_id": device}
            neighbour = {**body, "device_id": fleet.device_ids[north]}
            values = [
                json.dumps(body).encode(),
                signed_json(body, Signer.generate()),
                signed_json(neighbour, fleet.cores[north].identity),  # type: ignore[arg-type]
                signed_json({**body, "device_id": f"ghost-{device}"}, Signer.generate()),
            ]
            forged += [(device.encode(), value) for value in values]
        publish_messages(kafka_config, spec.topic("health"), forged)

        def gate_reading() -> tuple[Any, dict[str, int]] | None:
            readings, refused = read_group_readings(spec, kafka_config, [canary], "9", {}, 60.0, keyring(operator))
            return (readings, refused) if refused.get("unknown_device") == len(victims) else None

        readings, refused = eventually(gate_reading, 60, what="the forged heartbeats read and refused")
        decision = evaluate_gate(readings, spec.rollout.thresholds, spec.rollout.max_failure_ratio, soak_over=True)
    assert decision.state == "fail" and any("error rate" in reason for reason in decision.reasons), decision
    assert refused == {"unsigned": 3, "bad_signature": 3, "wrong_group": 3, "unknown_device": 3}
