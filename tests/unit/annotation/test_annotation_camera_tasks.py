"""Annotation of camera records, unchanged stage: each task of a `visual_inspection` batch shows its frame through
a presigned URL of the frame's content-addressed key in the pipeline's bucket (no copy into Label Studio), with
the camera's prediction as the pre-annotation, and the project's labelling interface shows the image."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from defusedxml.ElementTree import fromstring
from tests.helpers.camera_models import camera_cores, camera_model, vision_spec
from tests.helpers.keys import TRUSTED

from edgeloop.annotation.batch import task_payloads
from edgeloop.annotation.label_studio import label_config, task_json
from edgeloop.ingest.decode import decode_records, record_schema
from edgeloop.simulator.cameras import camera_rig, camera_step

NOW = 1_767_225_600.0


def _s3() -> Any:
    return boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
    )


def _stored_rows() -> list[dict[str, Any]]:
    """Camera records as the annotation stage reads them back from the lake."""
    spec = vision_spec()
    step = camera_step(camera_cores(spec, 2, TRUSTED, camera_model(), NOW), camera_rig(spec), NOW)
    values = [m.value for _, m in step.messages if m.kind == "telemetry"]
    table = decode_records(values, record_schema(spec), [int(NOW * 1000)] * len(values)).table
    return list(table.to_pandas().to_dict(orient="records"))


def test_each_task_shows_its_frame_by_a_presigned_url_and_the_prediction() -> None:
    spec = vision_spec()
    rows = _stored_rows()
    payloads = task_payloads(spec, _s3(), "batch-1", rows, presign_for=timedelta(hours=5))
    assert len(payloads) == len(rows) == 6
    for row, payload in zip(rows, payloads, strict=True):
        assert payload.image_url is not None
        url = urlsplit(payload.image_url)
        assert url.path == f"/{spec.storage.bucket}/{row['frame_key']}"
        query = parse_qs(url.query)
        assert query["Signature"][0] and query["AWSAccessKeyId"] == ["k"]
        assert "frame_key" not in payload.fields and payload.fields["frame_sha256"] == row["frame_sha256"]
        body = task_json(payload, spec.annotation.labels)
        assert body["data"]["image"] == payload.image_url
        assert body["predictions"][0]["result"][0]["value"]["choices"] == [row["prediction"]]


def test_the_projects_interface_shows_the_frame_and_the_part_classes() -> None:
    spec = vision_spec()
    root = fromstring(label_config(spec))
    assert root.find("Image").get("value") == "$image"
    assert [c.get("value") for c in root.iter("Choice")] == spec.annotation.labels
