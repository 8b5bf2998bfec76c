"""`edgeloop demo`: the closed loop on the local stack, driven only through Airflow, Kafka and the registry.

1. the demo pipeline's DAGs are unpaused, the fleet simulator and the annotate bot start;
2. the first model is trained on seed data and rolled out (one manual `__train` run);
3. after a clean period, drift is injected into one production group (SIGUSR1 to the simulator);
4. from there nobody steps in: ingest -> drift alert -> annotate -> train -> rollout, chained by
   assets and Kafka alerts, until every device runs the new champion.
The terminal shows each stage's runs as they happen and ends with a summary.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

from edgeloop.airflow_api import AirflowApi
from edgeloop.devstack.config import StackConfig
from edgeloop.devstack.stack import process_pid, read_env_file, start_process
from edgeloop.spec import STAGES, PipelineSpec, load_all
from edgeloop.xcom import as_pushed

WATCHED_STAGES = tuple(stage for stage in STAGES if stage != "config_push")  # config_push runs only by hand
LOOP_STAGES = ("drift", "annotate", "train", "rollout")
BLOCKING_STAGES = ("ingest", *LOOP_STAGES)  # a failed run of these means the loop cannot close
LOG_TAIL_LINES = 15


class DemoError(RuntimeError):
    """The stack is not in a state the demo can use, or a stage failed."""


# What to change for each kind of reason the evaluation gate writes (training/gate.py, training/fitness.py).
GATE_HINTS = (
    (
        re.compile(r"^edge fitness: model size"),
        "too large for the devices: raise training.limits.max_model_mb in the spec if the devices allow it, "
        "or search smaller models (fewer n_estimators, a lower max_depth in training.search_space)",
    ),
    (
        re.compile(r"^edge fitness: single-record latency"),
        "too slow on a device: raise training.limits.max_latency_ms in the spec if the devices allow it, "
        "or search smaller models (a lower max_depth, fewer n_estimators in training.search_space)",
    ),
    (
        re.compile(r"^edge fitness: memory"),
        "needs too much memory on a device: raise training.limits.max_memory_mb in the spec if the devices "
        "allow it, or search smaller models",
    ),
    (
        re.compile(r"^edge fitness: (no ONNX file|not measured)"),
        "the model has no measured ONNX file: read the train_model task's log (the ONNX export or its "
        "measurement failed)",
    ),
    (
        re.compile(r"does not beat the champion"),
        "not better than the champion: give it more labels (annotation.batch_size) or a longer drift "
        "window (drift.window) so the batch holds more of the drifted data; or lower training.margin",
    ),
    (
        re.compile(r"^group \S+: .* below the champion"),
        "one group got worse than with the champion: that group needs labels in the batch "
        "(annotation.strategy: diversity), or allow more with training.group_tolerance",
    ),
)


def gate_hints(reasons: list[str]) -> list[str]:
    """One hint per kind of reason, in the order the reasons come; reasons of no known kind get none."""
    hints: list[str] = []
    for reason in reasons:
        for pattern, hint in GATE_HINTS:
            if pattern.search(reason) and hint not in hints:
                hints.append(hint)
    return hints


class GateRejected(DemoError):
    """The evaluation gate did not promote the challenger: no new champion will come from this run."""

    def __init__(self, run_id: str, decision: dict[str, Any]) -> None:
        self.run_id = run_id
        self.decision = str(decision.get("decision"))
        self.version = decision.get("version")
        self.reasons = [str(r) for r in decision.get("reasons") or []] or [str(decision.get("reason") or "")]
        self.hints = gate_hints(self.reasons)
        if self.decision == "unchanged":
            self.hints.append("the training registered the champion's own version: nothing new to roll out")
        lines = [f"the evaluation gate decided '{self.decision}' for version {self.version} (train run {run_id}):"]
        lines += [f"  - {reason}" for reason in self.reasons]
        if self.hints:
            lines.append("what to change:")
            lines += [f"  - {hint}" for hint in self.hints]
        super().__init__("\n".join(lines))


SHADOW_TASK = "shadow"  # the rollout DAG's shadow wave (a spec with `rollout.shadow`), told like a gate


class RolloutGateFailed(DemoError):
    """A wave's health gate failed: the rollout stopped there and rolled the fleet back."""

    def __init__(self, run_id: str, wave: str, reasons: list[str], rollback_state: str | None) -> None:
        self.run_id = run_id
        self.wave = wave
        self.reasons = reasons
        self.rolled_back = rollback_state == "failed"  # the rollback task fails the run on purpose once it is done
        if wave == SHADOW_TASK:
            lines = [f"the shadow wave stopped the new version before any device served it (rollout run {run_id}):"]
        else:
            lines = [f"the health gate of wave '{wave}' failed (rollout run {run_id}):"]
        lines += [f"  - {reason}" for reason in reasons]
        if wave == SHADOW_TASK:
            lines.append("the shadow devices were ordered back to the champion alone; the champion did not change")
        elif self.rolled_back:
            lines.append("the fleet was rolled back to the version it ran before; the champion did not change")
        else:
            lines.append(f"the rollback task ended '{rollback_state}': look at rollout run {run_id} in the Airflow UI")
        super().__init__("\n".join(lines))


