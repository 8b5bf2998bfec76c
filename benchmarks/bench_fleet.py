"""Fleet simulator benchmark: 10,000 devices, 1 telemetry record/s and a heartbeat every 10 s each.

Runs `edgeloop fleet simulate` as a child process (the way users run it) on fresh
topics of a copy of the demo spec, for 60 s by default, and measures:

- achieved telemetry and heartbeat rates against the target, from the Kafka side
  (high watermarks over a steady 30 s window) and from the simulator's own counts;
- the simulator's CPU (cores used, steady window and whole run) and peak RSS;
- the time until a config assignment pushed to all devices is applied and
  reported by every one of them in device-state (target <= 10 s).

Needs a Kafka broker: EDGELOOP_KAFKA_BOOTSTRAP or --bootstrap. Orders and enrolments are
signed with EDGELOOP_SIGNING_KEY when it is set (the stack's key), else with a key made for
the run; the simulated devices get keys of their own and are enrolled at start, so their
reports count. The topics are deleted at the end unless --keep-topics. Usage:

    PYTHONPATH=include .venv/bin/python benchmarks/bench_fleet.py [--devices 10000] [--duration 60]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from edgeloop.contract.keys import SIGNING_KEY_ENV, Keyring, Signer, signer_from_env, trusted_from_env
from edgeloop.fleet.control import apply_progress, push_assignment
from edgeloop.fleet.health import fleet_status
from edgeloop.fleet.topics import reader_config, watermarks
from edgeloop.spec import PipelineSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "include" / "pipelines" / "factory_maintenance.yaml"


def bench_spec(folder: Path) -> tuple[PipelineSpec, Path]:
    data = yaml.safe_load(DEMO.read_text())
    name = f"bench_fleet_{uuid.uuid4().hex[:8]}"
    data["name"] = name
    data["topics"]["prefix"] = name
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path), path


def topic_total(consumer: Consumer, topic: str) -> int:
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return 0
    return sum(watermarks(consumer, TopicPartition(topic, p), 10.0)[1] for p in metadata.partitions)


class ProcessMonitor(threading.Thread):
    """Samples a process's CPU times and RSS; keeps the peak (VmHWM when the kernel reports it)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak_rss = 0
        self.cpu = 0.0
        self.stop = threading.Event()

    def sample(self) -> float:
        try:
            times = self.process.cpu_times()
            self.cpu = times.user + times.system
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            status = Path(f"/proc/{self.process.pid}/status")
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss = max(self.peak_rss, int(line.split()[1]) * 1024)
        except (psutil.Error, OSError):
            pass
        return self.cpu

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.sample()


