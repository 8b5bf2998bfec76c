"""Image batches on the stack's real Kafka, S3 and Label Studio, labelled by the simulated annotator.

Story: a simulated camera fleet runs with a failing lamp in one hall; ingest stores its records and frames.
A drift alert names the hall: the batch is chosen from its records and opened in Label Studio (each task
shows its frame by a presigned URL), the annotate bot labels it with the simulator's ground truth, read by
record id as for tabular tasks, and the export is a curated version whose every label is the part in the
frame; its rows name frames the training stage can fetch.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from tests.helpers.camera_models import VISION_SPEC
from tests.helpers.keys import TRUSTED

from edgeloop.annotation.batch import open_batch
from edgeloop.annotation.bot import annotate_bot
from edgeloop.annotation.export import export_dataset
from edgeloop.annotation.label_studio import LabelStudioBackend
from edgeloop.annotation.selection import select_batch, selection_request
from edgeloop.ingest import ingest_topic
from edgeloop.ingest.frames import frame_codec
from edgeloop.simulator.fleet import SimulatorOptions, simulate
from edgeloop.simulator.groundtruth import true_labels
from edgeloop.spec import PipelineSpec, parse_spec
from edgeloop.training.dataset import validate_labelled_frame
from edgeloop.training.images import model_inputs
from edgeloop.training.sensors import DriftInjection
from edgeloop.vision.frames import group_conditions, inject_drift, make_frame

pytestmark = pytest.mark.integration

BUCKET = "edgeloop"


def camera_spec(batch_size: int) -> PipelineSpec:
    """The shipped camera spec under a fresh name, topics and storage prefix (removed by `cleanup`)."""
    run = uuid.uuid4().hex[:10]
    data = yaml.safe_load(VISION_SPEC.read_text())
    data["name"] = f"anncam_{run}"
    data["topics"] |= {"prefix": f"anncam_{run}", "partitions": 2}
    data["storage"] = {"bucket": BUCKET, "prefix": f"itest-annotation/{run}"}
    data["registry"] = {"model_name": f"anncam_{run}"}
    data["annotation"] |= {"batch_size": batch_size, "sla": "1h", "completion_ratio": 1.0}
    return parse_spec(yaml.safe_dump(data))


def test_the_bot_labels_an_image_batch_with_the_part_in_each_frame(
    s3_client: Any, kafka_config: dict[str, str], backend: LabelStudioBackend, cleanup: list
) -> None:
    spec = camera_spec(batch_size=24)
    cleanup.append(spec)
    options = SimulatorOptions(telemetry_interval_s=0.5, drift=[DriftInjection("hall-east", "lighting")])
    stats = simulate(spec, kafka_config, trusted=TRUSTED, devices=12, duration_s=6.0, options=options)
    assert stats.frames == stats.telemetry > 0 and stats.delivery_failures == 0
    framed = ingest_topic(
        spec, "frames", consumer_config=kafka_config, s3=s3_client, codec=frame_codec(spec, s3_client)
    )
    recorded = ingest_topic(spec, "telemetry", consumer_config=kafka_config, s3=s3_client)
    assert framed["records"] == recorded["records"] == stats.telemetry and framed["dead_letters"] == 0

    alert = {"kind": "drift", "pipeline": spec.name, "alert_id": "drift-cam-1", "groups": ["hall-east"]}
    selected = select_batch(spec, s3_client, selection_request(spec, now=datetime.now(UTC), alert=alert))
    assert selected["size"] == 24
    opened = open_batch(spec, s3_client, backend, selected["batch_id"])
    assert opened["tasks"] == 24

    bot = annotate_bot(
        spec, backend, true_labels=lambda ids: true_labels(spec, kafka_config, ids), batch_id=selected["batch_id"]
    )
    assert (bot["labelled"], bot["no_truth"], bot["failed"]) == (24, 0, 0)

    result = export_dataset(spec, s3_client, backend, selected["batch_id"])
    assert result["rows"] == 24
    body = s3_client.get_object(Bucket=BUCKET, Key=result["data_key"])["Body"].read()
    data = pq.read_table(io.BytesIO(body)).to_pandas()
    lamp_failed = inject_drift(group_conditions("hall-east"), "lighting")
    for _, row in data.iterrows():
        assert row["group_id"] == "hall-east"
        index = int(row["record_id"].rsplit("-", 1)[1]) - 1  # record sequence n: the camera's frame n - 1
        assert row["label"] == make_frame(row["device_id"], index, lamp_failed).label  # the part in the frame

    curated = validate_labelled_frame(spec, data, "the curated version")  # what training reads of it
    attached = model_inputs(spec).attach(s3_client, curated)  # and the frames it fetches for it
    assert attached.rejected == {} and len(attached.frame) == 24
