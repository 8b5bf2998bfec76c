"""Object store helpers against the real S3 API of the stack (moto server)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from edgeloop.storage import get_bytes, list_keys, put_if_absent

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


def test_multipart_upload_is_create_only_too(stack_env: dict[str, str], s3_client: Any, tmp_path: Path) -> None:
    bucket = stack_env.get("EDGELOOP_BUCKET", "edgeloop")
    key = f"it/storage/{uuid.uuid4().hex}/big.bin"
    body = tmp_path / "big.bin"
    body.write_bytes(os.urandom(11 * MIB))
    assert put_if_absent(s3_client, bucket, key, body, multipart_threshold=5 * MIB, part_size=5 * MIB) is True
    head = s3_client.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == 11 * MIB and "-3" in head["ETag"], "stored as a 3-part multipart object"
    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(11 * MIB))
    assert put_if_absent(s3_client, bucket, key, other, multipart_threshold=5 * MIB, part_size=5 * MIB) is False
    assert get_bytes(s3_client, bucket, key) == body.read_bytes()


def test_conditional_put_and_listing(stack_env: dict[str, str], s3_client: Any) -> None:
    bucket = stack_env.get("EDGELOOP_BUCKET", "edgeloop")
    prefix = f"it/storage/{uuid.uuid4().hex}/"
    assert put_if_absent(s3_client, bucket, prefix + "a", b"1") is True
    assert put_if_absent(s3_client, bucket, prefix + "a", b"2") is False
    for n in range(5):
        put_if_absent(s3_client, bucket, f"{prefix}n/{n}", b"")
    assert list(list_keys(s3_client, bucket, prefix + "n/", limit=2)) == [prefix + "n/0", prefix + "n/1"]
    assert get_bytes(s3_client, bucket, prefix + "a") == b"1"
