"""Publishing a version's ONNX file with plain fakes: digest checked, content-addressed, idempotent."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from edgeloop.contract.artifact import content_key, sha256_hex
from edgeloop.registry.artifacts import ArtifactDigestMismatch, ArtifactMissing, publish_edge_artifact
from edgeloop.spec import PipelineSpec
from edgeloop.training.onnx_export import artifact_tags

ONNX = b"\x08\x08 pretend these are the bytes of an ONNX file"
OTHER = b"\x08\x08 and these are the bytes of a different one"


class FakeMlflow:
    """One model version with tags, and the run artifacts it may download."""

    def __init__(self, tags: dict[str, str], files: dict[str, bytes]) -> None:
        self.tags, self.files, self.downloads = tags, files, 0

    def get_model_version(self, name: str, version: str) -> Any:
        return SimpleNamespace(name=name, version=version, tags=self.tags)

    def download_artifacts(self, run_id: str, path: str, dst_path: str) -> str:
        self.downloads += 1
        local = Path(dst_path) / path
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(self.files[f"{run_id}/{path}"])
        return str(local)


class FakeS3:
    """Objects in a dict; head, conditional put, presign."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts = 0

    def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        if f"{Bucket}/{Key}" not in self.objects:
            raise ClientError({"Error": {"Code": "404"}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "HeadObject")
        return {"ContentLength": len(self.objects[f"{Bucket}/{Key}"])}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, IfNoneMatch: str = "", **_: Any) -> dict[str, Any]:
        self.puts += 1
        if IfNoneMatch == "*" and f"{Bucket}/{Key}" in self.objects:
            raise ClientError({"Error": {"Code": "PreconditionFailed"}}, "PutObject")
        self.objects[f"{Bucket}/{Key}"] = Body
        return {}

    def generate_presigned_url(self, method: str, Params: dict[str, str], ExpiresIn: int) -> str:
        assert method == "get_object"
        return f"https://s3.example/{Params['Bucket']}/{Params['Key']}?X-Amz-Expires={ExpiresIn}&X-Amz-Signature=f00"


def version_tags(data: bytes) -> dict[str, str]:
    record = {"sha256": sha256_hex(data), "size": len(data), "opset": "ai.onnx=17", "path": "edge/model.onnx"}
    return {**artifact_tags(record), "edgeloop.training_run": "r1"}


def test_a_version_is_published_once_at_its_content_key(training_spec: PipelineSpec) -> None:
    client, s3 = FakeMlflow(version_tags(ONNX), {"r1/edge/model.onnx": ONNX}), FakeS3()

    ref = publish_edge_artifact(client, s3, training_spec, "3")

    key = content_key(training_spec.storage.prefix, sha256_hex(ONNX))
    assert s3.objects == {f"{training_spec.storage.bucket}/{key}": ONNX}
    assert (ref.sha256, ref.size, ref.format) == (sha256_hex(ONNX), len(ONNX), "onnx")
    assert ref.url.startswith(f"https://s3.example/{training_spec.storage.bucket}/{key}?")
    assert "X-Amz-Expires=604800" in ref.url  # 7 days

    again = publish_edge_artifact(client, s3, training_spec, "3")
    assert (again.sha256, again.size) == (ref.sha256, ref.size)
    assert (client.downloads, s3.puts) == (1, 1), "a retry finds the object and neither downloads nor uploads"


def test_a_file_that_is_not_the_one_the_tags_describe_is_refused_naming_both_digests(
    training_spec: PipelineSpec,
) -> None:
    client, s3 = FakeMlflow(version_tags(ONNX), {"r1/edge/model.onnx": OTHER}), FakeS3()

    with pytest.raises(ArtifactDigestMismatch) as refused:
        publish_edge_artifact(client, s3, training_spec, "3")

    message = str(refused.value)
    assert f"{training_spec.registry.model_name} version 3" in message
    assert sha256_hex(ONNX) in message and sha256_hex(OTHER) in message
    assert s3.objects == {}


def test_a_broken_upload_at_the_key_is_replaced(training_spec: PipelineSpec) -> None:
    client, s3 = FakeMlflow(version_tags(ONNX), {"r1/edge/model.onnx": ONNX}), FakeS3()
    key = f"{training_spec.storage.bucket}/{content_key(training_spec.storage.prefix, sha256_hex(ONNX))}"
    s3.objects[key] = ONNX[:5]

    publish_edge_artifact(client, s3, training_spec, "3")

    assert s3.objects[key] == ONNX


def test_a_version_registered_before_onnx_export_has_no_artifact(training_spec: PipelineSpec) -> None:
    client = FakeMlflow({"edgeloop.training_run": "r1"}, {})
    with pytest.raises(ArtifactMissing, match=r"version 2 has no ONNX file recorded .* registered before"):
        publish_edge_artifact(client, FakeS3(), training_spec, "2")
