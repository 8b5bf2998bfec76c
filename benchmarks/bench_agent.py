"""Edge agent benchmark: model latency, memory, artifact size and store-and-forward drain, side by side.

In one run, on this machine:
1. single-row latency (p50/p99 over many calls) of the demo spec's estimator (a random
   forest trained on simulated readings): the agent's ONNX path (`OnnxModel.predict_proba`)
   against raw onnxruntime and scikit-learn `predict_proba` on a one-row frame (how devices
   scored before); batch throughput (1,000 rows); artifact size, ONNX against pickle;
2. resident memory of an agent process idle and under load (a stdin source fed as fast as it
   takes), against a bare Python process that imports scikit-learn and pandas and unpickles
   the same model (the old device's footprint);
3. store-and-forward: the queue's bytes per record and its drain rate to Kafka after an
   outage (N records queued, then the agent's `Sender` empties it exactly once), against a
   plain confluent-kafka producer sending the same messages with no queue; what a day offline
   at the demo rate (1 record/s) takes of the default queue cap.

Needs a Kafka broker: EDGELOOP_KAFKA_BOOTSTRAP, and the operator's signing key EDGELOOP_SIGNING_KEY (and
EDGELOOP_TRUSTED_KEYS), from the environment or the running stack's env file (`make bench-agent` starts
the stack): the agent of section 2 is enrolled with it, as `edgeloop agent enrol` does, and trusts its
public half; it never sees the private key.
Usage: PYTHONPATH=include .venv/bin/python benchmarks/bench_agent.py [--records 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from edgeloop.contract.keys import (
    SIGNING_KEY_ENV,
    TRUSTED_KEYS_ENV,
    Keyring,
    Signer,
    signer_from_env,
    trusted_from_env,
)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "include" / "pipelines" / "factory_maintenance.yaml"


def percentiles(samples: list[float]) -> tuple[float, float]:
    values = np.asarray(samples) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def timed_calls(call: object, repeats: int) -> list[float]:
    assert callable(call)
    for _ in range(50):
        call()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def model_section(repeats: int) -> dict[str, object]:
    import onnxruntime as ort
    import pandas as pd

    from edgeloop.edge.runtime import load_model, session_options
    from edgeloop.spec import load_spec
    from edgeloop.training.estimators import for_inference, make_estimator, step_params
    from edgeloop.training.onnx_export import export_onnx
    from edgeloop.training.sensors import sensor_profile

    spec = load_spec(DEMO)
    profile = sensor_profile(spec)
    rng = np.random.default_rng(0)
    states = profile.initial_states(24_000, rng)
    rows = profile.sample(states, profile.device_bias(24_000, rng), np.zeros((24_000, len(spec.features))), rng)
    frame = pd.DataFrame(rows, columns=spec.features)
    labels = np.array(profile.labels)[states]
    model = make_estimator(spec.training, n_jobs=2)
    model.set_params(**step_params({"n_estimators": 100, "max_depth": 10, "min_samples_leaf": 2}))
    model.fit(frame.iloc[:20_000], labels[:20_000])
    model = for_inference(model)
    exported = export_onnx(model, spec.features, frame.iloc[20_000:])
    agent_model = load_model(exported.data, "1", spec.features)
    session = ort.InferenceSession(exported.data, sess_options=session_options(), providers=["CPUExecutionProvider"])
    one = rows[20_000:20_001].astype(np.float32)
    one_frame = frame.iloc[20_000:20_001]
    batch = rows[20_000:21_000]
    results = {
        "edgeloop agent (OnnxModel.predict_proba)": timed_calls(lambda: agent_model.predict_proba(one), repeats),
        "raw onnxruntime session.run": timed_calls(lambda: session.run(["probabilities"], {"features": one}), repeats),
        "scikit-learn predict_proba (1-row frame)": timed_calls(lambda: model.predict_proba(one_frame), repeats),
    }
    throughput = {
        "edgeloop agent": 1000 / np.median(timed_calls(lambda: agent_model.predict_proba(batch), 30)),
        "scikit-learn": 1000 / np.median(timed_calls(lambda: model.predict_proba(frame.iloc[20_000:21_000]), 30)),
    }
    pickled = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    print("\n## 1. Model: single-row latency (ms), batch throughput, artifact size")
    print(f"{'path':<46} {'p50':>8} {'p99':>8}")
    for name, samples in results.items():
        p50, p99 = percentiles(samples)
        print(f"{name:<46} {p50:>8.3f} {p99:>8.3f}")
    sk50, sk99 = percentiles(results["scikit-learn predict_proba (1-row frame)"])
    ag50, ag99 = percentiles(results["edgeloop agent (OnnxModel.predict_proba)"])
    print(f"ratio scikit-learn / agent: p50 {sk50 / ag50:.1f}x, p99 {sk99 / ag99:.1f}x")
    for name, rate in throughput.items():
        print(f"batch of 1,000 rows, {name:<20} {rate:>12,.0f} rows/s")
    print(f"artifact: ONNX {len(exported.data) / 1e6:.2f} MB, pickle {len(pickled) / 1e6:.2f} MB")
    return {"onnx": exported.data, "pickle": pickled, "spec": spec, "profile": profile}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def memory_section(
    context: dict[str, object], bootstrap: str, folder: Path, operator: Signer, trusted: Keyring
) -> None:
    from edgeloop.fleet.agents import agent_config, enrol_device
    from edgeloop.fleet.topics import ensure_topics

    spec = context["spec"]
    onnx_path = folder / "model.onnx"
    onnx_path.write_bytes(context["onnx"])  # type: ignore[arg-type]
    kafka = {"bootstrap.servers": bootstrap}
    ensure_topics(spec, kafka)  # type: ignore[arg-type]
    device_id = f"bench-{uuid.uuid4().hex[:6]}"
    # the agent refuses to start without its own key: made and registered as `edgeloop agent enrol` does
    key_file = folder / "agent" / "device.key"
    enrol_device(spec, kafka, operator, "plant-north", device_id, key_file)  # type: ignore[arg-type]
    config = agent_config(
        spec,  # type: ignore[arg-type]
        "plant-north",
        device_id,
        {"bootstrap.servers": bootstrap},
        folder / "agent",
        source={"kind": "stdin"},
        initial_model={"path": str(onnx_path), "version": "1"},
        heartbeat_interval_s=5,
    )
    config_path = folder / "agent.json"
    config_path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if k != SIGNING_KEY_ENV}  # a device holds public keys only
    env |= {
        "PYTHONPATH": str(ROOT / "include"),
        TRUSTED_KEYS_ENV: " ".join(trusted.hex_keys()),
    }
    agent = subprocess.Popen(
        [sys.executable, "-m", "edgeloop.edge.agent", "--config", str(config_path), "--log-level", "WARNING"],
        stdin=subprocess.PIPE,
        env=env,
    )
    assert agent.stdin is not None
    time.sleep(8)
    idle = rss_mb(agent.pid)
    line = (json.dumps([2.0, 6.0, 55.0, 12.0, 1480.0, 70.0]) + "\n").encode()
    fed, peak, start = 0, idle, time.monotonic()
    while time.monotonic() - start < 15:
        agent.stdin.write(line * 200)
        fed += 200
        time.sleep(0.02)
        peak = max(peak, rss_mb(agent.pid))
    agent.stdin.close()
    agent.terminate()
    agent.wait(30)
    pickle_path = folder / "model.pkl"
    pickle_path.write_bytes(context["pickle"])  # type: ignore[arg-type]
    code = (
        "import pickle, time, pandas, sklearn.ensemble; "
        f"m = pickle.load(open({str(pickle_path)!r}, 'rb')); "
        "m.predict_proba(pandas.DataFrame([[2, 6, 55, 12, 1480, 70]], columns=m.feature_names_in_)); "
        "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
    )
    old = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) / 1024
    print("\n## 2. Memory (resident, MB)")
    print(f"{'agent process, idle (model loaded, Kafka connected)':<60} {idle:>8.1f}")
    print(f"{'agent process, under load (' + f'{fed / 15:,.0f} readings/s fed' + ')':<60} {peak:>8.1f}")
    print(f"{'python + pandas + scikit-learn + the pickled model':<60} {old:>8.1f}")


def drain_section(bootstrap: str, folder: Path, records: int, trusted: Keyring) -> None:
    from confluent_kafka import Producer

    from edgeloop.edge.agent import Sender
    from edgeloop.edge.config import parse_config
    from edgeloop.edge.device import DeviceCore
    from edgeloop.edge.outbox import Outbox
    from edgeloop.fleet.agents import agent_config
    from edgeloop.spec import load_spec

    spec = load_spec(DEMO)
    config = parse_config(
        agent_config(spec, "plant-north", f"drain-{uuid.uuid4().hex[:6]}", {"bootstrap.servers": bootstrap}, folder)
    )
    core = DeviceCore.for_config(config, trusted, identity=Signer.generate())  # telemetry is not signed anyway
    outbox = Outbox(folder / "drain.sqlite")
    topic = config.topic("telemetry")
    now = time.time()
    readings = [2.0, 6.0, 55.0, 12.0, 1480.0, 70.0]
    messages = [core.observe(readings, None, now - records + i) for i in range(records)]
    start = time.perf_counter()
    for chunk in range(0, records, 1000):
        outbox.put([(topic, m.key, m.value, m.ts_ms) for m in messages[chunk : chunk + 1000]])
    enqueue_rate = records / (time.perf_counter() - start)
    file_bytes = sum(p.stat().st_size for p in folder.glob("drain.sqlite*"))
    per_record = file_bytes / records
    stop = threading.Event()
    sender = Sender(config, outbox, stop, Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True}))
    start = time.perf_counter()
    while outbox.rows:
        sender.step()
    drain = records / (time.perf_counter() - start)
    sender.close()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    start = time.perf_counter()
    for m in messages:
        while True:
            try:
                producer.produce(topic, m.value, m.key, timestamp=m.ts_ms)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    raw = records / (time.perf_counter() - start)
    cap = config.queue_max_bytes
    day = 86_400 * per_record
    print(f"\n## 3. Store-and-forward ({records:,} telemetry records queued during an outage)")
    print(f"{'queue write (batches of 1,000)':<52} {enqueue_rate:>12,.0f} records/s")
    print(f"{'drain to Kafka, agent Sender (exactly once)':<52} {drain:>12,.0f} records/s")
    print(f"{'plain confluent-kafka producer, no queue':<52} {raw:>12,.0f} records/s")
    print(f"bytes per queued record (SQLite file incl. WAL): {per_record:,.0f}")
    print(
        f"24 h offline at 1 record/s: {day / 1e6:,.1f} MB of the default cap {cap / 1e6:,.0f} MB"
        f" ({cap / per_record / 3600:,.0f} h fit); oldest dropped first beyond it, counted in `dropped`"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    environ: dict[str, str] = dict(os.environ)
    if not environ.get("EDGELOOP_KAFKA_BOOTSTRAP") or not environ.get(SIGNING_KEY_ENV):
        from edgeloop.devstack import stack

        environ = {**stack.read_env_file(), **environ}
    bootstrap = environ["EDGELOOP_KAFKA_BOOTSTRAP"]
    operator = signer_from_env(environ)
    trusted = trusted_from_env(environ, operator)
    print(f"# edgeloop agent benchmark ({os.cpu_count()} cores)")
    context = model_section(args.repeats)
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        memory_section(context, bootstrap, Path(tmp), operator, trusted)
        drain_section(bootstrap, Path(tmp), args.records, trusted)


if __name__ == "__main__":
    main()
