"""Object store helpers: create-only puts, retries on transient failures, listing (fake client)."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from ingest_fakes import FakeS3, client_error

from edgeloop.storage import RetryPolicy, StorageError, get_bytes, list_keys, object_exists, put_if_absent

FAST = RetryPolicy(attempts=4, base_delay=0.0, max_delay=0.0)


def test_put_if_absent_creates_once_and_then_is_a_no_op(tmp_path: Path) -> None:
    s3 = FakeS3()
    assert put_if_absent(s3, "b", "k", b"first", policy=FAST) is True
    assert put_if_absent(s3, "b", "k", b"second", policy=FAST) is False
    body = tmp_path / "f"
    body.write_bytes(b"from a file")
    assert put_if_absent(s3, "b", "k2", body, policy=FAST) is True
    assert s3.objects == {("b", "k"): b"first", ("b", "k2"): b"from a file"}


@pytest.mark.parametrize(
    "failure",
    [
        client_error(500, "InternalError"),
        client_error(503, "SlowDown"),
        client_error(409, "ConditionalRequestConflict"),
        EndpointConnectionError(endpoint_url="http://s3"),
        ReadTimeoutError(endpoint_url="http://s3"),
    ],
)
def test_transient_failures_are_retried(failure: Exception) -> None:
    s3 = FakeS3()
    s3.failures = [failure, failure]
    assert put_if_absent(s3, "b", "k", b"x", policy=FAST) is True
    assert s3.calls == ["put_object"] * 3


def test_a_lost_response_to_a_put_that_was_stored_reads_as_already_there() -> None:
    s3 = FakeS3()
    s3.objects[("b", "k")] = b"x"  # the first attempt did store it, its response timed out
    s3.failures = [ReadTimeoutError(endpoint_url="http://s3")]
    assert put_if_absent(s3, "b", "k", b"x", policy=FAST) is False


def test_giving_up_names_the_object() -> None:
    s3 = FakeS3()
    s3.failures = [client_error(503, "ServiceUnavailable")] * 4
    with pytest.raises(StorageError, match=r"put s3://b/raw/k: gave up after 4 attempts"):
        put_if_absent(s3, "b", "raw/k", b"x", policy=FAST)


def test_client_errors_are_not_retried() -> None:
    s3 = FakeS3()
    s3.failures = [client_error(403, "AccessDenied")]
    with pytest.raises(ClientError, match="AccessDenied"):
        put_if_absent(s3, "b", "k", b"x", policy=FAST)
    assert s3.calls == ["put_object"]


def test_exists_get_and_list() -> None:
    s3 = FakeS3()
    for key in ["a/1", "a/2", "a/3", "b/1"]:
        s3.objects[("bk", key)] = key.encode()
    assert object_exists(s3, "bk", "a/1", policy=FAST)
    assert not object_exists(s3, "bk", "a/9", policy=FAST)
    assert get_bytes(s3, "bk", "a/2", policy=FAST) == b"a/2"
    with pytest.raises(KeyError, match="s3://bk/a/9"):
        get_bytes(s3, "bk", "a/9", policy=FAST)
    assert list(list_keys(s3, "bk", "a/", policy=FAST)) == ["a/1", "a/2", "a/3"]
    assert list(list_keys(s3, "bk", "a/", limit=2, policy=FAST)) == ["a/1", "a/2"]
    assert list(list_keys(s3, "bk", "a/", start_after="a/1", policy=FAST)) == ["a/2", "a/3"]


def test_listing_follows_continuation_pages() -> None:
    s3 = FakeS3()
    for n in range(2500):
        s3.objects[("bk", f"p/{n:05d}")] = b""
    keys = list(list_keys(s3, "bk", "p/", policy=FAST))
    assert len(keys) == 2500 and keys == sorted(keys)
    assert s3.calls.count("list_objects_v2") == 3


def test_backoff_stays_within_its_cap() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.1, max_delay=1.0)
    assert all(0 <= policy.delay(n) <= min(1.0, 0.1 * 2 ** (n - 1)) for n in range(1, 10) for _ in range(20))
