"""The training stage's image path without services: a camera pipeline's model takes the frame's pixels, a split
gets them from object storage (size-bounded, digest-checked, dimensions checked before decoding; bad frames
drop their row and are counted), the seed frames are stored under their content addresses, and the same refit,
export, edge-fitness and evaluation code makes an image model a camera can load."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np
import pandas as pd
import pytest
from botocore.exceptions import ClientError
from tests.helpers.camera_models import vision_spec

from edgeloop.contract.frame import MAX_FRAME_PNG_BYTES, frame_key
from edgeloop.edge.runtime import load_model
from edgeloop.spec import PipelineSpec
from edgeloop.training.dataset import SOURCE_COLUMN, split_by_time_and_device, validate_labelled_frame
from edgeloop.training.evaluate import evaluate_model
from edgeloop.training.images import (
    FrameRejected,
    camera_seed_frame,
    fetch_frame,
    model_inputs,
)
from edgeloop.training.train import TrainOptions, Trial, refit_best
from edgeloop.vision.features import feature_matrix
from edgeloop.vision.frames import decode_png, encode_png, group_conditions, inject_drift, make_frames
from edgeloop.vision.model import pixel_features, pixel_rows

BUCKET = "edgeloop"


class FakeS3:
    """Objects in a dict: conditional put, get with its length (as S3 reports it), counted."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads = 0

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, IfNoneMatch: str = "", **_: Any) -> dict[str, Any]:
        if IfNoneMatch == "*" and f"{Bucket}/{Key}" in self.objects:
            raise ClientError({"Error": {"Code": "PreconditionFailed"}}, "PutObject")
        self.objects[f"{Bucket}/{Key}"] = Body
        return {}

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        data = self.objects.get(f"{Bucket}/{Key}")
        if data is None:
            raise ClientError({"Error": {"Code": "NoSuchKey"}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "Get")
        self.reads += 1
        return {"Body": io.BytesIO(data), "ContentLength": len(data)}


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return vision_spec()


def store(s3: FakeS3, key: str, data: bytes) -> str:
    s3.objects[f"{BUCKET}/{key}"] = data
    return hashlib.sha256(data).hexdigest()


def test_a_stored_frame_comes_back_as_its_pixels_after_every_check() -> None:
    s3 = FakeS3()
    pixels, _ = make_frames("cam", 0, 1, group_conditions("hall-east"))
    digest = store(s3, "f/ok.png", encode_png(pixels[0]))
    assert np.array_equal(fetch_frame(s3, BUCKET, "f/ok.png", digest, shape=(64, 64)), pixels[0])

    small = encode_png(np.zeros((32, 32), dtype=np.uint8))
    cases = {
        "missing": ("f/none.png", digest),
        "digest": ("f/ok.png", "0" * 64),
        "too_large": ("f/big.png", store(s3, "f/big.png", b"\x89PNG\r\n\x1a\n" + bytes(MAX_FRAME_PNG_BYTES))),
        "not_png": ("f/text.png", store(s3, "f/text.png", b"GIF89a" + bytes(40))),
        "shape": ("f/small.png", store(s3, "f/small.png", small)),
        "undecodable": ("f/broken.png", store(s3, "f/broken.png", encode_png(pixels[0])[:60])),
    }
    for reason, (key, sha) in cases.items():
        with pytest.raises(FrameRejected, match=key) as caught:
            fetch_frame(s3, BUCKET, key, sha, shape=(64, 64))
        assert caught.value.reason == reason


def test_a_split_gets_each_rows_pixels_and_rows_with_bad_frames_are_dropped_and_counted(spec: PipelineSpec) -> None:
    s3 = FakeS3()
    pixels, labels = make_frames("cam", 0, 6, group_conditions("hall-west"))
    pngs = [encode_png(p) for p in pixels]
    digests = [hashlib.sha256(png).hexdigest() for png in pngs]
    keys = [frame_key(spec.name, d, storage_prefix=spec.storage.prefix) for d in digests]
    for key, png in zip(keys, pngs, strict=True):
        store(s3, key, png)
    s3.objects[f"{BUCKET}/{keys[1]}"] = pngs[0]  # the object under row 1's address is not its frame
    del s3.objects[f"{BUCKET}/{keys[3]}"]  # row 3's frame never arrived
    keys[5] = "models/visual_inspection/model.onnx"  # row 5 names another object of the bucket
    store(s3, keys[5], pngs[5])
    split = pd.DataFrame({"frame_key": keys, "frame_sha256": digests, "label": labels, "group_id": "hall-west"})
    reads = s3.reads
    attached = model_inputs(spec).attach(s3, split)
    assert attached.rejected == {"digest": 1, "missing": 1, "key": 1}
    assert s3.reads - reads == 4  # the object that is no frame's address is never read
    frame = attached.frame
    assert list(frame["frame_key"]) == [keys[0], keys[2], keys[4]]
    assert list(frame["label"]) == [labels[0], labels[2], labels[4]]
    columns = list(pixel_features((64, 64)))
    assert list(frame.columns[-len(columns) :]) == columns
    restored = np.rint(frame[columns].to_numpy() * 255).astype(np.uint8).reshape(-1, 64, 64)
    assert np.array_equal(restored, pixels[[0, 2, 4]])


def test_a_tabular_pipeline_keeps_its_features_and_its_splits(training_spec: PipelineSpec) -> None:
    inputs = model_inputs(training_spec)
    assert inputs.columns == tuple(training_spec.features) and inputs.image_shape is None
    split = pd.DataFrame({"a": [1, 2]})
    assert inputs.attach(FakeS3(), split).frame is split


def test_the_camera_seed_stores_its_frames_once_and_is_a_valid_labelled_dataset(spec: PipelineSpec) -> None:
    s3 = FakeS3()
    seed = camera_seed_frame(s3, spec, per_group=16)
    assert len(seed) == 16 * len(spec.groups) and len(s3.objects) == len(set(seed["frame_sha256"]))
    for key, digest in zip(seed["frame_key"], seed["frame_sha256"], strict=True):
        assert hashlib.sha256(s3.objects[f"{BUCKET}/{key}"]).hexdigest() == digest
        assert key.startswith(spec.storage_prefix("frames") + "/")
    valid = validate_labelled_frame(spec, seed, "seed")
    assert {"frame_key", "frame_sha256"} <= set(valid.columns) and set(valid["label"]) <= set(spec.annotation.labels)
    again = camera_seed_frame(s3, spec, per_group=16)
    assert again.equals(seed) and len(s3.objects) == len(set(seed["frame_sha256"]))  # nothing stored twice


def test_the_same_refit_export_fitness_and_evaluation_make_an_image_model_a_camera_loads(spec: PipelineSpec) -> None:
    s3 = FakeS3()
    seed = validate_labelled_frame(spec, camera_seed_frame(s3, spec, per_group=48), "seed")
    seed[SOURCE_COLUMN] = "seed"
    split = split_by_time_and_device(spec, seed, "seed")
    inputs = model_inputs(spec)
    train, evaluation = inputs.attach(s3, split.train).frame, inputs.attach(s3, split.eval).frame
    limits = spec.training.limits.model_copy(update={"max_latency_ms": 1000.0, "max_memory_mb": 2000.0})
    roomy = spec.model_copy(update={"training": spec.training.model_copy(update={"limits": limits})})
    options = TrainOptions(latency_repeats=20)
    _, model, fitness, exported = refit_best(roomy, [Trial(0, {"C": 1.0}, "run")], train, evaluation, options)
    assert exported is not None and fitness.ok, fitness.violations
    assert model.named_steps["model"].C == 1.0
    camera = load_model(exported.data, "1", pixel_features((64, 64)))  # the device's loader and self-test
    assert set(spec.features) <= set(camera.image_columns)
    result = evaluate_model(roomy, model, evaluation)
    assert result["records"] == len(evaluation) and result["score"] > 0.6
    assert set(result["groups"]) == set(evaluation["group_id"])


def test_every_model_of_a_camera_pipeline_gives_a_frame_the_embedding_its_seed_rows_have(spec: PipelineSpec) -> None:
    """The drift check compares records with the rows the champion was trained on: `emb_..` must not move with it."""
    s3 = FakeS3()
    seed = camera_seed_frame(s3, spec)
    seed_frames = np.stack([decode_png(s3.objects[f"{BUCKET}/{key}"]) for key in seed["frame_key"][::9]])
    embedded = [f for f in spec.features if f.startswith("emb_")]
    lamp_failed = inject_drift(group_conditions("hall-east"), "lighting")
    classifiers = []
    for frames, labels in (
        make_frames("hall-west-00001", 0, 80, group_conditions("hall-west")),
        make_frames("hall-east-00002", 0, 80, lamp_failed),  # a retraining on the drifted hall's frames
    ):
        estimator = model_inputs(spec).estimator()
        estimator.fit(pixel_rows(frames), labels)
        classifiers.append(estimator.named_steps["model"].classifier_)
    for classifier in classifiers:
        matrix, columns = feature_matrix(seed_frames, classifier.embedding)
        model_side = matrix[:, [list(columns).index(c) for c in embedded]]
        assert np.allclose(model_side, seed[embedded].to_numpy()[::9], atol=1e-5)
