"""Object store helpers shared by the stages: conditional puts, multipart, listing, retries.

Every function takes a boto3 S3 client made by the caller, so the same code runs
unchanged against AWS S3, MinIO and moto. Writes are create-only (`If-None-Match: *`):
writing a key that already exists is a no-op reported as `False`, which is what makes
re-runs of a stage idempotent. Transient failures (HTTP 5xx, throttling, timeouts,
dropped connections) are retried with capped exponential backoff and jitter.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from botocore.exceptions import ClientError, HTTPClientError, ResponseStreamingError
from botocore.exceptions import ConnectionError as BotoConnectionError

log = logging.getLogger(__name__)

T = TypeVar("T")

MIB = 1024 * 1024
# Error codes S3 and S3-compatible servers use for conditions worth retrying.
_RETRYABLE_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "OperationAborted",
        "ConditionalRequestConflict",  # AWS: a concurrent conditional write on the same key is in flight
    }
)


class StorageError(Exception):
    """An object store operation failed for good (not retryable, or out of attempts)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient object store failure."""

    attempts: int = 8
    base_delay: float = 0.1
    max_delay: float = 5.0

    def delay(self, attempt: int) -> float:
        """Full-jitter backoff before retry number `attempt` (1-based)."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


DEFAULT_RETRY = RetryPolicy()


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def is_retryable(exc: BaseException) -> bool:
    """True for failures that may succeed when tried again: 5xx, throttling, timeouts, lost connections."""
    if isinstance(exc, ClientError):
        return _status(exc) >= 500 or _error_code(exc) in _RETRYABLE_CODES
    return isinstance(exc, BotoConnectionError | HTTPClientError | ResponseStreamingError)


def is_precondition_failed(exc: ClientError) -> bool:
    return _status(exc) == 412 or _error_code(exc) == "PreconditionFailed"


def is_not_found(exc: ClientError) -> bool:
    return _status(exc) == 404 or _error_code(exc) in ("404", "NoSuchKey", "NotFound")


