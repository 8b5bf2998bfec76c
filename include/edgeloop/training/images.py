"""The training stage's image path: what a camera pipeline's model takes, and the frames it learns from.

A spec with an `image_ref` field is a camera pipeline. Its labelled records are rows like any
other (device, group, time, the drift features, the label) plus the frame's content-addressed
key and sha256; its model takes the frame's pixels. `model_inputs(spec)` is the one place the
stage branches: it says which columns the model takes (the spec's features, or the pixels
`px_<row>_<col>`), which estimator to fit (the spec's, or `edgeloop.vision.estimator.FrameClassifier`:
`edgeloop.vision.model`'s classifier with the spec's search space over `C`), how to export it
(`export_onnx`, or `export_image_onnx`) and how to put those columns on a split
(`attach`: for images, each row's PNG fetched from object storage, size-bounded, digest-checked,
decoded with its dimensions checked first). The search, refit, edge-fitness limits, evaluation
and gate are the same code for both.

A frame that cannot be used (a key that is not the content address of the record's digest,
missing, too big, another digest, not a PNG of the model's shape) drops its row from the split
and is counted by reason (`FramesAttached.rejected`, the `edgeloop_training_frames_rejected`
metric), never a failed task. The seed of a camera pipeline (`camera_seed_frame`) is the seed frames
(`edgeloop.training.seed.make_seed_frames`) stored under their content addresses, with their
features as the drift check sees them.

The embedding (the `emb_..` drift columns) is the pipeline's, not a model's: `seed_embedding`
fits it on the seed frames, the same every time, and every model of the pipeline projects
through it. A model that fitted its own on frames of a drifted group would give the same frame
other `emb_..` values than the champion before it: the drift check, which compares a group's
records with the rows its champion was trained on, would then see every group drift after
each retraining.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeloop.contract.frame import MAX_FRAME_PNG_BYTES
from edgeloop.spec import PipelineSpec
from edgeloop.training.errors import DatasetError
from edgeloop.training.seed import SEED_FRAMES_PER_GROUP

if TYPE_CHECKING:
    import pandas as pd

    from edgeloop.training.onnx_export import OnnxModel
    from edgeloop.training.seed import SeedFrames
    from edgeloop.vision.features import Embedding

log = logging.getLogger(__name__)

S3Client = Any
IMAGE_SHAPE = (64, 64)  # the frames cameras send (`edgeloop.vision.frames.DEFAULT_SIZE`)
FETCH_THREADS = 8  # frames read or stored at once: each is one small request to the object store


class FrameRejected(ValueError):
    """A frame training cannot use; the message names the key and why, `reason` says it in one word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # key, missing, too_large, digest, not_png, shape, undecodable


def frame_columns(spec: PipelineSpec) -> tuple[str, str] | None:
    """The fields of a record's frame key (role `image_ref`) and digest (`meta` ending in sha256), or None."""
    ref = spec.field_with_role("image_ref")
    if ref is None:
        return None
    digests = [f.name for f in spec.schema_ if f.role == "meta" and f.name.endswith("sha256")]
    if not digests:
        raise DatasetError(f"{spec.name}: the frame key {ref!r} has no digest field (a meta field ending in sha256)")
    return str(ref), digests[0]


def read_frame(s3: S3Client, bucket: str, key: str, sha256: str, *, max_bytes: int = MAX_FRAME_PNG_BYTES) -> bytes:
    """A stored frame's PNG bytes, read at most `max_bytes` and checked against the record's sha256.

    Raise FrameRejected naming the key: missing, over `max_bytes`, another sha256, or not a PNG.
    """
    from edgeloop.contract.frame import BadFrame, png_shape
    from edgeloop.storage import ObjectTooLarge, get_bytes
    from edgeloop.vision.claim import frame_digest

    try:
        data = get_bytes(s3, bucket, key, max_bytes=max_bytes)
    except KeyError:
        raise FrameRejected("missing", f"frame s3://{bucket}/{key}: missing") from None
    except ObjectTooLarge as exc:
        raise FrameRejected("too_large", f"frame s3://{bucket}/{key}: too large ({exc})") from None
    digest = frame_digest(data)
    if digest != sha256:
        message = f"frame s3://{bucket}/{key}: digest {digest[:12]}... is not the record's {sha256[:12]}..."
        raise FrameRejected("digest", message)
    try:
        png_shape(data)
    except BadFrame:
        raise FrameRejected("not_png", f"frame s3://{bucket}/{key}: not a PNG") from None
    return data


