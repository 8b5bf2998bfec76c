"""The claim check on the real broker and S3: camera frames and the records that reference them, ingested.

Given cameras that sent each frame (some twice) and its record, when ingest runs over both topics, then every
frame is in S3 once under its content address, every record and every frame row is in Parquet, each record's
frame key names a stored frame, a tampered frame is a dead letter; and a second run adds nothing.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from benchmarks.soak_ingest import produce
from tests.helpers.camera_models import VISION_SPEC, camera_cores, camera_model
from tests.helpers.keys import TRUSTED

from edgeloop.fleet.topics import ensure_topics
from edgeloop.ingest import ingest_topic
from edgeloop.ingest.frames import frame_codec
from edgeloop.simulator.cameras import camera_rig, camera_step
from edgeloop.spec import PipelineSpec, parse_spec

pytestmark = pytest.mark.integration


def fresh_spec(bucket: str) -> PipelineSpec:
    """The shipped camera spec on new topics and a new storage prefix."""
    run = uuid.uuid4().hex[:10]
    data = yaml.safe_load(VISION_SPEC.read_text())
    data["topics"] |= {"prefix": f"it_frames_{run}", "partitions": 2}
    data["storage"] = {"bucket": bucket, "prefix": f"it/frames/{run}"}
    return parse_spec(yaml.safe_dump(data))


def keys_under(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def parquet_rows(s3: Any, bucket: str, keys: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key in keys:
        rows += pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())).to_pylist()
    return rows


def test_every_frame_is_stored_once_and_every_record_points_at_one(
    stack_env: dict[str, str], kafka_config: dict[str, str], s3_client: Any
) -> None:
    spec = fresh_spec(stack_env.get("EDGELOOP_BUCKET", "edgeloop"))
    ensure_topics(spec, kafka_config, ground_truth=False)
    now = time.time()
    cores = camera_cores(spec, 3, TRUSTED, camera_model(), now)
    rig = camera_rig(spec)
    rig.inject("hall-west", "lens_dirt")
    frames: list[bytes] = []
    records: list[bytes] = []
    for round_ in range(4):
        for _, message in camera_step(cores, rig, now + round_).messages:
            (frames if message.kind == "frames" else records).append(message.value)
    resent = frames[:5]  # a camera's retry after a lost acknowledgement: same bytes, same content address
    header_line, png = frames[6].split(b"\n", 1)  # bytes that are not what their header says
    tampered = json.dumps({**json.loads(header_line), "sha256": "0" * 64}).encode() + b"\n" + png
    bootstrap = kafka_config["bootstrap.servers"]
    produce(bootstrap, spec.topic("frames"), [(i % 2, v) for i, v in enumerate([*frames, *resent, tampered])])
    produce(bootstrap, spec.topic("telemetry"), [(i % 2, v) for i, v in enumerate(records)])

    def ingest_both() -> tuple[dict[str, Any], dict[str, Any]]:
        codec = frame_codec(spec, s3_client)
        framed = ingest_topic(spec, "frames", consumer_config=kafka_config, s3=s3_client, codec=codec)
        recorded = ingest_topic(spec, "telemetry", consumer_config=kafka_config, s3=s3_client)
        return framed, recorded

    framed, recorded = ingest_both()
    assert (framed["records"], framed["dead_letters"]) == (len(frames) + len(resent), 1)
    assert framed["dead_letters_by_kind"] == {"frame": 1}
    assert (recorded["records"], recorded["dead_letters"]) == (len(records), 0) == (len(cores) * 4, 0)

    bucket = spec.storage.bucket
    stored = keys_under(s3_client, bucket, spec.storage_prefix("frames") + "/")
    frame_rows = parquet_rows(s3_client, bucket, framed["objects"])
    record_rows = parquet_rows(s3_client, bucket, recorded["objects"])
    assert sorted(stored) == sorted({r["frame_key"] for r in frame_rows}) and len(stored) == len(frames)
    assert {r["frame_key"] for r in record_rows} == set(stored)
    assert {r["record_id"] for r in frame_rows} == {r["record_id"] for r in record_rows}
    for row in frame_rows[:3]:
        body = s3_client.get_object(Bucket=bucket, Key=row["frame_key"])["Body"].read()
        assert len(body) == row["frame_bytes"] and body.startswith(b"\x89PNG")

    again_frames, again_records = ingest_both()
    assert again_frames["records"] == again_records["records"] == again_frames["objects_created"] == 0
    assert sorted(keys_under(s3_client, bucket, spec.storage_prefix("frames") + "/")) == sorted(stored)


class Crash(Exception):
    pass


def test_a_run_that_crashed_after_storing_frames_is_redone_without_a_second_copy(
    stack_env: dict[str, str], kafka_config: dict[str, str], s3_client: Any
) -> None:
    spec = fresh_spec(stack_env.get("EDGELOOP_BUCKET", "edgeloop"))
    ensure_topics(spec, kafka_config, ground_truth=False)
    now = time.time()
    step = camera_step(camera_cores(spec, 2, TRUSTED, camera_model(), now), camera_rig(spec), now)
    frames = [m.value for _, m in step.messages if m.kind == "frames"]
    produce(kafka_config["bootstrap.servers"], spec.topic("frames"), [(0, v) for v in frames])

    def crash_at_marker(name: str) -> None:
        if name == "marker":  # the frames are stored, the Parquet file and the offsets are not
            raise Crash(name)

    with pytest.raises(Crash):
        ingest_topic(
            spec,
            "frames",
            consumer_config=kafka_config,
            s3=s3_client,
            codec=frame_codec(spec, s3_client),
            on_step=crash_at_marker,
        )
    prefix = spec.storage_prefix("frames") + "/"
    stored = keys_under(s3_client, spec.storage.bucket, prefix)
    assert len(stored) == len(frames)

    redone = ingest_topic(
        spec, "frames", consumer_config=kafka_config, s3=s3_client, codec=frame_codec(spec, s3_client)
    )
    assert redone["records"] == len(frames) and redone["dead_letters"] == 0
    rows = parquet_rows(s3_client, spec.storage.bucket, redone["objects"])
    assert sorted(r["frame_key"] for r in rows) == sorted(stored)
    assert sorted(keys_under(s3_client, spec.storage.bucket, prefix)) == sorted(stored)
