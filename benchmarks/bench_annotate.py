"""Annotation stage timings on the local stack's real S3 (moto) and Label Studio.

1. select a batch of 1,000 records out of 1,000,000 raw records of the drifted group
   (read every raw object of the window, rank, write the manifest and records snapshot),
2. open it in Label Studio (1,000 tasks with pre-annotations, the batch tab),
3. (not timed against a target) the simulated annotator labels it, one poll of the trigger,
4. export the 1,000 completed annotations as a curated version.

Targets: steps 1+2 <= 30 s, step 4 <= 30 s. Run with the stack up:
`set -a; . .edgeloop/stack.env; set +a; PYTHONPATH=include .venv/bin/python benchmarks/bench_annotate.py`
The benchmark's pipeline, objects and Label Studio project are removed at the end.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

from edgeloop.annotation.batch import open_batch, project_ref  # noqa: E402
from edgeloop.annotation.bot import annotate_bot  # noqa: E402
from edgeloop.annotation.export import export_dataset  # noqa: E402
from edgeloop.annotation.label_studio import LabelStudioBackend, LabelStudioSettings, project_title  # noqa: E402
from edgeloop.annotation.selection import select_batch, selection_request  # noqa: E402
from edgeloop.spec import PipelineSpec, load_spec  # noqa: E402

T = TypeVar("T")
TARGET_SECONDS = 30.0
GROUP = "plant-north"
LABELS_BY_HASH = 3


def bench_spec(batch_size: int) -> PipelineSpec:
    data = load_spec(REPO / "include" / "pipelines" / "factory_maintenance.yaml").model_dump(by_alias=True)
    run = uuid.uuid4().hex[:8]
    data["name"] = f"bench_annotate_{run}"
    data["topics"]["prefix"] = data["name"]
    data["storage"] = {"bucket": os.environ.get("EDGELOOP_BUCKET", "edgeloop"), "prefix": f"bench-annotate/{run}"}
    data["annotation"] = {**data["annotation"], "batch_size": batch_size, "completion_ratio": 1.0}
    return PipelineSpec.model_validate(data)


def write_raw(s3: Any, spec: PipelineSpec, records: int, objects: int, end: datetime) -> list[str]:
    """`records` telemetry records of one group, 120 devices, over the hour before `end`, as raw objects."""
    rng = np.random.default_rng(7)
    labels = spec.annotation.labels
    schema = pa.schema(
        [
            pa.field(
                f.name,
                {"float": pa.float64(), "string": pa.string(), "timestamp": pa.timestamp("us", tz="UTC")}[f.type],
                nullable=f.nullable,
            )
            for f in spec.schema_
        ]
    )
    per_object = records // objects
    start_us = int((end - timedelta(minutes=59)).timestamp() * 1e6)
    span_us = int(58 * 60 * 1e6)
    keys = []
    for index in range(objects):
        n = per_object
        stamps = np.sort(start_us + rng.integers(0, span_us, size=n))
        devices = rng.integers(0, 120, size=n)
        device_ids = np.char.add(f"{GROUP}-dev", devices.astype("U3"))
        record_ids = np.char.add(np.char.add(device_ids, "-"), (np.arange(n) + index * n).astype("U9"))
        columns: dict[str, Any] = {}
        for f in spec.schema_:
            if f.role == "record_id":
                columns[f.name] = pa.array(record_ids)
            elif f.role == "device_id":
                columns[f.name] = pa.array(device_ids)
            elif f.role == "group_id":
                columns[f.name] = pa.array(np.full(n, GROUP))
            elif f.role == "timestamp":
                columns[f.name] = pa.array(stamps, type=pa.timestamp("us", tz="UTC"))
            elif f.role == "prediction":
                columns[f.name] = pa.array(np.array(labels)[rng.integers(0, len(labels), size=n)])
            elif f.role == "confidence":
                columns[f.name] = pa.array(rng.uniform(0.3, 1.0, size=n))
            elif f.role in ("model_version", "config_version"):
                columns[f.name] = pa.array(np.full(n, "3"))
            else:
                columns[f.name] = pa.array(rng.normal(10, 2, size=n))
        table = pa.table(columns, schema=schema)
        hour = datetime.fromtimestamp(int(stamps[0]) / 1e6, tz=UTC)
        key = (
            f"{spec.storage_prefix('raw')}/{spec.topic('telemetry')}/dt={hour:%Y-%m-%d}/hour={hour:%H}/"
            f"{index % 6}-{index * n}-{index * n + n - 1}.parquet"
        )
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        s3.put_object(Bucket=spec.storage.bucket, Key=key, Body=sink.getvalue())
        keys.append(key)
    return keys


Row = tuple[str, float, float, str]


def timed(label: str, rows: list[Row], call: Callable[[], T], note: str = "") -> T:
    """Run `call`, recording wall seconds and this process's CPU seconds (the rest is servers and waiting)."""
    started, cpu = time.perf_counter(), time.process_time()
    result = call()
    rows.append((label, time.perf_counter() - started, time.process_time() - cpu, note))
    return result


