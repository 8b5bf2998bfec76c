"""Kill test of ingestion: SIGKILL an ingest process at many random points, restart it, then count.

Each round produces a few hundred records (some malformed) into a fresh topic, then
starts an ingest process and kills it: either right after a chosen durable step
(after a consume, after the flush marker, after an object, after the offset commit)
or after a random delay (in the middle of an upload or a decode). After the last
kill a clean run catches up, and every Parquet and dead-letter object is read back:
each produced record must be stored exactly once, good ones in Parquet, bad ones
in dead-letter objects.

    PYTHONPATH=include .venv/bin/python benchmarks/soak_ingest.py --kills 1000

Endpoints come from the EDGELOOP_* variables, else from the running local stack.
The integration test `tests/integration/ingest/test_ingest_crash.py` runs the same
code with 50 kills.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "include") not in sys.path:
    sys.path.insert(0, str(REPO / "include"))

from edgeloop.spec import PipelineSpec, load_spec  # noqa: E402

DEMO_SPEC = REPO / "include" / "pipelines" / "factory_maintenance.yaml"
KILL_STEPS = ("consumed", "marker", "object", "committed")
MALFORMED = (
    b"\xff\xfe not utf-8",
    b'{"record_id": "half a record"',
    b'{"record_id": 7}',
    b"[1, 2, 3]",
    b"",
)


# --- shared helpers (the benchmark and the integration tests use them too) -----------------


def ingest_spec(
    *, bucket: str, topic_prefix: str, storage_prefix: str, partitions: int = 3, **ingest: Any
) -> PipelineSpec:
    """The demo spec on fresh topics and a fresh storage prefix, with ingest settings overridden.

    Records are replayed at fixed dates (March 2026), so they may be older than the spec's
    `max_record_age` allows unless a test says otherwise.
    """
    ingest = {"max_record_age": timedelta(days=3650), **ingest}
    base = load_spec(DEMO_SPEC)
    return base.model_copy(
        update={
            "topics": base.topics.model_copy(update={"prefix": topic_prefix, "partitions": partitions}),
            "storage": base.storage.model_copy(update={"bucket": bucket, "prefix": storage_prefix}),
            "ingest": base.ingest.model_copy(update=ingest),
        }
    )


def make_record(spec: PipelineSpec, record_id: str, ts: datetime, rng: random.Random) -> dict[str, Any]:
    """One valid record of the spec's schema (about 300 bytes for the demo spec)."""
    record: dict[str, Any] = {}
    for f in spec.schema_:
        if f.role == "record_id":
            record[f.name] = record_id
        elif f.role == "timestamp":
            record[f.name] = ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        elif f.role == "device_id":
            record[f.name] = f"dev-{rng.randrange(500):04d}"
        elif f.role == "group_id":
            record[f.name] = rng.choice(("plant-north", "plant-south", "line-canary"))
        elif f.role == "confidence":
            record[f.name] = round(rng.random(), 4)
        elif f.type == "float":
            record[f.name] = round(rng.uniform(0, 100), 3)
        elif f.type == "int":
            record[f.name] = rng.randrange(1000)
        elif f.type == "bool":
            record[f.name] = rng.random() < 0.5
        elif f.type == "timestamp":
            record[f.name] = ts.isoformat()
        else:
            record[f.name] = rng.choice(("normal", "wear", "fault")) if f.role == "prediction" else "v7"
    return record


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)


def produce(bootstrap: str, topic: str, messages: list[tuple[int | None, bytes | None]]) -> list[tuple[int, int]]:
    """Produce (partition, value) messages; return the (partition, offset) of each, in order."""
    from confluent_kafka import KafkaError, Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000, "enable.idempotence": True}
    )
    where: list[tuple[int, int] | None] = [None] * len(messages)
    errors: list[KafkaError] = []

    def delivered(index: int) -> Callable[[KafkaError | None, Any], None]:
        def callback(error: KafkaError | None, message: Any) -> None:
            if error is not None:
                errors.append(error)
            else:
                where[index] = (message.partition(), message.offset())

        return callback

    for index, (partition, value) in enumerate(messages):
        kwargs: dict[str, Any] = {"on_delivery": delivered(index)}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                producer.produce(topic, value, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        if index % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)
    if errors or any(w is None for w in where):
        raise RuntimeError(f"producing to {topic} failed: {errors[:3]}")
    return [w for w in where if w is not None]


