"""Kafka -> object storage throughput: raw consume loop vs Airflow's ConsumeFromTopicOperator vs edgeloop.

Produces N JSON records (default 1,000,000, about 300 bytes each, demo spec schema)
into a fresh 6-partition topic of the running stack, then measures in one run:

  (a) raw:      a confluent-kafka consume() loop that decodes each value (json.loads) and
                discards it: the ceiling of any Python consumer on this machine;
  (b) operator: Airflow's ConsumeFromTopicOperator as its documentation shows it, an
                `apply_function` per message, here writing each record to S3 with S3Hook;
                connections from AIRFLOW_CONN_* variables, execute() called directly;
                capped at --operator-records and extrapolated (rate = records / time);
  (b2) operator, batch: the same operator with `apply_function_batch` writing one
                JSON-lines object per batch (not in the docs' example; shown for fairness);
  (c) edgeloop: `ingest_topic` over all N records in a process of its own (peak RSS of
                that process), then a second run on the caught-up topic.

Every consumer runs in its own process, one after the other. Rates are records per
second of wall time from the first poll to the last write.

    PYTHONPATH=include .venv/bin/python benchmarks/bench_ingest.py [--records N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from benchmarks.soak_ingest import (  # noqa: E402
    create_topic,
    ingest_spec,
    make_record,
    produce,
    s3_client,
    stack_endpoints,
)

PARTITIONS = 6


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the measured consumers (each runs in a child process) ---------------------------------


def run_raw(env: dict[str, str], topic: str, records: int) -> dict[str, Any]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": env["EDGELOOP_KAFKA_BOOTSTRAP"],
            "group.id": f"bench-raw-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    loads = json.loads
    seen = 0
    started = time.monotonic()
    while seen < records:
        for message in consumer.consume(num_messages=10_000, timeout=1.0):
            if message.error() is None:
                loads(message.value())
                seen += 1
    seconds = time.monotonic() - started
    consumer.close()
    return {"records": seen, "seconds": seconds, "rss_mb": _peak_rss_mb()}


def _operator_connections(env: dict[str, str], group: str) -> None:
    kafka_extra = {
        "bootstrap.servers": env["EDGELOOP_KAFKA_BOOTSTRAP"],
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": "false",
    }
    os.environ["AIRFLOW_CONN_BENCH_KAFKA"] = json.dumps({"conn_type": "kafka", "extra": kafka_extra})
    os.environ["AIRFLOW_CONN_BENCH_S3"] = json.dumps(
        {
            "conn_type": "aws",
            "login": os.environ.get("AWS_ACCESS_KEY_ID", "edgeloop"),
            "password": os.environ.get("AWS_SECRET_ACCESS_KEY", "edgeloop"),
            "extra": {"endpoint_url": env["EDGELOOP_S3_ENDPOINT"], "region_name": "us-east-1"},
        }
    )


def run_operator(env: dict[str, str], topic: str, records: int, bucket: str, batch: bool) -> dict[str, Any]:
    _operator_connections(env, f"bench-op-{uuid.uuid4().hex[:6]}")
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.apache.kafka.operators.consume import ConsumeFromTopicOperator

    hook = S3Hook(aws_conn_id="bench_s3")
    prefix = f"bench/operator/{uuid.uuid4().hex[:8]}"
    written = 0

    def write_record(message: Any) -> None:
        nonlocal written
        record = json.loads(message.value())
        key = f"{prefix}/{message.partition()}-{message.offset()}.json"
        hook.load_string(json.dumps(record), key=key, bucket_name=bucket, replace=True)
        written += 1

    def write_batch(messages: list[Any]) -> None:
        nonlocal written
        lines = [json.dumps(json.loads(m.value())) for m in messages if m.error() is None]
        first = messages[0]
        key = f"{prefix}/{first.partition()}-{first.offset()}-{len(lines)}.jsonl"
        hook.load_bytes("\n".join(lines).encode(), key=key, bucket_name=bucket, replace=True)
        written += len(lines)

    consume_from_topic = ConsumeFromTopicOperator(
        task_id="consume_from_topic",
        kafka_config_id="bench_kafka",
        topics=[topic],
        apply_function=None if batch else write_record,
        apply_function_batch=write_batch if batch else None,
        commit_cadence="end_of_batch",
        max_messages=records,
        max_batch_size=10_000 if batch else 1_000,
        poll_timeout=10,
    )
    started = time.monotonic()
    consume_from_topic.execute(context={})
    seconds = time.monotonic() - started
    return {"records": written, "seconds": seconds, "rss_mb": _peak_rss_mb()}


def run_edgeloop(env: dict[str, str], spec_json: str) -> dict[str, Any]:
    from edgeloop.ingest import ingest_topic
    from edgeloop.spec import PipelineSpec

    spec = PipelineSpec.model_validate_json(spec_json)
    s3 = s3_client(env["EDGELOOP_S3_ENDPOINT"])
    started = time.monotonic()
    result = ingest_topic(
        spec, "telemetry", consumer_config={"bootstrap.servers": env["EDGELOOP_KAFKA_BOOTSTRAP"]}, s3=s3
    )
    seconds = time.monotonic() - started
    return {
        "records": result["records"],
        "dead_letters": result["dead_letters"],
        "objects": len(result["objects"]),
        "bytes": result["bytes"],
        "lag": result["lag_total"],
        "seconds": seconds,
        "rss_mb": _peak_rss_mb(),
    }


def child(mode: str, args: dict[str, Any]) -> dict[str, Any]:
    env = stack_endpoints()
    if mode == "raw":
        return run_raw(env, args["topic"], args["records"])
    if mode in ("operator", "operator_batch"):
        return run_operator(env, args["topic"], args["records"], args["bucket"], batch=mode == "operator_batch")
    return run_edgeloop(env, args["spec"])


def in_child(mode: str, **args: Any) -> dict[str, Any]:
    """Run one consumer in a fresh Python process; also time the whole process (imports included)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--child-args", json.dumps(args)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "include"), str(REPO)]))},
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.monotonic() - started
    return result