def with_retries(what: str, call: Callable[[], T], policy: RetryPolicy = DEFAULT_RETRY) -> T:
    """Run `call`, retrying transient failures; raise StorageError naming `what` when it gives up."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except (ClientError, BotoConnectionError, HTTPClientError, ResponseStreamingError) as exc:
            if not is_retryable(exc):
                raise
            if attempt == policy.attempts:
                raise StorageError(f"{what}: gave up after {attempt} attempts: {exc}") from exc
            pause = policy.delay(attempt)
            log.warning("%s: attempt %d failed (%s); retrying in %.2fs", what, attempt, exc, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


def _size(body: bytes | Path) -> int:
    return len(body) if isinstance(body, bytes) else body.stat().st_size


def put_if_absent(
    s3: Any,
    bucket: str,
    key: str,
    body: bytes | Path,
    *,
    content_type: str = "application/octet-stream",
    policy: RetryPolicy = DEFAULT_RETRY,
    multipart_threshold: int = 64 * MIB,
    part_size: int = 16 * MIB,
) -> bool:
    """Create `key` with `body` (bytes or a local file) unless it exists.

    Returns True when this call created the object, False when the key was already
    there (nothing is overwritten). A retry after a lost response that had in fact
    stored the object also returns False. Bodies of `multipart_threshold` bytes or
    more go up as a multipart upload whose completion is conditional too, read from
    disk one part at a time.
    """
    if _size(body) >= multipart_threshold:
        return _multipart_put_if_absent(
            s3, bucket, key, body, content_type=content_type, policy=policy, part_size=part_size
        )

    def attempt() -> bool:
        try:
            if isinstance(body, bytes):
                s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*")
            else:
                with body.open("rb") as stream:
                    s3.put_object(Bucket=bucket, Key=key, Body=stream, ContentType=content_type, IfNoneMatch="*")
        except ClientError as exc:
            if is_precondition_failed(exc):
                return False
            raise
        return True

    return with_retries(f"put s3://{bucket}/{key}", attempt, policy)


def _read_part(body: bytes | Path, offset: int, size: int) -> bytes:
    if isinstance(body, bytes):
        return body[offset : offset + size]
    with body.open("rb") as stream:
        stream.seek(offset)
        return stream.read(size)


def _multipart_put_if_absent(
    s3: Any, bucket: str, key: str, body: bytes | Path, *, content_type: str, policy: RetryPolicy, part_size: int
) -> bool:
    where = f"s3://{bucket}/{key}"
    if object_exists(s3, bucket, key, policy=policy):
        return False  # skip uploading a large body that is already stored
    upload_id = with_retries(
        f"start multipart upload {where}",
        lambda: s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)["UploadId"],
        policy,
    )
    try:
        parts = []
        total = _size(body)
        for number, offset in enumerate(range(0, total, part_size), start=1):
            chunk = _read_part(body, offset, part_size)
            response = with_retries(
                f"upload part {number} of {where}",
                lambda chunk=chunk, number=number: s3.upload_part(  # type: ignore[misc]
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                ),
                policy,
            )
            parts.append({"PartNumber": number, "ETag": response["ETag"]})

        def complete() -> bool:
            try:
                s3.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
                )
            except ClientError as exc:
                if is_precondition_failed(exc):
                    return False
                # A retried completion whose first try did succeed: the upload is gone, the object is there.
                if _error_code(exc) == "NoSuchUpload" and object_exists(s3, bucket, key, policy=policy):
                    return False
                raise
            return True

        created = with_retries(f"complete multipart upload {where}", complete, policy)
    except BaseException:
        _abort_quietly(s3, bucket, key, upload_id)
        raise
    if not created:
        _abort_quietly(s3, bucket, key, upload_id)
    return created


def _abort_quietly(s3: Any, bucket: str, key: str, upload_id: str) -> None:
    try:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except (ClientError, BotoConnectionError, HTTPClientError) as exc:
        # Leftover parts are removed by the bucket's lifecycle rule for incomplete uploads.
        log.info("could not abort multipart upload %s of s3://%s/%s: %s", upload_id, bucket, key, exc)


def object_exists(s3: Any, bucket: str, key: str, *, policy: RetryPolicy = DEFAULT_RETRY) -> bool:
    def head() -> bool:
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if is_not_found(exc):
                return False
            raise
        return True

    return with_retries(f"head s3://{bucket}/{key}", head, policy)


class ObjectTooLarge(ValueError):
    """An object is over the size a reader accepts; the message names it and both sizes."""


def get_bytes(
    s3: Any, bucket: str, key: str, *, policy: RetryPolicy = DEFAULT_RETRY, max_bytes: int | None = None
) -> bytes:
    """The whole body of one (small) object; KeyError naming the key when it does not exist.

    With `max_bytes`, raise ObjectTooLarge for a larger object without reading more than one byte past the cap.
    """

    def get() -> bytes:
        try:
            response = s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if is_not_found(exc):
                raise KeyError(f"s3://{bucket}/{key} does not exist") from exc
            raise
        if max_bytes is None:
            data: bytes = response["Body"].read()
            return data
        size = response.get("ContentLength")
        body = response["Body"]
        if isinstance(size, int) and size > max_bytes:
            body.close()
            raise ObjectTooLarge(f"s3://{bucket}/{key} has {size} bytes, over the cap of {max_bytes}")
        data = body.read(max_bytes + 1)
        if len(data) > max_bytes:
            body.close()
            raise ObjectTooLarge(f"s3://{bucket}/{key} has over {max_bytes} bytes, the cap")
        return data

    return with_retries(f"get s3://{bucket}/{key}", get, policy)


def list_keys(
    s3: Any,
    bucket: str,
    prefix: str,
    *,
    start_after: str | None = None,
    limit: int | None = None,
    policy: RetryPolicy = DEFAULT_RETRY,
) -> Iterator[str]:
    """Keys under `prefix` in ascending (UTF-8 binary) order, at most `limit` of them."""
    token: str | None = None
    returned = 0
    while True:
        request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if limit is not None:
            request["MaxKeys"] = min(1000, limit - returned)
        if token:
            request["ContinuationToken"] = token
        elif start_after:
            request["StartAfter"] = start_after

        def list_page(request: dict[str, Any] = request) -> dict[str, Any]:
            page: dict[str, Any] = s3.list_objects_v2(**request)
            return page

        page = with_retries(f"list s3://{bucket}/{prefix}", list_page, policy)
        for item in page.get("Contents", []):
            yield item["Key"]
            returned += 1
            if limit is not None and returned >= limit:
                return
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return