@dataclass
class Stored:
    """What the object store holds for one topic, read back from every object."""

    record_ids: Counter[str] = field(default_factory=Counter)
    deadletter_offsets: Counter[tuple[int, int]] = field(default_factory=Counter)
    deadletter_reasons: dict[tuple[int, int], str] = field(default_factory=dict)
    raw_offsets: Counter[tuple[int, int]] = field(default_factory=Counter)
    objects: int = 0


def read_back(s3: Any, spec: PipelineSpec, topic: str) -> Stored:
    import pyarrow.parquet as pq

    from edgeloop.ingest import deadletter_prefix, raw_prefix
    from edgeloop.storage import get_bytes, list_keys

    bucket = spec.storage.bucket
    id_field = spec.field_with_role("record_id") or "record_id"
    stored = Stored()
    for key in list_keys(s3, bucket, raw_prefix(spec, topic) + "/"):
        if "/_flushes/" in key:
            continue
        table = pq.read_table(io.BytesIO(get_bytes(s3, bucket, key)))
        stored.record_ids.update(table.column(id_field).to_pylist())
        pairs = zip(
            table.column("_kafka_partition").to_pylist(), table.column("_kafka_offset").to_pylist(), strict=True
        )
        stored.raw_offsets.update(pairs)
        stored.objects += 1
    for key in list_keys(s3, bucket, deadletter_prefix(spec, topic) + "/"):
        for line in get_bytes(s3, bucket, key).splitlines():
            entry = json.loads(line)
            where = (entry["partition"], entry["offset"])
            stored.deadletter_offsets[where] += 1
            stored.deadletter_reasons[where] = entry["reason"]
        stored.objects += 1
    return stored


def s3_client(endpoint: str, **config: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "edgeloop"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "edgeloop"),
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(**config) if config else None,
    )


def stack_endpoints() -> dict[str, str]:
    """EDGELOOP_* endpoints from the environment, else from the running local stack's env file."""
    if os.environ.get("EDGELOOP_KAFKA_BOOTSTRAP"):
        return dict(os.environ)
    from edgeloop.devstack import stack

    env = stack.read_env_file()
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    return env


# --- the kill test ---------------------------------------------------------------------------


@dataclass
class SoakResult:
    produced_good: int
    produced_bad: int
    kills: int
    runs: int
    lost: int
    duplicates: int
    deadletter_lost: int
    deadletter_duplicates: int
    misplaced: int
    kill_steps: Counter[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.duplicates or self.deadletter_lost or self.deadletter_duplicates or self.misplaced
        )


def _ingest_child(
    spec_json: str, topic: str, bootstrap: str, endpoint: str, kill_at: tuple[str, int] | None, spool: str, report: str
) -> None:
    """Runs in a forked child: one ingest run that SIGKILLs itself at the n-th time it passes a given step."""
    from edgeloop.ingest import ingest_topic
    from edgeloop.spec import PipelineSpec
    from edgeloop.storage import RetryPolicy

    spec = PipelineSpec.model_validate_json(spec_json)
    seen: Counter[str] = Counter()

    def on_step(name: str) -> None:
        seen[name] += 1
        if kill_at is not None and (name, seen[name]) == kill_at:
            Path(report).write_text(name)
            os.kill(os.getpid(), signal.SIGKILL)

    ingest_topic(
        spec,
        topic,
        consumer_config={"bootstrap.servers": bootstrap},
        s3=s3_client(endpoint),
        spool_dir=Path(spool),
        retry=RetryPolicy(attempts=4, base_delay=0.05),
        on_step=on_step,
    )


