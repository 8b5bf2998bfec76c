"""Rollout policy benchmark (issue 24): paced waves over 10,000 devices, a bad model stopped by the abort criteria,
and what shadow mode costs a device's CPU.

Part of `make bench-rollout`, after `bench_rollout.py`. Three sections, in this order:

1. Shadow CPU cost, on this machine, no stack: two ONNX models of the demo spec's estimator (random
   forests of the same size, trained on simulated readings, exported and loaded the agent's way,
   `edge.runtime.load_model`). CPU time (`time.process_time`) per input, one reading per call as
   the agent scores them, of the champion served alone (`OnnxModel.predict_proba`), of both models
   called in turn (what the models alone cost) and of an `edge.shadow.ShadowEvaluator` serving the
   champion with the challenger beside it; `--shadow-runs` runs of `--shadow-inputs` inputs each,
   the three interleaved run by run; median and p95 per input.
2. Paced waves on the running stack (`make stack-up`): one group of `--devices` simulated devices (the
   fleet simulator as a child process, `--models rules`: every version is the rule model, version 4
   is injected to fail to load), versions registered as `bench_rollout.py` does (version 1 trained and
   promoted by the evaluation gate, the others copies of it). One wave at `rollout.rate.per_minute`
   (`--rate`), one at an exponential rate (`--base-rate`, times `--increment-factor` after each
   `--step-up-after` devices ordered, never above `--rate`), each the rollout job's own wave
   (`rollout.job.run_wave_job`, which orders device by device through `rollout.orders.PacedWave`),
   signed with the stack's key on the real broker. Orders sent per minute are counted from the
   control topic's record timestamps, next to what `policy.pacing_schedule` planned for that minute.
3. The bad model (version 4: every device that takes it reports a failed apply, as with a corrupt
   file) in the same paced waves with `rollout.abort` (`--abort-pct` of at least `--abort-min-executed`
   finished devices; `max_failure_ratio` set to 1 so that the abort criteria alone stop it): how
   many devices got the order before the wave stopped, as a share of the fleet (target <= 2%).

The DAG runs one such job per group (up to 8 at a time), and each paces its own group's devices: one
group of 10,000 devices is the case where `rate.per_minute` bounds the whole fleet's orders.
Defaults match the issue (10,000 devices, 1,000 a minute: the schedules plan 10 minutes for the fixed
rate and 11.5 for the exponential one, and a job sends a little slower than planned: 11.5 and 13.3
minutes on a loaded 2-core machine); `--devices` and the rates make a shorter run. Everything the
benchmark creates (topics, objects under its storage prefix, the registered model and its
experiment) is removed at the end. Usage:

    PYTHONPATH=include:. .venv/bin/python benchmarks/bench_rollout_policy.py [--devices 10000] [--rate 1000]
        [--base-rate 100] [--increment-factor 2] [--step-up-after 100] [--abort-pct 5] [--abort-min-executed 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from bench_rollout import (
    cleanup,
    phase,
    register_versions,
    stack_environment,
    start_simulator,
    table,
    wait_for_fleet,
    write_bench_spec,
)

from edgeloop.contract.keys import Keyring, Signer
from edgeloop.spec import AbortSpec, ExponentialRate, PipelineSpec, RateSpec

FIXED, EXPONENTIAL, BAD = "2", "3", "4"  # registry versions; 1 is the trained start version
ABORT_TARGET_SHARE = 0.02  # of the fleet, issue 24
DEMO = Path(__file__).resolve().parents[1] / "include" / "pipelines" / "factory_maintenance.yaml"


# --- 1. shadow CPU cost ---------------------------------------------------------------------------


@dataclass
class CpuCost:
    """CPU seconds per input of each run."""

    name: str
    per_input_s: list[float]

    def median_us(self) -> float:
        return float(np.median(self.per_input_s)) * 1e6

    def p95_us(self) -> float:
        return float(np.percentile(self.per_input_s, 95)) * 1e6


def onnx_models(rows: int) -> tuple[Any, Any, np.ndarray]:
    """Champion and challenger (`OnnxModel`s of the demo spec's estimator, same size, other seeds and rows),
    and readings neither was trained on."""
    import pandas as pd

    from edgeloop.edge.runtime import load_model
    from edgeloop.spec import load_spec
    from edgeloop.training.estimators import for_inference, make_estimator, step_params
    from edgeloop.training.onnx_export import export_onnx
    from edgeloop.training.sensors import sensor_profile

    spec = load_spec(DEMO)
    profile = sensor_profile(spec)
    rng = np.random.default_rng(0)
    states = profile.initial_states(rows + 4_000, rng)
    readings = profile.sample(
        states, profile.device_bias(rows + 4_000, rng), np.zeros((rows + 4_000, len(spec.features))), rng
    )
    frame = pd.DataFrame(readings, columns=spec.features)
    labels = np.array(profile.labels)[states]
    half, held_out = rows // 2, frame.iloc[rows:]
    models = []
    for seed, part in ((0, slice(0, half)), (1, slice(half, rows))):
        model = make_estimator(spec.training, random_state=seed, n_jobs=2)
        model.set_params(**step_params({"n_estimators": 100, "max_depth": 10, "min_samples_leaf": 2}))
        model.fit(frame.iloc[part], labels[part])
        exported = export_onnx(for_inference(model), spec.features, held_out)
        models.append(load_model(exported.data, str(seed + 1), spec.features))
    return models[0], models[1], readings[rows:].astype(np.float32)


def cpu_per_input(score: Callable[[np.ndarray], object], inputs: np.ndarray) -> float:
    """CPU seconds per input of scoring `inputs` one row at a time, as the agent scores readings."""
    started = time.process_time()
    for row in inputs:
        score(row.reshape(1, -1))
    return (time.process_time() - started) / len(inputs)


def shadow_cost(runs: int, inputs_per_run: int) -> list[CpuCost]:
    """The champion alone; both models called in turn (the models' share of shadow mode); a ShadowEvaluator
    (champion served, challenger measured and compared). Interleaved run by run on the same inputs."""
    from edgeloop.edge.shadow import ShadowEvaluator

    champion, challenger, readings = onnx_models(rows=20_000)
    shadow = ShadowEvaluator(champion, challenger, window_s=1e9, start=time.time())  # no window closes

    def both_models(rows: np.ndarray) -> None:
        champion.predict_proba(rows)
        challenger.predict_proba(rows)

    ways: list[tuple[CpuCost, Callable[[np.ndarray], object]]] = [
        (CpuCost("serving one model (OnnxModel.predict_proba)", []), champion.predict_proba),
        (CpuCost("both models in turn, nothing compared", []), both_models),
        (CpuCost("shadow mode (ShadowEvaluator: champion served, challenger compared)", []), shadow.predict_proba),
    ]
    for run in range(runs + 5):  # the first 5: warm-up
        start = (run * inputs_per_run) % (len(readings) - inputs_per_run)
        block = readings[start : start + inputs_per_run]
        for cost, score in ways:
            seconds = cpu_per_input(score, block)
            if run >= 5:
                cost.per_input_s.append(seconds)
    return [cost for cost, _ in ways]


# --- 2. and 3. paced waves on the running stack ---------------------------------------------------


@dataclass
class Fleet:
    """The running simulated fleet of one group, and what a rollout job needs to order it."""

    spec: PipelineSpec
    kafka: dict[str, Any]
    signer: Signer
    trusted: Keyring
    artifacts: Callable[[str], Any]
    devices: int
    spec_path: Path

    @property
    def group(self) -> str:
        return self.spec.groups[0].name


@dataclass
class PacedRun:
    """One wave of the rollout job: its result record, the device orders' broker timestamps, the plan."""

    name: str
    rate: RateSpec
    result: dict[str, Any]
    order_stamps_ms: list[int]
    planned_at_s: list[int]  # `pacing_schedule`'s second of each device's order

    @property
    def ordered(self) -> int:
        return sum(int(b["devices"]) for b in self.result.get("batches", []))

    @property
    def span_s(self) -> float:
        return (max(self.order_stamps_ms) - min(self.order_stamps_ms)) / 1000 if self.order_stamps_ms else 0.0


def exponential_rate(args: argparse.Namespace) -> RateSpec:
    step = ExponentialRate(
        base_per_minute=args.base_rate, increment_factor=args.increment_factor, step_up_after_devices=args.step_up_after
    )
    return RateSpec(per_minute=args.rate, exponential=step)


def planned_seconds(devices: int, rate: RateSpec) -> list[int]:
    """The second of each device's order in `policy.pacing_schedule` (every ordered device counts as applied)."""
    from edgeloop.rollout.policy import pacing_schedule

    return [b.at_s for b in pacing_schedule([str(i) for i in range(devices)], rate) for _ in b.devices]


def with_policy(spec: PipelineSpec, rate: RateSpec, abort: AbortSpec | None, timeout_s: float) -> PipelineSpec:
    update: dict[str, Any] = {"rate": rate, "abort": abort, "timeout": timedelta(seconds=timeout_s)}
    if abort is not None:
        update["max_failure_ratio"] = 1.0  # the abort criteria alone stop the wave
    return spec.model_copy(update={"rollout": spec.rollout.model_copy(update=update)})


def device_order_stamps(fleet: Fleet, rollout_id: str, since_ms: int) -> list[int]:
    """Broker timestamps (ms) of the rollout's device-targeted orders on the control topic."""
    from edgeloop.fleet.topics import read_topic

    stamps = []
    for record in read_topic(fleet.kafka, fleet.spec.topic("control"), since_ms=since_ms, timeout=120):
        key = (record.key or b"").decode()
        if key.startswith("device:") and str(json.loads(record.value or b"{}").get("id", "")).startswith(rollout_id):
            stamps.append(record.timestamp_ms)
    return sorted(stamps)


def paced_wave(fleet: Fleet, name: str, version: str, rate: RateSpec, abort: AbortSpec | None) -> PacedRun:
    """One rollout job's wave of the whole group at `rate` (with `abort`, when given)."""
    from edgeloop.rollout.job import run_wave_job

    planned = planned_seconds(fleet.devices, rate)
    spec = with_policy(fleet.spec, rate, abort, timeout_s=planned[-1] * 1.5 + 600)
    rollout_id = f"ro-bench-{uuid.uuid4().hex[:8]}"
    since_ms = int(time.time() * 1000) - 1000
    result = run_wave_job(
        spec,
        fleet.kafka,
        fleet.signer,
        fleet.group,
        version,
        rollout_id,
        artifacts=fleet.artifacts,
        trusted_keys=fleet.trusted,
    )
    return PacedRun(name, rate, result, device_order_stamps(fleet, rollout_id, since_ms), planned)


def max_in_window(stamps_ms: Sequence[int], window_ms: int) -> int:
    """The most records any window of `window_ms` holds."""
    best, start = 0, 0
    for end, stamp in enumerate(stamps_ms):
        while stamp - stamps_ms[start] >= window_ms:
            start += 1
        best = max(best, end - start + 1)
    return best


def per_minute(seconds: Sequence[float]) -> Counter[int]:
    return Counter(int(s // 60) for s in seconds)


def rates_in_minute(run: PacedRun, minute: int) -> str:
    """The rates (per minute) in force for the batches the job sent in that minute of the wave."""
    rates = sorted({int(b["per_minute"]) for b in run.result.get("batches", []) if int(b["sent_s"] // 60) == minute})
    return "-" if not rates else "/".join(map(str, rates))


def fleet_environment(devices: int, folder: Path) -> tuple[Fleet, Any, str]:
    """The spec (one group of `devices`), the stack's clients and keys; returns the fleet, S3 client, MLflow URI."""
    import boto3

    from edgeloop.connections import PipelineClients
    from edgeloop.contract.keys import signer_from_env, trusted_from_env
    from edgeloop.registry.artifacts import publish_edge_artifact
    from edgeloop.registry.client import mlflow_client
    from edgeloop.spec import load_spec

    signer = signer_from_env(os.environ)
    tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
    s3 = boto3.client("s3", endpoint_url=os.environ["EDGELOOP_S3_ENDPOINT"])
    spec_path = write_bench_spec(folder, devices, groups=1, soak_s=20)
    spec = load_spec(spec_path)
    client = mlflow_client(tracking_uri)
    refs: dict[str, Any] = {}

    def artifacts(version: str) -> Any:
        if version not in refs:
            refs[version] = publish_edge_artifact(client, s3, spec, version)
        return refs[version]

    fleet = Fleet(
        spec, PipelineClients(spec).kafka(), signer, trusted_from_env(os.environ, signer), artifacts, devices, spec_path
    )
    return fleet, s3, tracking_uri


def fleet_sections(args: argparse.Namespace) -> tuple[list[PacedRun], list[PacedRun], float]:
    """Sections 2 and 3 on the running stack; the paced runs, the abort runs, the fleet's start-up seconds."""
    from edgeloop.registry.client import mlflow_client

    stack_environment()
    folder = Path(tempfile.mkdtemp(prefix="bench-rollout-policy-"))
    fleet, s3, tracking_uri = fleet_environment(args.devices, folder)
    simulator: subprocess.Popen[bytes] | None = None
    fixed = RateSpec(per_minute=args.rate)
    abort = AbortSpec(failure_threshold_pct=args.abort_pct, min_executed=args.abort_min_executed)
    try:
        phase(
            "training and registering the versions",
            lambda: register_versions(mlflow_client(tracking_uri), s3, fleet.spec, int(BAD)),
        )
        launched = time.monotonic()
        simulator = start_simulator(fleet.spec_path, args.devices, folder / "simulator.log", faults={BAD: "load_error"})
        phase("fleet coming online", lambda: wait_for_fleet(fleet.spec, fleet.kafka, fleet.trusted, args.devices, 600))
        up_s = time.monotonic() - launched
        paced = [
            phase(f"paced wave, {args.rate}/min, v{FIXED}", lambda: paced_wave(fleet, "fixed", FIXED, fixed, None)),
            phase(
                f"paced wave, exponential from {args.base_rate}/min, v{EXPONENTIAL}",
                lambda: paced_wave(fleet, "exponential", EXPONENTIAL, exponential_rate(args), None),
            ),
        ]
        aborted = [
            phase(f"bad v{BAD} at {args.rate}/min, abort", lambda: paced_wave(fleet, "fixed", BAD, fixed, abort)),
            phase(
                f"bad v{BAD}, exponential, abort",
                lambda: paced_wave(fleet, "exponential", BAD, exponential_rate(args), abort),
            ),
        ]
    finally:
        if simulator is not None:
            simulator.terminate()
            try:
                simulator.wait(timeout=60)
            except subprocess.TimeoutExpired:
                simulator.kill()
        cleanup(fleet.spec, fleet.kafka, s3, tracking_uri)
        shutil.rmtree(folder, ignore_errors=True)
    return paced, aborted, up_s


# --- report ---------------------------------------------------------------------------------------


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}" if reference else "-"


def report_pacing(runs: list[PacedRun], devices: int) -> None:
    """Orders sent per minute of each wave (from the control topic) next to what the schedule planned."""
    sent = [per_minute([(s - r.order_stamps_ms[0]) / 1000 for s in r.order_stamps_ms]) for r in runs]
    planned = [per_minute(r.planned_at_s) for r in runs]
    minutes = max(max(c, default=0) for c in [*sent, *planned]) + 1
    header = ["minute"]
    for run in runs:
        header += [f"{run.name}: planned", "sent", "sent/planned", "rate in force /min"]
    rows = []
    for minute in range(minutes):
        row = [f"{minute + 1}"]
        for run, s, p in zip(runs, sent, planned, strict=True):
            row += [f"{p[minute]:,}", f"{s[minute]:,}", ratio(s[minute], p[minute]), rates_in_minute(run, minute)]
        rows.append(row)
    table(f"Device orders per minute of the wave ({devices:,} devices, one rollout job)", header, rows)
    summary = []
    for run in runs:
        planned_s = run.planned_at_s[-1] if run.planned_at_s else 0
        progress = run.result.get("progress", {})
        summary.append(
            [
                f"{run.name} ({describe(run.rate)})",
                f"{run.ordered:,}",
                f"{progress.get('applied', 0):,}",
                f"{max_in_window(run.order_stamps_ms, 60_000):,} <= {run.rate.per_minute:,}",
                f"{planned_s:.0f}",
                f"{run.span_s:.0f}",
                ratio(run.span_s, planned_s),
                f"{float(run.result['duration_s']):.0f}",
            ]
        )
    table(
        "Paced waves: totals",
        [
            "wave",
            "ordered",
            "applied",
            "most orders in any 60 s",
            "first to last order planned s",
            "sent s",
            "sent/planned",
            "job total s",
        ],
        summary,
    )


def describe(rate: RateSpec) -> str:
    exp = rate.exponential
    if exp is None:
        return f"{rate.per_minute:,}/min"
    return (
        f"{exp.base_per_minute}/min x{exp.increment_factor:g} every {exp.step_up_after_devices} devices, "
        f"up to {rate.per_minute:,}"
    )


def report_abort(runs: list[PacedRun], devices: int, abort: AbortSpec) -> None:
    target = round(devices * ABORT_TARGET_SHARE)
    rows = [
        [
            f"bad model at {describe(run.rate)}",
            f"{run.ordered:,}",
            f"{100 * run.ordered / devices:.2f}%",
            f"{run.result.get('progress', {}).get('failed_count', 0):,}",
            f"{run.result['abort'].get('executed', 0)} / {run.result['abort'].get('failure_pct', 0):g}%",
            "yes" if run.result["abort"].get("abort") else "no",
            f"{run.span_s:.1f}",
            f"{float(run.result['duration_s']):.1f}",
            f"<= {target:,} (2%)",
        ]
        for run in runs
    ]
    table(
        f"Bad model (fails to load on every device) stopped by rollout.abort: {abort.failure_threshold_pct:g}% "
        f"of at least {abort.min_executed} finished devices; fleet of {devices:,}",
        [
            "wave",
            "devices ordered",
            "of the fleet",
            "failed applies seen",
            "abort: executed / failed",
            "aborted",
            "first to last order s",
            "job total s",
            "target",
        ],
        rows,
    )


def report_shadow(costs: list[CpuCost], runs: int, inputs: int) -> None:
    alone = costs[0]
    rows = [
        [
            cost.name,
            f"{cost.median_us():.1f}",
            f"{cost.p95_us():.1f}",
            ratio(cost.median_us(), alone.median_us()),
            ratio(cost.p95_us(), alone.p95_us()),
        ]
        for cost in costs
    ]
    table(
        f"Shadow mode: device CPU time per input (one reading per call; {runs} runs of {inputs} inputs, "
        f"time.process_time)",
        ["on the device", "median us", "p95 us", "median vs one model", "p95 vs one model"],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=10_000, help="simulated devices, one group")
    parser.add_argument("--rate", type=int, default=1000, help="rate.per_minute")
    parser.add_argument("--base-rate", type=int, default=100, help="rate.exponential.base_per_minute")
    parser.add_argument("--increment-factor", type=float, default=2.0, help="rate.exponential.increment_factor")
    parser.add_argument("--step-up-after", type=int, default=100, help="rate.exponential.step_up_after_devices")
    parser.add_argument("--abort-pct", type=float, default=5.0, help="rollout.abort.failure_threshold_pct")
    parser.add_argument("--abort-min-executed", type=int, default=50, help="rollout.abort.min_executed")
    parser.add_argument("--shadow-runs", type=int, default=500)
    parser.add_argument("--shadow-inputs", type=int, default=100, help="inputs per shadow run")
    parser.add_argument("--no-fleet", action="store_true", help="only the shadow CPU section (no stack)")
    args = parser.parse_args(argv)
    costs = phase("shadow CPU cost", lambda: shadow_cost(args.shadow_runs, args.shadow_inputs))
    print(f"\nedgeloop rollout policy benchmark, {os.cpu_count()} cores shared with the stack")
    report_shadow(costs, args.shadow_runs, args.shadow_inputs)
    if args.no_fleet:
        return 0
    paced, aborted, up_s = fleet_sections(args)
    print(f"\n{args.devices:,} simulated devices in one group, online after {up_s:.0f} s")
    report_pacing(paced, args.devices)
    report_abort(
        aborted, args.devices, AbortSpec(failure_threshold_pct=args.abort_pct, min_executed=args.abort_min_executed)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
