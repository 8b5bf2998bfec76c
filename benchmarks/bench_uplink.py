"""What leaves a device in raw mode and in profiles mode, and what merging profiles costs the cloud.

One device of the demo pipeline (`factory_maintenance`, 6 features, one reading a second) runs
for a simulated hour through the agent's own `DeviceCore` on the baseline ONNX model, once in
raw mode and once in profiles mode (60 s windows, the spec's default sampling), readings drawn
by the fleet simulator's sensor model (no drift; a second profiles run with a drifted group
shows the local-drift sampling). Bytes are the message values the agent queues and sends
(signed profiles included), uncompressed and as one zlib stream (a stand-in for the producer's
batch compression). CPU is process time per reading. The cloud side merges 10,000 devices'
hourly profiles (60 one-minute profiles each) per group as the drift stage does.

    make bench-uplink
"""

from __future__ import annotations

import statistics
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "include" / "pipelines" / "factory_maintenance.yaml"
HOUR = 3600
DEVICES = 10_000


@dataclass
class Uplink:
    mode: str
    records_sent: int
    profiles: int
    value_bytes: int
    compressed_bytes: int
    cpu_us_per_reading: float
    reasons: dict[str, int]


def one_device_hour(spec: Any, drifted: bool = False) -> Uplink:
    import json

    from edgeloop.contract.keys import Keyring, Signer
    from edgeloop.edge.config import parse_config
    from edgeloop.edge.device import DeviceCore
    from edgeloop.edge.runtime import load_model
    from edgeloop.fleet.agents import agent_config
    from edgeloop.simulator.baseline import baseline_onnx
    from edgeloop.training.sensors import DriftInjection, apply_drift, sensor_profile

    profile = sensor_profile(spec)
    rng = np.random.default_rng(11)
    states = profile.initial_states(HOUR, rng)
    readings = profile.sample(states, profile.device_bias(1, rng).repeat(HOUR, 0), np.zeros((HOUR, 6)), rng)
    if drifted:
        readings = apply_drift(readings, list(profile.features), [DriftInjection("plant-north", "temperature_c", 8.0)])
    raw = agent_config(spec, "plant-north", "plant-north-00001", {"bootstrap.servers": "127.0.0.1:1"}, "/tmp")
    clock = [0.0]
    t0 = 1_767_225_600.0
    core = DeviceCore.for_config(parse_config(raw), Keyring({}), identity=Signer.generate(), clock=lambda: clock[0])
    core.model = load_model(baseline_onnx(profile), "0", spec.features)
    proba = core.score(readings)
    assert proba is not None
    values: list[bytes] = []
    started = time.process_time()
    for i in range(HOUR):
        now = t0 + i
        clock[0] = now
        message = core.observe(readings[i], proba[i], now)
        if message is not None:
            values.append(message.value)
        values += [m.value for m in core.profiles_due(now)]
    values += [m.value for m in core.profiles_due(t0 + HOUR)]
    cpu = time.process_time() - started
    reasons: dict[str, int] = {}
    profiles = 0
    for value in values:
        if value.startswith(b"ELP1"):
            profiles += 1
            continue
        reason = json.loads(value).get("sample_reason", "all")
        reasons[reason] = reasons.get(reason, 0) + 1
    return Uplink(
        mode=spec.telemetry.mode,
        records_sent=sum(reasons.values()),
        profiles=profiles,
        value_bytes=sum(map(len, values)),
        compressed_bytes=len(zlib.compress(b"".join(values), 6)),
        cpu_us_per_reading=cpu / HOUR * 1e6,
        reasons=reasons,
    )


def merge_time(spec: Any, *, window_s: float, devices: int = DEVICES) -> dict[str, float]:
    """Merge an hour of `devices` devices' profiles (windows of `window_s`) per scope, as the drift stage does."""
    from edgeloop.contract.profile import decode_profile, encode_profile
    from edgeloop.drift.profiles import merge_profiles
    from edgeloop.drift.synthetic import make_telemetry
    from edgeloop.simulator.replay import replay_profiles

    groups = [g.name for g in spec.groups]
    frame = make_telemetry(
        spec.features, dict.fromkeys(groups, 20 * HOUR), seed=3, duration=timedelta(hours=1), devices_per_group=20
    )
    templates, _ = replay_profiles(
        frame, spec.features, pipeline=spec.name, window_s=window_s, k=spec.telemetry.sketch_k
    )
    wire = [encode_profile(p) for p in templates]
    total = devices * round(HOUR / window_s)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        decoded = (decode_profile(wire[i % len(wire)], check_sketches=False) for i in range(total))
        scopes = merge_profiles(decoded)
        timings.append(time.perf_counter() - started)
    fleet = next(s for k, s in scopes.items() if k.kind == "fleet")
    return {
        "profiles": total,
        "bytes": sum(len(wire[i % len(wire)]) for i in range(total)),
        "median_s": statistics.median(timings),
        "worst_s": max(timings),
        "records": fleet.records,
    }


def _row(label: str, u: Uplink, raw: Uplink) -> str:
    share = u.records_sent / HOUR
    return (
        f"| {label} | {u.records_sent:,} ({share:.1%}) | {u.profiles} | {u.value_bytes / 1024:,.1f} KiB"
        f" | {raw.value_bytes / u.value_bytes:.1f}x | {u.compressed_bytes / 1024:,.1f} KiB"
        f" | {raw.compressed_bytes / u.compressed_bytes:.1f}x | {u.cpu_us_per_reading:.0f} µs |"
    )


def main() -> int:
    sys.path.insert(0, str(ROOT / "include"))
    from edgeloop.spec import load_spec, with_profiles

    demo = load_spec(DEMO)
    variants: list[tuple[str, Callable[[], Uplink]]] = [
        ("raw (every record)", lambda: one_device_hour(demo)),
        ("profiles, 60 s windows", lambda: one_device_hour(with_profiles(demo))),
        ("profiles, 60 s, k=16", lambda: one_device_hour(with_profiles(demo, sketch_k=16))),
        ("profiles, 300 s windows", lambda: one_device_hour(with_profiles(demo, window=timedelta(seconds=300)))),
        ("profiles, 60 s, device drifting", lambda: one_device_hour(with_profiles(demo), drifted=True)),
    ]
    results = [(label, run()) for label, run in variants]
    raw = results[0][1]
    print("\nOne device-hour of the demo pipeline (3,600 readings, 1/s):\n")
    print("| mode | records sent | profiles | bytes sent | less than raw | zlib | less (zlib) | CPU / reading |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, u in results:
        print(_row(label, u, raw))
    print("\nWhy records were sent:", {label: u.reasons for label, u in results})
    print(f"\nCloud merge of {DEVICES:,} devices' profiles of one hour, per scope (3 runs; target 2 s):\n")
    print("| profiles | profile window | bytes | records | median | worst |")
    print("|---:|---:|---:|---:|---:|---:|")
    for window_s in (3600.0, 60.0):
        m = merge_time(with_profiles(demo), window_s=window_s)
        print(
            f"| {m['profiles']:,} | {window_s:.0f} s | {m['bytes'] / 1e6:,.0f} MB | {m['records']:,}"
            f" | {m['median_s']:.1f} s | {m['worst_s']:.1f} s |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