def run_kill_test(
    *,
    bootstrap: str,
    endpoint: str,
    bucket: str,
    kills: int,
    seed: int = 7,
    partitions: int = 3,
    records_per_round: int = 240,
    spool_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> SoakResult:
    """Produce, ingest and SIGKILL `kills` times, catch up, then count lost and duplicated records."""
    import tempfile

    started = time.monotonic()
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:8]
    spec = ingest_spec(
        bucket=bucket,
        topic_prefix=f"soak_{run_id}",
        storage_prefix=f"soak/{run_id}",
        partitions=partitions,
        batch_size=40,
        file_max_records=90,
    )
    topic = spec.topic("telemetry")
    create_topic(bootstrap, topic, partitions)
    spool_root = Path(tempfile.mkdtemp(prefix="edgeloop-soak-", dir=spool_dir))
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["edgeloop.ingest", "boto3", "confluent_kafka", "pyarrow.parquet"])

    good: dict[str, int] = {}
    bad: set[tuple[int, int]] = set()
    produced = 0
    clock = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    killed = 0
    runs = 0
    steps: Counter[str] = Counter()

    def produce_round() -> None:
        nonlocal produced, clock
        messages: list[tuple[int | None, bytes | None]] = []
        ids: list[str | None] = []
        for _ in range(records_per_round):
            partition = produced % partitions
            if rng.random() < 0.04:
                value = rng.choice(MALFORMED)
                messages.append((partition, value or None))
                ids.append(None)
            else:
                record_id = f"{run_id}-{produced}"
                clock += timedelta(seconds=53)  # an hour boundary every ~70 records: flushes span hours
                messages.append((partition, json.dumps(make_record(spec, record_id, clock, rng)).encode()))
                ids.append(record_id)
            produced += 1
        for record_id, where in zip(ids, produce(bootstrap, topic, messages), strict=True):
            if record_id is None:
                bad.add(where)
            else:
                good[record_id] = 1

    spec_json = spec.model_dump_json(by_alias=True)
    while killed < kills:
        if runs % 2 == 0:
            produce_round()
        runs += 1
        report = spool_root / f"kill-{runs}.txt"
        by_step = rng.random() < 0.75
        kill_at = (rng.choice(KILL_STEPS), rng.randint(1, 4)) if by_step else None
        child = context.Process(
            target=_ingest_child,
            args=(spec_json, "telemetry", bootstrap, endpoint, kill_at, str(spool_root), str(report)),
        )
        child.start()
        if not by_step:
            time.sleep(rng.uniform(0.02, 0.5))
            if child.is_alive():
                os.kill(child.pid or 0, signal.SIGKILL)
        child.join(120)
        if child.is_alive():
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join()
            raise RuntimeError(f"ingest child of run {runs} hung for 120 s")
        if child.exitcode == -signal.SIGKILL:
            killed += 1
            steps[report.read_text() if report.exists() else "timed"] += 1
            report.unlink(missing_ok=True)
        elif child.exitcode != 0:
            raise RuntimeError(f"ingest child of run {runs} failed with exit code {child.exitcode}")
        if killed and killed % 100 == 0 and child.exitcode == -signal.SIGKILL:
            log(f"  {killed} kills after {time.monotonic() - started:.0f}s")

    # Catch up without kills, then read everything back.
    from edgeloop.ingest import ingest_topic

    s3 = s3_client(endpoint)
    result = ingest_topic(spec, "telemetry", consumer_config={"bootstrap.servers": bootstrap}, s3=s3)
    if result["lag_total"]:
        raise RuntimeError(f"the final run did not catch up: {result}")
    stored = read_back(s3, spec, topic)
    shutil.rmtree(spool_root, ignore_errors=True)  # spool files of killed runs

    lost = sum(1 for record_id in good if stored.record_ids[record_id] == 0)
    duplicates = sum(n - 1 for n in stored.record_ids.values() if n > 1)
    dl_lost = sum(1 for where in bad if stored.deadletter_offsets[where] == 0)
    dl_duplicates = sum(n - 1 for n in stored.deadletter_offsets.values() if n > 1)
    misplaced = sum(1 for record_id in stored.record_ids if record_id not in good) + sum(
        1 for where in stored.deadletter_offsets if where not in bad
    )
    return SoakResult(
        produced_good=len(good),
        produced_bad=len(bad),
        kills=killed,
        runs=runs + 1,
        lost=lost,
        duplicates=duplicates,
        deadletter_lost=dl_lost,
        deadletter_duplicates=dl_duplicates,
        misplaced=misplaced,
        kill_steps=steps,
        seconds=time.monotonic() - started,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=3)
    args = parser.parse_args(argv)
    env = stack_endpoints()
    print(f"kill test: {args.kills} SIGKILLs, seed {args.seed}")
    result = run_kill_test(
        bootstrap=env["EDGELOOP_KAFKA_BOOTSTRAP"],
        endpoint=env["EDGELOOP_S3_ENDPOINT"],
        bucket=env.get("EDGELOOP_BUCKET", "edgeloop"),
        kills=args.kills,
        seed=args.seed,
        partitions=args.partitions,
    )
    rows = [
        ("kills", result.kills),
        ("ingest runs", result.runs),
        ("kill points", ", ".join(f"{k}={v}" for k, v in sorted(result.kill_steps.items()))),
        ("records produced (good / malformed)", f"{result.produced_good} / {result.produced_bad}"),
        ("lost records", result.lost),
        ("duplicate records", result.duplicates),
        ("lost dead letters", result.deadletter_lost),
        ("duplicate dead letters", result.deadletter_duplicates),
        ("misplaced (good in dead-letter or bad in raw)", result.misplaced),
        ("seconds", f"{result.seconds:.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print("PASS" if result.ok else "FAIL")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
