"""The rollout tasks with plain fakes: plan, apply, shadow, promote and rollback hand typed results across
the task boundary, and the XCom of an apply is what the health gate reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.exceptions import AirflowFailException, AirflowSkipException

from edgeloop.metrics.push import TaskMetrics
from edgeloop.rollout import shadow_wave, steps
from edgeloop.rollout import tasks as rollout_tasks
from edgeloop.rollout.tasks import (
    GateRecord,
    RolloutPlanned,
    RolloutPromoted,
    RolloutRecords,
    ShadowDecided,
    WaveApplied,
)
from edgeloop.spec import PipelineSpec, parse_spec
from edgeloop.xcom import XComContractError

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
NO_METRICS = TaskMetrics(gateway=None, dag_id="factory_maintenance__rollout", task_id="promote")

PLANNED = RolloutPlanned(
    rollout_id="ro-1",
    model_version="4",
    champion_at_plan="3",
    previous_version="3",
    waves=[
        {"index": 0, "groups": ["line-canary"], "canary": True},
        {"index": 1, "groups": ["plant-north", "plant-south"], "canary": False},
    ],
    started_by="asset_triggered",
    triggered_by=None,
    gate={"version": "4", "decision": "promote", "reason": "better"},
    overrides=[],
    skip_canary_reason=None,
    planned_at="2026-12-06T12:00:00.000+00:00",
)
CANARY = WaveApplied(
    wave=0,
    groups=["line-canary"],
    model_version="4",
    assignment_ids={"line-canary": "a-0"},
    applied_at=100.0,
    results=[{"group": "line-canary", "strategy": "kafka", "applied": 3}],
    started_at=90.0,
)
SHARE = WaveApplied(
    wave=1,
    groups=["plant-north"],
    model_version="4",
    assignment_ids={"plant-north": "a-1"},
    applied_at=200.0,
    results=[],
    started_at=190.0,
    devices={"plant-north": ["d1", "d2"]},
    policy={"plant-north": {"share": {"share": 0.5}}},
)
SHADOWED = ShadowDecided(
    state="pass",
    challenger_version="4",
    champion_version="3",
    windows=4,
    devices=6,
    records=400,
    agreement=0.97,
    mean_confidence_delta=0.01,
    latency_ratio=1.1,
    error_rate=0.0,
    reasons=[],
    groups=["line-canary"],
    share=None,
    window_s=30.0,
    orders={"line-canary": ["ro-1.line-canary.s4"]},
    shadowed_devices={"line-canary": []},
    ended_by=["ro-1.line-canary.se4"],
    refused_reports={},
    started_at=10.0,
    decided_at=70.0,
)


def gate(wave: int, state: str, *reasons: str) -> GateRecord:
    readings: Any = [{"group": "line-canary", "applied_ratio": 1.0}]
    return GateRecord(wave, state, list(reasons), 150.0 + wave, {"readings": readings, "elapsed_s": 50.0})


@pytest.fixture
def spec() -> PipelineSpec:
    data = yaml.safe_load(DEMO.read_text())
    data["rollout"] |= {"approval_required": True, "approvers": ["admin"]}
    data["rollout"]["shadow"] = {"enabled": True, "window": "30s", "min_windows": 4}
    return parse_spec(yaml.safe_dump(data))


class Parts:
    """Collects what write_part puts (the only S3 call the recorded gates make)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str) -> None:
        self.objects[Key] = json.loads(Body)


class FakeClients:
    def __init__(self) -> None:
        self.parts = Parts()

    def kafka(self) -> dict[str, Any]:
        return {"bootstrap.servers": "fake:9092"}

    def s3(self) -> Parts:
        return self.parts

    def mlflow_uri(self) -> str:
        return "http://mlflow.invalid"


class FakeTI:
    """XComs by (task id, key); pushes are kept."""

    def __init__(self, xcoms: dict[tuple[str, str], Any] | None = None) -> None:
        self.xcoms = dict(xcoms or {})
        self.pushed: dict[str, Any] = {}

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return self.xcoms.get((task_ids, key))

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@pytest.mark.parametrize("result", [PLANNED, CANARY, SHARE, gate(0, "fail", "too many errors"), SHADOWED])
def test_results_survive_their_xcom_round_trip(result: Any) -> None:
    assert type(result).from_xcom(json.loads(json.dumps(result.to_xcom()))) == result


