"""Metadata store benchmark: the same stack with Airflow's and MLflow's metadata on SQLite, then on PostgreSQL.

For each store in turn, a stack of its own is started with `edgeloop stack up` (a state folder under
--state-root and every port shifted by an offset of its own, so it runs next to a developer's
stack), measured, and stopped again. Only the services the measured DAGs use are started (Kafka, S3,
MLflow, the Pushgateway, Airflow's four components and, on PostgreSQL, the database); Label Studio,
Prometheus and the exporter are left out. The stack reads a copy of the demo spec whose ingest runs
every 24 h, so only the benchmark's own runs execute. Measured per store:

1. task start latency: one warm-up run, then --runs manual runs, one at a time, of the demo
   pipeline's ingest DAG (plan, one mapped ingest_topic per ingested topic, publish: three
   scheduling steps a run; the topic is empty, so each task is short and publish skips). For every
   task instance that started:
   ready -> running (ready: its upstream tasks ended, or the run started for the first task; the
   scheduler loop, the executor and the task runner's start), scheduled -> running and
   queued -> running (the LocalExecutor's share: a worker, the task runner, its first API call).
2. with --rollout: benchmarks/bench_rollout.py against that stack (--devices, default 10,000), and
   its row for one real `__rollout` DAG run (total and beyond the soak).

State folders are kept (a second run skips initdb and the first migrations); the stacks are always
stopped. Usage:

    PYTHONPATH=include .venv/bin/python benchmarks/bench_metadata.py [--runs 8] [--rollout] [--devices 10000]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "include" / "pipelines" / "factory_maintenance.yaml"
INGEST = "factory_maintenance__ingest"
SERVICES = ["airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "mlflow", "pushgateway"]
# variables a sourced stack.env or the caller's shell may hold; each benchmark stack gets its own
STACK_PREFIXES = ("EDGELOOP_", "AIRFLOW", "MLFLOW_", "AWS_")
KEPT = ("EDGELOOP_KAFKA_LIBS", "EDGELOOP_LABEL_STUDIO_VENV", "EDGELOOP_POSTGRES_BIN", "EDGELOOP_HOST")


@dataclasses.dataclass
class StoreResult:
    store: str
    stack_up_s: float
    runs: int
    ready_to_running: list[float]
    scheduled_to_running: list[float]
    queued_to_running: list[float]
    run_s: list[float]
    load: list[float]
    rollout: dict[str, float] | None = None
    rollout_error: str = ""


def default_ports() -> dict[str, int]:
    """Every port of the stack with its default (read with the EDGELOOP_*_PORT variables cleared)."""
    from edgeloop.devstack.config import Ports

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("EDGELOOP_") and k.endswith("_PORT")}
    try:
        ports = Ports()
    finally:
        os.environ.update(saved)
    return {f"EDGELOOP_{f.name.upper()}_PORT": getattr(ports, f.name) for f in dataclasses.fields(ports)}


def stack_env(store: str, state: Path, offset: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(STACK_PREFIXES) or k in KEPT}
    env.update({name: str(port + offset) for name, port in default_ports().items()})
    main_state = ROOT / ".edgeloop"  # the virtualenv of Label Studio and the Kafka jars are shared, not copied
    env.setdefault("EDGELOOP_KAFKA_LIBS", os.environ.get("EDGELOOP_KAFKA_LIBS", str(main_state / "kafka-libs")))
    env.setdefault(
        "EDGELOOP_LABEL_STUDIO_VENV",
        os.environ.get("EDGELOOP_LABEL_STUDIO_VENV", str(main_state / "venvs" / "label-studio")),
    )
    env["EDGELOOP_STATE_DIR"] = str(state)
    env["EDGELOOP_METADATA_DB"] = store
    env["EDGELOOP_PIPELINES_DIR"] = str(state / "pipelines")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "include"), str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def write_spec(folder: Path) -> None:
    """The demo spec with ingest every 24 h: the benchmark's runs are the only ones."""
    data = yaml.safe_load(DEMO.read_text())
    data["ingest"]["schedule"] = "24h"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DEMO.name).write_text(yaml.safe_dump(data, sort_keys=False))


def edgeloop(env: dict[str, str], *args: str, log: Path) -> None:
    with log.open("a") as out:
        subprocess.run(
            [sys.executable, "-m", "edgeloop.cli", *args], env=env, cwd=ROOT, check=True, stdout=out, stderr=out
        )


def read_env_file(state: Path) -> dict[str, str]:
    env = {}
    for line in (state / "stack.env").read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value.strip("'")
    return env


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def measure_task_starts(api: Any, runs: int, result: StoreResult) -> None:
    """One warm-up run, then `runs` runs one at a time; the latencies of every task instance."""
    upstream: dict[str, set[str]] = {}
    for task in api.get(f"/dags/{INGEST}/tasks")["tasks"]:
        for child in task["downstream_task_ids"]:
            upstream.setdefault(child, set()).add(task["task_id"])
    api.patch(f"/dags/{INGEST}", {"is_paused": False})
    try:
        for number in range(runs + 1):
            run_id = f"bench-metadata-{int(time.time())}-{number}"
            api.trigger(INGEST, run_id)
            run = api.wait_for_run(INGEST, run_id, timeout=600)
            result.load.append(os.getloadavg()[0])
            if run["state"] != "success":
                raise RuntimeError(f"{INGEST} run {run_id} ended {run['state']}")
            if number == 0:
                continue  # warm-up: the first task processes compile and import what they need
            result.runs += 1
            result.run_s.append(_seconds(_time(run["queued_at"]), _time(run["end_date"])) or 0.0)
            instances = api.task_instances(INGEST, run_id)
            ended: dict[str, list[datetime]] = {}
            for ti in instances:
                if ti["end_date"]:
                    ended.setdefault(ti["task_id"], []).append(_time(ti["end_date"]))  # type: ignore[arg-type]
            for ti in instances:
                started = _time(ti["start_date"])
                if started is None:
                    continue  # skipped (publish, when no records came in) or never ran
                parents = upstream.get(ti["task_id"], set())
                ready = max((e for p in parents for e in ended.get(p, [])), default=_time(run["start_date"]))
                for values, since in (
                    (result.ready_to_running, ready),
                    (result.scheduled_to_running, _time(ti["scheduled_when"])),
                    (result.queued_to_running, _time(ti["queued_when"])),
                ):
                    seconds = _seconds(since, started)
                    if seconds is not None:
                        values.append(seconds)
    finally:
        api.patch(f"/dags/{INGEST}", {"is_paused": True})


