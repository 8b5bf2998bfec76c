"""A simulated camera fleet on the real broker and S3.

Given the shipped camera spec on new topics, when the fleet simulator runs its cameras for a few seconds with a
lighting drift on one hall, then every record has its frame on `frames`, ingest stores every frame once under
the key its record names, ground truth names the part of every frame, and the drifted hall's frames are
flatter from the drift on while the other hall's stay as they were.
"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from tests.helpers.camera_models import VISION_SPEC
from tests.helpers.keys import TRUSTED

from edgeloop.contract.frame import decode_frame_message
from edgeloop.fleet.topics import read_topic
from edgeloop.ingest import ingest_topic
from edgeloop.ingest.frames import frame_codec
from edgeloop.simulator.fleet import SimulatorOptions, simulate
from edgeloop.simulator.groundtruth import generated_ms, true_labels
from edgeloop.spec import PipelineSpec, parse_spec
from edgeloop.training.sensors import DriftInjection
from edgeloop.vision.frames import decode_png, group_conditions, make_frame

pytestmark = pytest.mark.integration

DRIFT_AT_S = 4.0


def fresh_spec(bucket: str) -> PipelineSpec:
    """The shipped camera spec on new topics and a new storage prefix."""
    run = uuid.uuid4().hex[:10]
    data = yaml.safe_load(VISION_SPEC.read_text())
    data["topics"] |= {"prefix": f"it_cams_{run}", "partitions": 2}
    data["storage"] = {"bucket": bucket, "prefix": f"it/cams/{run}"}
    return parse_spec(yaml.safe_dump(data))


def test_a_simulated_camera_fleet_sends_frames_ingest_stores_and_ground_truth_labels(
    stack_env: dict[str, str], kafka_config: dict[str, str], s3_client: Any
) -> None:
    spec = fresh_spec(stack_env.get("EDGELOOP_BUCKET", "edgeloop"))
    options = SimulatorOptions(
        telemetry_interval_s=0.5, drift=[DriftInjection("hall-east", "lighting", at_s=DRIFT_AT_S)]
    )
    stats = simulate(spec, kafka_config, trusted=TRUSTED, devices=8, duration_s=8.0, options=options)
    assert stats.delivery_failures == 0 and stats.errors == 0
    assert stats.frames == stats.telemetry > 8 * 8  # about two frames a second per camera

    records = [json.loads(r.value or b"") for r in read_topic(kafka_config, spec.topic("telemetry"))]
    frames = [decode_frame_message(r.value) for r in read_topic(kafka_config, spec.topic("frames"))]
    assert len(records) == len(frames) == stats.telemetry
    by_record = {header.record_id: (header, png) for header, png in frames}
    assert set(by_record) == {r["record_id"] for r in records}

    truth = true_labels(spec, kafka_config, by_record)
    assert set(truth) == set(by_record)
    for record in records[:: max(1, len(records) // 10)]:  # the truth is the part the camera saw
        _, png = by_record[record["record_id"]]
        index = int(record["record_id"].rsplit("-", 1)[1]) - 1  # record sequence n: the camera's frame n - 1
        part = make_frame(record["device_id"], index, group_conditions(record["group_id"]))
        assert truth[record["record_id"]] == part.label
        if record["group_id"] != "hall-east":
            assert np.array_equal(decode_png(png), part.pixels)

    codec = frame_codec(spec, s3_client)
    framed = ingest_topic(spec, "frames", consumer_config=kafka_config, s3=s3_client, codec=codec)
    assert framed["records"] == len(frames) and framed["dead_letters"] == 0
    bucket = spec.storage.bucket
    for record in records[:: max(1, len(records) // 5)]:
        body = s3_client.get_object(Bucket=bucket, Key=record["frame_key"])["Body"].read()
        assert body == by_record[record["record_id"]][1]
    rows = []
    for key in framed["objects"]:
        rows += pq.read_table(io.BytesIO(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())).to_pylist()
    assert {r["frame_key"] for r in rows} == {r["frame_key"] for r in records}

    start = min(generated_ms(r["record_id"]) or 0 for r in records) / 1000

    def contrast(group: str, drifted: bool) -> float:
        """The mean contrast of a group's frames well before (or well after) the drift."""
        chosen = []
        for r in records:
            elapsed = (generated_ms(r["record_id"]) or 0) / 1000 - start
            if r["group_id"] == group and (elapsed > DRIFT_AT_S + 0.5 if drifted else elapsed < DRIFT_AT_S - 0.5):
                chosen.append(r["contrast"])
        assert chosen, (group, drifted)
        return float(np.mean(chosen))

    assert contrast("hall-east", True) < 0.7 * contrast("hall-east", False)
    assert contrast("hall-west", True) > 0.8 * contrast("hall-west", False)