def test_absent_parts_stay_out_of_the_xcom_and_a_renamed_key_is_named() -> None:
    assert "policy" not in PLANNED.to_xcom() and "devices" not in CANARY.to_xcom()
    data = PLANNED.to_xcom()
    data["id"] = data.pop("rollout_id")
    with pytest.raises(XComContractError, match=r"RolloutPlanned.from_xcom: missing key\(s\) \['rollout_id'\]"):
        RolloutPlanned.from_xcom(data)


def test_a_gate_keeps_the_triggers_other_keys_as_they_came() -> None:
    operator_xcom = {"wave": 1, "decided_at": 9.0, "state": "fail", "reasons": ["x"], "readings": [], "paused": None}
    record = GateRecord.from_xcom(operator_xcom)
    assert not record.passed and record.details == {"readings": [], "paused": None}
    assert record.to_xcom() == operator_xcom


def test_a_gate_record_the_triggerer_pushed_reads_back_as_the_dict_it_was() -> None:
    """The triggerer stores the XCom of a task it ends JSON-encoded once more; a worker pulls that text."""
    record = gate(1, "pass")
    assert GateRecord.from_xcom(json.dumps(record.to_xcom())) == record
    with pytest.raises(XComContractError, match=r"GateRecord\.from_xcom: expected a dict, got str"):
        GateRecord.from_xcom("{not json")
    with pytest.raises(XComContractError, match="expected a dict, got str"):
        RolloutPlanned.from_xcom(json.dumps(["a list"]))  # only an object's text is decoded