def _gate_line(wave: str, result: Mapping[str, Any]) -> str:
    """A gate's decision (or the shadow wave's) for the timeline, with its numbers."""
    reasons = "; ".join(str(r) for r in result.get("reasons") or [])
    if wave == SHADOW_TASK:
        numbers = f"agreement {result.get('agreement')} over {result.get('windows')} device windows"
        version = result.get("challenger_version")
        return f"{'shadow':<12} {result.get('state')!s:<8} version {version}: {reasons or numbers}"
    abort = (result.get("policy") or {}).get("abort")
    if abort and not reasons:
        reasons = f"healthy; abort criteria not met ({abort.get('reason')})"
    return f"{'gate':<12} {result.get('state')!s:<8} wave {wave}: {reasons or 'healthy'}"


class StageFailed(DemoError):
    """A run of one of the pipeline's DAGs failed."""

    def __init__(self, dag_id: str, run_id: str, task_ids: list[str], log_tail: list[str]) -> None:
        self.dag_id = dag_id
        self.run_id = run_id
        self.task_ids = task_ids
        self.log_tail = log_tail
        failed = ", ".join(task_ids) or "no task failed (the run itself was failed)"
        lines = [f"{dag_id} run {run_id} failed; failed task(s): {failed}"]
        if log_tail:
            lines.append(f"last lines of the log of {task_ids[0]}:")
            lines += [f"  | {line}" for line in log_tail]
        super().__init__("\n".join(lines))


DEMO_PIPELINE = "factory_maintenance"
CAMERA_DRIFT = ("lighting",)  # a camera pipeline's drift names the change of its cameras (edgeloop.vision.frames)


@dataclass
class DemoSettings:
    pipeline: str = DEMO_PIPELINE
    devices: int = 300
    drift_group: str = "plant-north"
    drift: tuple[str, ...] = (
        "vibration_rms:offset=2.5",
        "vibration_peak:offset=6.0",
        "temperature_c:offset=9.0",
        "acoustic_db:offset=5.0",
    )
    clean_seconds: float = 60.0
    first_model_timeout: float = 900.0
    loop_timeout: float = 1500.0
    faults: tuple[str, ...] = ()
    bot_noise: float = 0.02

    @classmethod
    def for_spec(cls, spec: PipelineSpec, **values: Any) -> DemoSettings:
        """The settings for `spec`: a camera pipeline's drift is a lighting change of its first production group.

        Its cameras are as many as the spec's groups name; `values` set any field.
        """
        from edgeloop.simulator.cameras import is_camera_pipeline

        defaults: dict[str, Any] = {"pipeline": spec.name}
        if is_camera_pipeline(spec):
            production = [g.name for g in spec.groups if g.name not in spec.rollout.canary_groups]
            defaults.update(
                drift_group=(production or [spec.groups[0].name])[0],
                drift=CAMERA_DRIFT,
                devices=sum(g.devices for g in spec.groups),
            )
        return cls(**{**defaults, **values})


