"""An in-memory stand-in for the few S3 calls the ingest stage makes (unit tests only)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError


def client_error(status: int, code: str, operation: str = "PutObject") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


class FakeS3:
    """Objects in a dict; `failures` holds exceptions to raise, one per call, before the real behaviour."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.failures: list[BaseException] = []
        self.calls: list[str] = []
        self.before: Callable[[str], None] | None = None

    def _enter(self, operation: str) -> None:
        self.calls.append(operation)
        if self.failures:
            raise self.failures.pop(0)

    def put_object(self, *, Bucket: str, Key: str, Body: Any, IfNoneMatch: str | None = None, **_: Any) -> dict:
        self._enter("put_object")
        data = Body if isinstance(Body, bytes) else Body.read()
        if IfNoneMatch == "*" and (Bucket, Key) in self.objects:
            raise client_error(412, "PreconditionFailed")
        self.objects[(Bucket, Key)] = data
        return {}

    def head_object(self, *, Bucket: str, Key: str) -> dict:
        self._enter("head_object")
        if (Bucket, Key) not in self.objects:
            raise client_error(404, "404", "HeadObject")
        return {"ContentLength": len(self.objects[(Bucket, Key)])}

    def get_object(self, *, Bucket: str, Key: str) -> dict:
        self._enter("get_object")
        if (Bucket, Key) not in self.objects:
            raise client_error(404, "NoSuchKey", "GetObject")
        return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}

    def list_objects_v2(
        self,
        *,
        Bucket: str,
        Prefix: str,
        MaxKeys: int = 1000,
        StartAfter: str = "",
        ContinuationToken: str | None = None,
    ) -> dict:
        self._enter("list_objects_v2")
        keys = sorted(k for b, k in self.objects if b == Bucket and k.startswith(Prefix))
        after = ContinuationToken or StartAfter
        keys = [k for k in keys if k > after]
        page = keys[:MaxKeys]
        truncated = len(keys) > MaxKeys
        response: dict[str, Any] = {"Contents": [{"Key": k} for k in page], "IsTruncated": truncated}
        if truncated:
            response["NextContinuationToken"] = page[-1]
        return response
