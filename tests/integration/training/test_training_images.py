"""The training stage's image path on the real MLflow server and S3.

Given the camera spec under a fresh name, when the dataset is built (the seed frames stored under their
content addresses), a model trained, registered and gated, then the model is an image classifier whose ONNX
file takes the frame's pixels and gives the drift features, it went through the same search, edge-fitness
limits and gate as a tabular model, and became the first champion; a curated version whose rows name frames
that are missing, tampered or too big trains on the rest and counts them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.helpers.camera_models import vision_spec
from training_testkit import cleanup_pipeline, unique_name, write_curated

from edgeloop.contract.frame import frame_key
from edgeloop.edge.runtime import load_model
from edgeloop.registry.aliases import CHAMPION, alias_version
from edgeloop.registry.artifacts import verified_edge_artifact
from edgeloop.registry.register import register_challenger
from edgeloop.spec import PipelineSpec
from edgeloop.training.dataset import build_dataset, read_split
from edgeloop.training.gate import evaluation_gate
from edgeloop.training.onnx_export import read_metadata
from edgeloop.training.train import train_model
from edgeloop.vision.frames import encode_png, group_conditions, inject_drift, make_frames
from edgeloop.vision.model import image_metadata, pixel_features, pixel_rows

pytestmark = pytest.mark.integration


def camera_spec(name: str) -> PipelineSpec:
    """The shipped camera spec under a fresh name, a small search and roomy latency and memory limits."""
    base = vision_spec()
    limits = base.training.limits.model_copy(update={"max_latency_ms": 1000.0, "max_memory_mb": 2000.0})
    training = {"search_space": {"C": [0.3, 1.0]}, "search_budget": 2, "limits": limits}
    return base.model_copy(
        update={
            "name": name,
            "topics": base.topics.model_copy(update={"prefix": name}),
            "storage": base.storage.model_copy(update={"prefix": f"it/{name}"}),
            "registry": base.registry.model_copy(update={"model_name": name}),
            "training": base.training.model_copy(update=training),
        }
    )


@pytest.fixture(scope="module")
def spec(mlflow_client: Any, s3_client: Any) -> Iterator[PipelineSpec]:
    spec = camera_spec(unique_name("vision"))
    yield spec
    cleanup_pipeline(mlflow_client, s3_client, spec)


def test_a_camera_pipeline_trains_an_image_model_through_the_same_gate(
    mlflow_client: Any, s3_client: Any, spec: PipelineSpec
) -> None:
    dataset = build_dataset(s3_client, spec)
    train = read_split(s3_client, dataset, "train")
    assert {"frame_key", "frame_sha256"} <= set(train.columns)
    body = s3_client.get_object(Bucket=spec.storage.bucket, Key=train["frame_key"][0])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == train["frame_sha256"][0]  # the seed frames are stored

    trained = train_model(mlflow_client, s3_client, spec, dataset)
    assert trained["edge"]["ok"], trained["edge"]
    assert trained["frames_rejected"] == {"train": {}, "eval": {}}
    assert trained["eval_score"] > 0.8 and set(trained["eval_groups"]) <= {g.name for g in spec.groups}
    registered = register_challenger(mlflow_client, spec, trained)
    decision = evaluation_gate(mlflow_client, s3_client, spec, registered)
    assert decision["promote"] and decision["first_run"], decision["reason"]
    assert str(alias_version(mlflow_client, spec.registry.model_name, CHAMPION).version) == registered["version"]

    data = verified_edge_artifact(mlflow_client, s3_client, spec, registered["version"])  # the file devices get
    features = pixel_features((64, 64))
    assert read_metadata(data)["edgeloop.features"].count("px_") == len(features)
    model = load_model(data, registered["version"], features)  # as a camera loads it
    assert set(spec.features) <= set(model.image_columns)
    pixels, labels = make_frames("hall-east-00001", 0, 100, group_conditions("hall-east"))
    proba, _ = model.predict_with_features(pixel_rows(pixels))
    assert np.mean([model.labels[i] == t for i, t in zip(proba.argmax(axis=1), labels, strict=True)]) > 0.8
    assert image_metadata(data)["shape"] == [64, 64]


def test_rows_whose_frames_are_missing_tampered_or_too_big_are_dropped_and_counted(
    mlflow_client: Any, s3_client: Any, spec: PipelineSpec
) -> None:
    from edgeloop.vision.claim import put_frame

    bucket = spec.storage.bucket
    pixels, labels = make_frames("hall-east-00002", 0, 160, inject_drift(group_conditions("hall-east"), "lighting"))
    refs = [put_frame(s3_client, bucket, spec.name, encode_png(p), storage_prefix=spec.storage.prefix) for p in pixels]
    seed = read_split(s3_client, build_dataset(s3_client, spec), "train")
    columns = [c for c in seed.columns if c not in ("_source",)]
    rows = pd.DataFrame(
        {
            "record_id": [f"lit-{i}" for i in range(len(refs))],
            "device_id": [f"hall-east-{i % 4:05d}" for i in range(len(refs))],
            "group_id": "hall-east",
            "ts": pd.date_range("2026-01-03", periods=len(refs), freq="s", tz="UTC"),
            "frame_key": [r.key for r in refs],
            "frame_sha256": [r.sha256 for r in refs],
            "frame_bytes": [r.size for r in refs],
            **{f: seed[f].iloc[: len(refs)].to_numpy() for f in spec.features},
            "label": labels,
        }
    )

    def address(digest: str) -> str:
        return frame_key(spec.name, digest, storage_prefix=spec.storage.prefix)

    gone = hashlib.sha256(b"a frame that never arrived").hexdigest()
    rows.loc[0, ["frame_key", "frame_sha256"]] = [address(gone), gone]  # missing
    s3_client.put_object(Bucket=bucket, Key=rows.loc[1, "frame_key"], Body=encode_png(pixels[0]))  # overwritten
    big = hashlib.sha256(b"a frame too big").hexdigest()
    s3_client.put_object(Bucket=bucket, Key=address(big), Body=b"\x89PNG\r\n\x1a\n" + bytes(70 * 1024))
    rows.loc[2, ["frame_key", "frame_sha256"]] = [address(big), big]
    rows.loc[3, "frame_key"] = seed["frame_key"].iloc[0]  # another frame's address, not this digest's
    assert set(columns) >= set(rows.columns) - {"record_id", "frame_bytes"}
    write_curated(s3_client, spec, "2026-01-04T00-00-00Z", rows)

    dataset = build_dataset(s3_client, spec, "2026-01-04T00-00-00Z")
    trained = train_model(mlflow_client, s3_client, spec, dataset)
    rejected = trained["frames_rejected"]
    merged: dict[str, int] = {}
    for part in rejected.values():
        for reason, count in part.items():
            merged[reason] = merged.get(reason, 0) + count
    assert merged == {"missing": 1, "digest": 1, "too_large": 1, "key": 1}
    assert trained["edge"]["ok"] and trained["eval_score"] > 0.5
