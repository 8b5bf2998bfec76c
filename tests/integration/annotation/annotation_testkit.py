"""Shared pieces of the annotation tests: a spec per test run and raw telemetry written the way ingest writes it."""

from __future__ import annotations

import hashlib
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from edgeloop.spec import PipelineSpec, load_spec

DEMO_SPEC = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
ARROW_TYPES = {
    "float": pa.float64(),
    "int": pa.int64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def unique_spec(bucket: str, *, prefix: str = "anntest", **annotation: Any) -> PipelineSpec:
    """The demo spec under a fresh pipeline name and storage prefix, with annotation settings overridden."""
    base = load_spec(DEMO_SPEC)
    run = uuid.uuid4().hex[:10]
    data = base.model_dump(by_alias=True)
    data["name"] = f"{prefix}_{run}"
    data["topics"]["prefix"] = f"{prefix}_{run}"
    data["storage"] = {"bucket": bucket, "prefix": f"itest-annotation/{run}"}
    data["annotation"] = {**data["annotation"], **annotation}
    # the tests' raw records span half an hour: select over a window that holds them all
    data["drift"] = {**data["drift"], "window": 1800}
    return PipelineSpec.model_validate(data)


def true_label(spec: PipelineSpec, record_id: str) -> str:
    """The deterministic hidden label of a record id in these tests."""
    labels = spec.annotation.labels
    return labels[int(hashlib.sha256(record_id.encode()).hexdigest(), 16) % len(labels)]


def telemetry_table(
    spec: PipelineSpec, *, group: str, devices: int, per_device: int, start: datetime, span: timedelta, seed: int
) -> pa.Table:
    """Records of one group: `per_device` readings of each device spread over [start, start + span)."""
    rng = np.random.default_rng(seed)
    n = devices * per_device
    device_ids = np.repeat([f"{group}-dev{d:03d}" for d in range(devices)], per_device)
    offsets = rng.uniform(0, span.total_seconds(), size=n)
    stamps = [start + timedelta(seconds=float(s)) for s in offsets]
    record_ids = [
        f"{d}-{int(t.timestamp() * 1000)}-{i}" for i, (d, t) in enumerate(zip(device_ids, stamps, strict=True))
    ]
    labels = spec.annotation.labels
    columns: dict[str, Any] = {}
    for f in spec.schema_:
        if f.role == "record_id":
            columns[f.name] = record_ids
        elif f.role == "device_id":
            columns[f.name] = list(device_ids)
        elif f.role == "group_id":
            columns[f.name] = [group] * n
        elif f.role == "timestamp":
            columns[f.name] = stamps
        elif f.role == "prediction":
            columns[f.name] = [labels[i] for i in rng.integers(0, len(labels), size=n)]
        elif f.role == "confidence":
            columns[f.name] = rng.uniform(0.3, 1.0, size=n).round(4)
        elif f.role == "model_version":
            columns[f.name] = ["3"] * n
        elif f.role == "config_version":
            columns[f.name] = ["c1"] * n
        elif f.type == "float":
            columns[f.name] = rng.normal(10, 2, size=n).round(3)
        else:
            columns[f.name] = [None] * n
    schema = pa.schema([pa.field(f.name, ARROW_TYPES[f.type], nullable=f.nullable) for f in spec.schema_])
    return pa.Table.from_pydict(columns, schema=schema)


def write_raw(s3: Any, spec: PipelineSpec, table: pa.Table, *, partition: int, first_offset: int) -> list[str]:
    """Write a table as raw objects, one per UTC hour of its timestamps, named like ingest names them."""
    ts = spec.field_with_role("timestamp")
    assert ts is not None
    frame = table.to_pandas()
    frame["_hour"] = frame[ts].dt.floor("h")
    keys = []
    offset = first_offset
    for hour, hour_rows in sorted(frame.groupby("_hour"), key=lambda item: item[0]):
        part = hour_rows.drop(columns=["_hour"])
        last = offset + len(part) - 1
        key = (
            f"{spec.storage_prefix('raw')}/{spec.topic('telemetry')}/dt={hour:%Y-%m-%d}/hour={hour:%H}/"
            f"{partition}-{offset}-{last}.parquet"
        )
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(part, schema=table.schema, preserve_index=False), sink)
        s3.put_object(Bucket=spec.storage.bucket, Key=key, Body=sink.getvalue())
        keys.append(key)
        offset = last + 1
    return keys


def hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