@dataclass
class Timeline:
    """What the terminal showed as it happened (`mark`), and the loop's milestones at their real times."""

    started: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    milestones: list[tuple[datetime, str]] = field(default_factory=list)

    def mark(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self.events.append((elapsed, text))
        print(f"  [{_clock(elapsed)}] {text}", flush=True)

    def milestone(self, text: str, at: str | datetime | None) -> None:
        """A milestone at `at` (an Airflow timestamp or an aware datetime); one with no time is left out."""
        if at:
            self.milestones.append((_utc(at), text))

    def story(self) -> list[str]:
        """The milestones in time order: local clock time, text, time since the previous one and since the first."""
        rows = sorted(self.milestones, key=lambda m: m[0])
        if not rows:
            return []
        first = previous = rows[0][0]
        width = max(len(text) for _, text in rows)
        lines = []
        for at, text in rows:
            since_previous = _clock((at - previous).total_seconds())
            since_first = _clock((at - first).total_seconds())
            lines.append(f"{at.astimezone():%H:%M:%S}  {text:<{width}}  +{since_previous}  ({since_first} in)")
            previous = at
        return lines


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60:02d}:{whole % 60:02d}"


def _utc(at: str | datetime) -> datetime:
    """An Airflow timestamp (ISO 8601, `Z` or offset) as an aware datetime."""
    return datetime.fromisoformat(at.replace("Z", "+00:00")) if isinstance(at, str) else at


def api_for(env: dict[str, str]) -> AirflowApi:
    return AirflowApi.login(env["EDGELOOP_AIRFLOW_URL"], "admin", env["AIRFLOW_ADMIN_PASSWORD"])


def load_pipelines(api: AirflowApi, specs: list[PipelineSpec], timeout: float = 240) -> list[str]:
    """Wait until the dag-processor has the pipelines' DAGs, and unpause them."""
    dag_ids = {f"{spec.name}__{stage}" for spec in specs for stage in STAGES}
    api.wait_for_dags(dag_ids, timeout=timeout)
    for dag_id in sorted(dag_ids):
        api.patch(f"/dags/{dag_id}", {"is_paused": False})
    return sorted(dag_ids)


def forget_other_devices(env: dict[str, str], spec: PipelineSpec, devices: int) -> list[str]:
    """Remove the twins of devices this fleet does not run (left by an earlier, larger simulated fleet)."""
    from edgeloop.fleet.control import forget_devices, read_device_states
    from edgeloop.simulator.fleet import simulated_device_ids

    kafka = {"bootstrap.servers": env["EDGELOOP_KAFKA_BOOTSTRAP"]}
    ours = simulated_device_ids(spec, devices)
    stale = sorted(set(read_device_states(spec, kafka, timeout=30).devices) - ours)
    if stale:
        forget_devices(spec, kafka, stale)
    return stale


def start_fleet(cfg: StackConfig, spec: PipelineSpec, settings: DemoSettings, env: dict[str, str]) -> int:
    """Start the fleet simulator (a no-op when it runs); twins of devices it does not have are forgotten first."""
    if process_pid("fleet-simulator", cfg) is None:
        forget_other_devices(env, spec, settings.devices)
    command = [
        sys.executable,
        "-m",
        "edgeloop.cli",
        "fleet",
        "simulate",
        "--pipeline",
        spec.name,
        "--devices",
        str(settings.devices),
    ]
    for drift in settings.drift:
        command += ["--drift-on-signal", f"{settings.drift_group}:{drift}"]
    for fault in settings.faults:
        command += ["--fault", fault]
    return start_process("fleet-simulator", command, env=env, cfg=cfg)


def start_bot(cfg: StackConfig, spec: PipelineSpec, settings: DemoSettings, env: dict[str, str]) -> int:
    command = [sys.executable, "-m", "edgeloop.cli", "annotate-bot", "--pipeline", spec.name, "--follow"]
    command += ["--noise", str(settings.bot_noise), "--interval", "5"]
    return start_process("annotate-bot", command, env=env, cfg=cfg)


def champion(env: dict[str, str], spec: PipelineSpec) -> str | None:
    from edgeloop.registry.aliases import alias_version
    from edgeloop.registry.client import mlflow_client

    current = alias_version(mlflow_client(env["MLFLOW_TRACKING_URI"]), spec.registry.model_name, "champion")
    return str(current.version) if current is not None else None


