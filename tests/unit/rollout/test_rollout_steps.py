"""Rollout steps with plain fakes: the approval in the audit, parallel group jobs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from edgeloop.rollout import launch, steps
from edgeloop.spec import load_spec

SPEC = load_spec(Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml")
PLAN = {
    "rollout_id": "ro-1",
    "waves": [{"index": 0, "canary": True, "groups": ["line-canary"]}, {"index": 1, "canary": False, "groups": []}],
}


class Parts:
    """Collects what write_part puts (only the call the steps make)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str) -> None:
        self.objects[Key] = json.loads(Body)


def test_an_approval_becomes_the_audit_part_before_the_first_production_wave() -> None:
    s3 = Parts()
    answer = {"chosen_options": ["Approve"], "responded_by_user": {"id": "1", "name": "admin"}, "responded_at": "t"}
    decision = steps.record_approval(SPEC, s3, PLAN, answer)
    assert decision == {
        "decision": "approved",
        "chosen_options": ["Approve"],
        "responded_by": "admin",
        "responded_at": "t",
    }
    [part] = s3.objects.values()
    assert part["step"] == "approval" and part["order"] == 9 + 3 * 1  # just before apply-wave-1 (10 + 3 x 1)
    assert steps.record_approval(SPEC, s3, PLAN, None) is None
    assert steps.record_approval(SPEC, s3, PLAN, {"chosen_options": []}) is None  # not answered yet


def test_a_timed_out_approval_is_a_rejection_by_nobody() -> None:
    decision = steps.record_approval(SPEC, Parts(), PLAN, {"chosen_options": ["Reject"], "responded_by_user": None})
    assert decision is not None and decision["decision"] == "rejected" and decision["responded_by"] is None


def test_group_jobs_of_a_wave_run_together_and_the_first_failure_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    running, peak, lock = 0, 0, threading.Lock()
    finished: list[str] = []

    shared: set[int] = set()

    def fake_launch(
        spec: Any, group: str, version: str, wave: int, rollout_id: str, context: Any, rollback: bool, artifact: Any
    ) -> Any:
        nonlocal running, peak
        shared.add(id(artifact))
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.2)
        with lock:
            running -= 1
            finished.append(group)
        if group in ("g2", "g4"):
            raise RuntimeError(f"{group} failed")
        return {"group": group}

    monkeypatch.setattr(launch, "launch_group", fake_launch)
    groups = [f"g{i}" for i in range(6)]
    assert steps.launch_groups(SPEC, groups[:2], "3", 0, "ro-1", {}) == [{"group": "g0"}, {"group": "g1"}]
    with pytest.raises(RuntimeError, match="g2 failed"):
        steps.launch_groups(SPEC, groups, "3", 1, "ro-1", {})
    assert peak > 1, "the groups of a wave run at the same time"
    assert len(shared) == 2, "a wave's jobs share what they need, each wave its own"
    assert sorted(finished[2:]) == groups, "every group's job runs even when another fails"


def test_what_a_waves_jobs_share_is_made_once() -> None:
    """The first job makes it (the others wait for it); a failure is not kept, the next job tries again."""
    jobs = launch.WaveJobs()
    calls: list[str] = []

    def make(value: str) -> Callable[[], str]:
        def made() -> str:
            calls.append(value)
            time.sleep(0.05)
            if value == "down":
                raise RuntimeError("the registry is down")
            return value.upper()

        return made

    with pytest.raises(RuntimeError):
        jobs.once("artifact:3", make("down"))
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda _: jobs.once("artifact:3", make("onnx")), range(4)))
    assert found == ["ONNX"] * 4 and calls == ["down", "onnx"]
    assert jobs.once("artifact:4", make("other")) == "OTHER"


def test_the_approval_answer_is_json_safe_and_an_error_event_has_none() -> None:
    from datetime import UTC, datetime

    from edgeloop.rollout.approval import answer_of

    at = datetime(2026, 11, 25, 12, tzinfo=UTC)
    event = {"chosen_options": ["Reject"], "responded_by_user": {"id": "1", "name": "admin"}, "responded_at": at}
    answer = answer_of(event)
    assert answer == {
        "chosen_options": ["Reject"],
        "responded_by_user": {"id": "1", "name": "admin"},
        "responded_at": "2026-11-25T12:00:00+00:00",
    }
    assert json.loads(json.dumps(answer)) == answer
    assert answer_of({"error": "boom", "error_type": "unknown"}) is None
