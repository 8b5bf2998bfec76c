"""After a retraining for a group's drift, the next drift run accepts that group's new normal (real S3).

Story, on the stack's object storage under a throwaway pipeline: plant-north's sensors
change while the fleet runs; a batch of its records from the alert's window becomes
curated v000001 (in the annotation export's layout); the training stage builds the
dataset seed + v000001 (split.json names its sources). Compared with that dataset's
training rows, plant-north would be flagged again on every run; compared with
`champion_reference`, the drift run finds no drift and its summary names the reference
each group used.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgeloop.annotation.export import data_key, lineage_key
from edgeloop.drift.reference import TRAINING_SOURCE, champion_reference, read_reference_objects
from edgeloop.drift.run import run_drift_check, seed_for
from edgeloop.drift.synthetic import LABELS, SensorDrift, make_telemetry, synthetic_spec
from edgeloop.ingest.keys import OffsetRange, raw_object_key
from edgeloop.spec import PipelineSpec
from edgeloop.training.dataset import build_dataset

pytestmark = pytest.mark.integration

FEATURES = ["vibration_rms", "vibration_peak", "temperature_c", "motor_current_a", "rpm", "acoustic_db"]
GROUPS = ("line-canary", "plant-north", "plant-south")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the alert's window: [T0, T0 + 10 min), plant-north changes at +5 min
WINDOW = timedelta(minutes=10)
NORTH_SHIFT = {"plant-north": {c: SensorDrift(offset=2.0) for c in FEATURES[:4]}}


@pytest.fixture
def spec(stack_env: dict[str, str], s3_client: Any) -> Iterator[PipelineSpec]:
    """A pipeline of its own under a fresh storage prefix, removed again after the test."""
    prefix = f"it-driftref-{uuid.uuid4().hex[:10]}"
    spec = synthetic_spec(
        FEATURES,
        GROUPS,
        name=f"driftref_it_{prefix[-10:]}",
        bucket=stack_env.get("EDGELOOP_BUCKET", "edgeloop"),
        storage_prefix=prefix,
        drift={"window": "10m", "min_rows": 300, "sample_per_group": 3000},
    )
    yield spec
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=spec.storage.bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            s3_client.delete_object(Bucket=spec.storage.bucket, Key=item["Key"])


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    return buffer.getvalue()


def telemetry(start: datetime, *, seed: int, shifted: bool, rows: int = 1500) -> pd.DataFrame:
    """Five minutes of the fleet's records (`rows` per group), plant-north shifted or not."""
    return make_telemetry(
        FEATURES,
        dict.fromkeys(GROUPS, rows),
        seed=seed,
        start=start,
        duration=timedelta(minutes=5),
        drift=NORTH_SHIFT if shifted else None,
    )


def put_raw(s3: Any, spec: PipelineSpec, frame: pd.DataFrame, first_offset: int) -> None:
    """One raw object in the ingest layout (all records of these tests fall in one hour)."""
    hour = pd.Timestamp(frame["ts"].min()).floor("h").to_pydatetime()
    offsets = OffsetRange(0, first_offset, first_offset + len(frame) - 1)
    key = raw_object_key(spec, spec.topic("telemetry"), hour, offsets)
    s3.put_object(Bucket=spec.storage.bucket, Key=key, Body=_parquet(frame))


def labelled(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return frame.assign(label=rng.choice(list(LABELS), size=len(frame)))


def curate_v1(s3: Any, spec: PipelineSpec, batch: pd.DataFrame) -> None:
    """What the annotation export publishes for a batch of plant-north drawn from the alert's window."""
    bucket = spec.storage.bucket
    s3.put_object(Bucket=bucket, Key=data_key(spec, "v000001"), Body=_parquet(labelled(batch, seed=7)))
    lineage = {
        "lineage_version": 1,
        "pipeline": spec.name,
        "version": "v000001",
        "batch_id": "batch-it",
        "groups": ["plant-north"],
        "window": {"start": T0.isoformat(), "end": (T0 + WINDOW).isoformat()},
        "source_objects": [],
    }
    s3.put_object(Bucket=bucket, Key=lineage_key(spec, "v000001"), Body=json.dumps(lineage).encode())


def test_the_drift_run_after_a_retraining_accepts_the_retrained_groups_new_normal(
    spec: PipelineSpec, s3_client: Any
) -> None:
    s3, bucket = s3_client, spec.storage.bucket
    segments = [(-10, False), (-5, False), (0, False), (5, True), (10, True), (15, True), (20, True), (25, True)]
    for i, (minute, shifted) in enumerate(segments):
        put_raw(s3, spec, telemetry(T0 + timedelta(minutes=minute), seed=i, shifted=shifted), first_offset=i * 10_000)
    window = pd.concat(
        [telemetry(T0, seed=2, shifted=False), telemetry(T0 + timedelta(minutes=5), seed=3, shifted=True)]
    )
    north = window[window["group_id"] == "plant-north"]
    curate_v1(s3, spec, north.sample(200, random_state=1).sort_values("ts"))

    def seed_source(_: PipelineSpec) -> pd.DataFrame:
        return labelled(telemetry(datetime(2026, 1, 1, tzinfo=UTC), seed=100, shifted=False, rows=3000), seed=8)

    dataset = build_dataset(s3, spec, seed_source=seed_source)
    assert [s["version"] for s in dataset["sources"]] == ["seed", "v000001"]
    training = {k: dataset[k] for k in ("bucket", "train_key", "eval_key", "split_key")} | {"version": "2"}
    now = T0 + timedelta(minutes=30)  # the window checked: [T0 + 20 min, T0 + 30 min), all of it the new normal

    before = read_reference_objects(s3, bucket, [training["train_key"]], spec, seed=seed_for("before"))
    flagged = run_drift_check(s3, bucket, spec, "before", now, reference=before)
    assert flagged["drifted_groups"] == ["plant-north"]

    reference = champion_reference(s3, spec, training, seed=seed_for("after"))
    result = run_drift_check(s3, bucket, spec, "after", now, reference=reference)
    assert result["status"] == "no drift", result
    summary = json.loads(s3.get_object(Bucket=bucket, Key=result["summary_key"])["Body"].read())
    assert summary["groups"]["plant-north"]["reference_source"] == "curated v000001 post-change window"
    assert summary["groups"]["plant-south"]["reference_source"] == TRAINING_SOURCE
    north_reference = summary["reference"]["groups"]["plant-north"]
    assert north_reference["window"]["start"] == (T0 + WINDOW).isoformat()
    assert north_reference["rows"] == 2 * 1500
    assert summary["reference"]["dataset_version"] == "v000001"
