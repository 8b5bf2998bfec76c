"""Closed-loop benchmark (`make bench-loop`): the loop time with each stage's share, and alert -> run latency.

On the running stack with the demo pipeline (`factory_maintenance`), in one run:

1. Event to DAG run: 20 backlog alerts, one at a time, on the pipeline's `alerts` topic; for each,
   the time until the asset-triggered ingest run exists (the triggerer's AssetWatcher turns the
   Kafka message into an asset event, the scheduler creates the run). Measured from the produce
   call to the run's `queued_at` (server clock, same machine) and to the moment the REST API
   first lists it (poll every 0.25 s). Side by side: the same number of runs created by a
   `POST /dags/{id}/dagRuns` (what a system that can call Airflow directly would do), the floor.
2. The loop, `--runs` times (3): fleet simulator and annotate bot started as `make demo` does, first
   model bootstrapped if there is no champion (not counted), drift injected into plant-north, and the
   time until every device runs the new champion, split into detection, annotation, training,
   rollout and fleet update. The first run uses the demo pipeline, each further run a fresh copy of
   it under another name (removed afterwards), so every loop starts from a clean state.

Usage: PYTHONPATH=include .venv/bin/python benchmarks/bench_loop.py [--alerts 20] [--devices 300] [--runs 3]
       [--skip-loop]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer

from edgeloop.airflow_api import AirflowApi
from edgeloop.demo import (
    DemoSettings,
    StageWatcher,
    Timeline,
    api_for,
    load_pipelines,
    run_loop,
    start_bot,
    start_fleet,
)
from edgeloop.devstack.config import StackConfig
from edgeloop.devstack.pipelines import remove_pipeline, s3_client
from edgeloop.devstack.stack import process_pid, read_env_file, stop_process
from edgeloop.spec import PipelineSpec, load_all

PIPELINE = "factory_maintenance"


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _new_run(api: AirflowApi, dag_id: str, known: set[str], run_type: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in api.get(f"/dags/{dag_id}/dagRuns", order_by="-run_after", limit=20)["dag_runs"]:
            if run["dag_run_id"] not in known and run["run_type"] == run_type:
                return dict(run)
        time.sleep(0.25)
    raise TimeoutError(f"no new {run_type} run of {dag_id} within {timeout:.0f}s")


def event_latency(api: AirflowApi, env: dict[str, str], spec: PipelineSpec, alerts: int) -> dict[str, list[float]]:
    """Seconds from each alert to its run (`queued_at` and first seen), and from each REST trigger to its run."""
    dag_id = f"{spec.name}__ingest"
    producer = Producer({"bootstrap.servers": env["EDGELOOP_KAFKA_BOOTSTRAP"]})
    known = {r["dag_run_id"] for r in api.get(f"/dags/{dag_id}/dagRuns", limit=100)["dag_runs"]}
    known_before = set(known)
    out: dict[str, list[float]] = {"queued": [], "seen": [], "rest_queued": []}
    for i in range(alerts):
        alert = {"kind": "backlog", "pipeline": spec.name, "group": "plant-south", "alert_id": uuid.uuid4().hex}
        sent_wall, sent = datetime.now(UTC), time.monotonic()
        producer.produce(spec.topic("alerts"), value=json.dumps(alert).encode())
        producer.flush(10)
        run = _new_run(api, dag_id, known, "asset_triggered", timeout=120)
        out["seen"].append(time.monotonic() - sent)
        out["queued"].append((_utc(run["queued_at"]) - sent_wall).total_seconds())
        known.add(run["dag_run_id"])
        print(f"  alert {i + 1:>2}: run {run['dag_run_id']} queued after {out['queued'][-1]:.2f} s", flush=True)
        time.sleep(1.0)  # one alert at a time: runs triggered together would share one asset-triggered run
    mine: list[str] = []
    for _ in range(alerts):
        sent_wall = datetime.now(UTC)
        run_id = f"manual__bench_loop_{uuid.uuid4().hex[:8]}"
        created = api.trigger(dag_id, run_id, note="bench-loop: REST trigger")
        out["rest_queued"].append((_utc(created["queued_at"]) - sent_wall).total_seconds())
        mine.append(run_id)
    # ingest allows one active run: drop the bench's runs still waiting, so the loop below is not queued behind them
    for run in api.get(f"/dags/{dag_id}/dagRuns", state=["queued"], limit=100)["dag_runs"]:
        if run["dag_run_id"] in mine or run["dag_run_id"] not in known_before:
            api.session.delete(f"{api.base_url}/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}", timeout=30)
    return out


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


def print_latency(results: dict[str, list[float]]) -> None:
    rows = [
        ("alert on Kafka -> run queued (AssetWatcher)", results["queued"]),
        ("alert on Kafka -> run listed by the REST API", results["seen"]),
        ("POST dagRuns -> run queued (floor)", results["rest_queued"]),
    ]
    print()
    print(f"Event to DAG run, {len(results['queued'])} alerts, seconds")
    print(f"| {'path':<46} | {'p50':>6} | {'p95':>6} | {'max':>6} |")
    print(f"|{'-' * 48}|{'-' * 8}|{'-' * 8}|{'-' * 8}|")
    for name, values in rows:
        print(f"| {name:<46} | {statistics.median(values):6.2f} | {p95(values):6.2f} | {max(values):6.2f} |")


def print_loop(summaries: list[dict[str, Any]]) -> None:
    """Per stage: each run, the median and the worst."""
    stages = list(summaries[0].get("stage_seconds") or {})
    rows = [(stage, [float((s.get("stage_seconds") or {}).get(stage, 0.0)) for s in summaries]) for stage in stages]
    rows.append(("loop", [float(s["loop_seconds"]) for s in summaries]))
    print()
    print(f"Closed loop: drift injected into plant-north -> new champion on every device, {len(summaries)} runs, s")
    runs = " | ".join(f"run {i + 1}" for i in range(len(summaries)))
    print(f"| stage | {runs} | median | worst |")
    print("|---|" + "---:|" * (len(summaries) + 2))
    for stage, values in rows:
        cells = " | ".join(f"{v:.0f}" for v in values)
        print(f"| {stage} | {cells} | {statistics.median(values):.0f} | {max(values):.0f} |")
    print("target: loop <= 300 s")


def fresh_copy(cfg: StackConfig, spec: PipelineSpec, run: int) -> PipelineSpec:
    """The demo spec under a new name (its own topics, model and storage): a loop from a clean start."""
    import yaml

    from edgeloop.devstack.pipelines import write_pipeline

    data = yaml.safe_load((cfg.pipelines_dir / f"{spec.name}.yaml").read_text())
    name = f"bench_loop_{run}_{uuid.uuid4().hex[:6]}"
    data.update(name=name, description="bench-loop: a fresh copy of the demo pipeline (removed afterwards)")
    data["topics"]["prefix"] = name
    data["registry"]["model_name"] = name
    return write_pipeline(cfg.pipelines_dir, data)[1]


def one_loop(
    api: AirflowApi, env: dict[str, str], cfg: StackConfig, spec: PipelineSpec, devices: int
) -> dict[str, Any]:
    settings = DemoSettings(pipeline=spec.name, devices=devices)
    load_pipelines(api, [spec])
    for name in ("fleet-simulator", "annotate-bot"):
        if process_pid(name, cfg) is not None:
            stop_process(name, cfg)  # a fresh fleet: drift is injected once per simulator
    start_fleet(cfg, spec, settings, {**env})
    start_bot(cfg, spec, settings, {**env})
    watcher = StageWatcher(api, spec, Timeline())
    watcher.baseline()
    summary = run_loop(api, env, spec, watcher, settings, cfg)
    print(f"  loop on {spec.name}: {summary['loop_seconds']:.0f} s {summary.get('stage_seconds')}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=20)
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--skip-loop", action="store_true", help="only the alert -> run latency")
    parser.add_argument("--runs", type=int, default=3, help="loops: the demo pipeline, then fresh copies of it")
    args = parser.parse_args(argv)

    cfg = StackConfig.from_env()
    env = read_env_file(cfg)
    spec = next(s for s in load_all(cfg.pipelines_dir).specs if s.name == PIPELINE)
    api = api_for(env)
    load_pipelines(api, [spec])
    time.sleep(5)  # the triggerer subscribes its watchers after the unpause

    latency = event_latency(api, env, spec, args.alerts)
    print_latency(latency)
    if args.skip_loop:
        return 0

    summaries = [one_loop(api, env, cfg, spec, args.devices)]
    for run in range(2, args.runs + 1):
        copy = fresh_copy(cfg, spec, run)
        try:
            summaries.append(one_loop(api, env, cfg, copy, args.devices))
        finally:
            for name in ("fleet-simulator", "annotate-bot"):
                stop_process(name, cfg)
            (cfg.pipelines_dir / f"{copy.name}.yaml").unlink(missing_ok=True)
            remove_pipeline(api, s3_client(env), copy, env)
    print_latency(latency)
    print_loop(summaries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