def measure_rollout(env: dict[str, str], devices: int, log: Path) -> dict[str, float]:
    """bench_rollout.py on this stack; its row for one real `__rollout` DAG run."""
    with log.open("a") as out:
        finished = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "bench_rollout.py"), "--devices", str(devices)],
            env=env,
            cwd=ROOT,
            check=True,
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
        )
        out.write(finished.stdout)
    row = next((line for line in finished.stdout.splitlines() if "one real DAG run" in line), None)
    if row is None:
        raise RuntimeError(f"bench_rollout printed no DAG-run row (see {log})")
    cells = [c.strip().strip("*") for c in row.strip().strip("|").split("|")]
    return {"total_s": float(cells[1]), "beyond_soak_s": float(cells[3])}


def run_store(store: str, state: Path, offset: int, args: argparse.Namespace) -> StoreResult:
    from edgeloop.airflow_api import AirflowApi

    env = stack_env(store, state, offset)
    write_spec(state / "pipelines")
    log = state / "bench-metadata.log"
    print(
        f"  {time.strftime('%H:%M:%S')} {store}: stack up in {state} (ports +{offset}) ...", file=sys.stderr, flush=True
    )
    started = time.monotonic()
    try:
        edgeloop(env, "stack", "up", "--only", *SERVICES, log=log)
        result = StoreResult(store, time.monotonic() - started, 0, [], [], [], [], [])
        stack = read_env_file(state)
        api = AirflowApi.login(stack["EDGELOOP_AIRFLOW_URL"], "admin", stack["AIRFLOW_ADMIN_PASSWORD"])
        api.wait_for_dags({INGEST}, timeout=300)
        print(f"  {time.strftime('%H:%M:%S')} {store}: {args.runs} ingest runs ...", file=sys.stderr, flush=True)
        measure_task_starts(api, args.runs, result)
        if args.rollout:
            print(f"  {time.strftime('%H:%M:%S')} {store}: bench_rollout ...", file=sys.stderr, flush=True)
            try:
                result.rollout = measure_rollout({**env, **stack}, args.devices, log)
            except (subprocess.CalledProcessError, RuntimeError, ValueError) as exc:  # the latencies still count
                result.rollout_error = f"{exc} (log: {log})"
        return result
    finally:
        edgeloop(env, "stack", "down", log=log)


def p50_p95(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):.2f} / {p95:.2f}"


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def report(results: list[StoreResult], args: argparse.Namespace) -> None:
    names = {"sqlite": "SQLite", "postgres": "PostgreSQL 15"}
    print(
        f"\nmetadata store benchmark: {args.runs} ingest runs per store after a warm-up "
        f"({os.cpu_count()} cores, shared); p50 / p95 in seconds over every task instance\n"
    )
    rows = [
        [
            names.get(r.store, r.store),
            f"{r.stack_up_s:.0f}",
            str(len(r.ready_to_running)),
            p50_p95(r.ready_to_running),
            p50_p95(r.scheduled_to_running),
            p50_p95(r.queued_to_running),
            f"{statistics.mean(r.run_s):.1f}" if r.run_s else "-",
            f"{min(r.load):.1f}-{max(r.load):.1f}" if r.load else "-",
        ]
        for r in results
    ]
    header = ["metadata store", "stack up s", "task instances", "ready -> running", "scheduled -> running"]
    header += ["queued -> running", "run, queued to end s", "load avg (1 min)"]
    table(header, rows)
    for r in results:
        if r.rollout_error:
            print(f"\nbench_rollout on {names.get(r.store, r.store)} failed: {r.rollout_error}")
    if any(r.rollout for r in results):
        print(f"\none real `__rollout` DAG run, {args.devices:,} simulated devices (bench_rollout.py)\n")
        rollout_rows = [
            [names.get(r.store, r.store), f"{r.rollout['total_s']:.1f}", f"{r.rollout['beyond_soak_s']:.1f}"]
            for r in results
            if r.rollout
        ]
        table(["metadata store", "queued to end s", "beyond the soak s"], rollout_rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=8, help="measured ingest runs per store (after one warm-up)")
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--state-root", type=Path, default=Path("/tmp/edgeloop-bench-metadata"))
    parser.add_argument("--port-offset", type=int, default=2000, help="ports of the first stack; +1000 per store")
    parser.add_argument("--rollout", action="store_true", help="also run bench_rollout.py against each stack")
    parser.add_argument("--devices", type=int, default=10_000, help="simulated devices for --rollout")
    args = parser.parse_args(argv)
    results = [
        run_store(store, args.state_root / store, args.port_offset + 1000 * index, args)
        for index, store in enumerate(args.stores)
    ]
    report(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
