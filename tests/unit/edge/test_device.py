"""One device's decisions: which orders it refuses (and says why), which it carries out, what it reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.helpers.keys import INTRUDER, OPERATOR
from tests.unit.edge.conftest import NOW, PIPELINE, assignment_wire

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.contract.messages import Assignment, Target
from edgeloop.edge.device import DeviceCore
from edgeloop.edge.runtime import load_model
from edgeloop.spec import PipelineSpec

ARTIFACT = ArtifactRef("http://models.example/m.onnx", "a" * 64, 1234)


def test_a_model_order_for_its_group_is_handed_to_the_caller(core: DeviceCore, spec: PipelineSpec) -> None:
    order, out = core.on_control(assignment_wire(model_version="3", artifact=ARTIFACT, pipeline=spec.name), 0)
    assert order is not None and order.assignment.artifact == ARTIFACT
    assert out == []
    assert core.twin.desired_model == "3"


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (assignment_wire(INTRUDER, model_version="3"), "is not a trusted key"),
        (
            assignment_wire(model_version="3", issued_at=NOW - 8 * 86_400, ttl_s=7 * 86_400),
            "expires_at: the order expired",
        ),
        (assignment_wire(model_version="3", pipeline="other_pipeline"), "the assignment is for 'other_pipeline'"),
        (b"null", "not a JSON object"),
        (b"[" * 5000 + b"]" * 5000, "levels deep"),
    ],
)
def test_refused_orders_are_reported_with_their_reason_and_change_nothing(
    core: DeviceCore, wire: bytes, reason: str
) -> None:
    order, out = core.on_control(wire, 41)
    assert order is None
    (report,) = out
    body = json.loads(report.value)
    assert report.kind == "errors" and body["kind"] == "bad_control"
    assert reason in body["message"] and "offset 41" in body["message"]
    assert core.model_version == "0"
    assert core.counters.control_refused == 1


def test_orders_for_another_group_are_ignored_and_counted(core: DeviceCore) -> None:
    order, out = core.on_control(assignment_wire(model_version="3", target=Target("group", "plant-south")), 0)
    assert (order, out) == (None, [])
    assert core.counters.control_ignored == 1
    assert core.twin.desired_model is None


def test_an_order_is_carried_out_once(core: DeviceCore, spec: PipelineSpec, baseline_model: bytes) -> None:
    wire = assignment_wire(model_version="3", artifact=ARTIFACT, assignment_id="asg-once")
    order, _ = core.on_control(wire, 0)
    assert order is not None
    state = core.model_applied(order, load_model(baseline_model, "3", spec.features))
    assert json.loads(state.value)["reported"] == {
        "model_version": "3",
        "config_version": None,
        "assignment_id": "asg-once",
        "status": "applied",
        "reason": None,
        "sequence": order.assignment.sequence,
        "updated_at": "2026-01-01T00:00:00.000Z",
    }
    # the same message again (a replay) is refused and reported; nothing changes
    again, out = core.on_control(wire, 1)
    assert again is None and core.model_version == "3"
    assert "replayed or out-of-order" in json.loads(out[0].value)["message"]


def test_an_older_order_is_refused_as_a_replay(core: DeviceCore) -> None:
    old = assignment_wire(model_version="2", artifact=ARTIFACT, assignment_id="asg-old", sequence=100)
    new = assignment_wire(model_version="3", artifact=ARTIFACT, assignment_id="asg-new", sequence=200)
    order, _ = core.on_control(new, 0)
    assert order is not None and core.twin.sequence == 200
    order, out = core.on_control(old, 1)
    assert order is None and core.twin.desired_model == "3"
    body = json.loads(out[0].value)
    assert body["kind"] == "bad_control" and "sequence: 100 is not after 200" in body["message"]
    assert core.counters.control_refused == 1


def test_a_publisher_retry_of_an_applied_order_is_a_no_op(core: DeviceCore) -> None:
    first = assignment_wire(config={"telemetry_interval_s": 2}, assignment_id="asg-cfg", sequence=100)
    retry = assignment_wire(config={"telemetry_interval_s": 2}, assignment_id="asg-cfg", sequence=150)
    core.on_control(first, 0)
    assert core.on_control(retry, 1) == (None, [])
    assert core.counters.control_refused == 0 and core.twin.sequence == 150


def test_the_order_file_read_again_after_a_restart_is_not_a_replay(core: DeviceCore) -> None:
    wire = assignment_wire(config={"telemetry_interval_s": 2}, assignment_id="asg-file")
    core.on_control(wire, -1)
    assert core.on_control(wire, -1) == (None, [])
    assert core.counters.control_refused == 0


def test_reports_are_signed_with_the_device_key(core: DeviceCore) -> None:
    from edgeloop.contract.identity import DeviceRegistry, Enrolment
    from edgeloop.contract.keys import Keyring

    device_key = OPERATOR.derive("unit")
    core.identity = device_key
    enrolled = Enrolment(core.device_id, core.group_id, PIPELINE, Keyring.of([device_key.public]), "t")
    registry = DeviceRegistry({core.device_id: enrolled})
    beat = json.loads(core.heartbeat(NOW).value)
    state = json.loads(core.state_update(NOW).value)
    assert registry.check(beat) is None and registry.check(state) is None
    forged = {**beat, "records": 10**6}
    assert registry.check(forged) == "bad_signature"
    assert registry.check({**beat, "device_id": "plant-north-00002"}) == "unknown_device"


def test_a_failed_model_keeps_the_current_one_and_reports_why(core: DeviceCore) -> None:
    order, _ = core.on_control(assignment_wire(model_version="3", artifact=ARTIFACT), 0)
    assert order is not None
    report, state = core.model_failed(order, "sha256 mismatch")
    assert json.loads(report.value)["kind"] == "model_load"
    reported = json.loads(state.value)["reported"]
    assert (reported["model_version"], reported["status"], reported["reason"]) == ("0", "failed", "sha256 mismatch")


def test_a_config_out_of_range_is_refused_and_the_old_one_kept(core: DeviceCore) -> None:
    too_fast = Assignment(
        "asg-fast",
        Target("group", "plant-north"),
        "2026-01-01T00:00:00Z",
        "t",
        PIPELINE,
        1,
        "2026-01-02T00:00:00Z",
        None,
        {"telemetry_interval_s": 0.0001},
        "cfg-1",
    )
    _, out = core.on_control(too_fast.to_wire(OPERATOR), 0)
    kinds = [json.loads(m.value).get("kind") for m in out if m.kind == "errors"]
    assert kinds == ["bad_config"]
    assert core.config["telemetry_interval_s"] == 1.0
    _, out = core.on_control(assignment_wire(config={"telemetry_interval_s": 2}), 1)
    assert core.config["telemetry_interval_s"] == 2.0


def test_telemetry_follows_the_pipeline_schema(core: DeviceCore, spec: PipelineSpec) -> None:
    row = np.array([[2.0, 6.0, 55.0, 12.0, 1480.0, 70.0]])
    proba = core.score(row)
    assert proba is not None
    message = core.observe(row[0], proba[0], 1_767_225_600.5)
    record = json.loads(message.value)
    assert list(record) == [f.name for f in spec.schema_]
    roles = {f.role: f.name for f in spec.schema_}
    assert record[roles["prediction"]] in spec.annotation.labels
    assert 0.0 <= record[roles["confidence"]] <= 1.0
    assert record[roles["model_version"]] == "0"
    assert record[roles["record_id"]] == "plant-north-00001-1767225600500-1"
    assert message.ts_ms == 1_767_225_600_500


def test_a_refusal_names_the_order_only_when_a_trusted_key_signed_it(core: DeviceCore) -> None:
    """Anyone who can write to the control topic can write a real order's id: a forged or replayed message
    is reported without naming it, so that it cannot count as that order refused."""

    def named(wire: bytes, offset: int) -> object:
        order, out = core.on_control(wire, offset)
        assert order is None
        return json.loads(out[0].value).get("control_id")

    assert named(assignment_wire(INTRUDER, model_version="3", assignment_id="ro-1.v3"), 0) is None
    expired = assignment_wire(model_version="3", assignment_id="ro-2.v3", issued_at=NOW - 8 * 86_400, ttl_s=86_400)
    assert named(expired, 1) == "ro-2.v3"
    taken = assignment_wire(model_version="0", assignment_id="ro-3.v0")
    assert core.on_control(taken, 2)[0] is None  # the device runs version 0: applied at once
    assert named(taken, 3) is None  # the same message again: a replay
