"""A camera pipeline's drift report on the stack's real object storage shows the drifted hall's frames.

Story: the champion was trained on clean frames of every hall; then the lamp of hall-east failed.
The cameras' frames are in the bucket under their content addresses and their records in the raw
layout. The drift check reads the window from raw/, finds hall-east drifted and writes its report;
the report, read back from S3, holds eight frames of hall-east's current window and eight of its
reference, each the very bytes stored for a record of that window.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from tests.helpers.camera_models import VISION_SPEC
from tests.helpers.camera_records import camera_records

from edgeloop.drift.examples import EXAMPLES_PER_SIDE
from edgeloop.drift.reference import read_reference_objects
from edgeloop.drift.run import run_drift_check
from edgeloop.ingest.keys import OffsetRange, raw_object_key
from edgeloop.spec import PipelineSpec, parse_spec

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
IMG = re.compile(rb'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture
def spec(stack_env: dict[str, str], s3_client: Any) -> Iterator[PipelineSpec]:
    """A copy of the camera spec under a fresh storage prefix, removed again after the test."""
    run = uuid.uuid4().hex[:10]
    data = yaml.safe_load(VISION_SPEC.read_text())
    data["name"] = f"camreport_{run}"
    data["storage"] = {"bucket": stack_env.get("EDGELOOP_BUCKET", "edgeloop"), "prefix": f"it-drift-cam-{run}"}
    data["registry"] = {"model_name": f"camreport_{run}"}
    data["drift"] |= {"min_rows": 100, "sample_per_group": 400, "window": "5m"}
    spec = parse_spec(yaml.safe_dump(data))
    yield spec
    pages = s3_client.get_paginator("list_objects_v2").paginate(
        Bucket=spec.storage.bucket, Prefix=f"{spec.storage.prefix}/"
    )
    for page in pages:
        for item in page.get("Contents", []):
            s3_client.delete_object(Bucket=spec.storage.bucket, Key=item["Key"])


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    return buffer.getvalue()


def shown_frames(html: bytes, side: str) -> list[bytes]:
    row = re.search(rb'data-side="' + side.encode() + rb'".*?</div>', html, re.S)
    assert row is not None, side
    return [base64.b64decode(data) for data in IMG.findall(row.group(0))]


def test_the_drifted_halls_report_on_s3_holds_frames_of_its_current_window(s3_client: Any, spec: PipelineSpec) -> None:
    bucket = spec.storage.bucket
    trained_on = camera_records(spec, s3_client, pd.Timestamp("2026-02-01T08:00:00Z"), 150)
    curated = f"{spec.storage_prefix('curated')}/v000001/data.parquet"
    s3_client.put_object(Bucket=bucket, Key=curated, Body=_parquet(trained_on))
    reference = read_reference_objects(s3_client, bucket, [curated], spec)

    window = camera_records(spec, s3_client, pd.Timestamp("2026-03-01T12:26:00Z"), 150, failed_lamp="hall-east")
    for partition, (_, part) in enumerate(window.groupby("group_id")):
        offsets = OffsetRange(partition, 0, len(part) - 1)
        key = raw_object_key(spec, spec.topic("telemetry"), NOW.replace(minute=0), offsets)
        s3_client.put_object(Bucket=bucket, Key=key, Body=_parquet(part))

    result = run_drift_check(s3_client, bucket, spec, "camreport-run", NOW, reference=reference)

    assert result["drifted_groups"] == ["hall-east"], result
    html = s3_client.get_object(Bucket=bucket, Key=result["reports"]["group=hall-east"])["Body"].read()
    assert b"Example frames of group hall-east, window 2026-03-01T12:25:00+00:00 to 2026-03-01T12:30:00+00:00" in html
    now, before = shown_frames(html, "current"), shown_frames(html, "reference")
    assert len(now) == len(before) == EXAMPLES_PER_SIDE
    east_now = set(window.loc[window["group_id"] == "hall-east", "frame_sha256"])
    east_before = set(trained_on.loc[trained_on["group_id"] == "hall-east", "frame_sha256"])
    assert {hashlib.sha256(png).hexdigest() for png in now} <= east_now
    assert {hashlib.sha256(png).hexdigest() for png in before} <= east_before
    assert b"Frames not shown" not in html