# --- the run -------------------------------------------------------------------------------------


def produce_records(env: dict[str, str], spec: Any, topic: str, records: int) -> float:
    rng = random.Random(1)
    start = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    sizes = 0
    chunk = 100_000
    for first in range(0, records, chunk):
        messages: list[tuple[int | None, bytes | None]] = []
        for n in range(first, min(records, first + chunk)):
            value = json.dumps(make_record(spec, f"b-{n:08d}", start + timedelta(milliseconds=20 * n), rng)).encode()
            sizes += len(value)
            messages.append((n % PARTITIONS, value))
        produce(env["EDGELOOP_KAFKA_BOOTSTRAP"], topic, messages)
    return sizes / records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--operator-records", type=int, default=2_000)
    parser.add_argument("--operator-batch-records", type=int, default=100_000)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-args", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, json.loads(args.child_args))))
        return 0

    env = stack_endpoints()
    bucket = env.get("EDGELOOP_BUCKET", "edgeloop")
    run = uuid.uuid4().hex[:8]
    spec = ingest_spec(bucket=bucket, topic_prefix=f"bench_{run}", storage_prefix=f"bench/{run}", partitions=PARTITIONS)
    topic = spec.topic("telemetry")
    create_topic(env["EDGELOOP_KAFKA_BOOTSTRAP"], topic, PARTITIONS)
    print(f"producing {args.records:,} records into {topic} ({PARTITIONS} partitions)...", flush=True)
    t0 = time.monotonic()
    mean_size = produce_records(env, spec, topic, args.records)
    print(f"  {time.monotonic() - t0:.1f}s, mean value size {mean_size:.0f} bytes", flush=True)

    print("(a) raw consume() + json.loads loop...", flush=True)
    raw = in_child("raw", topic=topic, records=args.records)
    op_records = min(args.operator_records, args.records)
    print(f"(b) ConsumeFromTopicOperator, apply_function per message, {op_records:,} records...", flush=True)
    operator = in_child("operator", topic=topic, records=op_records, bucket=bucket)
    batch_records = min(args.operator_batch_records, args.records)
    print(f"(b2) ConsumeFromTopicOperator, apply_function_batch, {batch_records:,} records...", flush=True)
    operator_batch = in_child("operator_batch", topic=topic, records=batch_records, bucket=bucket)
    print("(c) edgeloop ingest_topic, all records...", flush=True)
    spec_json = spec.model_dump_json(by_alias=True)
    edgeloop = in_child("edgeloop", spec=spec_json)
    print("(d) edgeloop on the caught-up topic...", flush=True)
    caught_up = in_child("edgeloop", spec=spec_json)

    def rate(r: dict[str, Any]) -> float:
        return float(r["records"]) / float(r["seconds"])

    rows = [
        ("(a) raw consume + json.loads", raw["records"], rate(raw), raw["seconds"], raw["rss_mb"], ""),
        (
            "(b) ConsumeFromTopicOperator, per message",
            operator["records"],
            rate(operator),
            operator["seconds"],
            operator["rss_mb"],
            f"capped at {op_records:,}; rate extrapolated",
        ),
        (
            "(b2) ConsumeFromTopicOperator, per batch",
            operator_batch["records"],
            rate(operator_batch),
            operator_batch["seconds"],
            operator_batch["rss_mb"],
            f"capped at {batch_records:,}; rate extrapolated",
        ),
        (
            "(c) edgeloop ingest_topic",
            edgeloop["records"],
            rate(edgeloop),
            edgeloop["seconds"],
            edgeloop["rss_mb"],
            f"{edgeloop['objects']} Parquet objects, {edgeloop['bytes'] / 1e6:.1f} MB",
        ),
    ]
    print()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"{args.records:,} JSON records, mean {mean_size:.0f} bytes, {PARTITIONS} partitions, "
        f"{os.cpu_count()} cores, load average at the end {load} (broker, S3 server and consumer share the cores)"
    )
    print(f"{'consumer':<44}{'records':>10}{'records/s':>12}{'seconds':>9}{'peak RSS MB':>13}  note")
    for name, count, per_second, seconds, rss, note in rows:
        print(f"{name:<44}{count:>10,}{per_second:>12,.0f}{seconds:>9.1f}{rss:>13.0f}  {note}")
    ratios = {
        "edgeloop / raw": rate(edgeloop) / rate(raw),
        "edgeloop / operator per message": rate(edgeloop) / rate(operator),
        "edgeloop / operator per batch": rate(edgeloop) / rate(operator_batch),
    }
    print()
    targets = {"edgeloop / raw": 0.5, "edgeloop / operator per message": 20.0}
    for name, value in ratios.items():
        target = (
            f"(target >= {targets[name]:g}x: {'met' if value >= targets[name] else 'MISSED'})"
            if name in targets
            else ""
        )
        print(f"{name:<34}{value:>10.2f}x  {target}")
    print(
        f"{'edgeloop peak RSS':<34}{edgeloop['rss_mb']:>10.0f} MB (target <= 512 MB: "
        f"{'met' if edgeloop['rss_mb'] <= 512 else 'MISSED'})"
    )
    print(
        f"{'caught-up run (ingest_topic)':<34}{caught_up['seconds']:>10.2f} s  (target <= 5 s: "
        f"{'met' if caught_up['seconds'] <= 5 else 'MISSED'}); whole process with imports "
        f"{caught_up['process_seconds']:.2f} s, {caught_up['records']} records"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "records": args.records,
                    "mean_value_bytes": mean_size,
                    "raw": raw,
                    "operator": operator,
                    "operator_batch": operator_batch,
                    "edgeloop": edgeloop,
                    "caught_up": caught_up,
                    "ratios": ratios,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
