"""The demo tells what happened: gate decisions, failed runs, Ctrl-C and the loop's timeline.

Each story runs the demo's real `run_loop` against an Airflow REST API that lives in memory: runs
and task instances appear and end on a fake clock, the way the scheduler would run them after the
drift is injected. Nothing sleeps and nothing leaves the process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from edgeloop import demo
from edgeloop.airflow_api import AirflowApi
from edgeloop.devstack.config import Ports, StackConfig
from edgeloop.spec import PipelineSpec, load_spec

DEMO_SPEC = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "factory_maintenance.yaml"
PIPELINE = "factory_maintenance"
DEVICES = 260  # the groups of the demo spec: 20 + 120 + 120
INJECTED_AT = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
LOOP_TIMEOUT = 1500.0


class FakeClock:
    """Stands in for the demo's `time` module: `sleep` moves the clock on, nothing waits."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.sleeps = 0

    def monotonic(self) -> float:
        return self.seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.seconds += seconds

    def time(self) -> float:
        return self.utc().timestamp()

    def strftime(self, fmt: str) -> str:
        return self.utc().astimezone().strftime(fmt)

    def utc(self) -> datetime:
        return INJECTED_AT + timedelta(seconds=self.seconds)


@dataclass
class FakeTask:
    ends: float  # seconds after the injection
    state: str = "success"
    xcom: Any = None
    try_number: int = 1
    log: list[Any] = field(default_factory=list)


@dataclass
class FakeRun:
    run_id: str
    starts: float
    ends: float
    state: str
    tasks: dict[str, FakeTask] = field(default_factory=dict)
    run_type: str = "asset_triggered"


