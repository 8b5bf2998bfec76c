"""The claim check for camera frames: a frame's PNG is stored once under its content address; records carry the key.

A device (or ingest, for frames that arrive inside a size-bounded message) puts the bytes
under `frame_key`, `<storage prefix>/frames/<pipeline>/<sha256[:2]>/<sha256>.png`, with a
conditional put (`If-None-Match: *`, `edgeloop.storage.put_if_absent`): the same bytes always
go to the same key, so a re-sent frame or a retried upload stores nothing new and a stored
frame is never overwritten. The telemetry record then carries `FrameRef`'s key, digest and
size next to the prediction and confidence (Kafka carries references, not pixels).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from edgeloop.contract.frame import frame_key

__all__ = ["PNG_CONTENT_TYPE", "FrameRef", "frame_digest", "frame_key", "put_frame"]

PNG_CONTENT_TYPE = "image/png"


@dataclass(frozen=True)
class FrameRef:
    """Where a frame's bytes are and what they must be; `created` says whether this put stored them."""

    key: str
    sha256: str
    size: int
    created: bool

    def record_fields(self) -> dict[str, Any]:
        """The fields a telemetry record carries for its frame."""
        return {"frame_key": self.key, "frame_sha256": self.sha256, "frame_bytes": self.size}


def frame_digest(data: bytes) -> str:
    """The sha256 of a frame's bytes (hex): its content address."""
    return hashlib.sha256(data).hexdigest()


def put_frame(s3: Any, bucket: str, pipeline: str, data: bytes, *, storage_prefix: str = "") -> FrameRef:
    """Store a PNG frame under its content address unless it is there already; where it is.

    Raise ValueError for bytes that are not a PNG (the signature is checked, not the pixels).
    """
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"a frame must be a PNG image, got {len(data)} bytes starting {data[:8]!r}")
    from edgeloop.storage import put_if_absent

    digest = frame_digest(data)
    key = frame_key(pipeline, digest, storage_prefix=storage_prefix)
    created = put_if_absent(s3, bucket, key, data, content_type=PNG_CONTENT_TYPE)
    return FrameRef(key=key, sha256=digest, size=len(data), created=created)