def test_the_gate_operator_reads_what_an_apply_leaves_in_xcom(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeloop import connections
    from edgeloop.rollout.operators import RolloutGateOperator

    class Keys:
        def hex_keys(self) -> list[str]:
            return ["ab" * 32]

    monkeypatch.setattr(connections, "control_trusted_keys", Keys)
    deferred: list[Any] = []
    operator = RolloutGateOperator(
        task_id="gate_wave_1",
        pipeline="factory_maintenance",
        wave_index=1,
        apply_task_id="apply_wave_1",
        soak_seconds=60,
    )
    monkeypatch.setattr(operator, "defer", lambda trigger, method_name: deferred.append(trigger))
    operator.execute({"ti": FakeTI({("apply_wave_1", "return_value"): SHARE.to_xcom()})})
    [trigger] = deferred
    assert (trigger.groups, trigger.model_version, trigger.started_at) == (["plant-north"], "4", 200.0)
    assert trigger.assignment_ids == {"plant-north": "a-1"} and trigger.devices == {"plant-north": ["d1", "d2"]}
    assert trigger.wave_index == 1 and trigger.serialize()[1]["wave_index"] == 1


@pytest.mark.parametrize("state", ["pass", "fail"])
def test_a_passed_gate_ends_its_task_in_the_triggerer_and_a_failed_one_resumes_it(
    state: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass is the gate's last word: the triggerer marks the task a success with the gate's record as its XCom,
    and no worker starts it again. A fail goes back to the task, which fails the rollout with the reasons."""
    import asyncio

    from airflow.sdk import BaseHook
    from airflow.triggers.base import TaskSuccessEvent, TriggerEvent

    from edgeloop.rollout.operators import RolloutGateOperator
    from edgeloop.rollout.trigger import RolloutGateTrigger

    class Connection:
        extra_dejson = {"bootstrap.servers": "127.0.0.1:1"}

    async def connection(conn_id: str) -> Connection:
        return Connection()

    decision = {"state": state, "reasons": [] if state == "pass" else ["plant-north: error rate 0.5 > 0.02"]}
    monkeypatch.setattr(BaseHook, "aget_connection", staticmethod(connection))
    monkeypatch.setattr(RolloutGateTrigger, "_check", lambda self, spec, kafka: dict(decision, readings=[]))
    trigger = RolloutGateTrigger(
        pipeline="factory_maintenance",
        groups=["plant-north"],
        model_version="4",
        assignment_ids={},
        started_at=0.0,
        soak_seconds=1.0,
        wave_index=2,
    )

    async def first_event() -> Any:
        return await anext(aiter(trigger.run()))

    event = asyncio.run(first_event())

    if state == "pass":
        assert isinstance(event, TaskSuccessEvent)
        record = GateRecord.from_xcom(event.xcoms["return_value"])
        assert record.passed and record.wave == 2 and record.details == {"readings": []}
        return
    assert type(event) is TriggerEvent and event.payload["state"] == "fail"
    operator = RolloutGateOperator(
        task_id="gate_wave_2", pipeline="factory_maintenance", wave_index=2, apply_task_id="a", soak_seconds=1
    )
    ti = FakeTI()
    with pytest.raises(AirflowFailException, match="health gate of wave 2 failed: plant-north: error rate"):
        operator.execute_complete({"ti": ti}, event.payload)
    assert GateRecord.from_xcom(ti.pushed["return_value"]).reasons == decision["reasons"]


def test_the_plan_rolls_out_the_newest_event_version_for_the_run(
    spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def plan_step(spec: Any, s3: Any, uri: str, run_id: str, params: Any, version: Any, origin: Any) -> Any:
        seen.update(run_id=run_id, version=version, origin=origin, uri=uri)
        return PLANNED.to_xcom()

    class Run:
        run_id, run_type, triggering_user_name = "asset_triggered__1", "asset_triggered", None

    class Event:
        def __init__(self, version: str) -> None:
            self.extra = {"model_version": version}

    monkeypatch.setattr(steps, "plan_step", plan_step)
    planned = rollout_tasks.plan(spec, FakeClients(), {}, run=Run(), events={"model": [Event("3"), Event("4")]})
    assert planned == PLANNED
    assert (seen["run_id"], seen["version"], seen["uri"]) == ("asset_triggered__1", "4", "http://mlflow.invalid")
    assert (seen["origin"].run_type, seen["origin"].user) == ("asset_triggered", None)


def test_a_wave_the_plan_left_empty_is_skipped_and_a_planned_one_applied(
    spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, int, Any]] = []

    def apply_step(spec: Any, s3: Any, plan: Any, index: int, context: Any) -> Any:
        calls.append((plan, index, context))
        return CANARY.to_xcom()

    monkeypatch.setattr(steps, "apply_step", apply_step)
    clients: Any = FakeClients()
    empty = RolloutPlanned.from_xcom({**PLANNED.to_xcom(), "waves": [{"index": 0, "groups": [], "canary": True}]})
    with pytest.raises(AirflowSkipException, match="no group of wave 0"):
        rollout_tasks.apply_wave(spec, clients, empty, 0, context={})
    with pytest.raises(AirflowSkipException, match="no group of wave 7"):
        rollout_tasks.apply_wave(spec, clients, PLANNED, 7, context={})
    assert rollout_tasks.apply_wave(spec, clients, PLANNED, 0, context={"ti": "t"}) == CANARY
    assert calls == [(PLANNED.to_xcom(), 0, {"ti": "t"})]


def test_a_failed_shadow_wave_keeps_its_record_in_xcom_and_fails_the_task(
    spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = ShadowDecided.from_xcom({**SHADOWED.to_xcom(), "state": "fail", "reasons": ["agreement 0.80 < 0.95"]})
    decided = iter([SHADOWED, failed])
    monkeypatch.setattr(shadow_wave, "shadow_step", lambda spec, clients, plan: next(decided).to_xcom())
    ti, clients = FakeTI(), FakeClients()
    assert rollout_tasks.shadow(spec, clients, PLANNED, ti=ti) == SHADOWED
    assert ti.pushed == {}
    with pytest.raises(AirflowFailException, match=r"shadow wave stopped version 4: \['agreement 0.80 < 0.95'\]"):
        rollout_tasks.shadow(spec, clients, PLANNED, ti=ti)
    assert ti.pushed == {"return_value": failed.to_xcom()}


def test_the_records_are_the_xcoms_of_the_specs_waves_approval_and_shadow(spec: PipelineSpec) -> None:
    answer = {"chosen_options": ["Approve"]}
    ti = FakeTI(
        {
            ("apply_canary", "return_value"): CANARY.to_xcom(),
            ("gate_canary", "return_value"): gate(0, "pass").to_xcom(),
            ("approve_production", "answer"): answer,
            ("shadow", "return_value"): SHADOWED.to_xcom(),
        }
    )
    records = rollout_tasks.rollout_records(spec, ti)
    assert records == RolloutRecords({0: CANARY}, {0: gate(0, "pass")}, answer, SHADOWED)
    plain = spec.model_copy(update={"rollout": spec.rollout.model_copy(update={"approval_required": False})})
    assert rollout_tasks.rollout_records(plain, ti).approval is None


def test_promote_records_the_gates_and_skips_unless_every_planned_wave_passed(
    spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    promoted: list[Any] = []

    def promote_step(spec: Any, s3: Any, uri: str, plan: Any, gates: Any, approval: Any, shadow: Any) -> Any:
        promoted.append((plan, gates, approval, shadow))
        return {"champion": plan["model_version"]}

    monkeypatch.setattr(steps, "promote_step", promote_step)
    clients: Any = FakeClients()
    halfway = RolloutRecords({0: CANARY}, {0: gate(0, "pass")})
    with pytest.raises(AirflowSkipException, match="not every wave passed"):
        rollout_tasks.promote(spec, clients, PLANNED, halfway, metrics=NO_METRICS)
    assert [p["step"] for p in clients.parts.objects.values()] == ["gate-wave-0"] and promoted == []
    done = RolloutRecords({0: CANARY, 1: SHARE}, {0: gate(0, "pass"), 1: gate(1, "pass")}, None, SHADOWED)
    result = rollout_tasks.promote(spec, clients, PLANNED, done, metrics=NO_METRICS)
    assert result == RolloutPromoted(rollout_id="ro-1", champion="4")
    [(plan, gates, approval, shadow)] = promoted
    assert plan == PLANNED.to_xcom() and gates[1] == gate(1, "pass").to_xcom()
    assert approval is None and shadow == SHADOWED.to_xcom()


def test_rollback_restores_the_touched_groups_and_fails_naming_them(
    spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    rolled: list[Any] = []

    def rollback_step(spec: Any, s3: Any, kafka: Any, plan: Any, applies: Any, gates: Any, context: Any, **kw: Any):
        rolled.append((applies, gates, context, kw))
        return {"rolled_back_groups": ["line-canary"], "previous_version": "3", "reasons": ["errors 0.2 > 0.05"]}

    monkeypatch.setattr(steps, "rollback_step", rollback_step)
    clients: Any = FakeClients()
    passed = RolloutRecords({0: CANARY, 1: SHARE}, {0: gate(0, "pass"), 1: gate(1, "pass")})
    with pytest.raises(AirflowSkipException, match="nothing to roll back"):
        rollout_tasks.rollback(spec, clients, PLANNED, passed, context={}, metrics=NO_METRICS)
    failed = RolloutRecords({0: CANARY}, {0: gate(0, "fail", "errors 0.2 > 0.05")}, {"chosen_options": []})
    with pytest.raises(AirflowFailException, match=r"rollout ro-1 rolled back groups \['line-canary'\] to version 3"):
        rollout_tasks.rollback(spec, clients, PLANNED, failed, context={"ti": "t"}, metrics=NO_METRICS)
    [(applies, gates, context, kw)] = rolled
    assert applies == {0: CANARY.to_xcom()} and gates == {0: gate(0, "fail", "errors 0.2 > 0.05").to_xcom()}
    assert context == {"ti": "t"} and kw == {"approval": {"chosen_options": []}, "shadow": None}
    assert [p["state"] for p in clients.parts.objects.values()] == ["fail"]


def test_the_shadow_steps_record_is_what_the_shadow_task_reads(
    spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeloop.fleet import registry
    from edgeloop.registry import client
    from edgeloop.rollout import job
    from edgeloop.rollout.shadow import ShadowDecision

    orders = shadow_wave.ShadowOrders("3", "4", 10.0, {"line-canary": ["o-1"]}, {"line-canary": []})
    decision = ShadowDecision("pass", "4", 4, 6, 400, 0.97, 0.01, 1.1, 0.0, [])
    recorded: list[Any] = []
    monkeypatch.setattr(job, "artifact_resolver", lambda spec: None)
    monkeypatch.setattr(registry, "read_registry", lambda spec, kafka, trusted: object())
    monkeypatch.setattr(client, "mlflow_client", lambda uri: object())
    monkeypatch.setattr(shadow_wave, "start_shadow", lambda *args: orders)
    monkeypatch.setattr(shadow_wave, "wait_for_shadow", lambda *args, **kw: (decision, {"BadShadowReport": 1}))
    monkeypatch.setattr(shadow_wave, "end_shadow", lambda *args: ["o-1-end"])
    monkeypatch.setattr(shadow_wave, "record_shadow", lambda *args: recorded.append(args[-1]))
    record = shadow_wave.shadow_step(spec, FakeClients(), PLANNED.to_xcom(), signer=object(), trusted=object())
    decided = ShadowDecided.from_xcom(record)
    assert decided.to_xcom() == record == recorded[0]
    assert (decided.state, decided.orders, decided.ended_by) == ("pass", {"line-canary": ["o-1"]}, ["o-1-end"])
    assert (decided.devices, decided.shadowed_devices) == (6, {"line-canary": []})
