"""The camera loop's stages one after the other on the real Kafka, S3, MLflow and Label Studio, without Airflow.

Story: a first image model is trained on the seed frames and becomes champion; ten cameras run it, and the lamp
of hall-east has failed. Ingest stores their records and frames. The drift task compares the window with the
rows the champion was trained on: hall-east drifted, the other hall and the canary cell did not. The image batch
of hall-east is labelled by the bot and exported; the model trained on it passes the gate over the champion.
Rolled out to every camera, canary cell first, the other hall and the canary cell still show no drift
against the rows it was trained on (the `emb_..` columns do not move with the model).
What the closed-loop test (tests/e2e/test_closed_loop_cameras.py) runs through Airflow, stage by stage.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from tests.helpers.camera_models import VISION_SPEC
from tests.helpers.keys import OPERATOR, TRUSTED

from edgeloop.annotation.batch import open_batch
from edgeloop.annotation.bot import annotate_bot
from edgeloop.annotation.export import export_dataset
from edgeloop.annotation.label_studio import LabelStudioBackend
from edgeloop.annotation.selection import select_batch, selection_request
from edgeloop.connections import PipelineClients
from edgeloop.drift.tasks import check_drift
from edgeloop.ingest import ingest_topic
from edgeloop.ingest.frames import frame_codec
from edgeloop.registry.register import register_challenger
from edgeloop.rollout.job import artifact_resolver, run_wave_job
from edgeloop.simulator.fleet import SimulatorOptions, simulate
from edgeloop.simulator.groundtruth import true_labels
from edgeloop.simulator.models import camera_models, mlflow_champion, onnx_provider
from edgeloop.spec import PipelineSpec, parse_spec
from edgeloop.training.dataset import build_dataset
from edgeloop.training.gate import evaluation_gate
from edgeloop.training.sensors import DriftInjection, sensor_profile
from edgeloop.training.train import train_model

pytestmark = pytest.mark.integration

BUCKET = "edgeloop"


def loop_spec() -> PipelineSpec:
    """The e2e test's copy of the camera spec (ten cameras, one-minute window), on fresh names."""
    run = uuid.uuid4().hex[:10]
    data = yaml.safe_load(VISION_SPEC.read_text())
    data["name"] = f"camloop_{run}"
    data["topics"] |= {"prefix": f"camloop_{run}", "partitions": 2}
    data["storage"] = {"bucket": BUCKET, "prefix": f"itest-camloop/{run}"}
    data["registry"] = {"model_name": f"camloop_{run}"}
    for group, cameras in zip(data["groups"], (2, 4, 4), strict=True):
        group["devices"] = cameras
    data["drift"] |= {"window": "1m", "min_rows": 100, "drift_share": 0.5}
    data["annotation"] |= {"batch_size": 200, "sla": "1h", "completion_ratio": 1.0}
    data["training"] |= {"search_budget": 1, "search_space": {"C": [1.0]}}
    return parse_spec(yaml.safe_dump(data))


def train_and_gate(mlflow_client: Any, s3: Any, spec: PipelineSpec, version: str | None = None) -> dict[str, Any]:
    trained = train_model(mlflow_client, s3, spec, build_dataset(s3, spec, version))
    registered = register_challenger(mlflow_client, spec, trained)
    return dict(evaluation_gate(mlflow_client, s3, spec, registered))


