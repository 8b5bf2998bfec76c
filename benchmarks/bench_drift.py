"""Drift check benchmark: edgeloop's per-group check against a plain Evidently DataDriftPreset.

The window has 1,000,000 records x 20 numeric features from 3 edge groups; one group has
a sensor fault on 4 columns (an offset of 0.5 spread on two, a gain of 1.4 on two). The
reference (the champion's training data) is 1,000,000 clean records. Both sit in S3 as
Parquet objects laid out as ingest writes them (a private moto server started here).

Variants, each in a subprocess of its own (time and peak RSS are that process's, imports included):
- edgeloop: `read_reference_objects` + `run_drift_check`, what the drift DAG's check task does before
  the alert (column projection, float32, stratified samples of spec.drift.sample_per_group per group,
  Evidently's statistics for the fleet and each group, the Evidently HTML report of each drifted
  scope, the other scopes' rows for later, summary and alert state written to S3).
- edgeloop:wasserstein: the same with the spec naming Evidently's own large-sample method
  (`auto` lets edgeloop pick PSI, a distance with the same 0.1 threshold computed from bins).
- reports: the DAG's render_reports task after the alert (`render_pending_reports` of the edgeloop
  run: the Evidently reports of the scopes without drift). Off the alert's path, shown for the total.
- plain: every object read with pandas (all columns, default dtypes), one
  `Report([DataDriftPreset(columns=features)], include_tests=True)` over the whole window
  against the whole reference, its HTML report written to S3.
- demo: the demo pipeline's check alone (`check_drift` on samples already drawn) for a window of
  300 devices x 2 minutes at one record per device and second, then, for comparison, an Evidently
  report for every scope (what the check ran before its statistics were computed without one).

Targets for edgeloop: <= 8 s wall, <= 600 MB peak RSS, >= 10x faster than plain in the same run,
the 4 faulty columns found in the faulty group, no drift in the two clean groups; the demo
window's check <= 3 s. Run: `PYTHONPATH=include .venv/bin/python benchmarks/bench_drift.py`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BUCKET = "bench"
GROUPS = ("line-canary", "plant-north", "plant-south")
FAULTY = "plant-north"
NOW = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
TARGET_SECONDS = 8.0
TARGET_MB = 600.0
TARGET_SPEEDUP = 10.0
TARGET_DEMO_SECONDS = 3.0
DEMO_DEVICES = 300
DEMO_WINDOW_SECONDS = 120  # the demo spec's drift.window (2m) at one record per device and second
DEMO_REFERENCE_ROWS = 10_000  # about the first champion's training split (12,000 seed records)


def _features(columns: int) -> list[str]:
    return [f"f{i:02d}" for i in range(columns)]


def _faulty_columns(features: list[str]) -> list[str]:
    return features[:4]


def _spec(columns: int, method: str = "auto") -> Any:
    from edgeloop.drift.synthetic import synthetic_spec

    # 4 drifted columns of 20 is a share of 0.2: dataset drift from 3 drifted columns on
    drift = {"drift_share": 0.15, "method": method}
    return synthetic_spec(_features(columns), GROUPS, name="bench_drift", bucket=BUCKET, drift=drift)


def _client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
    )


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- data ---------------------------------------------------------------------------------


def _put_frame(s3: Any, spec: Any, frame: Any, *, partitions: int, offset: int, key_of: Any) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = []
    for partition in range(partitions):
        part = frame.iloc[partition::partitions]
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), buffer)
        key = key_of(partition, offset, offset + len(part) - 1)
        s3.put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())
        keys.append(key)
    return keys


def prepare(endpoint: str, rows: int, reference_rows: int, columns: int) -> dict[str, Any]:
    """Write the window (raw/, one hour partition) and the reference (curated/) to S3."""
    from edgeloop.drift.synthetic import SensorDrift, make_telemetry
    from edgeloop.ingest.keys import OffsetRange, raw_object_key

    spec = _spec(columns)
    features = _features(columns)
    s3 = _client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    faults = {c: SensorDrift(offset=0.5) for c in _faulty_columns(features)[:2]}
    faults |= {c: SensorDrift(gain=1.4) for c in _faulty_columns(features)[2:]}
    per_group = {g: rows // len(GROUPS) + (1 if i < rows % len(GROUPS) else 0) for i, g in enumerate(GROUPS)}
    window = make_telemetry(
        features,
        per_group,
        seed=2,
        start=NOW - timedelta(minutes=55),
        duration=timedelta(minutes=50),
        drift={FAULTY: faults},
    )
    hour = NOW - timedelta(minutes=55)
    topic = spec.topic("telemetry")
    window_keys = _put_frame(
        s3,
        spec,
        window,
        partitions=6,
        offset=0,
        key_of=lambda p, first, last: raw_object_key(spec, topic, hour, OffsetRange(p, first, last)),
    )
    del window
    ref_groups = {g: reference_rows // len(GROUPS) for g in GROUPS}
    reference = make_telemetry(features, ref_groups, seed=1, start=NOW - timedelta(days=7), duration=timedelta(days=2))
    reference_keys = _put_frame(
        s3,
        spec,
        reference,
        partitions=4,
        offset=0,
        key_of=lambda p, first, last: f"{spec.storage_prefix('curated')}/v1/part-{p}.parquet",
    )
    return {"window_keys": window_keys, "reference_keys": reference_keys}


# --- variants (each runs in its own process) ---------------------------------------------------


def run_edgeloop(endpoint: str, reference_keys: list[str], columns: int, method: str) -> dict[str, Any]:
    from edgeloop.drift.reference import read_reference_objects
    from edgeloop.drift.run import run_drift_check

    spec = _spec(columns, method)
    s3 = _client(endpoint)
    started = time.perf_counter()
    reference = read_reference_objects(s3, BUCKET, reference_keys, spec, seed=1)
    reference_seconds = time.perf_counter() - started
    result = run_drift_check(s3, BUCKET, spec, f"bench-{method}", NOW, reference=reference)
    summary = json.loads(s3.get_object(Bucket=BUCKET, Key=result["summary_key"])["Body"].read())
    scopes = {"fleet": summary["overall"], **summary["groups"]}
    return {
        "rows": result["rows"],
        "sample": {name: view["sample_size"]["current"] for name, view in scopes.items()},
        "status": {name: view["status"] for name, view in scopes.items()},
        "drifted": {name: sorted(view["drifted_columns"]) for name, view in scopes.items()},
        "method": sorted({c["method"] for c in summary["overall"]["columns"].values()}),
        "reports": sorted(result["reports"]),
        "pending": sorted(result["pending_reports"]),
        "phases": {"reference": round(reference_seconds, 1), **{k: round(v, 1) for k, v in result["seconds"].items()}},
    }


def run_reports(endpoint: str, columns: int) -> dict[str, Any]:
    """The render_reports task after the edgeloop run's alert: the other scopes' Evidently reports."""
    from edgeloop.drift.reports import render_pending_reports

    rendered = render_pending_reports(_client(endpoint), BUCKET, _spec(columns), "bench-auto")
    return {"reports": sorted(rendered["reports"]), "disagreements": rendered["disagreements"]}


def run_demo() -> dict[str, Any]:
    """The demo spec's check alone on a 2-minute window of 300 devices, then an Evidently report per scope."""
    from edgeloop.drift.columns import drift_columns
    from edgeloop.drift.detect import check_drift
    from edgeloop.drift.reference import reference_from_frame
    from edgeloop.drift.synthetic import SensorDrift, make_telemetry
    from edgeloop.drift.window import frame_sample
    from edgeloop.simulator.fleet import allocate_devices
    from edgeloop.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "include" / "pipelines" / "factory_maintenance.yaml")
    devices = dict(allocate_devices(spec, DEMO_DEVICES))
    window = {g: n * DEMO_WINDOW_SECONDS for g, n in devices.items()}
    fault = {"plant-north": {"vibration_rms": SensorDrift(offset=1.0), "temperature_c": SensorDrift(gain=1.5)}}
    fault["plant-north"] |= {"motor_current_a": SensorDrift(offset=1.0)}
    current = make_telemetry(spec.features, window, seed=2, drift=fault)
    ref_rows = {g: DEMO_REFERENCE_ROWS * n // DEMO_DEVICES for g, n in devices.items()}
    reference = reference_from_frame(make_telemetry(spec.features, ref_rows, seed=1), spec, seed=1)
    sample = frame_sample(current, drift_columns(spec), spec.drift.sample_per_group, seed=2)
    started = time.perf_counter()
    check = check_drift(sample, reference.sample, spec)
    check_seconds = time.perf_counter() - started

    from edgeloop.drift.reports import build_report

    started = time.perf_counter()
    for scope in check.scopes:
        if scope.report is not None:
            build_report(scope.report).get_html_str(as_iframe=False)
    reports_seconds = time.perf_counter() - started
    views = {s.stratum.name if s.stratum.kind == "group" else "fleet": s for s in check.scopes}
    return {
        "rows": len(current),
        "sample": {name: s.sample_size for name, s in views.items()},
        "status": {name: s.status for name, s in views.items()},
        "drifted": {name: sorted(s.drifted_columns) for name, s in views.items()},
        "method": sorted({c.method for c in check.fleet.columns}),
        "check_seconds": check_seconds,
        "evidently_seconds": reports_seconds,
        "evidently_reports": sum(s.report is not None for s in check.scopes),
    }


def run_plain(endpoint: str, window_keys: list[str], reference_keys: list[str], columns: int) -> dict[str, Any]:
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from edgeloop.drift.reports import parse_snapshot

    features = _features(columns)
    s3 = _client(endpoint)

    def read(keys: list[str]) -> pd.DataFrame:
        parts = [pd.read_parquet(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read())) for k in keys]
        return pd.concat(parts, ignore_index=True)

    current, reference = read(window_keys), read(reference_keys)
    definition = DataDefinition(numerical_columns=features)
    snapshot = Report([DataDriftPreset(columns=features, drift_share=0.15)], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    html = snapshot.get_html_str(as_iframe=False)
    s3.put_object(Bucket=BUCKET, Key="reports/plain/bench.html", Body=html.encode("utf-8"))
    verdicts, _, dataset_drift = parse_snapshot(snapshot.dict())
    return {
        "rows": len(current),
        "sample": {"fleet": len(current)},
        "status": {"fleet": "drift" if dataset_drift else "no drift"},
        "drifted": {"fleet": sorted(c for c, v in verdicts.items() if v.drifted)},
        "method": sorted({v.method for v in verdicts.values()}),
    }


def _child(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    keys = json.loads(Path(args.keys).read_text())
    if args.variant.startswith("edgeloop"):
        method = args.variant.partition(":")[2] or "auto"
        out = run_edgeloop(args.endpoint, keys["reference_keys"], args.columns, method)
    elif args.variant == "reports":
        out = run_reports(args.endpoint, args.columns)
    elif args.variant == "demo":
        out = run_demo()
    else:
        out = run_plain(args.endpoint, keys["window_keys"], keys["reference_keys"], args.columns)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out |= {
        "seconds_in_process": time.perf_counter() - started,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": _peak_rss_mb(),
    }
    print("RESULT " + json.dumps(out))


# --- driver --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_moto(port: int) -> subprocess.Popen[bytes]:
    moto = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"moto server did not start on port {port}")


def _run_variant(variant: str, endpoint: str, keys_file: str, columns: int) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--variant",
        variant,
        "--endpoint",
        endpoint,
        "--keys",
        keys_file,
        "--columns",
        str(columns),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=os.environ.copy())
    wall = time.perf_counter() - started
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"variant {variant} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(line[len("RESULT ") :]) | {"wall_seconds": wall}


