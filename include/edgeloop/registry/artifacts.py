"""Publish a model version's ONNX file where devices fetch it: content-addressed in the pipeline's bucket.

Training logs the file as an artifact of its run and the version carries its digest,
size and run-relative path as tags (`edgeloop.artifact.*`). `publish_edge_artifact`
makes that file available to devices and returns the `ArtifactRef` an assignment
carries:

1. Read the version's tags; a version without them (registered before ONNX export)
   raises `ArtifactMissing`.
2. If an object of the recorded size is at `content_key(<storage prefix>, sha256)`
   already, use it: the key is the digest, and devices check the digest before they
   load anything. Otherwise download the file from MLflow, check its size and sha256
   against the tags (`ArtifactDigestMismatch` names the version and both digests), and
   upload it (create-only; an object of the wrong size at the key, a broken upload, is
   replaced).
3. Return the reference with a presigned GET URL (7 days) made by the boto3 client the
   caller gives, so the same code serves AWS S3 and MinIO. A retry returns the same
   reference but for the URL's signature and expiry.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeloop.contract.artifact import ARTIFACT_FORMAT, ArtifactRef, BadArtifactRef, content_key, sha256_hex
from edgeloop.registry.client import mlflow_errors
from edgeloop.registry.errors import RegistryError
from edgeloop.registry.register import recorded_artifact
from edgeloop.registry.tags import TAG_TRAINING_RUN
from edgeloop.spec import PipelineSpec
from edgeloop.storage import is_not_found, put_if_absent, with_retries

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

S3Client = Any
PRESIGN_SECONDS = 7 * 24 * 3600  # the longest a SigV4 presigned URL may live


class ArtifactMissing(RegistryError):
    """A model version has no ONNX file recorded (its tags are missing or incomplete)."""


class ArtifactDigestMismatch(RegistryError):
    """The file MLflow holds is not the one the version's tags describe."""


def artifact_key(spec: PipelineSpec, sha256: str) -> str:
    """Where the pipeline's bucket keeps a file with this digest."""
    return content_key(spec.storage.prefix, sha256)


def _stored_size(s3: S3Client, bucket: str, key: str) -> int | None:
    from botocore.exceptions import ClientError

    def head() -> int | None:
        try:
            return int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise

    return with_retries(f"head s3://{bucket}/{key}", head)


def _download(client: MlflowClient, name: str, version: str, run_id: str, path: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="edgeloop-artifact-") as tmp:
        local = client.download_artifacts(run_id, path, tmp)
        return Path(local).read_bytes()


@dataclass(frozen=True)
class _RecordedFile:
    version: str
    sha256: str
    size: int
    run_id: str
    path: str


def _recorded_file(client: MlflowClient, spec: PipelineSpec, version: str) -> _RecordedFile:
    """The ONNX file a version's tags describe; raise ArtifactMissing without a complete record."""
    name = spec.registry.model_name
    with mlflow_errors(client, f"reading the ONNX file of {name} version {version}"):
        tags = dict(client.get_model_version(name, version).tags or {})
    recorded = recorded_artifact(tags)
    run_id = tags.get(TAG_TRAINING_RUN, "")
    if recorded is None or not recorded["path"] or recorded["size"] <= 0 or not run_id:
        raise ArtifactMissing(
            f"{name} version {version} has no ONNX file recorded (tags edgeloop.artifact.* and "
            f"{TAG_TRAINING_RUN} missing or incomplete): it was registered before models were exported to "
            "ONNX, or its export failed; train and register it again"
        )
    if recorded["format"] != ARTIFACT_FORMAT:
        raise ArtifactMissing(f"{name} version {version}: artifact format {recorded['format']!r} is not 'onnx'")
    return _RecordedFile(version, str(recorded["sha256"]), int(recorded["size"]), run_id, str(recorded["path"]))


def _verified_download(client: MlflowClient, spec: PipelineSpec, recorded: _RecordedFile) -> bytes:
    """The file from the training run's artifacts; raise ArtifactDigestMismatch unless it is the recorded one."""
    name = spec.registry.model_name
    with mlflow_errors(client, f"downloading the ONNX file of {name} version {recorded.version}"):
        data = _download(client, name, recorded.version, recorded.run_id, recorded.path)
    actual = sha256_hex(data)
    if actual != recorded.sha256 or len(data) != recorded.size:
        raise ArtifactDigestMismatch(
            f"{name} version {recorded.version}: the ONNX file in run {recorded.run_id} at {recorded.path} has "
            f"sha256 {actual} ({len(data)} bytes), the version's tags say sha256 {recorded.sha256} "
            f"({recorded.size} bytes)"
        )
    return data


def verified_edge_artifact(client: MlflowClient, s3: S3Client, spec: PipelineSpec, version: str) -> bytes:
    """The bytes of a version's ONNX file, checked against the sha256 and size on the version (the pipeline's
    content-addressed copy when it is there, else the training run's). What the evaluation gate judges."""
    recorded = _recorded_file(client, spec, version)
    bucket, key = spec.storage.bucket, artifact_key(spec, recorded.sha256)
    if _stored_size(s3, bucket, key) == recorded.size:

        def read() -> bytes:
            return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

        data = with_retries(f"get s3://{bucket}/{key}", read)
        if sha256_hex(data) == recorded.sha256:
            return data
        log.warning("s3://%s/%s does not hold the bytes its name says: reading the training run's copy", bucket, key)
    return _verified_download(client, spec, recorded)


def publish_edge_artifact(
    client: MlflowClient, s3: S3Client, spec: PipelineSpec, version: str, *, expires_s: int = PRESIGN_SECONDS
) -> ArtifactRef:
    """The `ArtifactRef` of a version's ONNX file, uploaded to the pipeline's bucket if needed (module docstring).

    Raise ArtifactMissing for a version without ONNX tags, ArtifactDigestMismatch when
    MLflow's file is not the one the tags describe.
    """
    name, bucket = spec.registry.model_name, spec.storage.bucket
    recorded = _recorded_file(client, spec, version)
    digest, size = recorded.sha256, recorded.size
    key = artifact_key(spec, digest)
    stored = _stored_size(s3, bucket, key)
    if stored != size:
        data = _verified_download(client, spec, recorded)
        if stored is None:
            created = put_if_absent(s3, bucket, key, data, content_type="application/octet-stream")
            log.info("%s version %s: %s s3://%s/%s", name, version, "uploaded" if created else "found", bucket, key)
        else:  # a broken earlier upload: the key names the content, so the right bytes replace it
            log.warning("s3://%s/%s holds %d bytes, not %d: replacing it", bucket, key, stored, size)
            with_retries(f"put s3://{bucket}/{key}", lambda: s3.put_object(Bucket=bucket, Key=key, Body=data))
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(expires_s))
    try:
        return ArtifactRef.from_dict({"url": url, "sha256": digest, "size": size, "format": ARTIFACT_FORMAT})
    except BadArtifactRef as exc:
        raise RegistryError(f"{name} version {version}: the artifact reference is not valid: {exc}") from exc
