"""Publishing a version's ONNX file with plain fakes: digest checked, content-addressed, idempotent;
a copy of a version (`copy_version`) is admitted by a rollout and publishes the same file."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from edgeloop.contract.artifact import content_key, sha256_hex
from edgeloop.registry.artifacts import ArtifactDigestMismatch, ArtifactMissing, publish_edge_artifact
from edgeloop.registry.errors import RegistryError
from edgeloop.registry.register import candidate_versions, copy_version
from edgeloop.registry.tags import TAG_CANDIDATE, TAG_COPY_NOTE, TAG_COPY_OF, TAG_DECISION, TAG_REASON, artifact_tags
from edgeloop.rollout.admission import gate_record
from edgeloop.spec import PipelineSpec

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


def test_a_version_is_published_once_at_its_content_key(registry_spec: PipelineSpec) -> None:
    client, s3 = FakeMlflow(version_tags(ONNX), {"r1/edge/model.onnx": ONNX}), FakeS3()

    ref = publish_edge_artifact(client, s3, registry_spec, "3")

    key = content_key(registry_spec.storage.prefix, sha256_hex(ONNX))
    assert s3.objects == {f"{registry_spec.storage.bucket}/{key}": ONNX}
    assert (ref.sha256, ref.size, ref.format) == (sha256_hex(ONNX), len(ONNX), "onnx")
    assert ref.url.startswith(f"https://s3.example/{registry_spec.storage.bucket}/{key}?")
    assert "X-Amz-Expires=604800" in ref.url  # 7 days

    again = publish_edge_artifact(client, s3, registry_spec, "3")
    assert (again.sha256, again.size) == (ref.sha256, ref.size)
    assert (client.downloads, s3.puts) == (1, 1), "a retry finds the object and neither downloads nor uploads"


def test_a_file_that_is_not_the_one_the_tags_describe_is_refused_naming_both_digests(
    registry_spec: PipelineSpec,
) -> None:
    client, s3 = FakeMlflow(version_tags(ONNX), {"r1/edge/model.onnx": OTHER}), FakeS3()

    with pytest.raises(ArtifactDigestMismatch) as refused:
        publish_edge_artifact(client, s3, registry_spec, "3")

    message = str(refused.value)
    assert f"{registry_spec.registry.model_name} version 3" in message
    assert sha256_hex(ONNX) in message and sha256_hex(OTHER) in message
    assert s3.objects == {}


def test_a_broken_upload_at_the_key_is_replaced(registry_spec: PipelineSpec) -> None:
    client, s3 = FakeMlflow(version_tags(ONNX), {"r1/edge/model.onnx": ONNX}), FakeS3()
    key = f"{registry_spec.storage.bucket}/{content_key(registry_spec.storage.prefix, sha256_hex(ONNX))}"
    s3.objects[key] = ONNX[:5]

    publish_edge_artifact(client, s3, registry_spec, "3")

    assert s3.objects[key] == ONNX


def test_a_version_registered_before_onnx_export_has_no_artifact(registry_spec: PipelineSpec) -> None:
    client = FakeMlflow({"edgeloop.training_run": "r1"}, {})
    with pytest.raises(ArtifactMissing, match=r"version 2 has no ONNX file recorded .* registered before"):
        publish_edge_artifact(client, FakeS3(), registry_spec, "2")


MODEL = "factory_maintenance"
PROMOTED = {TAG_DECISION: "promote", TAG_REASON: "first model"}


class FakeRegistry(FakeMlflow):
    """Versions of one registered model, numbered as the registry numbers them; run artifacts to download."""

    tracking_uri = "http://mlflow.example"

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__({}, files)
        self.versions: dict[str, SimpleNamespace] = {}

    def add(self, source: str | None, tags: dict[str, str]) -> str:
        number = str(len(self.versions) + 1)
        self.versions[number] = SimpleNamespace(version=number, source=source, run_id="r1", tags=tags)
        return number

    def get_model_version(self, name: str, version: str) -> Any:
        return self.versions[str(version)]

    def create_model_version(self, name: str, source: str, **kwargs: Any) -> Any:
        assert kwargs["model_id"] == "m-1", "the copy names the same logged model"
        return self.versions[self.add(source, dict(kwargs["tags"]))]

    def search_model_versions(self, filter_string: str, max_results: int = 200) -> list[Any]:
        key = filter_string.rsplit("= '", maxsplit=1)[-1].rstrip("'")
        return [v for v in self.versions.values() if v.tags.get(TAG_CANDIDATE) == key]


def test_a_copy_of_a_promoted_version_is_admitted_and_ships_the_same_file(registry_spec: PipelineSpec) -> None:
    client, s3 = FakeRegistry({"r1/edge/model.onnx": ONNX}), FakeS3()
    first = client.add("models:/m-1", {**version_tags(ONNX), **PROMOTED, TAG_CANDIDATE: "seed|abc"})

    copy = copy_version(client, MODEL, first, "benchmark")

    assert copy == "2"
    tags = client.versions[copy].tags
    assert (tags[TAG_COPY_OF], tags[TAG_COPY_NOTE]) == (first, "benchmark")
    assert gate_record(client, MODEL, copy).passed, "the gate's promote decision comes along"
    ref = publish_edge_artifact(client, s3, registry_spec, copy)
    assert (ref.sha256, ref.size) == (sha256_hex(ONNX), len(ONNX))
    assert [v.version for v in candidate_versions(client, MODEL, "seed|abc")] == [first], (
        "a copy is no duplicate registration of the candidate"
    )


def test_a_version_without_an_onnx_file_is_not_copied() -> None:
    client = FakeRegistry({})
    before_onnx = client.add("models:/m-1", dict(PROMOTED))

    with pytest.raises(RegistryError, match=f"{MODEL} version {before_onnx} has no ONNX file recorded"):
        copy_version(client, MODEL, before_onnx, "benchmark")
    assert list(client.versions) == [before_onnx]


def test_a_version_without_a_source_is_not_copied() -> None:
    client = FakeRegistry({})
    sourceless = client.add(None, {**version_tags(ONNX), **PROMOTED})

    with pytest.raises(RegistryError, match="names no model source"):
        copy_version(client, MODEL, sourceless, "benchmark")
