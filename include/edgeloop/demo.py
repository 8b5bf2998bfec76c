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
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edgeloop.airflow_api import AirflowApi
from edgeloop.devstack.config import StackConfig
from edgeloop.devstack.stack import process_pid, read_env_file, start_process
from edgeloop.spec import STAGES as ALL_STAGES
from edgeloop.spec import PipelineSpec, load_all

STAGES = tuple(stage for stage in ALL_STAGES if stage != "config_push")  # config_push runs only when triggered by hand
LOOP_STAGES = ("drift", "annotate", "train", "rollout")


class DemoError(RuntimeError):
    """The stack is not in a state the demo can use, or a stage failed."""


@dataclass
class DemoSettings:
    pipeline: str = "factory_maintenance"
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
    def from_env(cls) -> DemoSettings:
        return cls(
            devices=int(os.environ.get("EDGELOOP_DEMO_DEVICES", "300")),
            clean_seconds=float(os.environ.get("EDGELOOP_DEMO_CLEAN_SECONDS", "60")),
        )


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def mark(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self.events.append((elapsed, text))
        print(f"  [{_clock(elapsed)}] {text}", flush=True)


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def api_for(env: dict[str, str]) -> AirflowApi:
    return AirflowApi.login(env["EDGELOOP_AIRFLOW_URL"], "admin", env["AIRFLOW_ADMIN_PASSWORD"])


def load_pipelines(api: AirflowApi, specs: list[PipelineSpec], timeout: float = 240) -> list[str]:
    """Wait until the dag-processor has the pipelines' DAGs, and unpause them."""
    dag_ids = {f"{spec.name}__{stage}" for spec in specs for stage in ALL_STAGES}
    api.wait_for_dags(dag_ids, timeout=timeout)
    for dag_id in sorted(dag_ids):
        api.patch(f"/dags/{dag_id}", {"is_paused": False})
    return sorted(dag_ids)


def forget_other_devices(env: dict[str, str], spec: PipelineSpec, devices: int) -> list[str]:
    """Remove the twins of devices this fleet does not run (left by an earlier, larger simulated fleet)."""
    from edgeloop.fleet.control import forget_devices, read_device_states
    from edgeloop.fleet.simulator import simulated_device_ids

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
    from edgeloop.training.tracking import mlflow_client

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
    """Prints each new DAG run and each state change of the pipeline's stages."""

    def __init__(self, api: AirflowApi, spec: PipelineSpec, timeline: Timeline) -> None:
        self.api = api
        self.spec = spec
        self.timeline = timeline
        self.seen: dict[tuple[str, str], str] = {}
        self.known: set[tuple[str, str]] = set()

    def baseline(self) -> None:
        for stage in STAGES:
            for run in self.api.runs(f"{self.spec.name}__{stage}", limit=100):
                self.known.add((stage, run["dag_run_id"]))

    def poll(self) -> list[tuple[str, dict[str, Any]]]:
        changes = []
        for stage in STAGES:
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
    return entry.get("value")


def wait_until(check: Any, timeout: float, what: str, watcher: StageWatcher, every: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watcher.poll()
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
    summary: dict[str, Any] = {"first_champion": first, "champion_now": version, "loop_seconds": loop_seconds}
    summary.update(watcher.timeline.facts)
    ends: dict[str, str | None] = {}
    for drift in reversed(api.runs(f"{spec.name}__drift", limit=50)):
        if (("drift", drift["dag_run_id"]) in watcher.known) or drift["state"] != "success":
            continue
        result = xcom(api, f"{spec.name}__drift", drift["dag_run_id"], "publish_alerts") or {}
        if not result.get("alert_ids"):
            continue  # looking for the run that raised the first alert
        summary["drift_run"] = drift["dag_run_id"]
        ends["detection"] = drift.get("end_date")
        summary["alert"] = result["alert_ids"]
        groups = result.get("drifted_groups") or []
        links = result.get("report_links") or {}
        summary["drift_report"] = next(
            (v for k, v in links.items() if any(str(g) in k for g in groups)), links.get("fleet")
        )
    annotate = watcher.first("annotate")
    if annotate:
        selection = xcom(api, f"{spec.name}__annotate", annotate["dag_run_id"], "select_batch") or {}
        exported = xcom(api, f"{spec.name}__annotate", annotate["dag_run_id"], "export_dataset") or {}
        opened = xcom(api, f"{spec.name}__annotate", annotate["dag_run_id"], "open_batch") or {}
        summary["annotate_run"] = annotate["dag_run_id"]
        ends["annotation"] = annotate.get("end_date")
        summary["batch_url"] = opened.get("url")
        summary["batch"] = selection.get("batch_id")
        summary["batch_group"] = selection.get("groups")
        summary["curated_version"] = exported.get("version")
    train = watcher.first("train")
    if train:
        gate = xcom(api, f"{spec.name}__train", train["dag_run_id"], "evaluation_gate") or {}
        summary["trained_version"] = gate.get("version")
        ends["training"] = train.get("end_date")
        summary["gate_decision"] = gate.get("decision")
    rollout = watcher.first("rollout")
    if rollout:
        promoted = xcom(api, f"{spec.name}__rollout", rollout["dag_run_id"], "promote") or {}
        summary["rollout_id"] = promoted.get("rollout_id")
        ends["rollout"] = rollout.get("end_date")
        summary["rollout_waves"] = [
            (xcom(api, f"{spec.name}__rollout", rollout["dag_run_id"], f"gate_{name}") or {}).get("state")
            for name in ("canary", "wave_1")
        ]
    summary["stage_seconds"] = stage_seconds(summary.get("drift_injected_utc"), ends, loop_seconds)
    return summary


def stage_seconds(injected_utc: str | None, ends: dict[str, str | None], loop_seconds: float) -> dict[str, float]:
    """Each stage's share of the loop, from the end times of its runs (seconds since the drift was injected).

    detection: injection -> the drift run that raised the alert ended (ingest lag and drift schedule included);
    annotation, training, rollout: from the previous stage's end to this one's (hand-offs included);
    fleet: from the promotion to the last device reporting the new version.
    """
    if not injected_utc:
        return {}
    start = datetime.fromisoformat(injected_utc)
    out: dict[str, float] = {}
    previous = 0.0
    for stage in ("detection", "annotation", "training", "rollout"):
        end = ends.get(stage)
        if not end:
            return out
        at = (datetime.fromisoformat(end.replace("Z", "+00:00")) - start).total_seconds()
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


def main(argv: list[str] | None = None) -> int:
    cfg = StackConfig.from_env()
    env = read_env_file(cfg)
    settings = DemoSettings.from_env()
    specs = load_all(cfg.pipelines_dir).specs
    spec = next((s for s in specs if s.name == settings.pipeline), None)
    if spec is None:
        raise DemoError(f"the demo pipeline '{settings.pipeline}' is not in {cfg.pipelines_dir}")
    child_env = {**env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    api = api_for(env)
    timeline = Timeline()
    print("edgeloop demo: the closed loop on the local stack (Ctrl-C leaves it running; make stack-down ends it)")
    dags = load_pipelines(api, specs)
    timeline.mark(f"{len(dags)} DAGs loaded and unpaused")
    start_fleet(cfg, spec, settings, child_env)
    start_bot(cfg, spec, settings, child_env)
    timeline.mark(f"fleet simulator started: {settings.devices} devices in {len(spec.groups)} groups; annotate bot on")
    watcher = StageWatcher(api, spec, timeline)
    watcher.baseline()
    summary = run_loop(api, env, spec, watcher, settings, cfg)
    print_summary(summary, env, cfg)
    return 0