def _verdict(result: dict[str, Any], features: list[str]) -> str:
    """Did the variant find the faulty columns in the faulty group, and nothing in the clean ones?"""
    drifted = result["drifted"]
    if FAULTY not in drifted:
        return f"no per-group result (fleet drifted: {', '.join(drifted.get('fleet', [])) or 'none'})"
    right = drifted[FAULTY] == _faulty_columns(features) and result["status"][FAULTY] == "drift"
    clean = all(result["status"][g] == "no drift" for g in GROUPS if g != FAULTY)
    return "yes" if right and clean else f"NO: {json.dumps({g: drifted[g] for g in GROUPS})}"


def print_table(results: dict[str, dict[str, Any]], features: list[str]) -> None:
    checks = {k: r for k, r in results.items() if k.startswith("edgeloop") or k == "plain"}
    print()
    header = f"{'variant':<22} {'wall s':>7} {'cpu s':>7} {'peak RSS MB':>12} {'rows per scope':>15}  method"
    print(header)
    print("-" * len(header))
    for name, r in checks.items():
        sample = max(r["sample"].values())
        print(
            f"{name:<22} {r['wall_seconds']:>7.1f} {r['cpu_seconds']:>7.1f} {r['peak_rss_mb']:>12.0f} "
            f"{sample:>15,}  {', '.join(r['method'])}"
        )
    if "reports" in results:
        r = results["reports"]
        print(
            f"{'reports (after alert)':<22} {r['wall_seconds']:>7.1f} {r['cpu_seconds']:>7.1f} "
            f"{r['peak_rss_mb']:>12.0f}  Evidently reports of {', '.join(r['reports']) or 'nothing'}; "
            f"verdicts differing from the check: {', '.join(r['disagreements']) or 'none'}"
        )
    print()
    for name, r in checks.items():
        print(f"{name}: faulty columns found in {FAULTY} only: {_verdict(r, features)}")
        for scope, status in r["status"].items():
            print(f"  {scope:<12} {status:<26} {', '.join(r['drifted'][scope]) or '-'}")
    print()
    for name, r in checks.items():
        if "phases" in r:
            phases = ", ".join(f"{k} {v:.1f} s" for k, v in r["phases"].items())
            imports = r["seconds_in_process"] - sum(r["phases"].values())
            print(f"{name} wall time by phase: {phases}, imports and the rest {imports:.1f} s")
            print(f"  reports before the alert: {', '.join(r['reports']) or 'none'}; after: {', '.join(r['pending'])}")
    if "demo" in results:
        r = results["demo"]
        print(
            f"demo window ({r['rows']:,} records, {DEMO_DEVICES} devices x {DEMO_WINDOW_SECONDS} s): "
            f"check {r['check_seconds']:.2f} s; an Evidently report per scope ({r['evidently_reports']}) "
            f"{r['evidently_seconds']:.1f} s; "
            + "; ".join(
                f"{k} {v}{' ' + ', '.join(r['drifted'][k]) if r['drifted'][k] else ''}" for k, v in r["status"].items()
            )
        )
    print()
    plain = results.get("plain")
    for name, r in checks.items():
        if not name.startswith("edgeloop"):
            continue
        targets = {
            f"wall <= {TARGET_SECONDS:.0f} s": r["wall_seconds"] <= TARGET_SECONDS,
            f"peak RSS <= {TARGET_MB:.0f} MB": r["peak_rss_mb"] <= TARGET_MB,
            "right group and columns": _verdict(r, features) == "yes",
        }
        if plain is not None:
            speedup = plain["wall_seconds"] / r["wall_seconds"]
            targets[f">= {TARGET_SPEEDUP:.0f}x faster than plain ({speedup:.1f}x)"] = speedup >= TARGET_SPEEDUP
        print(f"{name} targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in targets.items()))
    if "demo" in results:
        met = results["demo"]["check_seconds"] <= TARGET_DEMO_SECONDS
        print(f"demo targets: check <= {TARGET_DEMO_SECONDS:.0f} s {'met' if met else 'NOT met'}")
    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.1f} on {os.cpu_count()} cores (wall times include waiting for a CPU)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference-rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument(
        "--variants",
        default="edgeloop,edgeloop:wasserstein,reports,plain,demo",
        help="edgeloop (spec method auto), edgeloop:<method> (the spec names a method), reports (after "
        "edgeloop), plain, demo",
    )
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--keys", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        _child(args)
        return 0

    port = _free_port()
    moto = _start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        keys = prepare(endpoint, args.rows, args.reference_rows, args.columns)
        print(
            f"data: {args.rows:,} window rows and {args.reference_rows:,} reference rows x {args.columns} features, "
            f"{len(GROUPS)} groups, fault on {', '.join(_faulty_columns(_features(args.columns)))} in {FAULTY} "
            f"(written to S3 in {time.perf_counter() - started:.1f} s)",
            flush=True,
        )
        print(f"load average before the variants: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(keys, handle)
        results = {v: _run_variant(v, endpoint, handle.name, args.columns) for v in args.variants.split(",")}
        Path(handle.name).unlink()
    finally:
        moto.terminate()
        moto.wait(timeout=30)

    print_table(results, _features(args.columns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
