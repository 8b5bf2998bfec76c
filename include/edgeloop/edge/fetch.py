"""Download a model artifact; nothing is returned unless its size and sha256 match the signed reference.

The size in the assignment bounds the download before a byte is read (a server that
announces more, or sends more, is cut off), so a hostile server cannot fill the disk or
memory; a short read is a truncated download; the digest is checked last.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from edgeloop.contract.artifact import ArtifactRef

CHUNK = 1 << 16


class FetchFailed(RuntimeError):
    """The artifact could not be had intact; the message names the URL's host and path and the reason."""


def fetch_artifact(ref: ArtifactRef, *, timeout_s: float = 60.0) -> bytes:
    """The artifact's bytes, verified against `ref.size` and `ref.sha256`; raise FetchFailed otherwise."""
    parts = urlsplit(ref.url)
    where = f"{parts.scheme}://{parts.netloc}{parts.path}"  # never the query: presigned URLs carry credentials
    try:
        with urllib.request.urlopen(ref.url, timeout=timeout_s) as response:  # noqa: S310 - scheme checked by ArtifactRef
            announced = response.headers.get("Content-Length")
            if announced is not None and announced.isdigit() and int(announced) > ref.size:
                raise FetchFailed(
                    f"artifact {where}: server announces {announced} bytes, the assignment says {ref.size}"
                )
            digest = hashlib.sha256()
            chunks: list[bytes] = []
            received = 0
            while True:
                chunk = response.read(min(CHUNK, ref.size + 1 - received))
                if not chunk:
                    break
                received += len(chunk)
                if received > ref.size:
                    raise FetchFailed(f"artifact {where}: more than the {ref.size} bytes the assignment says")
                digest.update(chunk)
                chunks.append(chunk)
    except FetchFailed:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FetchFailed(f"artifact {where}: download failed: {exc}") from None
    if received < ref.size:
        raise FetchFailed(f"artifact {where}: truncated download, {received} of {ref.size} bytes")
    if digest.hexdigest() != ref.sha256:
        raise FetchFailed(f"artifact {where}: sha256 {digest.hexdigest()} does not match the assignment's {ref.sha256}")
    return b"".join(chunks)