def wait_for_topic(consumer: Consumer, topic: str, minimum: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while topic_total(consumer, topic) < minimum:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: fewer than {minimum} messages after {timeout}s")
        time.sleep(0.5)


def time_config_rollout(
    spec: PipelineSpec, kafka: dict[str, Any], signer: Signer, trusted: Keyring, devices: int, timeout: float
) -> dict[str, Any]:
    """Push a config to all devices; time until every device reports it in device-state."""
    topic = spec.topic("device-state")
    tail = Consumer(reader_config(kafka))
    metadata = tail.list_topics(topic, timeout=10).topics[topic]
    tail.assign(
        [TopicPartition(topic, p, watermarks(tail, TopicPartition(topic, p), 10.0)[1]) for p in metadata.partitions]
    )
    config = {"confidence_threshold": round(0.5 + secrets.randbelow(1000) / 10_000, 4)}
    started = time.monotonic()
    assignment = push_assignment(spec, kafka, signer, config=config, issuer="bench")
    published = time.monotonic() - started
    applied: set[str] = set()
    marks: dict[str, float] = {}
    while len(applied) < devices and time.monotonic() - started < timeout:
        for message in tail.consume(num_messages=5000, timeout=0.2):
            if message.error() is not None or message.value() is None:
                continue
            body = json.loads(message.value() or b"{}")
            if body.get("reported", {}).get("config_version") == assignment.config_version:
                applied.add(body["device_id"])
        elapsed = time.monotonic() - started
        for share in (0.5, 0.95, 1.0):
            if f"{share:.0%}" not in marks and len(applied) >= share * devices:
                marks[f"{share:.0%}"] = elapsed
    tail.close()
    progress = apply_progress(spec, kafka, assignment, trusted)
    return {"publish_s": published, "marks": marks, "applied": len(applied), "progress": progress.to_dict(max_ids=5)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--bootstrap", default=os.environ.get("EDGELOOP_KAFKA_BOOTSTRAP"))
    parser.add_argument("--keep-topics", action="store_true")
    args = parser.parse_args(argv)
    if not args.bootstrap:
        parser.error("set EDGELOOP_KAFKA_BOOTSTRAP or pass --bootstrap")
    kafka = {"bootstrap.servers": args.bootstrap}
    # the simulator child signs enrolments with the same key (64 hex digits are an Ed25519 private key)
    key = os.environ.get(SIGNING_KEY_ENV) or secrets.token_hex(32)
    env = {**os.environ, SIGNING_KEY_ENV: key, "PYTHONPATH": str(ROOT / "include")}
    signer = signer_from_env(env)
    trusted = trusted_from_env(env, signer)
    with tempfile.TemporaryDirectory() as folder:
        spec, spec_path = bench_spec(Path(folder))
        command = [
            sys.executable, "-m", "edgeloop.cli", "fleet", "simulate", "--spec", str(spec_path),
            "--bootstrap", args.bootstrap, "--devices", str(args.devices), "--duration", str(args.duration),
            "--models", "rules", "--telemetry-interval", "1", "--heartbeat-interval", "10",
        ]  # fmt: skip
        launched = time.monotonic()
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        monitor = ProcessMonitor(child.pid)
        monitor.start()
        probe = Consumer(reader_config(kafka))
        try:
            wait_for_topic(probe, spec.topic("telemetry"), args.devices, 120)
            ready = time.monotonic() - launched
            window = min(30.0, max(5.0, args.duration / 2 - 5))
            time.sleep(5.0)  # past the start-up burst
            t0, cpu0 = time.monotonic(), monitor.sample()
            tel0, hb0 = topic_total(probe, spec.topic("telemetry")), topic_total(probe, spec.topic("health"))
            time.sleep(window)
            t1, cpu1 = time.monotonic(), monitor.sample()
            tel1, hb1 = topic_total(probe, spec.topic("telemetry")), topic_total(probe, spec.topic("health"))
            rollout = time_config_rollout(spec, kafka, signer, trusted, args.devices, timeout=60)
            stdout, stderr = child.communicate(timeout=args.duration + 180)
            started = time.monotonic()
            status = fleet_status(spec, kafka, trusted, window_s=60.0, stale_after_s=120.0)
            status_s = time.monotonic() - started
            status_devices = sum(g.devices for g in status.groups)
        finally:
            if child.poll() is None:
                child.kill()
            monitor.stop.set()
        total_cpu = monitor.cpu
        wall = time.monotonic() - launched
        stats = json.loads(stdout[stdout.index("{") :]) if "{" in stdout else {}
        if child.returncode != 0:
            print(stderr[-3000:], file=sys.stderr)
        if not args.keep_topics:
            admin = AdminClient(kafka)
            for future in admin.delete_topics([*spec.all_topics, spec.topic("ground-truth")]).values():
                future.result(timeout=30)
        probe.close()

    span = t1 - t0
    tel_rate, hb_rate = (tel1 - tel0) / span, (hb1 - hb0) / span
    marks = rollout["marks"]
    rows = [
        ("devices", f"{args.devices:,}", f"{stats.get('devices', 0):,}"),
        ("start-up until first telemetry (s)", "-", f"{ready:.1f}"),
        (f"telemetry msg/s (Kafka, steady {span:.0f} s)", f"{args.devices:,}", f"{tel_rate:,.0f}"),
        (f"heartbeat msg/s (Kafka, steady {span:.0f} s)", f"{args.devices / 10:,.0f}", f"{hb_rate:,.0f}"),
        ("telemetry msg/s (simulator counts, whole run)", f"{args.devices:,}",
         f"{stats.get('telemetry', 0) / max(stats.get('elapsed_s', 1), 1e-9):,.0f}"),
        ("all device messages (telemetry+health+errors+state)", "-", f"{stats.get('messages', 0):,}"),
        ("simulator CPU, steady window (cores)", "<= 1.0", f"{(cpu1 - cpu0) / span:.2f}"),
        ("simulator CPU, whole run incl. start-up (cores)", "-", f"{total_cpu / wall:.2f}"),
        ("simulator peak RSS (MB)", "<= 1024", f"{monitor.peak_rss / 2**20:,.0f}"),
        ("max scheduling lag (s)", "-", f"{stats.get('max_lag_s', float('nan')):.2f}"),
        ("delivery failures", "0", f"{stats.get('delivery_failures', 'n/a')}"),
        ("config push: publish acknowledged (s)", "-", f"{rollout['publish_s']:.2f}"),
        ("config push: applied + reported by 50% (s)", "-", f"{marks.get('50%', float('nan')):.2f}"),
        ("config push: applied + reported by 95% (s)", "-", f"{marks.get('95%', float('nan')):.2f}"),
        (f"config push: applied + reported by all {args.devices:,} (s)", "<= 10",
         f"{marks.get('100%', float('nan')):.2f}"),
        ("config push: devices reporting it (device-state)", f"{args.devices:,}",
         f"{rollout['progress']['applied']:,}"),
        (f"fleet_status over {status_devices:,} devices, 2 min of heartbeats (s)", "-", f"{status_s:.2f}"),
        ("reports refused (unsigned, unknown device, bad signature, ...)", "0",
         f"{sum(status.refused_reports.values()):,}"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"\nedgeloop fleet benchmark ({os.cpu_count()} cores; broker and simulator share them)")
    print(f"{'metric':<{width}}  {'target':>10}  {'measured':>10}")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 10}")
    for name, target, measured in rows:
        print(f"{name:<{width}}  {target:>10}  {measured:>10}")
    return 0 if child.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
