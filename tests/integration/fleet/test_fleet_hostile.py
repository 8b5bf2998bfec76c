"""Hostile records on the real device-state, health, errors and alerts topics: fleet health, the twin and the
Pipelines page's alert summary keep working, count each bad record, and read the good ones beside them.

One such record (a 100 KB nested value on the compacted device-state topic, say) used to raise
RecursionError out of every reader of that topic until someone deleted it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from edgeloop.contract.keys import Keyring, Signer, public_hex
from edgeloop.contract.messages import signed_json
from edgeloop.fleet.control import read_device_states
from edgeloop.fleet.health import fleet_status
from edgeloop.fleet.registry import enrol
from edgeloop.generator.status import recent_alerts
from edgeloop.kafka import ensure_pipeline_topics, publish_messages
from edgeloop.spec import PipelineSpec

pytestmark = pytest.mark.integration

DEEP = b"[" * 50_000 + b"]" * 50_000
DEVICE = b"plant-north-00001"


def test_hostile_records_on_the_fleet_topics_are_counted_and_the_good_ones_read(
    spec: PipelineSpec, kafka_config: dict[str, Any]
) -> None:
    ensure_pipeline_topics(spec, dict(kafka_config))
    operator, device_key = Signer.generate(), Signer.generate()
    enrol(spec, kafka_config, operator, [(DEVICE.decode(), "plant-north", public_hex(device_key.public))], now=0.0)
    twin = {"device_id": DEVICE.decode(), "group_id": "plant-north", "desired": {}, "reported": {}}
    beat = {"device_id": DEVICE.decode(), "group_id": "plant-north", "interval_s": 10, "records": 5, "errors": 0}
    hostile = [b"null", b'{"device_id": ' + DEEP + b"}", b'{"device_id": "\\ud800"}', b"\xff\xfe"]

    publish_messages(
        kafka_config,
        spec.topic("device-state"),
        [(DEVICE, signed_json(twin, device_key)), *((f"ghost-{i}".encode(), v) for i, v in enumerate(hostile))],
    )
    publish_messages(
        kafka_config,
        spec.topic("health"),
        [
            (DEVICE, signed_json(beat, device_key)),
            (DEVICE, signed_json({**beat, "records": 10**400}, device_key)),
            (DEVICE, signed_json({**beat, "interval_s": -1}, device_key)),
            (DEVICE, signed_json({**beat, "model_version": {"a": 1}}, device_key)),
            *((DEVICE, v) for v in hostile),
        ],
    )
    publish_messages(kafka_config, spec.topic("errors"), [(DEVICE, v) for v in hostile])
    since = int(time.time() * 1000) - 60_000
    drift = {"kind": "drift", "pipeline": spec.name, "groups": ["plant-north"], "alert_id": "drift-1"}
    publish_messages(
        kafka_config,
        spec.topic("alerts"),
        [
            (None, json.dumps(drift).encode()),
            (None, json.dumps({**drift, "groups": "plant-north"}).encode()),
            (None, json.dumps({**drift, "window": ["0001-01-01", "9999-12-31"]}).encode()),
            *((None, v) for v in hostile),
        ],
    )

    states = read_device_states(spec, kafka_config, timeout=30.0)
    assert list(states.devices) == [DEVICE.decode()]
    assert len(states.bad_records) == len(hostile)

    status = fleet_status(spec, kafka_config, Keyring.of([operator.public]), timeout=60.0)
    assert status.group("plant-north").devices == 1 and status.group("plant-north").online == 1
    assert status.bad_state_records == len(hostile)
    assert status.bad_feedback == 3 + 2 * len(hostile), "bad heartbeats and bad error reports, each counted"
    assert status.refused_reports == {"bad_value": 3 + len(hostile)}  # out of range, or unreadable

    summary = recent_alerts(kafka_config, {spec.name: spec.topic("alerts")}, since, timeout=10.0)[spec.name]
    assert summary.counts == {"drift": 1}
    assert summary.bad == 2 + len(hostile)