def fetch_frame(
    s3: S3Client, bucket: str, key: str, sha256: str, *, shape: tuple[int, int], max_bytes: int = MAX_FRAME_PNG_BYTES
) -> np.ndarray:
    """A stored frame's pixels (uint8, `shape`), after its size, digest and PNG dimensions are checked.

    Raise FrameRejected naming the key: what `read_frame` rejects, or dimensions other than `shape`
    (read from the header, before any pixel is decoded).
    """
    from edgeloop.contract.frame import png_shape
    from edgeloop.vision.frames import decode_png

    data = read_frame(s3, bucket, key, sha256, max_bytes=max_bytes)
    height, width = png_shape(data)
    if (height, width) != shape:
        raise FrameRejected(
            "shape", f"frame s3://{bucket}/{key}: {width}x{height} pixels, the model takes {shape[1]}x{shape[0]}"
        )
    try:
        pixels = decode_png(data)
    except Exception as exc:  # a corrupt stream: Pillow raises several kinds
        raise FrameRejected("undecodable", f"frame s3://{bucket}/{key}: cannot be decoded: {exc}") from None
    return pixels


def check_frame_address(spec: PipelineSpec, key: str, sha256: str) -> None:
    """FrameRejected("key") unless `key` is the content address of `sha256` under the pipeline's frames: a
    record cannot make a stage read any other object of the bucket."""
    from edgeloop.contract.frame import frame_key

    try:
        expected = frame_key(spec.name, sha256, storage_prefix=spec.storage.prefix)
    except ValueError as exc:
        raise FrameRejected("key", f"frame {key!r}: {exc}") from None
    if key != expected:
        raise FrameRejected("key", f"frame {key!r}: not the content address of its digest ({expected})")


@dataclass
class FramesAttached:
    """A split with the model's input columns on it, and the rows dropped for their frames (by reason)."""

    frame: pd.DataFrame
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInputs:
    """What the pipeline's model takes: the columns, the estimator, the export, and how a split gets them."""

    spec: PipelineSpec
    columns: tuple[str, ...]
    image_shape: tuple[int, int] | None = None
    embedding: Embedding | None = None  # a camera pipeline's (`seed_embedding`)

    def estimator(self, *, random_state: int = 0, n_jobs: int | None = None) -> Any:
        """The unfitted pipeline (classifier step `model`) with the spec's fixed params applied."""
        from edgeloop.training.estimators import make_estimator

        if self.image_shape is None:
            return make_estimator(self.spec.training, random_state=random_state, n_jobs=n_jobs)
        from edgeloop.vision.estimator import FrameClassifier

        classifier = FrameClassifier(shape=self.image_shape, random_state=random_state, embedding=self.embedding)
        return make_estimator(self.spec.training, model=classifier)

    def export(self, model: Any, validation: pd.DataFrame) -> OnnxModel:
        """The fitted pipeline as the contract ONNX file, parity-checked on `validation`; OnnxExportError if not."""
        from edgeloop.training.estimators import MODEL_STEP
        from edgeloop.training.onnx_export import OnnxExportError, export_onnx

        if self.image_shape is None:
            return export_onnx(model, self.columns, validation)
        from edgeloop.vision.model import export_image_onnx

        classifier = model.named_steps[MODEL_STEP]
        if not hasattr(classifier, "classifier_"):
            raise OnnxExportError("FrameClassifier: not fitted")
        frames = classifier.frames(validation[list(self.columns)].to_numpy(np.float32))
        return export_image_onnx(classifier.classifier_, frames)

    def attach(self, s3: S3Client, frame: pd.DataFrame, bucket: str | None = None) -> FramesAttached:
        """The split with the model's input columns: itself for tabular models; for images, the pixels of each
        row's frame (rows whose frame is rejected are dropped and counted by reason)."""
        import pandas as pd

        if self.image_shape is None:
            return FramesAttached(frame)
        columns = frame_columns(self.spec)
        assert columns is not None
        ref, digest = columns
        bucket = bucket or self.spec.storage.bucket
        shape = self.image_shape

        def fetch(address: tuple[str, str]) -> np.ndarray | FrameRejected:
            key, sha = address
            try:
                check_frame_address(self.spec, key, sha)
                return fetch_frame(s3, bucket, key, sha, shape=shape)
            except FrameRejected as exc:
                return exc

        addresses = zip(frame[ref].astype(str), frame[digest].astype(str), strict=True)
        with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:  # one GET per frame: waits on the network
            fetched = list(pool.map(fetch, addresses))
        pixels: list[np.ndarray] = []
        kept: list[int] = []
        rejected: Counter[str] = Counter()
        for position, result in enumerate(fetched):
            if isinstance(result, FrameRejected):
                rejected[result.reason] += 1
                if sum(rejected.values()) <= 5:
                    log.warning("training: row %d dropped: %s", position, result)
                continue
            pixels.append(result)
            kept.append(position)
        if rejected:
            log.warning(
                "training: %d of %d rows dropped for their frames: %s",
                sum(rejected.values()),
                len(frame),
                dict(rejected),
            )
        rows = frame.iloc[kept].reset_index(drop=True)
        flat = (
            np.stack(pixels).reshape(len(pixels), -1) / np.float32(255.0)
            if pixels
            else np.zeros((0, len(self.columns)))
        )
        table = pd.DataFrame(flat.astype(np.float32), columns=list(self.columns))
        return FramesAttached(pd.concat([rows, table], axis=1), dict(rejected))