def fleet_versions(env: dict[str, str], spec: PipelineSpec) -> dict[str, dict[str, int]]:
    """Reported model versions per group, from the device twin on Kafka."""
    from edgeloop.fleet.control import read_device_states

    states = read_device_states(spec, {"bootstrap.servers": env["EDGELOOP_KAFKA_BOOTSTRAP"]}, timeout=30)
    versions: dict[str, dict[str, int]] = {}
    for state in states.devices.values():
        reported = str(state.reported.get("model_version"))
        group = versions.setdefault(state.group_id, {})
        group[reported] = group.get(reported, 0) + 1
    return versions


def all_devices_on(versions: dict[str, dict[str, int]], version: str, expected: int) -> bool:
    on = sum(counts.get(version, 0) for counts in versions.values())
    total = sum(sum(counts.values()) for counts in versions.values())
    return total >= expected and on == total


class StageWatcher:
    """Prints each new DAG run and each state change of the pipeline's stages, and each gate's result."""

    def __init__(self, api: AirflowApi, spec: PipelineSpec, timeline: Timeline) -> None:
        from edgeloop.rollout.plan import spec_waves

        self.api = api
        self.spec = spec
        self.timeline = timeline
        self.seen: dict[tuple[str, str], str] = {}
        self.known: set[tuple[str, str]] = set()
        self.waves = [wave.name for wave in spec_waves(spec)]
        self.gates: dict[tuple[str, str], dict[str, Any]] = {}  # (run id, gate task id) -> its result, once told
        self.settled: set[tuple[str, str]] = set()  # finished runs whose outcome was looked at

    def baseline(self) -> None:
        for stage in WATCHED_STAGES:
            for run in self.api.runs(f"{self.spec.name}__{stage}", limit=100):
                self.known.add((stage, run["dag_run_id"]))

    def poll(self) -> list[tuple[str, dict[str, Any]]]:
        changes = []
        for stage in WATCHED_STAGES:
            for run in reversed(self.api.runs(f"{self.spec.name}__{stage}", limit=10)):
                key = (stage, run["dag_run_id"])
                if key in self.known:
                    continue
                if self.seen.get(key) != run["state"]:
                    self.seen[key] = run["state"]
                    why = {"asset_triggered": "asset event", "scheduled": "schedule", "manual": "manual"}.get(
                        run["run_type"], run["run_type"]
                    )
                    self.timeline.mark(f"{stage:<12} {run['state']:<8} ({why}) {run['dag_run_id']}")
                    changes.append((stage, run))
        return changes

    def check_outcomes(self) -> None:
        """Tell each gate result of the new train and rollout runs once; raise when one ends the loop.

        A challenger the evaluation gate does not promote raises `GateRejected`; a rollout that ended
        with a failed wave gate (after its rollback) raises `RolloutGateFailed`; any other failed run
        of a stage the loop needs (BLOCKING_STAGES) raises `StageFailed` with its failed tasks and the end
        of the first one's log.
        """
        for (stage, run_id), state in list(self.seen.items()):
            if (stage, run_id) in self.known or (stage, run_id) in self.settled or state == "queued":
                continue
            finished = state in ("success", "failed")
            if stage == "train":
                self._evaluation_gate(run_id)
            elif stage == "rollout":
                self._rollout_gates(run_id, finished)
            if state == "failed" and stage in BLOCKING_STAGES:
                raise self._failure(stage, run_id)
            if state == "failed":  # fleet health does not stand between a drift and the new model: said, not fatal
                self.timeline.mark(f"{stage:<12} failed   {run_id} (the loop goes on; see its log in the Airflow UI)")
            if finished:
                self.settled.add((stage, run_id))

    def _evaluation_gate(self, run_id: str) -> None:
        if (run_id, "evaluation_gate") in self.gates:
            return
        dag_id = f"{self.spec.name}__train"
        states = {ti["task_id"]: ti["state"] for ti in self.api.task_instances(dag_id, run_id)}
        if states.get("evaluation_gate") != "success":
            return
        decision = xcom(self.api, dag_id, run_id, "evaluation_gate")
        if not decision:
            return  # not readable yet: asked again at the next poll
        self.gates[(run_id, "evaluation_gate")] = decision
        word = decision.get("decision")
        self.timeline.mark(f"{'gate':<12} {word!s:<8} version {decision.get('version')}: {decision.get('reason')}")
        if word != "promote":
            raise GateRejected(run_id, decision)

    def _rollout_gates(self, run_id: str, finished: bool) -> None:
        dag_id = f"{self.spec.name}__rollout"
        instances = {ti["task_id"]: ti for ti in self.api.task_instances(dag_id, run_id)}
        failed: tuple[str, list[str]] | None = None
        shadow = [SHADOW_TASK] if self.spec.rollout.shadow.enabled else []
        for wave in shadow + self.waves:
            task_id = SHADOW_TASK if wave == SHADOW_TASK else f"gate_{wave}"
            result = self.gates.get((run_id, task_id))
            if result is None and instances.get(task_id, {}).get("state") in ("success", "failed"):
                result = xcom(self.api, dag_id, run_id, task_id)
                if result:
                    self.gates[(run_id, task_id)] = result
                    self.timeline.mark(_gate_line(wave, result))
            if result and result.get("state") != "pass" and failed is None:
                failed = (wave, [str(r) for r in result.get("reasons") or []])
        if failed and finished:  # the rollback runs after the failed gate: the run's end says it is done
            raise RolloutGateFailed(run_id, failed[0], failed[1], instances.get("rollback", {}).get("state"))

    def _failure(self, stage: str, run_id: str) -> StageFailed:
        dag_id = f"{self.spec.name}__{stage}"
        failed = sorted(
            (ti for ti in self.api.task_instances(dag_id, run_id) if ti["state"] == "failed"),
            key=lambda ti: str(ti.get("end_date") or ""),
        )
        tail: list[str] = []
        if failed:
            first = failed[0]
            try:
                lines = self.api.task_log(
                    dag_id, run_id, first["task_id"], int(first["try_number"]), int(first.get("map_index", -1))
                )
                tail = lines[-LOG_TAIL_LINES:]
            except requests.RequestException as exc:
                tail = [f"(the log could not be read: {exc})"]
        return StageFailed(dag_id, run_id, [ti["task_id"] for ti in failed], tail)

    def first(self, stage: str, state: str = "success") -> dict[str, Any] | None:
        """The first run of a stage since the drift was injected: the one the story is about."""
        for run in reversed(self.api.runs(f"{self.spec.name}__{stage}", limit=50)):
            if (stage, run["dag_run_id"]) not in self.known and run["state"] == state:
                return dict(run)
        return None


