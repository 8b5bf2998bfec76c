"""A camera frame on the wire: one size-bounded Kafka message on `<prefix>.frames`, keyed by the device id.

The value is one line of JSON (the header), a line feed, then the frame's PNG bytes::

    {"record_id": "...", "device_id": "...", "group_id": "...", "ts": "...", "sha256": "<hex>", "size": 3312}\\n<PNG>

The header names the telemetry record that carries the frame's reference (same `record_id`),
and the digest and size of the bytes that follow, so ingest can check them before it stores
the frame under its content address (`edgeloop.vision.claim`). JSON escapes line feeds inside
strings, so the first line feed ends the header. A message is at most `MAX_FRAME_MESSAGE_BYTES`:
a 64x64 grayscale frame is about 3.3 kB, so the cap leaves room for bigger frames while a
frame can never crowd out the topic's other messages.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import asdict, dataclass
from typing import Any

MAX_FRAME_MESSAGE_BYTES = 64 * 1024
MAX_HEADER_BYTES = 2048
MAX_FRAME_PNG_BYTES = MAX_FRAME_MESSAGE_BYTES - MAX_HEADER_BYTES - 1  # a PNG this size fits any frame message
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = ("record_id", "device_id", "group_id", "ts", "sha256", "size")


class BadFrame(ValueError):
    """A frame message that must not be stored; the message says why (a dead letter's reason)."""


@dataclass(frozen=True)
class FrameHeader:
    """What a frame message says about its bytes and the record that references them."""

    record_id: str
    device_id: str
    group_id: str
    ts: str
    sha256: str
    size: int


def frame_key(pipeline: str, digest: str, *, storage_prefix: str = "") -> str:
    """The object key of a frame: `<storage prefix>/frames/<pipeline>/<sha256[:2]>/<sha256>.png`.

    The two-character fan-out keeps listings short. Equal to `spec.storage_prefix("frames")` + the rest.
    A camera puts it in its record; ingest stores the frame's bytes under it (`edgeloop.vision.claim`).
    """
    if not _SHA256_RE.match(digest):
        raise ValueError(f"frame digest {digest!r} is not 64 lowercase hex digits")
    base = f"{storage_prefix}/" if storage_prefix else ""
    return f"{base}frames/{pipeline}/{digest[:2]}/{digest}.png"


def encode_frame_message(header: FrameHeader, png: bytes) -> bytes:
    """The message value for a frame: header line, line feed, PNG; ValueError when it would break the cap."""
    value = json.dumps(asdict(header), separators=(",", ":")).encode() + b"\n" + png
    if len(value) > MAX_FRAME_MESSAGE_BYTES:
        raise ValueError(f"a frame message of {len(value)} bytes is over the cap of {MAX_FRAME_MESSAGE_BYTES}")
    return value


def frame_header(record_id: str, device_id: str, group_id: str, ts: str, png: bytes) -> FrameHeader:
    """The header of a frame's message, with the digest and size of `png`."""
    return FrameHeader(record_id, device_id, group_id, ts, hashlib.sha256(png).hexdigest(), len(png))


def decode_frame_message(value: bytes | None, max_bytes: int = MAX_FRAME_MESSAGE_BYTES) -> tuple[FrameHeader, bytes]:
    """The header and PNG bytes of a frame message; BadFrame naming what is wrong.

    Checked: the size cap, a header line of known fields and types, a PNG signature, and that
    the bytes have the size and sha256 the header names.
    """
    if not value:
        raise BadFrame("empty message")
    if len(value) > max_bytes:
        raise BadFrame(f"{len(value)} bytes, over the frame message cap of {max_bytes}")
    end = value.find(b"\n", 0, MAX_HEADER_BYTES)
    if end < 0:
        raise BadFrame(f"no header line within the first {MAX_HEADER_BYTES} bytes")
    header = _parse_header(value[:end])
    png = value[end + 1 :]
    if not png.startswith(PNG_SIGNATURE):
        raise BadFrame(f"the frame is not a PNG image (starts {png[:8]!r})")
    if len(png) != header.size:
        raise BadFrame(f"size: the header says {header.size} bytes, the frame has {len(png)}")
    digest = hashlib.sha256(png).hexdigest()
    if digest != header.sha256:
        raise BadFrame(f"sha256: the header says {header.sha256}, the frame's bytes hash to {digest}")
    return header, png


def png_shape(data: bytes) -> tuple[int, int]:
    """A PNG's (height, width) from its IHDR chunk, read before any pixel is decoded; BadFrame when not a PNG."""
    if not data.startswith(PNG_SIGNATURE) or len(data) < 24 or data[12:16] != b"IHDR":
        raise BadFrame(f"not a PNG image (starts {data[:8]!r})")
    width, height = struct.unpack(">II", data[16:24])
    return int(height), int(width)


def _parse_header(line: bytes) -> FrameHeader:
    try:
        raw: Any = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadFrame(f"header: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise BadFrame("header: not a JSON object")
    missing = [f for f in _FIELDS if f not in raw]
    unknown = sorted(set(raw) - set(_FIELDS))
    if missing or unknown:
        raise BadFrame(f"header: missing fields {missing}, unknown fields {unknown}")
    texts = [f for f in _FIELDS[:5] if not isinstance(raw[f], str) or not raw[f] or len(raw[f]) > 256]
    if texts:
        raise BadFrame(f"header: {texts} must be non-empty text of at most 256 characters")
    if not _SHA256_RE.match(raw["sha256"]):
        raise BadFrame("header.sha256: not 64 lowercase hex digits")
    size = raw["size"]
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise BadFrame(f"header.size: {size!r} is not a positive integer")
    return FrameHeader(**{f: raw[f] for f in _FIELDS})
