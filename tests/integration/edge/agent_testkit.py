"""Real edge agents on loopback for integration tests: a private broker, artifacts in S3, agent processes.

The private broker is this test's own single-node KRaft Kafka (the stack's jars, a state
folder under the test's tmp_path, a free loopback port pair), so a test can kill it and
start it again on the same data folder and port without touching the shared stack.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgeloop.contract.artifact import ArtifactRef, content_key, sha256_hex
from edgeloop.devstack.config import Ports, StackConfig
from edgeloop.devstack.services import format_kafka_storage
from edgeloop.edge.agent import HTTP_PORT_FILE
from edgeloop.edge.outbox import Outbox
from edgeloop.spec import PipelineSpec
from edgeloop.training.sensors import SensorProfile

REPO = Path(__file__).resolve().parents[3]
RECORD_SEQ = "record_seq"  # the outbox counter of the last queued record's seq (see Agent.enqueue)

T = TypeVar("T")


def free_ports(n: int) -> list[int]:
    """`n` distinct free loopback ports (held open together while picked, so they differ)."""
    sockets = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Poll `check` until it returns something truthy; raise AssertionError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class PrivateKafka:
    """This test's own broker: formatted once, started, killed and started again on the same folder and port."""

    def __init__(self, libs: Path, folder: Path) -> None:
        port, controller = free_ports(2)
        ports = Ports(kafka=port, kafka_controller=controller)
        self.config = StackConfig(state_dir=folder, ports=ports, kafka_libs=libs)
        self.folder = folder / "kafka"
        format_kafka_storage(self.config)  # writes server.properties and log4j2.properties, formats data/
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.config.ports.kafka}"

    def start(self, timeout: float = 90.0) -> None:
        from confluent_kafka.admin import AdminClient

        log = (self.folder / "broker.log").open("ab")
        self.process = subprocess.Popen(
            [
                "java",
                "-Xms128m",
                "-Xmx384m",
                f"-Dlog4j2.configurationFile={self.folder / 'log4j2.properties'}",
                "-cp",
                str(self.config.kafka_libs / "*"),
                "kafka.Kafka",
                str(self.folder / "server.properties"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.starts += 1
        admin = AdminClient({"bootstrap.servers": self.bootstrap})

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"private broker exited: see {self.folder / 'broker.log'}")
            try:
                return bool(admin.list_topics(timeout=2).brokers)
            except Exception:  # not listening yet
                return False

        wait_until(f"the private broker on {self.bootstrap}", ready, timeout, interval=0.3)

    def kill(self) -> None:
        """SIGKILL by pid: a crash, not a clean stop."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        self.process = None

    def stop(self) -> None:
        """SIGTERM by pid, SIGKILL if it does not exit within 30 s."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        self.process = None


def upload_artifact(s3: Any, bucket: str, prefix: str, data: bytes, *, expires_s: int = 3600) -> ArtifactRef:
    """Put ONNX bytes in S3 under their digest and return a reference with a presigned GET URL."""
    digest = sha256_hex(data)
    key = content_key(prefix, digest)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_s)
    return ArtifactRef(url, digest, len(data))


def delete_prefix(s3: Any, bucket: str, prefix: str) -> None:
    """Remove every object under `prefix` (a test's own storage area)."""
    from edgeloop.storage import list_keys

    keys = list(list_keys(s3, bucket, prefix))
    for start in range(0, len(keys), 1000):
        chunk = [{"Key": k} for k in keys[start : start + 1000]]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})


def write_readings(path: Path, profile: SensorProfile, group: str, n: int, seed: int) -> Path:
    """A replay file of `n` readings of one device (JSON objects by feature name), drawn from the profile."""
    rng = np.random.default_rng(seed)
    states = np.empty(n, dtype=np.int8)
    state = profile.initial_states(1, rng)
    for i in range(n):
        states[i] = state[0]
        state = profile.step_states(state, rng)
    bias = np.repeat(profile.device_bias(1, rng), n, axis=0)
    offset = profile.group_offsets.get(group, np.zeros(len(profile.features)))
    rows = profile.sample(states, bias, offset, rng)
    path.write_text(
        "".join(json.dumps(dict(zip(profile.features, map(float, row), strict=True))) + "\n" for row in rows)
    )
    return path


