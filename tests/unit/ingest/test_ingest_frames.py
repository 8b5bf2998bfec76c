"""The claim check in ingest: a frame message whose bytes match its header is stored once under its content
address and becomes one row; a frame that is too big, not a PNG, or not what its header says is a dead letter
with its reason, and nothing of it is stored."""

from __future__ import annotations

import json

import pytest
from ingest_fakes import FakeS3
from tests.helpers.camera_models import vision_spec

from edgeloop.contract.frame import (
    MAX_FRAME_MESSAGE_BYTES,
    BadFrame,
    decode_frame_message,
    encode_frame_message,
    frame_header,
    frame_key,
)
from edgeloop.ingest.frames import FRAME_COLUMNS, frame_codec
from edgeloop.vision.frames import encode_png, group_conditions, make_frame

TS = "2026-01-01T00:00:00.000Z"
KAFKA_MS = 1_767_225_600_000


def frame_png(device: str, index: int, group: str = "hall-east") -> bytes:
    return encode_png(make_frame(device, index, group_conditions(group)).pixels)


def message(png: bytes, record_id: str = "cam-1", group: str = "hall-east") -> bytes:
    return encode_frame_message(frame_header(record_id, "cam-1", group, TS, png), png)


def test_good_frames_are_stored_once_under_their_content_address() -> None:
    spec, s3 = vision_spec(), FakeS3()
    codec = frame_codec(spec, s3)
    pngs = [frame_png("cam-1", i) for i in range(3)]
    values = [message(png, f"r{i}") for i, png in enumerate(pngs)] + [message(pngs[0], "r3")]  # one frame sent twice

    decoded = codec.decode(values, [KAFKA_MS] * len(values))
    assert decoded.bad == [] and decoded.indices.to_pylist() == [0, 1, 2, 3]
    assert decoded.table.schema == FRAME_COLUMNS
    rows = decoded.table.to_pylist()
    assert [r["record_id"] for r in rows] == ["r0", "r1", "r2", "r3"]
    stored = {key: data for (bucket, key), data in s3.objects.items() if bucket == spec.storage.bucket}
    assert len(stored) == 3
    for row, png in zip(rows, [*pngs, pngs[0]], strict=True):
        assert row["frame_key"] == frame_key(spec.name, row["frame_sha256"]) and stored[row["frame_key"]] == png
        assert row["frame_bytes"] == len(png)

    again = codec.decode(values, [KAFKA_MS] * len(values))  # a redone flush: the same rows, nothing new stored
    assert again.table.equals(decoded.table) and len(s3.objects) == 3


def _tampered(png: bytes) -> dict[str, bytes]:
    good = message(png)
    header_line, body = good.split(b"\n", 1)
    header = json.loads(header_line)
    wrong_sha = json.dumps({**header, "sha256": "0" * 64}).encode() + b"\n" + body
    wrong_size = json.dumps({**header, "size": len(png) + 1}).encode() + b"\n" + body
    return {
        "sha256": wrong_sha,
        "size:": wrong_size,
        "not a PNG": header_line + b"\n" + b"GIF89a" + body[6:],
        "over the frame message cap": header_line + b"\n" + body + b"\0" * MAX_FRAME_MESSAGE_BYTES,
        "no header line": b"x" * 3000,
        "header: not JSON": b"{nope\n" + body,
        "unknown fields": json.dumps({**header, "extra": 1}).encode() + b"\n" + body,
        "ISO 8601": json.dumps({**header, "ts": "yesterday"}).encode() + b"\n" + body,
        "empty message": b"",
    }


def test_bad_frames_are_dead_letters_with_their_reason_and_nothing_is_stored() -> None:
    spec, s3 = vision_spec(), FakeS3()
    png = frame_png("cam-1", 7)
    cases = _tampered(png)
    stranger = message(png, group="elsewhere")
    values = [*cases.values(), stranger]
    decoded = frame_codec(spec, s3).decode(values, [KAFKA_MS] * len(values))

    assert decoded.table.num_rows == 0 and s3.objects == {}
    reasons = {bad.position: (bad.kind, bad.reason) for bad in decoded.bad}
    assert len(reasons) == len(values)
    for position, expected in enumerate(cases):
        kind, reason = reasons[position]
        assert kind == "frame" and expected in reason, (expected, reason)
    assert reasons[len(values) - 1] == ("refused", "group_id: 'elsewhere' is not a group of visual_inspection")


def test_a_frame_message_never_passes_the_cap() -> None:
    png = frame_png("cam-1", 1)
    assert len(message(png)) < 5000  # a 64x64 frame: a few kB
    with pytest.raises(ValueError, match="over the cap"):
        encode_frame_message(frame_header("r", "cam-1", "hall-east", TS, png), png + b"\0" * MAX_FRAME_MESSAGE_BYTES)
    with pytest.raises(BadFrame, match="over the frame message cap of 1000"):
        decode_frame_message(message(png), max_bytes=1000)
