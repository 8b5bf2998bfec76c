"""Closed-loop benchmark (`make bench-loop`): the loop time with each stage's share, and alert -> run latency.

On the running stack with the demo pipeline (`factory_maintenance`), in one run:

1. Event to DAG run: 20 backlog alerts, one at a time, on the pipeline's `alerts` topic; for each,
   the time until the asset-triggered ingest run exists (the triggerer's AssetWatcher turns the
   Kafka message into an asset event, the scheduler creates the run). Measured from the produce
   call to the run's `queued_at` (server clock, same machine) and to the moment the REST API
   first lists it (poll every 0.25 s). Side by side: the same number of runs created by a
   `POST /dags/{id}/dagRuns` (what a system that can call Airflow directly would do), the floor.
2. The loop: fleet simulator and annotate bot started as `make demo` does, first model bootstrapped
   if there is no champion, drift injected into plant-north, and the time until every device runs
   the new champion, split into detection, annotation, training, rollout and fleet update.

Usage: PYTHONPATH=include .venv/bin/python benchmarks/bench_loop.py [--alerts 20] [--devices 300] [--skip-loop]
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


def print_loop(summary: dict[str, Any]) -> None:
    total = float(summary["loop_seconds"])
    print()
    print("Closed loop: drift injected into plant-north -> new champion on every device")
    print(f"| {'stage':<12} | {'seconds':>8} | {'share':>6} |")
    print(f"|{'-' * 14}|{'-' * 10}|{'-' * 8}|")
    for stage, seconds in (summary.get("stage_seconds") or {}).items():
        print(f"| {stage:<12} | {seconds:8.0f} | {seconds / total:6.0%} |")
    print(f"| {'loop':<12} | {total:8.0f} | {1:6.0%} |")
    print(f"champion {summary['first_champion']} -> {summary['champion_now']}; target <= 600 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=20)
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--skip-loop", action="store_true", help="only the alert -> run latency")
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

    settings = DemoSettings(devices=args.devices)
    if process_pid("fleet-simulator", cfg) is not None:
        stop_process("fleet-simulator", cfg)  # a fresh fleet: drift is injected once per simulator
    start_fleet(cfg, spec, settings, {**env})
    if process_pid("annotate-bot", cfg) is None:
        start_bot(cfg, spec, settings, {**env})
    watcher = StageWatcher(api, spec, Timeline())
    watcher.baseline()
    summary = run_loop(api, env, spec, watcher, settings, cfg)
    print_latency(latency)
    print_loop(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