def cleanup(s3: Any, backend: LabelStudioBackend, spec: PipelineSpec) -> None:
    for project in backend.client.projects.list(title=project_title(spec)):
        if project.title == project_title(spec):
            backend.client.projects.delete(project.id)
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=spec.storage.bucket, Prefix=f"{spec.storage.prefix}/"
    ):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=spec.storage.bucket, Delete={"Objects": keys})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()

    s3 = boto3.client("s3", endpoint_url=os.environ["EDGELOOP_S3_ENDPOINT"])
    backend = LabelStudioBackend.connect(
        LabelStudioSettings(
            os.environ["EDGELOOP_LABEL_STUDIO_URL"], os.environ["EDGELOOP_LABEL_STUDIO_TOKEN"], timeout=300
        )
    )
    spec = bench_spec(args.batch)
    load = os.getloadavg()
    now = datetime.now(UTC)
    rows: list[Row] = []
    try:
        timed(
            "write raw (setup)",
            rows,
            lambda: write_raw(s3, spec, args.records, args.objects, now),
            f"{args.records:,} records in {args.objects} objects",
        )
        request = selection_request(spec, now=now, group=GROUP, run_id="bench", lookback=timedelta(hours=1))
        selected = timed(
            "select batch",
            rows,
            lambda: select_batch(spec, s3, request),
            f"{args.batch} of {args.records:,} candidates",
        )
        assert selected["size"] == args.batch and selected["candidates"] == args.records, selected
        opened = timed(
            "open batch",
            rows,
            lambda: open_batch(spec, s3, backend, selected["batch_id"]),
            f"{args.batch} tasks with pre-annotations",
        )
        assert opened["tasks"] == args.batch, opened
        labels = spec.annotation.labels
        bot = timed(
            "bot labels (setup)",
            rows,
            lambda: annotate_bot(
                spec, backend, lambda rid: labels[hash(rid) % LABELS_BY_HASH], batch_id=selected["batch_id"]
            ),
        )
        assert bot["labelled"] == args.batch, bot
        progress = timed("one trigger poll", rows, lambda: backend.progress(project_ref(opened), selected["batch_id"]))
        assert progress.labelled == args.batch, progress
        exported = timed(
            "export version",
            rows,
            lambda: export_dataset(spec, s3, backend, selected["batch_id"]),
            f"{args.batch} annotations",
        )
        assert exported["rows"] == args.batch, exported
    finally:
        cleanup(s3, backend, spec)

    seconds = {label: value for label, value, _, _ in rows}
    select_open = seconds["select batch"] + seconds["open batch"]
    where = os.environ["EDGELOOP_S3_ENDPOINT"]
    print(f"\nannotation benchmark ({args.records:,} raw records, batch {args.batch}) on {where}")
    print(f"load average before: {load[0]:.1f} (cores: {os.cpu_count()}); cpu s = this process, the rest is servers")
    print(f"{'step':<24}{'seconds':>10}{'cpu s':>8}  note")
    print("-" * 78)
    for label, value, cpu, note in rows:
        print(f"{label:<24}{value:>10.2f}{cpu:>8.2f}  {note}")
    print("-" * 78)
    checks = [("select + open", select_open), ("export", seconds["export version"])]
    failed = False
    for label, value in checks:
        ok = value <= TARGET_SECONDS
        failed |= not ok
        print(f"{label:<24}{value:>10.2f}  target <= {TARGET_SECONDS:.0f} s: {'ok' if ok else 'MISSED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
