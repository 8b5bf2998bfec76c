"""Faults for `make test-chaos`: kill -9 and restart a service of the test's own stack, by recorded pid.

A fault signals only a process group this stack started (`<state>/pids/<service>.json`, pid and
kernel start time both matching), never a process found by name. What a run checks afterwards is
read from the services themselves: objects in S3, versions and aliases in MLflow, messages on Kafka
topics and task states in Airflow's REST API. Each run adds a row to `<state>/chaos-report.json`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeloop.airflow_api import AirflowApi
from edgeloop.devstack import stack
from edgeloop.devstack.config import StackConfig
from edgeloop.spec import PipelineSpec


@dataclass
class Chaos:
    """The chaos stack: its config, endpoints, the pipeline the faults are tried on and a logged-in REST client."""

    cfg: StackConfig
    env: dict[str, str]
    spec: PipelineSpec
    api: AirflowApi

    def dag(self, stage: str) -> str:
        return f"{self.spec.name}__{stage}"


class FaultError(RuntimeError):
    """A fault could not be applied or the service did not come back."""


@dataclass
class FaultRow:
    """One line of the README's "Faults survived" table, measured by the run."""

    fault: str
    stage: str
    happened: str = ""
    recover_s: float | None = None
    lost: int | None = None
    duplicated: int | None = None
    passed: bool = False
    details: dict[str, Any] = field(default_factory=dict)


def kill_service(cfg: StackConfig, name: str) -> int:
    """SIGKILL the whole process group of the stack's `name` (workers and task processes with it); its pid."""
    pid = stack.process_pid(name, cfg)
    if pid is None:
        raise FaultError(f"{name} is not running in the stack at {cfg.state_dir}: nothing of ours to kill")
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and stack.process_pid(name, cfg) is not None:
        time.sleep(0.2)
    if stack.process_pid(name, cfg) is not None:
        raise FaultError(f"{name} (pid {pid}) still runs 30 s after SIGKILL")
    return pid


def freeze_service(cfg: StackConfig, name: str, seconds: float) -> int:
    """Stop the stack's `name` (SIGSTOP to its process group) for `seconds`, then let it go on (SIGCONT).

    An outage that keeps the service's state: it still accepts connections and answers none of them, as a
    hung server or a partitioned network does. (moto keeps its objects in memory: a kill would lose them.)"""
    pid = stack.process_pid(name, cfg)
    if pid is None:
        raise FaultError(f"{name} is not running in the stack at {cfg.state_dir}: nothing of ours to stop")
    os.killpg(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.killpg(pid, signal.SIGCONT)
    return pid


def descendants_running(cfg: StackConfig, service: str, marker: str) -> list[int]:
    """Pids descending from the stack's `service` (by parent pid: Airflow's task processes lead process groups
    of their own) whose command line holds `marker`."""
    leader = stack.process_pid(service, cfg)
    if leader is None:
        return []
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
    found = []
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1, leader):
            ancestor = parents.get(ancestor)
        if ancestor != leader:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in command:
            found.append(pid)
    return sorted(found)


def restart_service(cfg: StackConfig, name: str) -> float:
    """Start `name` again the way `edgeloop stack up` does and wait until it is healthy; seconds it took."""
    started = time.monotonic()
    stack.up(cfg, only=[name], progress=False)
    return time.monotonic() - started


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def task_states(api: AirflowApi, dag_id: str, run_id: str) -> dict[str, str | None]:
    return {ti["task_id"]: ti.get("state") for ti in api.task_instances(dag_id, run_id)}


def task_in_state(api: AirflowApi, dag_id: str, run_id: str, task_id: str, states: tuple[str, ...]) -> bool:
    try:
        return task_states(api, dag_id, run_id).get(task_id) in states
    except Exception:  # the api-server busy for a moment is not an answer
        return False


def read_topic(
    bootstrap: str, topic: str, timeout: float = 60.0, since_ms: int = 0
) -> list[tuple[bytes | None, bytes | None]]:
    """The messages of `topic` up to the end it had when the read started, (key, value); those older than
    `since_ms` (Kafka timestamp) left out."""
    import uuid

    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        partitions = list(metadata.topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        left = {p for p, end in ends.items() if end > 0}
        out: list[tuple[bytes | None, bytes | None]] = []
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            if message.offset() < ends[message.partition()] and message.timestamp()[1] >= since_ms:
                out.append((message.key(), message.value()))
            if message.offset() >= ends[message.partition()] - 1:
                left.discard(message.partition())
        if left:
            raise AssertionError(f"{topic}: partitions {sorted(left)} not read to their end in {timeout:.0f} s")
        return out
    finally:
        consumer.close()


def orders_per_target(bootstrap: str, topic: str, assignment_ids: set[str]) -> Counter[tuple[str, str]]:
    """How many times each (target key, assignment id) of `assignment_ids` was published on the control topic."""
    counts: Counter[tuple[str, str]] = Counter()
    for key, value in read_topic(bootstrap, topic):
        if not value:
            continue
        try:
            body = json.loads(value)
        except ValueError:
            continue
        if isinstance(body, dict) and body.get("id") in assignment_ids:
            counts[((key or b"").decode(), str(body["id"]))] += 1
    return counts


def switches_to(bootstrap: str, topic: str, version: str, since_ms: int = 0) -> Counter[str]:
    """Per device, how many times its reported model version became `version` (device-state history since
    `since_ms`: a registry emptied with S3 numbers its versions from 1 again, the topic remembers the old ones)."""
    last: dict[str, str | None] = {}
    switches: Counter[str] = Counter()
    for key, value in read_topic(bootstrap, topic, since_ms=since_ms):
        if not key or not value:
            continue
        try:
            reported = (json.loads(value).get("reported") or {}).get("model_version")
        except (ValueError, AttributeError):
            continue
        device = key.decode()
        now = str(reported) if reported is not None else None
        if now == version and last.get(device) != version:
            switches[device] += 1
        last[device] = now
    return switches


def record(cfg: StackConfig, row: FaultRow) -> None:
    """Add `row` to `<state>/chaos-report.json` and print it (the README table is written from these)."""
    path = cfg.state_dir / "chaos-report.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    rows.append({**asdict(row), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    path.write_text(json.dumps(rows, indent=2, default=str))
    print(
        f"\n  chaos: {row.fault} during {row.stage}: {row.happened}; recovered in {row.recover_s} s,"
        f" lost {row.lost}, duplicated {row.duplicated}, {'PASS' if row.passed else 'FAIL'}",
        flush=True,
    )
