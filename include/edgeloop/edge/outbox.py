"""The store-and-forward queue: telemetry and error reports wait on disk until Kafka acknowledges them.

SQLite in WAL mode, one row per message with its topic, key, value and original
timestamp, in the order they were made. Bounded by bytes: when full, the oldest rows
are dropped (last resort) and counted in the file itself, so the count survives restarts
and reaches the heartbeat. A committed `put` survives kill -9 of the process
(`synchronous=NORMAL`; `FULL` also survives power loss, at a cost per write).

`inflight` is the sender's note of what it may have handed to Kafka but not yet seen
acknowledged, with the partitions' end offsets taken just before; after a crash or a
failed delivery the sender reads those partitions from there and removes from the queue
what already arrived, so nothing is sent twice (see `edgeloop.edge.agent.Sender`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROW_OVERHEAD_BYTES = 64  # SQLite row, index and page overhead per message, measured (make bench-agent)


@dataclass(frozen=True)
class QueuedMessage:
    seq: int
    topic: str
    key: bytes | None
    value: bytes
    ts_ms: int


class Outbox:
    """A bounded, durable FIFO of messages for Kafka. Safe to use from several threads."""

    def __init__(self, path: Path, *, max_bytes: int = 128 * 1024 * 1024, synchronous: str = "NORMAL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous: {synchronous!r} is not NORMAL or FULL")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
            " key BLOB, value BLOB NOT NULL, ts_ms INTEGER NOT NULL, size INTEGER NOT NULL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        self._rows, self._bytes = int(row[0]), int(row[1])
        self.dropped = int(self._meta("dropped") or 0)

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, name: str, value: str | None) -> None:
        if value is None:
            self._db.execute("DELETE FROM meta WHERE name = ?", (name,))
        else:
            self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    @staticmethod
    def _size(key: bytes | None, value: bytes) -> int:
        return len(value) + len(key or b"") + ROW_OVERHEAD_BYTES

    def put(
        self,
        items: Iterable[tuple[str, bytes | None, bytes, int]],
        counters: Mapping[str, int] | None = None,
        notes: Mapping[str, str] | None = None,
    ) -> int:
        """Append (topic, key, value, ts_ms) messages in one transaction; return how many old ones were dropped.

        `counters` (name -> value) and `notes` (name -> text) are saved in the same transaction, so
        after a crash `counter(name)` and `note(name)` say exactly what the last committed put said
        (e.g. the last record's seq, the name of the last frame file queued). A put with notes is
        committed even without messages.
        """
        rows = [(topic, key, value, ts_ms, self._size(key, value)) for topic, key, value, ts_ms in items]
        if not rows and not notes:
            return 0
        incoming = sum(r[4] for r in rows)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                dropped = self._make_room(incoming)
                self._db.executemany("INSERT INTO outbox (topic, key, value, ts_ms, size) VALUES (?, ?, ?, ?, ?)", rows)
                for name, value in (counters or {}).items():
                    self._set_meta(f"counter:{name}", str(int(value)))
                for name, text in (notes or {}).items():
                    self._set_meta(f"note:{name}", text)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._rows += len(rows)
            self._bytes += incoming
            return dropped

    def _make_room(self, incoming: int) -> int:
        """Drop the oldest rows until `incoming` more bytes fit (inside the caller's transaction)."""
        excess = self._bytes + incoming - self.max_bytes
        if excess <= 0:
            return 0
        dropped = freed = 0
        for seq, size in self._db.execute("SELECT seq, size FROM outbox ORDER BY seq LIMIT 100000").fetchall():
            if freed >= excess:
                break
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            dropped += 1
            freed += size
        self._rows -= dropped
        self._bytes -= freed
        self.dropped += dropped
        self._set_meta("dropped", str(self.dropped))
        return dropped

    def peek(self, limit: int, after: int = 0) -> list[QueuedMessage]:
        """The oldest `limit` messages with a seq above `after`, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, key, value, ts_ms FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
        return [QueuedMessage(int(s), str(t), k, bytes(v), int(ts)) for s, t, k, v, ts in rows]

    def ack(self, seqs: Sequence[int], *, clear_inflight: bool = False) -> None:
        """Remove delivered messages (and, when asked, the in-flight note) in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                freed = 0
                removed = 0
                for start in range(0, len(seqs), 500):
                    chunk = list(seqs[start : start + 500])
                    marks = ",".join("?" * len(chunk))
                    row = self._db.execute(
                        f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox WHERE seq IN ({marks})",  # noqa: S608
                        chunk,
                    ).fetchone()
                    removed += int(row[0])
                    freed += int(row[1])
                    self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", chunk)  # noqa: S608
                if clear_inflight:
                    self._set_meta("inflight", None)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._rows -= removed
            self._bytes -= freed

    def counter(self, name: str) -> int | None:
        """The value of a counter as of the last committed `put` that named it; None if none did."""
        with self._lock:
            text = self._meta(f"counter:{name}")
        return None if text is None else int(text)

    def note(self, name: str) -> str | None:
        """The text of a note as of the last committed `put` that named it; None if none did."""
        with self._lock:
            return self._meta(f"note:{name}")

    def set_inflight(self, note: dict[str, Any] | None) -> None:
        with self._lock:
            self._set_meta("inflight", None if note is None else json.dumps(note, sort_keys=True))

    def inflight(self) -> dict[str, Any] | None:
        with self._lock:
            text = self._meta("inflight")
        return None if text is None else dict(json.loads(text))

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        with self._lock:
            self._db.close()
