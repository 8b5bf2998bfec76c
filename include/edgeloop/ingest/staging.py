"""Local staging of one flush: Parquet files per hour and a dead-letter file, on disk.

Rows arrive in batches; each hour's rows are buffered up to one row group and then
written, so memory holds at most one row group per open hour whatever the flush size.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PARTITION_COLUMN = "_kafka_partition"
OFFSET_COLUMN = "_kafka_offset"
HOUR_US = 3_600_000_000


def stored_schema(record_schema: pa.Schema) -> pa.Schema:
    """The spec's columns plus where each row came from (partition and offset, for lineage and audits)."""
    for name in (PARTITION_COLUMN, OFFSET_COLUMN):
        if name in record_schema.names:
            raise ValueError(f"schema: field '{name}' is reserved for the ingest stage")
    return record_schema.append(pa.field(PARTITION_COLUMN, pa.int32(), nullable=False)).append(
        pa.field(OFFSET_COLUMN, pa.int64(), nullable=False)
    )


def hour_start(hour_index: int) -> datetime:
    return datetime.fromtimestamp(hour_index * 3600, tz=UTC)


@dataclass
class StagedFile:
    hour: datetime
    path: Path
    rows: int
    kind: str  # "raw" or "deadletter"

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass
class _HourWriter:
    path: Path
    writer: pq.ParquetWriter
    pending: list[pa.Table] = field(default_factory=list)
    pending_rows: int = 0
    rows: int = 0


def deadletter_line(
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    kind: str,
    reason: str,
) -> bytes:
    """One dead-letter record: where it came from, why it was refused, and its exact bytes (base64)."""
    entry: dict[str, Any] = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp_ms": timestamp_ms,
        "kind": kind,
        "reason": reason,
        "size": len(value) if value is not None else None,
        "key_base64": base64.b64encode(key).decode("ascii") if key is not None else None,
        "payload_base64": base64.b64encode(value).decode("ascii") if value is not None else None,
    }
    return json.dumps(entry, sort_keys=True).encode("utf-8") + b"\n"


class PartitionStage:
    """Everything consumed from one partition since its last flush, spooled to local files."""

    def __init__(
        self,
        partition: int,
        schema: pa.Schema,
        spool_dir: Path,
        *,
        row_group_rows: int = 65_536,
        max_pending_rows: int = 32_768,
        compression: str = "zstd",
    ) -> None:
        self.partition = partition
        self.schema = schema
        self.dir = Path(tempfile.mkdtemp(prefix=f"p{partition}-", dir=spool_dir))
        self.row_group_rows = row_group_rows
        self.max_pending_rows = max_pending_rows
        self._pending_rows = 0
        self.compression = compression
        self.first_offset: int | None = None
        self.last_offset: int | None = None
        self.messages = 0
        self.records = 0
        self.dead_letters = 0
        self._hours: dict[int, _HourWriter] = {}
        self._deadletter_path = self.dir / "deadletter.jsonl"
        self._deadletter_hour: int | None = None
        self._deadletter_file: Any = None

    def note_offsets(self, first: int, last: int, count: int) -> None:
        if self.first_offset is None:
            self.first_offset = first
        self.last_offset = last
        self.messages += count

    def add_rows(self, table: pa.Table, hour_starts: pa.Array | pa.ChunkedArray) -> None:
        """Add rows (in offset order); `hour_starts` is the start of each row's hour in epoch microseconds."""
        if table.num_rows == 0:
            return
        hours = pc.unique(hour_starts)
        if len(hours) == 1:
            self._append(hours[0].as_py() // HOUR_US, table)
        else:
            for i in range(len(hours)):
                self._append(hours[i].as_py() // HOUR_US, table.filter(pc.equal(hour_starts, hours[i])))
        self.records += table.num_rows

    def _append(self, hour: int, table: pa.Table) -> None:
        target = self._hours.get(hour)
        if target is None:
            path = self.dir / f"hour-{hour}.parquet"
            writer = pq.ParquetWriter(str(path), self.schema, compression=self.compression)
            target = self._hours[hour] = _HourWriter(path, writer)
        target.pending.append(table)
        target.pending_rows += table.num_rows
        self._pending_rows += table.num_rows
        if target.pending_rows >= self.row_group_rows:
            self._write_pending(target)
        while self._pending_rows > self.max_pending_rows:
            # Many open hours (a backlog): write the biggest buffer early to keep memory bounded.
            self._write_pending(max(self._hours.values(), key=lambda w: w.pending_rows))

    def _write_pending(self, target: _HourWriter) -> None:
        if not target.pending_rows:
            return
        table = pa.concat_tables(target.pending) if len(target.pending) > 1 else target.pending[0]
        target.writer.write_table(table, row_group_size=max(self.row_group_rows, table.num_rows))
        target.rows += table.num_rows
        self._pending_rows -= table.num_rows
        target.pending, target.pending_rows = [], 0

    def add_dead_letter(self, line: bytes, timestamp_ms: int | None) -> None:
        if self._deadletter_file is None:
            self._deadletter_file = self._deadletter_path.open("wb")
            self._deadletter_hour = (timestamp_ms or 0) // 3_600_000
        self._deadletter_file.write(line)
        self.dead_letters += 1

    def finish(self) -> list[StagedFile]:
        """Close every file of the flush and list them: one per hour, then the dead letters if any."""
        staged = []
        for hour, target in sorted(self._hours.items()):
            self._write_pending(target)
            target.writer.close()
            staged.append(StagedFile(hour_start(hour), target.path, target.rows, "raw"))
        self._hours.clear()
        if self._deadletter_file is not None:
            self._deadletter_file.close()
            self._deadletter_file = None
            staged.append(
                StagedFile(
                    hour_start(self._deadletter_hour or 0), self._deadletter_path, self.dead_letters, "deadletter"
                )
            )
        return staged

    def discard(self) -> None:
        for target in self._hours.values():
            target.writer.close()
        self._hours.clear()
        if self._deadletter_file is not None:
            self._deadletter_file.close()
            self._deadletter_file = None
        shutil.rmtree(self.dir, ignore_errors=True)