_METRIC_LINE = re.compile(r"^([a-z_]+)\{[^}]*\} (\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """The agent's /metrics as name -> value (one device per agent, so names are unique)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _METRIC_LINE.match(line)
        if match:
            out[match.group(1)] = float(match.group(2))
    return out


def http_get(port: int | None, path: str, timeout: float = 2.0) -> bytes | None:
    """GET from an agent's loopback HTTP server; None while it does not answer (or has no port yet)."""
    if port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return bytes(response.read())
    except (urllib.error.URLError, OSError):
        return None


def agent_health(port: int | None) -> dict[str, Any] | None:
    body = http_get(port, "/healthz")
    return None if body is None else dict(json.loads(body))


def agent_metrics(port: int | None) -> dict[str, float] | None:
    body = http_get(port, "/metrics")
    return None if body is None else parse_metrics(body.decode())


@dataclass
class QueueAtRest:
    """An agent's store-and-forward queue read from its file after the process stopped."""

    rows: int
    dropped: int
    record_seq: int


def queue_at_rest(state_dir: Path) -> QueueAtRest:
    """Open a stopped agent's outbox: what is still queued, what was dropped, the last queued record's seq."""
    outbox = Outbox(state_dir / "outbox.sqlite")
    try:
        return QueueAtRest(outbox.rows, outbox.dropped, outbox.counter(RECORD_SEQ) or 0)
    finally:
        outbox.close()


def has_inflight_note(state_dir: Path) -> bool:
    """Whether a running agent's sender has a batch in flight (its note in the outbox), read without locking."""
    import sqlite3

    db = sqlite3.connect(f"file:{state_dir / 'outbox.sqlite'}?mode=ro", uri=True, timeout=0.5)
    try:
        return db.execute("SELECT 1 FROM meta WHERE name = 'inflight'").fetchone() is not None
    except sqlite3.OperationalError:  # busy for a moment: not seen this time
        return False
    finally:
        db.close()


@dataclass
class AgentProcess:
    """One `python -m edgeloop.edge.agent --config <file>` process, restartable on the same config and state."""

    device_id: str
    group: str
    config_path: Path
    state_dir: Path
    env: Mapping[str, str]
    process: subprocess.Popen[bytes] | None = None
    exit_codes: list[int] = field(default_factory=list)

    @classmethod
    def write(cls, config: Mapping[str, Any], env: Mapping[str, str]) -> AgentProcess:
        """Write `config` next to its state folder; give it `"http": {"port": 0, ...}` so the agent picks a free
        port itself (a port picked here and closed again can be taken by anything before the agent binds it)."""
        state_dir = Path(config["state_dir"])
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir.parent / f"{config['device_id']}.json"
        path.write_text(json.dumps(dict(config), indent=2))
        return cls(config["device_id"], config["group_id"], path, state_dir, env)

    @property
    def port(self) -> int | None:
        """The port this run of the agent bound, from the file it writes once listening; None before."""
        try:
            return int((self.state_dir / HTTP_PORT_FILE).read_text())
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        (self.state_dir / HTTP_PORT_FILE).unlink(missing_ok=True)  # the previous run's port
        log = (self.state_dir.parent / f"{self.device_id}.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edgeloop.edge.agent", "--config", str(self.config_path)],
            env=dict(self.env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL by pid: nothing runs after it, no drain, no state save."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.exit_codes.append(self.process.wait(30))

    def kill_in_flight(self, within: float) -> bool:
        """SIGKILL as soon as a batch is in flight (sent, not yet acknowledged), or at `within` s; True if in flight."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and not has_inflight_note(self.state_dir):
            time.sleep(0.002)
        caught = has_inflight_note(self.state_dir)
        self.kill()
        return caught

    def terminate(self) -> None:
        """SIGTERM by pid (the agent drains and saves its state); `wait` collects the exit code."""
        if self.alive:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        code = self.process.wait(timeout)
        self.exit_codes.append(code)
        return code

    def ensure_stopped(self) -> None:
        if self.alive:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def health(self) -> dict[str, Any] | None:
        return agent_health(self.port) if self.alive else None

    def metrics(self) -> dict[str, float] | None:
        return agent_metrics(self.port) if self.alive else None

    def log_tail(self, lines: int = 20) -> str:
        path = self.state_dir.parent / f"{self.device_id}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def all_of(agents: Iterable[AgentProcess], check: Callable[[AgentProcess], bool]) -> bool:
    return all(check(a) for a in agents)


def delete_pipeline_topics(spec: PipelineSpec, kafka_config: Mapping[str, Any]) -> None:
    """Remove the topics a test made for its pipeline (those that exist)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(dict(kafka_config))
    existing = set(admin.list_topics(timeout=10).topics)
    names = [t for t in spec.all_topics if t in existing]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result(timeout=30)


def enrolled_agent_env(
    spec: PipelineSpec, kafka_config: Mapping[str, Any], operator: Any, group: str, device: str, folder: Path
) -> dict[str, str]:
    """Enrol `device` in `group` with `operator`'s key (its own key under `folder/device`) and return the agent
    process's environment: the repository on its path, trusting only `operator`, and no signing key."""
    from edgeloop.contract.keys import SIGNING_KEY_ENV, TRUSTED_KEYS_ENV, public_hex
    from edgeloop.fleet.agents import enrol_device

    env = {**os.environ, "PYTHONPATH": str(REPO / "include"), TRUSTED_KEYS_ENV: public_hex(operator.public)}
    env.pop(SIGNING_KEY_ENV, None)
    enrol_device(spec, kafka_config, operator, group, device, folder / device / "device.key")
    return env


def replay_agent(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    operator: Any,
    group: str,
    device: str,
    folder: Path,
    profile: SensorProfile,
    baseline: Path,
    *,
    seed: int,
    telemetry_interval_s: float = 1.0,
) -> AgentProcess:
    """An agent of `group` enrolled with `operator`'s key, trusting only it, replaying 2,000 readings of
    `profile` and serving `baseline` as version "0": its config written, not started."""
    from edgeloop.fleet.agents import agent_config

    env = enrolled_agent_env(spec, kafka_config, operator, group, device, folder)
    readings = write_readings(folder / f"{device}.jsonl", profile, group, 2000, seed=seed)
    config = agent_config(
        spec,
        group,
        device,
        kafka_config,
        folder / device,
        source={"kind": "replay", "path": str(readings)},
        telemetry_interval_s=telemetry_interval_s,
        heartbeat_interval_s=2.0,
        http={"host": "127.0.0.1", "port": 0},
        initial_model={"path": str(baseline), "version": "0"},
    )
    return AgentProcess.write(config, env)


def camera_agent(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    operator: Any,
    group: str,
    device: str,
    folder: Path,
    spool: Path,
    *,
    heartbeat_interval_s: float = 2.0,
) -> AgentProcess:
    """A camera's agent of `group` (a camera pipeline), enrolled with `operator`'s key, trusting only it, taking
    frames from the spool directory `spool` and serving the pipeline's image baseline as version "0" (what the
    fleet simulator's cameras start on, `camera_baseline_onnx`): its config written, not started."""
    from edgeloop.fleet.agents import agent_config
    from edgeloop.simulator.baseline import camera_baseline_onnx

    env = enrolled_agent_env(spec, kafka_config, operator, group, device, folder)
    baseline = folder / "camera-baseline.onnx"
    baseline.write_bytes(camera_baseline_onnx(spec))
    config = agent_config(
        spec,
        group,
        device,
        kafka_config,
        folder / device,
        source={"kind": "images", "path": str(spool)},
        heartbeat_interval_s=heartbeat_interval_s,
        http={"host": "127.0.0.1", "port": 0},
        initial_model={"path": str(baseline), "version": "0"},
    )
    return AgentProcess.write(config, env)
