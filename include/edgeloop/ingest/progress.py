"""Progress of ingestion, read from the object store: the store is the source of truth.

Before a flush uploads its objects it writes a marker (create-only) naming its offset
range and every key it will write. On start, the newest marker of each partition tells
where to resume: after its last offset when all its objects exist, or at its first
offset, redoing exactly that range, when a crash interrupted it. Because the marker is
created with `If-None-Match: *` and named by the first offset, two runs that would
write different ranges from the same offset cannot both succeed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from edgeloop.ingest.keys import first_offset_of_marker, flush_markers_prefix
from edgeloop.spec import PipelineSpec
from edgeloop.storage import DEFAULT_RETRY, RetryPolicy, get_bytes, list_keys, object_exists


class CorruptMarkerError(ValueError):
    """A flush marker object that cannot be read."""


@dataclass(frozen=True)
class FlushMarker:
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    objects: tuple[str, ...]
    records: int
    dead_letters: int

    def to_json(self) -> bytes:
        return json.dumps({**asdict(self), "objects": list(self.objects)}, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, key: str) -> FlushMarker:
        try:
            raw: dict[str, Any] = json.loads(data)
            return cls(
                topic=str(raw["topic"]),
                partition=int(raw["partition"]),
                first_offset=int(raw["first_offset"]),
                last_offset=int(raw["last_offset"]),
                objects=tuple(str(k) for k in raw["objects"]),
                records=int(raw["records"]),
                dead_letters=int(raw["dead_letters"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptMarkerError(f"flush marker {key} is not readable: {exc}") from exc


@dataclass(frozen=True)
class PartitionProgress:
    partition: int
    next_offset: int | None  # None: nothing of this partition is stored yet
    redo: FlushMarker | None = None  # the newest flush, when some of its objects are missing


def read_progress(
    s3: Any, spec: PipelineSpec, topic: str, partition: int, *, policy: RetryPolicy = DEFAULT_RETRY
) -> PartitionProgress:
    """Where ingestion of one partition resumes: a handful of requests, however much is stored."""
    bucket = spec.storage.bucket
    newest = next(
        iter(list_keys(s3, bucket, flush_markers_prefix(spec, topic, partition), limit=1, policy=policy)), None
    )
    if newest is None:
        return PartitionProgress(partition, None)
    marker = FlushMarker.from_json(get_bytes(s3, bucket, newest, policy=policy), newest)
    if marker.first_offset != first_offset_of_marker(newest) or marker.partition != partition:
        raise CorruptMarkerError(
            f"flush marker {newest} says partition {marker.partition} offset {marker.first_offset}, "
            f"its key says partition {partition} offset {first_offset_of_marker(newest)}"
        )
    if all(object_exists(s3, bucket, key, policy=policy) for key in marker.objects):
        return PartitionProgress(partition, marker.last_offset + 1)
    return PartitionProgress(partition, marker.first_offset, redo=marker)
