"""The claim check: a frame's PNG is stored once under its sha256, a re-sent frame stores nothing new, and the
record gets the key, digest and size."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from edgeloop.spec import load_spec
from edgeloop.vision import claim as C
from edgeloop.vision import frames as F

DEMO_SPEC = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"


class ConditionalS3:
    """put_object with S3's If-None-Match: * (412 when the key exists); every call recorded."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.puts = 0

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, ContentType: str, IfNoneMatch: str) -> dict[str, Any]:
        self.puts += 1
        if IfNoneMatch == "*" and (Bucket, Key) in self.objects:
            error = {"Error": {"Code": "PreconditionFailed"}, "ResponseMetadata": {"HTTPStatusCode": 412}}
            raise ClientError(error, "PutObject")
        self.objects[(Bucket, Key)] = (Body, ContentType)
        return {}


def _png(index: int) -> bytes:
    return F.encode_png(F.make_frame("cam-1", index, F.CameraConditions()).pixels)


def test_frame_keys_are_content_addressed_under_the_specs_frames_prefix() -> None:
    data = _png(0)
    digest = C.frame_digest(data)
    assert digest == hashlib.sha256(data).hexdigest()
    spec = load_spec(DEMO_SPEC)
    key = C.frame_key(spec.name, digest, storage_prefix=spec.storage.prefix)
    assert key == f"{spec.storage_prefix('frames')}/{digest[:2]}/{digest}.png"
    assert C.frame_key("vi", digest, storage_prefix="lake") == f"lake/frames/vi/{digest[:2]}/{digest}.png"
    with pytest.raises(ValueError, match="64 lowercase hex"):
        C.frame_key("vi", digest.upper())


def test_a_frame_is_stored_once_and_a_resent_frame_stores_nothing() -> None:
    s3, data = ConditionalS3(), _png(1)
    first = C.put_frame(s3, "edgeloop", "visual_inspection", data)
    again = C.put_frame(s3, "edgeloop", "visual_inspection", data)
    assert first.created and not again.created
    assert (first.key, first.sha256, first.size) == (again.key, again.sha256, again.size)
    assert s3.objects == {("edgeloop", first.key): (data, "image/png")}
    other = C.put_frame(s3, "edgeloop", "visual_inspection", _png(2))
    assert other.created and other.key != first.key and len(s3.objects) == 2
    assert first.record_fields() == {"frame_key": first.key, "frame_sha256": first.sha256, "frame_bytes": len(data)}


def test_what_is_not_a_png_is_refused_before_any_put() -> None:
    s3 = ConditionalS3()
    with pytest.raises(ValueError, match="must be a PNG"):
        C.put_frame(s3, "edgeloop", "visual_inspection", b"GIF89a....")
    assert s3.puts == 0