def stamp(seconds: float) -> str:
    return (INJECTED_AT + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


class FakeAirflow(AirflowApi):
    """The REST API v2 routes the demo calls, answered from runs scheduled on the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__("http://airflow.invalid", requests.Session())
        self.clock = clock
        self.dag_runs: dict[str, list[FakeRun]] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def add(self, stage: str, run: FakeRun) -> FakeRun:
        self.dag_runs.setdefault(f"{PIPELINE}__{stage}", []).append(run)
        return run

    def _run(self, dag_id: str, run_id: str) -> FakeRun:
        return next(r for r in self.dag_runs.get(dag_id, []) if r.run_id == run_id)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        params = dict(kwargs.get("params") or {})
        self.calls.append((method, path, params))
        now = self.clock.seconds
        parts = path.strip("/").split("/")
        dag_id = parts[1]
        if parts[2:] == ["dagRuns"]:
            visible = [r for r in self.dag_runs.get(dag_id, []) if r.starts <= now]
            newest_first = sorted(visible, key=lambda r: r.starts, reverse=True)[: int(params.get("limit", 50))]
            return {"dag_runs": [self._run_body(r, now) for r in newest_first]}
        run = self._run(dag_id, parts[3])
        if parts[4:] == ["taskInstances"]:
            return {"task_instances": [self._task_body(dag_id, run, name, now) for name in run.tasks]}
        task = run.tasks[parts[5]]
        if task.ends > now:
            raise requests.HTTPError(f"404: {parts[5]} has not ended")
        if parts[6] == "xcomEntries" and task.xcom is not None:
            return {"key": "return_value", "value": task.xcom}
        if parts[6] == "logs" and int(parts[7]) == task.try_number:
            return {"content": task.log, "continuation_token": None}
        raise requests.HTTPError(f"404: {path}")

    @staticmethod
    def _run_body(run: FakeRun, now: float) -> dict[str, Any]:
        done = run.ends <= now
        return {
            "dag_run_id": run.run_id,
            "state": run.state if done else "running",
            "run_type": run.run_type,
            "end_date": stamp(run.ends) if done else None,
        }

    @staticmethod
    def _task_body(dag_id: str, run: FakeRun, name: str, now: float) -> dict[str, Any]:
        task = run.tasks[name]
        done = task.ends <= now
        return {
            "dag_id": dag_id,
            "dag_run_id": run.run_id,
            "task_id": name,
            "map_index": -1,
            "state": task.state if done else None,
            "try_number": task.try_number,
            "end_date": stamp(task.ends) if done else None,
        }


@dataclass
class World:
    api: FakeAirflow
    clock: FakeClock
    spec: PipelineSpec
    cfg: StackConfig
    champion_moves_at: float | None = None
    fleet_on_new_at: float | None = None
    signals: list[int] = field(default_factory=list)

    def run_loop(self) -> dict[str, Any]:
        timeline = demo.Timeline(started=0.0)
        watcher = demo.StageWatcher(self.api, self.spec, timeline)
        watcher.baseline()
        settings = demo.DemoSettings(devices=DEVICES, clean_seconds=0, loop_timeout=LOOP_TIMEOUT)
        return demo.run_loop(self.api, {}, self.spec, watcher, settings, self.cfg)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> World:
    """Version 1 is the champion on every device; the simulator runs; the drift DAG ran once before."""
    clock = FakeClock()
    api = FakeAirflow(clock)
    found = World(api, clock, load_spec(DEMO_SPEC), StackConfig(state_dir=tmp_path, ports=Ports()))
    api.add("drift", FakeRun("scheduled__before", -3600, -3500, "success", run_type="scheduled"))

    class ClockDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> ClockDatetime:  # type: ignore[override]
            return cls.fromtimestamp(clock.time(), tz)

    def on(at: float | None) -> bool:
        return at is not None and clock.seconds >= at

    def champion(env: dict[str, str], spec: PipelineSpec) -> str:
        return "2" if on(found.champion_moves_at) else "1"

    def fleet_versions(env: dict[str, str], spec: PipelineSpec) -> dict[str, dict[str, int]]:
        version = "2" if on(found.fleet_on_new_at) else "1"
        return {g.name: {version: g.devices} for g in spec.groups}

    monkeypatch.setattr(demo, "time", clock)
    monkeypatch.setattr(demo, "datetime", ClockDatetime)
    monkeypatch.setattr(demo, "champion", champion)
    monkeypatch.setattr(demo, "fleet_versions", fleet_versions)
    monkeypatch.setattr(demo, "process_pid", lambda name, cfg: 4242)
    monkeypatch.setattr(demo.os, "kill", lambda pid, sig: found.signals.append(sig))
    return found


def drift_alert(api: FakeAirflow, ends: float = 130) -> None:
    alert = {"alert_ids": ["alert-1"], "drifted_groups": ["plant-north"], "report_links": {}}
    api.add(
        "drift", FakeRun("asset_triggered__drift", 60, ends, "success", {"publish_alerts": FakeTask(ends, xcom=alert)})
    )


def annotation(api: FakeAirflow, opened: float = 140, ends: float = 170) -> None:
    api.add(
        "annotate",
        FakeRun(
            "asset_triggered__annotate",
            ends - 40,
            ends,
            "success",
            {
                "select_batch": FakeTask(opened - 5, xcom={"batch_id": "b-7", "groups": ["plant-north"]}),
                "open_batch": FakeTask(
                    opened, xcom={"url": "http://label-studio.invalid/projects/1", "batch_id": "b-7"}
                ),
                "export_dataset": FakeTask(ends, xcom={"version": "curated-3"}),
            },
        ),
    )


def training(api: FakeAirflow, decision: dict[str, Any], trained: float = 200, gate: float = 230) -> None:
    api.add(
        "train",
        FakeRun(
            "asset_triggered__train",
            175,
            gate + 5,
            "success",
            {
                "train_model": FakeTask(trained),
                "evaluation_gate": FakeTask(gate, xcom={"version": "2", **decision}),
                "announce_model": FakeTask(gate + 5, "success" if decision["decision"] == "promote" else "skipped"),
            },
        ),
    )


PROMOTE = {"decision": "promote", "reasons": [], "reason": "f1_macro 0.9100 beats the champion's 0.8000"}


def test_a_rejected_challenger_ends_the_wait_at_once_with_its_reasons_and_what_to_change(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    drift_alert(world.api)
    annotation(world.api)
    reasons = [
        "edge fitness: single-record latency 22.10 ms > limit 15 ms",
        "f1_macro 0.8010 does not beat the champion's 0.8000 by the margin 0.01 (needs at least 0.8100)",
    ]
    training(world.api, {"decision": "reject", "reasons": reasons, "reason": "; ".join(reasons)}, gate=230)

    with pytest.raises(demo.GateRejected) as rejected:
        world.run_loop()

    assert world.signals, "the drift was injected"
    assert 230 <= world.clock.seconds < 240  # the first poll after the decision, not the 1500 s timeout
    assert rejected.value.decision == "reject"
    assert rejected.value.reasons == reasons
    message = str(rejected.value)
    assert "version 2" in message and "asset_triggered__train" in message
    for reason in reasons:
        assert f"  - {reason}" in message
    assert "training.limits.max_latency_ms" in message  # latency -> the spec's edge limits or a smaller model
    assert "annotation.batch_size" in message and "drift.window" in message  # not better -> more labels
    assert "reject   version 2: edge fitness: single-record latency" in capsys.readouterr().out


def test_each_kind_of_gate_reason_gets_one_hint_and_unknown_reasons_none() -> None:
    hints = demo.gate_hints(
        [
            "edge fitness: model size 51.00 MB > limit 40 MB",
            "edge fitness: memory 300.00 MB > limit 200 MB",
            "edge fitness: no ONNX file is recorded on the version",
            "group plant-north: f1_macro 0.7000 is below the champion's 0.8000 by more than the tolerance 0.02 (80 "
            "records)",
            "group plant-south: f1_macro 0.7000 is below the champion's 0.8000 by more than the tolerance 0.02 (80 "
            "records)",
            "something the gate does not say today",
        ]
    )
    assert len(hints) == 4
    assert "training.limits.max_model_mb" in hints[0]
    assert "training.limits.max_memory_mb" in hints[1]
    assert "train_model task's log" in hints[2]
    assert "training.group_tolerance" in hints[3]


def test_a_failed_canary_gate_ends_the_wait_with_the_wave_its_reasons_and_the_rollback(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    drift_alert(world.api)
    annotation(world.api)
    training(world.api, PROMOTE)
    reasons = ["line-canary: error rate 0.310 > 0.02", "line-canary: 12/20 devices report the new version"]
    world.api.add(
        "rollout",
        FakeRun(
            "asset_triggered__rollout",
            240,
            330,
            "failed",
            {
                "plan": FakeTask(245, xcom={"rollout_id": "r-1"}),
                "apply_canary": FakeTask(250, xcom={"groups": ["line-canary"]}),
                "gate_canary": FakeTask(310, "failed", xcom={"wave": 0, "state": "fail", "reasons": reasons}),
                "apply_wave_1": FakeTask(310, "upstream_failed"),
                "gate_wave_1": FakeTask(310, "upstream_failed"),
                "promote": FakeTask(320, "skipped"),
                "rollback": FakeTask(330, "failed"),  # it rolls back, then fails the run on purpose
            },
        ),
    )

    with pytest.raises(demo.RolloutGateFailed) as failed:
        world.run_loop()

    assert 330 <= world.clock.seconds < 340  # once the rollback ended the run
    assert failed.value.wave == "canary"
    assert failed.value.reasons == reasons
    assert failed.value.rolled_back
    assert "wave 'canary'" in str(failed.value) and "rolled back" in str(failed.value)
    out = capsys.readouterr().out
    # both gates were told as they decided: the promotion, then the canary's failure before the rollback ended
    assert "promote  version 2" in out
    assert "fail     wave canary: line-canary: error rate 0.310 > 0.02" in out


def test_a_shadow_wave_that_stops_the_version_ends_the_wait_saying_no_device_served_it(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    shadow = world.spec.rollout.shadow.model_copy(update={"enabled": True})
    world.spec = world.spec.model_copy(update={"rollout": world.spec.rollout.model_copy(update={"shadow": shadow})})
    drift_alert(world.api)
    annotation(world.api)
    training(world.api, PROMOTE)
    reasons = ["agreement with the champion 0.2515 < 0.95"]
    decision = {"state": "fail", "challenger_version": "2", "agreement": 0.2515, "windows": 12, "reasons": reasons}
    world.api.add(
        "rollout",
        FakeRun(
            "asset_triggered__rollout",
            240,
            330,
            "failed",
            {
                "plan": FakeTask(245, xcom={"rollout_id": "r-1"}),
                "shadow": FakeTask(300, "failed", xcom=decision),
                "apply_canary": FakeTask(300, "upstream_failed"),
                "gate_canary": FakeTask(300, "upstream_failed"),
                "promote": FakeTask(320, "skipped"),
                "rollback": FakeTask(330, "failed"),
            },
        ),
    )

    with pytest.raises(demo.RolloutGateFailed) as failed:
        world.run_loop()

    assert failed.value.wave == "shadow" and failed.value.reasons == reasons
    assert "before any device served it" in str(failed.value)
    assert "shadow       fail     version 2: agreement with the champion 0.2515 < 0.95" in capsys.readouterr().out


def test_a_failed_task_ends_the_wait_with_its_task_id_and_the_end_of_its_log(world: World) -> None:
    log: list[Any] = [{"event": "::group::Log message source details", "sources": ["/logs/1.log"]}]
    log += [
        {"timestamp": f"2026-11-25T10:02:{i:02d}.000000Z", "level": "info", "event": f"reading window part {i}"}
        for i in range(30)
    ]
    log.append(
        {
            "timestamp": "2026-11-25T10:02:31.000000Z",
            "level": "error",
            "event": "Task failed with exception",
            "error_detail": [
                {
                    "exc_type": "ValueError",
                    "exc_value": "column vibration_rms: no rows in the window",
                    "frames": [{"filename": "/opt/edgeloop/drift/detect.py", "lineno": 88, "name": "check_window"}],
                }
            ],
        }
    )
    world.api.add(
        "drift",
        FakeRun(
            "asset_triggered__drift",
            60,
            95,
            "failed",
            {
                "load_window": FakeTask(80),
                "check_drift": FakeTask(90, "failed", try_number=3, log=log),
                "publish_alerts": FakeTask(95, "upstream_failed"),
            },
        ),
    )

    with pytest.raises(demo.StageFailed) as failed:
        world.run_loop()

    assert 95 <= world.clock.seconds < 100
    assert failed.value.dag_id == f"{PIPELINE}__drift"
    assert failed.value.task_ids == ["check_drift"]
    tail = failed.value.log_tail
    assert len(tail) == demo.LOG_TAIL_LINES
    assert tail[-3:] == [
        "10:02:31 error Task failed with exception",
        "  File /opt/edgeloop/drift/detect.py:88 in check_window",
        "  ValueError: column vibration_rms: no rows in the window",
    ]
    assert tail[0] == "10:02:18 info reading window part 18"
    assert "check_drift" in str(failed.value) and "ValueError: column vibration_rms" in str(failed.value)
    log_calls = [(path, params) for _, path, params in world.api.calls if "/logs/" in path]
    assert log_calls == [
        (
            f"/dags/{PIPELINE}__drift/dagRuns/asset_triggered__drift/taskInstances/check_drift/logs/3",
            {"full_content": "true", "map_index": -1},
        )
    ]


def test_ctrl_c_prints_one_line_and_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(pipeline: str | None) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run_demo", interrupted)
    assert demo.main() == 130
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "edgeloop demo: interrupted; the stack keeps running (make stack-down stops it)"
    ]
    assert captured.err == ""


def test_ctrl_c_in_the_middle_of_a_wait_ends_the_same_way(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def sleep(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(world.clock, "sleep", sleep)
    monkeypatch.setattr(demo, "run_demo", lambda pipeline: len(world.run_loop()))
    assert demo.main() == 130
    lines = capsys.readouterr().out.splitlines()
    assert "drift injected into plant-north" in lines[-2]  # what the demo showed before Ctrl-C
    assert lines[-1] == "edgeloop demo: interrupted; the stack keeps running (make stack-down stops it)"


def test_a_stage_that_ends_the_loop_is_told_without_a_traceback(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    drift_alert(world.api)
    annotation(world.api)
    training(world.api, {"decision": "reject", "reasons": ["edge fitness: model size 51.00 MB > limit 40 MB"]})
    monkeypatch.setattr(demo, "run_demo", lambda pipeline: len(world.run_loop()))
    assert demo.main() == 1
    captured = capsys.readouterr()
    assert "edgeloop demo: stopped: the evaluation gate decided 'reject' for version 2" in captured.out
    assert "training.limits.max_model_mb" in captured.out
    assert "Traceback" not in captured.out + captured.err


def test_a_closed_loop_ends_with_a_timeline_of_every_step(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    drift_alert(world.api, ends=130)
    annotation(world.api, opened=140, ends=170)
    training(world.api, PROMOTE, trained=200, gate=230)
    world.api.add(
        "rollout",
        FakeRun(
            "asset_triggered__rollout",
            240,
            420,
            "success",
            {
                "plan": FakeTask(245, xcom={"rollout_id": "r-1"}),
                "gate_canary": FakeTask(310, xcom={"wave": 0, "state": "pass", "reasons": []}),
                "gate_wave_1": FakeTask(400, xcom={"wave": 1, "state": "pass", "reasons": []}),
                "promote": FakeTask(410, xcom={"rollout_id": "r-1", "champion": "2"}),
                "rollback": FakeTask(420, "skipped"),
            },
        ),
    )
    world.champion_moves_at = 410
    world.fleet_on_new_at = 340

    summary = world.run_loop()
    demo.print_summary(summary, ENV, world.cfg)

    assert summary["gate_decision"] == "promote"
    assert summary["trained_version"] == summary["champion_now"] == "2" != summary["first_champion"]
    assert summary["batch_group"] == ["plant-north"] and summary["curated_version"] == "curated-3"
    assert summary["rollout_waves"] == ["pass", "pass"]
    assert summary["stage_seconds"]["detection"] == 130.0
    out = capsys.readouterr().out
    timeline = out[out.index("timeline (") :].splitlines()[1:11]
    local = [(INJECTED_AT + timedelta(seconds=s)).astimezone().strftime("%H:%M:%S") for s in (0, 130, 140, 170, 200)]
    expected = [
        (local[0], "drift injected into plant-north", "+00:00", "(00:00 in)"),
        (local[1], "drift alert raised (drift run asset_triggered__drift)", "+02:10", "(02:10 in)"),
        (local[2], "annotation batch b-7 opened", "+00:10", "(02:20 in)"),
        (local[3], "labels done (annotate run asset_triggered__annotate)", "+00:30", "(02:50 in)"),
        (local[4], "version 2 trained (train run asset_triggered__train)", "+00:30", "(03:20 in)"),
        (None, "evaluation gate: promote", "+00:30", "(03:50 in)"),
        (None, "rollout gate of wave canary: pass", "+01:20", "(05:10 in)"),
        (None, "rollout gate of wave wave_1: pass", "+01:30", "(06:40 in)"),
        (None, "every device runs version 2", "+00:11", "(06:51 in)"),  # the first poll after the promotion
    ]
    for line, (clock, text, since_previous, since_injection) in zip(timeline, expected, strict=False):
        if clock:
            assert line.split()[0] == clock, line
        assert text in line and line.endswith(f"{since_previous}  {since_injection}"), line
    assert len([line for line in timeline if line.strip()]) == len(expected)


ENV = {
    "EDGELOOP_AIRFLOW_URL": "http://airflow.invalid",
    "MLFLOW_TRACKING_URI": "http://mlflow.invalid",
    "EDGELOOP_LABEL_STUDIO_URL": "http://label-studio.invalid",
    "EDGELOOP_PROMETHEUS_URL": "http://prometheus.invalid",
    "EDGELOOP_S3_ENDPOINT": "http://s3.invalid",
    "EDGELOOP_BUCKET": "edgeloop",
    "EDGELOOP_KAFKA_BOOTSTRAP": "127.0.0.1:1",
}


def test_the_camera_pipeline_demo_injects_a_lighting_change_into_its_first_production_hall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vision = load_spec(DEMO_SPEC.with_name("visual_inspection.yaml"))
    monkeypatch.delenv("EDGELOOP_DEMO_DEVICES", raising=False)
    monkeypatch.delenv("EDGELOOP_DEMO_CLEAN_SECONDS", raising=False)
    cameras = demo.demo_settings(vision)
    assert (cameras.pipeline, cameras.drift_group, cameras.drift) == ("visual_inspection", "hall-east", ("lighting",))
    assert cameras.devices == sum(g.devices for g in vision.groups) == 36
    sensors = demo.demo_settings(load_spec(DEMO_SPEC))
    assert (sensors.pipeline, sensors.drift_group, sensors.devices) == (PIPELINE, "plant-north", 300)
    assert sensors.drift == demo.DemoSettings().drift

    monkeypatch.setenv("EDGELOOP_DEMO_DEVICES", "12")
    assert demo.demo_settings(vision).devices == 12
