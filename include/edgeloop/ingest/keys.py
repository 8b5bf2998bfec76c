"""Object keys of the ingest stage: one place for the layout every other stage reads.

Layout under the spec's storage prefix, for Kafka topic `<topic>` (its full name):

    raw/<pipeline>/<topic>/dt=YYYY-MM-DD/hour=HH/<partition>-<first>-<last>.parquet
    deadletter/<pipeline>/<topic>/dt=YYYY-MM-DD/hour=HH/<partition>-<first>-<last>.jsonl
    raw/<pipeline>/<topic>/_flushes/<partition>/<19 digits>.json

One *flush* covers the offset range first..last of one partition. Its good records
are split by the hour of their timestamp field, and every object of the flush is
named by the flush's whole range, so the same range always gives the same keys.
The flush marker under `_flushes/` lists those keys; it is named by the inverted
first offset so that the newest flush of a partition is the first key listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from edgeloop.spec import PipelineSpec

MAX_OFFSET = 2**63 - 1
_OBJECT_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)\.(parquet|jsonl)$")
_HOUR_DIR = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})$")


@dataclass(frozen=True, order=True)
class OffsetRange:
    """Offsets first..last (inclusive) of one Kafka partition."""

    partition: int
    first: int
    last: int

    def __post_init__(self) -> None:
        if self.partition < 0 or self.first < 0 or self.last < self.first or self.last > MAX_OFFSET:
            raise ValueError(f"invalid offset range: partition {self.partition}, offsets {self.first}..{self.last}")

    @property
    def name(self) -> str:
        return f"{self.partition}-{self.first}-{self.last}"


def raw_prefix(spec: PipelineSpec, topic: str) -> str:
    """Prefix of every raw object of one Kafka topic (full topic name)."""
    return f"{spec.storage_prefix('raw')}/{topic}"


def deadletter_prefix(spec: PipelineSpec, topic: str) -> str:
    return f"{spec.storage_prefix('deadletter')}/{topic}"


def hour_dir(hour: datetime) -> str:
    """`dt=YYYY-MM-DD/hour=HH` of the UTC hour that contains `hour`."""
    hour = hour.astimezone(UTC)
    return f"dt={hour:%Y-%m-%d}/hour={hour:%H}"


def parse_hour_dir(text: str) -> datetime:
    match = _HOUR_DIR.match(text)
    if not match:
        raise ValueError(f"'{text}' is not an hour directory like dt=2026-01-31/hour=07")
    return datetime.strptime(f"{match.group(1)} {match.group(2)}", "%Y-%m-%d %H").replace(tzinfo=UTC)


def raw_object_key(spec: PipelineSpec, topic: str, hour: datetime, offsets: OffsetRange) -> str:
    return f"{raw_prefix(spec, topic)}/{hour_dir(hour)}/{offsets.name}.parquet"


def deadletter_object_key(spec: PipelineSpec, topic: str, hour: datetime, offsets: OffsetRange) -> str:
    return f"{deadletter_prefix(spec, topic)}/{hour_dir(hour)}/{offsets.name}.jsonl"


def flush_markers_prefix(spec: PipelineSpec, topic: str, partition: int) -> str:
    return f"{raw_prefix(spec, topic)}/_flushes/{partition}/"


def flush_marker_key(spec: PipelineSpec, topic: str, partition: int, first_offset: int) -> str:
    if not 0 <= first_offset <= MAX_OFFSET:
        raise ValueError(f"offset {first_offset} of partition {partition} is outside 0..{MAX_OFFSET}")
    return f"{flush_markers_prefix(spec, topic, partition)}{MAX_OFFSET - first_offset:019d}.json"


def first_offset_of_marker(key: str) -> int:
    """The first offset a flush marker key stands for (the inverse of flush_marker_key)."""
    name = key.rsplit("/", 1)[-1]
    if not re.fullmatch(r"\d{19}\.json", name):
        raise ValueError(f"'{key}' is not a flush marker key (<19 digits>.json)")
    return MAX_OFFSET - int(name[:19])


def parse_object_key(key: str) -> tuple[datetime, OffsetRange]:
    """Hour and offset range of a raw or dead-letter object key; ValueError naming the key otherwise."""
    parts = key.rsplit("/", 3)
    if len(parts) < 4:
        raise ValueError(f"'{key}' has no dt=/hour= directories")
    match = _OBJECT_NAME.match(parts[-1])
    if not match:
        raise ValueError(f"'{key}' does not end in <partition>-<first offset>-<last offset>.parquet|jsonl")
    try:
        hour = parse_hour_dir(f"{parts[-3]}/{parts[-2]}")
    except ValueError as exc:
        raise ValueError(f"'{key}': {exc}") from exc
    return hour, OffsetRange(int(match.group(1)), int(match.group(2)), int(match.group(3)))