def test_a_failed_lamp_in_one_hall_is_seen_labelled_and_learnt_stage_by_stage(
    s3_client: Any, kafka_config: dict[str, str], backend: LabelStudioBackend, cleanup: list
) -> None:
    from mlflow import MlflowClient

    spec = loop_spec()
    cleanup.append(spec)
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    try:
        first = train_and_gate(client, s3_client, spec)
        assert first["promote"], first

        cameras = camera_models(spec)
        provider = onnx_provider(
            sensor_profile(spec),
            resolve=artifact_resolver(spec),
            default=mlflow_champion(spec.registry.model_name, os.environ["MLFLOW_TRACKING_URI"]),
            cameras=cameras,
        )
        options = SimulatorOptions(telemetry_interval_s=0.25, drift=[DriftInjection("hall-east", "lighting")])
        stats = simulate(spec, kafka_config, trusted=TRUSTED, provider=provider, duration_s=30.0, options=options)
        assert stats.frames == stats.telemetry > 0 and stats.delivery_failures == 0
        ingest_topic(spec, "frames", consumer_config=kafka_config, s3=s3_client, codec=frame_codec(spec, s3_client))
        ingest_topic(spec, "telemetry", consumer_config=kafka_config, s3=s3_client)

        checked = check_drift(spec, PipelineClients(spec), run_id="camloop-drift-1", now=datetime.now(UTC))
        summary = json.loads(s3_client.get_object(Bucket=BUCKET, Key=checked.summary_key)["Body"].read())
        groups = {g: (v["status"], v["drift_share"], v["reference_scope"]) for g, v in summary["groups"].items()}
        assert checked.drifted_groups == ["hall-east"], groups
        assert groups["hall-east"][0] == "drift" and groups["hall-east"][1] > 0.9, groups
        assert groups["hall-west"][0] == groups["cell-canary"][0] == "no drift", groups

        alert = {"kind": "drift", "pipeline": spec.name, "alert_id": "camloop-1", "groups": ["hall-east"]}
        selected = select_batch(spec, s3_client, selection_request(spec, now=datetime.now(UTC), alert=alert))
        assert selected["size"] == 200 and selected["groups"] == ["hall-east"]
        open_batch(spec, s3_client, backend, selected["batch_id"])
        bot = annotate_bot(
            spec, backend, true_labels=lambda ids: true_labels(spec, kafka_config, ids), batch_id=selected["batch_id"]
        )
        assert (bot["labelled"], bot["failed"]) == (200, 0)
        exported = export_dataset(spec, s3_client, backend, selected["batch_id"])

        second = train_and_gate(client, s3_client, spec, exported["version"])
        assert second["promote"] and second["decision"] == "promote", second

        # the new champion rolled out, canary cell first; the cameras' next minute of frames is the window checked
        stop = threading.Event()
        fleet = threading.Thread(
            target=simulate,
            args=(spec, kafka_config),
            kwargs={"trusted": TRUSTED, "operator": OPERATOR, "provider": provider, "options": options, "stop": stop},
        )
        fleet.start()
        try:
            time.sleep(5)
            for wave, group in enumerate(("cell-canary", "hall-east", "hall-west")):
                applied = run_wave_job(
                    spec,
                    kafka_config,
                    OPERATOR,
                    group,
                    second["version"],
                    "camloop-rollout",
                    wave=min(wave, 1),
                    artifacts=artifact_resolver(spec),
                    trusted_keys=TRUSTED,
                )
                assert applied["progress"]["applied_ratio"] == 1.0, applied["progress"]
            time.sleep(65)  # a drift window of frames from cameras that all run the new champion
        finally:
            stop.set()
            fleet.join(timeout=60)
        # the halls whose lamps work still look like the rows the new champion was trained on
        ingest_topic(spec, "frames", consumer_config=kafka_config, s3=s3_client, codec=frame_codec(spec, s3_client))
        ingest_topic(spec, "telemetry", consumer_config=kafka_config, s3=s3_client)
        again = check_drift(spec, PipelineClients(spec), run_id="camloop-drift-2", now=datetime.now(UTC))
        summary = json.loads(s3_client.get_object(Bucket=BUCKET, Key=again.summary_key)["Body"].read())
        groups = {g: (v["status"], v["drift_share"], v["reference_scope"]) for g, v in summary["groups"].items()}
        assert groups["hall-west"][0] == groups["cell-canary"][0] == "no drift", groups
    finally:
        if client.search_registered_models(filter_string=f"name = '{spec.registry.model_name}'"):
            client.delete_registered_model(spec.registry.model_name)
