"""Camera frames (`<prefix>.frames`) into object storage: the claim check, exactly once.

Each message is one frame (`edgeloop.contract.frame`: a header line, then the PNG). The codec
checks the message's size cap, the header, the PNG signature and that the bytes have the size
and sha256 the header names, then stores the bytes under their content address with a
conditional put (`edgeloop.vision.claim.put_frame`) and returns one row per frame: the record
it belongs to, where it is and what it must be. Ingest writes those rows to Parquet and only
then records its progress and commits offsets (`edgeloop.ingest.run`), so a run that crashes
after storing frames redoes the same range: the puts find the frames there and store nothing
new, and the rows come out the same. A frame is stored once however often it is sent.

A frame that fails a check, or whose group is not one of the pipeline's, is a dead letter
(kind `frame` or `refused`) with its reason; nothing of it is stored under `frames/`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from edgeloop.contract.frame import MAX_FRAME_MESSAGE_BYTES, BadFrame, FrameHeader, decode_frame_message
from edgeloop.ingest.decode import BadRecord, Decoded, int64_array
from edgeloop.spec import PipelineSpec

FRAME_COLUMNS = pa.schema(
    [
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("group_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("frame_key", pa.string(), nullable=False),
        pa.field("frame_sha256", pa.string(), nullable=False),
        pa.field("frame_bytes", pa.int64(), nullable=False),
    ]
)


@dataclass(frozen=True)
class FrameCodec:
    """Frames of `pipeline`'s cameras in `groups`, stored in `bucket` under `storage_prefix` by `s3` while decoding."""

    pipeline: str
    groups: Collection[str]
    s3: Any
    bucket: str
    storage_prefix: str = ""
    max_bytes: int = MAX_FRAME_MESSAGE_BYTES
    upload_workers: int = 4

    @property
    def arrow(self) -> pa.Schema:
        return FRAME_COLUMNS

    @property
    def timestamp_field(self) -> str:
        return "ts"

    def decode(self, values: Sequence[bytes | None], kafka_timestamps_ms: Sequence[int]) -> Decoded:
        checked: list[tuple[int, FrameHeader, datetime, bytes]] = []
        bad: list[BadRecord] = []
        for i, value in enumerate(values):
            try:
                header, png = decode_frame_message(value, self.max_bytes)
                stamp = _timestamp(header.ts)
            except BadFrame as exc:
                bad.append(BadRecord(i, "frame", f"frame: {exc}"))
                continue
            if header.group_id not in self.groups:
                bad.append(BadRecord(i, "refused", f"group_id: {header.group_id!r} is not a group of {self.pipeline}"))
                continue
            checked.append((i, header, stamp, png))
        keys = self._store([png for _, _, _, png in checked])
        return Decoded(_table(checked, keys), int64_array([i for i, _, _, _ in checked]), bad)

    def _store(self, frames: list[bytes]) -> list[str]:
        """Put each frame under its content address (a no-op for a frame already there); their keys, in order."""
        from edgeloop.vision.claim import put_frame

        def put(data: bytes) -> str:
            return put_frame(self.s3, self.bucket, self.pipeline, data, storage_prefix=self.storage_prefix).key

        if len(frames) < 2:
            return [put(data) for data in frames]
        with ThreadPoolExecutor(max_workers=max(1, min(self.upload_workers, len(frames)))) as pool:
            return list(pool.map(put, frames))


def _timestamp(text: str) -> datetime:
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise BadFrame(f"header.ts: {text!r} is not an ISO 8601 time") from None
    if stamp.tzinfo is None:
        raise BadFrame(f"header.ts: {text!r} has no time zone")
    return stamp


def _table(rows: list[tuple[int, FrameHeader, datetime, bytes]], keys: list[str]) -> pa.Table:
    headers = [h for _, h, _, _ in rows]
    return pa.table(
        {
            "record_id": pa.array([h.record_id for h in headers], pa.string()),
            "device_id": pa.array([h.device_id for h in headers], pa.string()),
            "group_id": pa.array([h.group_id for h in headers], pa.string()),
            "ts": pa.array([stamp for _, _, stamp, _ in rows], pa.timestamp("us", tz="UTC")),
            "frame_key": pa.array(keys, pa.string()),
            "frame_sha256": pa.array([h.sha256 for h in headers], pa.string()),
            "frame_bytes": pa.array([h.size for h in headers], pa.int64()),
        },
        schema=FRAME_COLUMNS,
    )


def frame_codec(spec: PipelineSpec, s3: Any) -> FrameCodec:
    """The codec of the pipeline's frames: its groups, its bucket and storage prefix."""
    return FrameCodec(
        spec.name,
        frozenset(g.name for g in spec.groups),
        s3,
        spec.storage.bucket,
        storage_prefix=spec.storage.prefix,
    )
