"""A device core taken up again from its twin, and the clock it stamps its reports with."""

from __future__ import annotations

import json

import numpy as np
from tests.unit.edge.conftest import NOW, assignment_wire

from edgeloop.contract.messages import parse_iso
from edgeloop.edge.device import DeviceCore


def test_a_restored_twin_is_reported_as_it_was_and_its_assignment_is_not_applied_again(core: DeviceCore) -> None:
    desired = {"model_version": "0", "config_version": "cfg-2", "assignment_id": "asg-7", "updated_at": "t1"}
    reported = {"model_version": "0", "assignment_id": "asg-7", "status": "failed", "reason": "x", "updated_at": "t2"}
    core.restore_twin(desired, reported)
    state = json.loads(core.state_update(NOW).value)
    assert state["desired"] == desired
    assert {k: state["reported"][k] for k in reported} == reported
    assert core.on_control(assignment_wire(model_version="0", assignment_id="asg-7"), 3) == (None, [])


def test_a_restored_twin_ignores_fields_of_the_wrong_type(core: DeviceCore) -> None:
    core.restore_twin({"model_version": 3}, {"assignment_id": ["asg"], "status": None})
    assert (core.twin.desired_model, core.twin.reported_assignment, core.twin.status) == (None, None, "applied")
    assert core.twin.applied_ids == []


def test_a_skewed_clock_stamps_reports_but_not_record_ids(core: DeviceCore) -> None:
    core.clock_offset_s = -90.0
    row = np.array([2.0, 6.0, 55.0, 12.0, 1480.0, 70.0])
    proba = core.score(row[None, :])
    assert proba is not None
    message = core.observe(row, proba[0], NOW)
    record = json.loads(message.value)
    assert core.last_record_id == f"plant-north-00001-{int(NOW * 1000)}-1"
    assert core.last_record_id in record.values()
    stamps = [json.loads(m.value)["ts"] for m in (core.heartbeat(NOW), core.error_report("inference", "x", NOW))]
    assert [parse_iso(s) for s in stamps] == [NOW - 90.0] * 2
    assert message.ts_ms == int(NOW * 1000)  # the queue keeps the true creation time