def xcom(api: AirflowApi, dag_id: str, run_id: str, task_id: str) -> Any:
    try:
        entry = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")
    except Exception:
        return None
    return as_pushed(entry.get("value"))


def wait_until(check: Any, timeout: float, what: str, watcher: StageWatcher, every: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watcher.poll()
        watcher.check_outcomes()
        result = check()
        if result:
            return result
        time.sleep(every)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")


def bootstrap_first_model(
    api: AirflowApi, env: dict[str, str], spec: PipelineSpec, watcher: StageWatcher, settings: DemoSettings
) -> str:
    """With no champion yet: one manual training run on seed data; its rollout makes it the fleet's model."""
    current = champion(env, spec)
    if current is None:
        run_id = f"demo_first_model_{int(time.time())}"
        api.trigger(f"{spec.name}__train", run_id, note="demo: first model, trained on seed data")
        watcher.timeline.mark(f"train        triggered by the demo: first model ({run_id})")
    version = wait_until(lambda: champion(env, spec), settings.first_model_timeout, "a champion model", watcher)
    wait_until(
        lambda: all_devices_on(fleet_versions(env, spec), str(version), settings.devices),
        settings.first_model_timeout,
        f"every device on version {version}",
        watcher,
    )
    return str(version)


def run_loop(
    api: AirflowApi,
    env: dict[str, str],
    spec: PipelineSpec,
    watcher: StageWatcher,
    settings: DemoSettings,
    cfg: StackConfig,
) -> dict[str, Any]:
    first = bootstrap_first_model(api, env, spec, watcher, settings)
    timeline = watcher.timeline
    timeline.facts["first_champion"] = first
    timeline.mark(f"every device runs version {first}; clean data for {settings.clean_seconds:.0f}s")
    end_clean = time.monotonic() + settings.clean_seconds
    while time.monotonic() < end_clean:
        watcher.poll()
        time.sleep(3)
    watcher.baseline()
    pid = process_pid("fleet-simulator", cfg)
    if pid is None:
        raise DemoError("the fleet simulator is not running")
    os.kill(pid, signal.SIGUSR1)
    injected = time.monotonic()
    timeline.facts["drift_injected_at"] = time.strftime("%H:%M:%S")
    timeline.facts["drift_injected_utc"] = datetime.now(UTC).isoformat()
    timeline.milestone(f"drift injected into {settings.drift_group}", timeline.facts["drift_injected_utc"])
    timeline.mark(f"drift injected into {settings.drift_group}: {', '.join(d.split(':')[0] for d in settings.drift)}")

    def new_champion() -> str | None:
        now = champion(env, spec)
        return now if now is not None and now != first else None

    version = wait_until(new_champion, settings.loop_timeout, "a new champion", watcher)
    wait_until(
        lambda: all_devices_on(fleet_versions(env, spec), str(version), settings.devices),
        300,
        f"every device on version {version}",
        watcher,
    )
    loop_seconds = time.monotonic() - injected
    timeline.milestone(f"every device runs version {version}", datetime.now(UTC))
    timeline.mark(f"loop closed: every device runs version {version}")
    # the alias moves in the rollout's promote task; its run ends a moment later (the skipped rollback task)
    wait_until(
        lambda: watcher.first("rollout") or watcher.first("rollout", "failed"),
        120,
        "the rollout run to finish",
        watcher,
    )
    return collect_summary(api, spec, watcher, first, str(version), loop_seconds)


def collect_summary(
    api: AirflowApi, spec: PipelineSpec, watcher: StageWatcher, first: str, version: str, loop_seconds: float
) -> dict[str, Any]:
    """What the loop did, read back from Airflow: the runs and XComs of each stage, and the timeline's milestones."""
    timeline = watcher.timeline
    summary: dict[str, Any] = {"first_champion": first, "champion_now": version, "loop_seconds": loop_seconds}
    summary.update(timeline.facts)
    ends: dict[str, str | None] = {}
    for drift in reversed(api.runs(f"{spec.name}__drift", limit=50)):
        if (("drift", drift["dag_run_id"]) in watcher.known) or drift["state"] != "success":
            continue
        result = xcom(api, f"{spec.name}__drift", drift["dag_run_id"], "publish_alerts") or {}
        if not result.get("alert_ids"):
            continue  # looking for the run that raised the first alert
        summary["drift_run"] = drift["dag_run_id"]
        # the alert is out when publish_alerts ends; the run goes on to render the clean scopes' reports
        raised = task_ends(api, f"{spec.name}__drift", drift["dag_run_id"]).get("publish_alerts")
        ends["detection"] = raised or drift.get("end_date")
        timeline.milestone(f"drift alert raised (drift run {drift['dag_run_id']})", ends["detection"])
        summary["alert"] = result["alert_ids"]
        groups = result.get("drifted_groups") or []
        links = result.get("report_links") or {}
        summary["drift_report"] = next(
            (v for k, v in links.items() if any(str(g) in k for g in groups)), links.get("fleet")
        )
        break
    annotate = watcher.first("annotate")
    if annotate:
        dag_id, run_id = f"{spec.name}__annotate", annotate["dag_run_id"]
        selection = xcom(api, dag_id, run_id, "select_batch") or {}
        exported = xcom(api, dag_id, run_id, "export_dataset") or {}
        opened = xcom(api, dag_id, run_id, "open_batch") or {}
        summary["annotate_run"] = run_id
        ends["annotation"] = annotate.get("end_date")
        summary["batch_url"] = opened.get("url")
        summary["batch"] = selection.get("batch_id")
        summary["batch_group"] = selection.get("groups")
        summary["curated_version"] = exported.get("version")
        timeline.milestone(
            f"annotation batch {summary['batch']} opened", task_ends(api, dag_id, run_id).get("open_batch")
        )
        timeline.milestone(f"labels done (annotate run {run_id})", annotate.get("end_date"))
    train = watcher.first("train")
    if train:
        dag_id, run_id = f"{spec.name}__train", train["dag_run_id"]
        gate = xcom(api, dag_id, run_id, "evaluation_gate") or {}
        summary["trained_version"] = gate.get("version")
        ends["training"] = train.get("end_date")
        summary["gate_decision"] = gate.get("decision")
        task_end = task_ends(api, dag_id, run_id)
        timeline.milestone(f"version {gate.get('version')} trained (train run {run_id})", task_end.get("train_model"))
        timeline.milestone(f"evaluation gate: {gate.get('decision')}", task_end.get("evaluation_gate"))
    rollout = watcher.first("rollout")
    if rollout:
        dag_id, run_id = f"{spec.name}__rollout", rollout["dag_run_id"]
        promoted = xcom(api, dag_id, run_id, "promote") or {}
        summary["rollout_id"] = promoted.get("rollout_id")
        ends["rollout"] = rollout.get("end_date")
        task_end = task_ends(api, dag_id, run_id)
        summary["rollout_waves"] = []
        for wave in watcher.waves:
            state = (xcom(api, dag_id, run_id, f"gate_{wave}") or {}).get("state")
            summary["rollout_waves"].append(state)
            timeline.milestone(f"rollout gate of wave {wave}: {state}", task_end.get(f"gate_{wave}"))
    summary["stage_seconds"] = stage_seconds(summary.get("drift_injected_utc"), ends, loop_seconds)
    summary["timeline"] = timeline.story()
    return summary


def task_ends(api: AirflowApi, dag_id: str, run_id: str) -> dict[str, str | None]:
    """When each task of a run ended (None: not yet)."""
    return {ti["task_id"]: ti.get("end_date") for ti in api.task_instances(dag_id, run_id)}


def stage_seconds(injected_utc: str | None, ends: dict[str, str | None], loop_seconds: float) -> dict[str, float]:
    """Each stage's share of the loop, from the end times of its runs (seconds since the drift was injected).

    detection: injection -> the drift run's alert was published (ingest lag and drift schedule included);
    annotation, training, rollout: from the previous stage's end to this one's (hand-offs included);
    fleet: from the promotion to the last device reporting the new version.
    """
    if not injected_utc:
        return {}
    start = _utc(injected_utc)
    out: dict[str, float] = {}
    previous = 0.0
    for stage in ("detection", "annotation", "training", "rollout"):
        end = ends.get(stage)
        if not end:
            return out
        at = (_utc(end) - start).total_seconds()
        out[stage] = round(at - previous, 1)
        previous = at
    out["fleet"] = round(max(0.0, loop_seconds - previous), 1)
    return out


def print_summary(summary: dict[str, Any], env: dict[str, str], cfg: StackConfig) -> None:
    print()
    print("edgeloop demo: summary")
    rows = [
        ("drift injected at", summary.get("drift_injected_at")),
        ("drift alert", summary.get("alert")),
        ("annotation batch", f"{summary.get('batch')} (group {summary.get('batch_group')})"),
        ("curated version", summary.get("curated_version")),
        ("trained version", summary.get("trained_version")),
        ("gate decision", summary.get("gate_decision")),
        ("rollout waves", summary.get("rollout_waves")),
        ("champion", f"{summary.get('first_champion')} -> {summary.get('champion_now')}"),
        ("loop time", f"{summary.get('loop_seconds', 0):.0f} s from drift injection to every device"),
        ("stage shares", ", ".join(f"{k} {v:.0f} s" for k, v in (summary.get("stage_seconds") or {}).items())),
    ]
    for name, value in rows:
        print(f"  {name:<20} {value}")
    if summary.get("timeline"):
        print()
        print("  timeline (clock time, since the previous step, since the injection)")
        for line in summary["timeline"]:
            print(f"    {line}")
    print_urls(env, cfg, summary.get("drift_report"), summary.get("batch_url"))


def print_urls(
    env: dict[str, str], cfg: StackConfig, drift_report: str | None = None, batch_url: str | None = None
) -> None:
    print()
    print(f"  Airflow UI     {env['EDGELOOP_AIRFLOW_URL']}   login: admin (viewer: viewer)")
    print(f"                 passwords: {cfg.state_dir / 'airflow' / 'passwords.json'}")
    print(f"  MLflow UI      {env['MLFLOW_TRACKING_URI']}")
    print(f"  Label Studio   {env['EDGELOOP_LABEL_STUDIO_URL']}   login: admin@edgeloop.local")
    print(f"                 password: label_studio_password in {cfg.secrets_file}")
    if drift_report:
        print(f"  drift report   {env['EDGELOOP_AIRFLOW_URL']}{drift_report}")
    if batch_url:
        print(f"  label batch    {batch_url}   (also the 'Label Studio batch' link of the wait_for_labels task)")
    print(f"  Prometheus     {env['EDGELOOP_PROMETHEUS_URL']}")
    print(f"  S3 (moto)      {env['EDGELOOP_S3_ENDPOINT']}   bucket: {env['EDGELOOP_BUCKET']}")
    print(f"  Kafka          {env['EDGELOOP_KAFKA_BOOTSTRAP']}")
    print()
    print(f"  environment for your shell: set -a; . {cfg.env_file}; set +a")
    print("  stop everything: make stack-down")


def main(pipeline: str | None = None) -> int:
    """Run the demo; a stage that ends the loop and Ctrl-C each end it with what to know, never a traceback."""
    try:
        return run_demo(pipeline)
    except KeyboardInterrupt:
        # "\r" writes over the terminal's "^C" so this stays the only line
        start = "\r" if sys.stdout.isatty() else ""
        print(f"{start}edgeloop demo: interrupted; the stack keeps running (make stack-down stops it)", flush=True)
        return 130
    except DemoError as exc:
        print(f"\nedgeloop demo: stopped: {exc}", flush=True)
        return 1


def demo_settings(spec: PipelineSpec) -> DemoSettings:
    """The demo's settings for `spec`; EDGELOOP_DEMO_DEVICES and EDGELOOP_DEMO_CLEAN_SECONDS override them."""
    values: dict[str, Any] = {}
    if os.environ.get("EDGELOOP_DEMO_DEVICES"):
        values["devices"] = int(os.environ["EDGELOOP_DEMO_DEVICES"])
    if os.environ.get("EDGELOOP_DEMO_CLEAN_SECONDS"):
        values["clean_seconds"] = float(os.environ["EDGELOOP_DEMO_CLEAN_SECONDS"])
    return DemoSettings.for_spec(spec, **values)


def run_demo(pipeline: str | None = None) -> int:
    cfg = StackConfig.from_env()
    env = read_env_file(cfg)
    pipeline = pipeline or os.environ.get("EDGELOOP_DEMO_PIPELINE") or DEMO_PIPELINE
    specs = load_all(cfg.pipelines_dir).specs
    spec = next((s for s in specs if s.name == pipeline), None)
    if spec is None:
        known = ", ".join(sorted(s.name for s in specs))
        raise DemoError(f"the demo pipeline '{pipeline}' is not in {cfg.pipelines_dir} (pipelines: {known})")
    settings = demo_settings(spec)
    child_env = {**env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    api = api_for(env)
    timeline = Timeline()
    print("edgeloop demo: the closed loop on the local stack (Ctrl-C leaves it running; make stack-down ends it)")
    dags = load_pipelines(api, [spec])  # only the demo pipeline's: the others stay as they are (paused)
    timeline.mark(f"{len(dags)} DAGs loaded and unpaused")
    start_fleet(cfg, spec, settings, child_env)
    start_bot(cfg, spec, settings, child_env)
    timeline.mark(f"fleet simulator started: {settings.devices} devices in {len(spec.groups)} groups; annotate bot on")
    watcher = StageWatcher(api, spec, timeline)
    watcher.baseline()
    summary = run_loop(api, env, spec, watcher, settings, cfg)
    print_summary(summary, env, cfg)
    return 0