def model_inputs(spec: PipelineSpec) -> ModelInputs:
    """What the spec's model takes: the frame's pixels for a camera pipeline, else the spec's features."""
    if frame_columns(spec) is None:
        return ModelInputs(spec, tuple(spec.features))
    from edgeloop.vision.model import pixel_features

    return ModelInputs(spec, pixel_features(IMAGE_SHAPE), IMAGE_SHAPE, seed_embedding(spec))


def seed_embedding(spec: PipelineSpec, per_group: int = SEED_FRAMES_PER_GROUP) -> Embedding:
    """The pipeline's embedding: a PCA of its seed frames (`make_seed_frames`), the same on every call."""
    from edgeloop.training.seed import make_seed_frames

    return _seed_frames_embedding(make_seed_frames(spec, per_group))


def _seed_frames_embedding(seed: SeedFrames) -> Embedding:
    from edgeloop.vision.features import fit_embedding
    from edgeloop.vision.model import MODEL_COMPONENTS

    return fit_embedding(seed.pixels, MODEL_COMPONENTS)


def camera_seed_frame(s3: S3Client, spec: PipelineSpec, per_group: int = SEED_FRAMES_PER_GROUP) -> pd.DataFrame:
    """A camera pipeline's seed dataset: the seed frames stored under their content addresses (create-only),
    one labelled row each with the frame's key, digest and size and its features (statistics, embedding)."""
    import pandas as pd

    from edgeloop.training.seed import LABEL_COLUMN, SEED_SPAN_S, SEED_START, make_seed_frames
    from edgeloop.vision.claim import FrameRef, put_frame
    from edgeloop.vision.features import feature_table
    from edgeloop.vision.frames import encode_png

    columns = frame_columns(spec)
    if columns is None:
        raise DatasetError(f"{spec.name}: not a camera pipeline (no image_ref field)")
    seed = make_seed_frames(spec, per_group)
    features = feature_table(seed.pixels, _seed_frames_embedding(seed))  # the frames just made, not again
    missing = [f for f in spec.features if f not in features]
    if missing:
        raise DatasetError(f"{spec.name}: features {missing} are not image features ({list(features.columns)})")

    def put(pixels: np.ndarray) -> FrameRef:
        return put_frame(s3, spec.storage.bucket, spec.name, encode_png(pixels), storage_prefix=spec.storage.prefix)

    with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:
        refs = list(pool.map(put, seed.pixels))
    count = len(refs)
    offsets = np.linspace(0, SEED_SPAN_S, num=count, endpoint=False)
    data: dict[str, Sequence[Any] | Any] = {}
    record = spec.field_with_role("record_id")
    if record:
        data[record] = [f"{spec.name}-seed-{i:07d}" for i in range(count)]
    data[str(spec.field_with_role("device_id"))] = seed.devices
    data[str(spec.field_with_role("group_id"))] = seed.groups
    data[str(spec.field_with_role("timestamp"))] = pd.to_datetime(SEED_START) + pd.to_timedelta(offsets, unit="s")
    data[columns[0]] = [r.key for r in refs]
    data[columns[1]] = [r.sha256 for r in refs]
    for name in (f.name for f in spec.schema_ if f.role == "meta" and f.name.endswith("bytes")):
        data[name] = [r.size for r in refs]
    for name in spec.features:
        data[name] = features[name].astype(np.float64).round(6).to_numpy()
    data[LABEL_COLUMN] = seed.labels
    return pd.DataFrame(data)
