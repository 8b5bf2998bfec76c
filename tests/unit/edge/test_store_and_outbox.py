"""Models on disk swap atomically with a local rollback; the queue is durable, ordered and bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeloop.edge.outbox import Outbox
from edgeloop.edge.store import ModelStore


def test_install_keeps_the_previous_model_for_a_local_rollback(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    first = store.install("1", b"first model")
    second = store.install("2", b"second model")
    reopened = ModelStore(tmp_path)
    assert (reopened.current, reopened.previous) == (second, first)
    assert reopened.rollback() == first
    assert ModelStore(tmp_path).current == first
    assert reopened.read(first) == b"first model"


def test_a_model_file_changed_on_disk_is_not_read(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    slot = store.install("1", b"first model")
    store.path_of(slot.sha256).write_bytes(b"tampered")
    with pytest.raises(OSError, match="digest mismatch"):
        store.read(slot)


def test_only_the_current_and_previous_models_stay_on_disk(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for version in range(1, 5):
        store.install(str(version), f"model {version}".encode())
    assert len(list(tmp_path.glob("*.onnx"))) == 2


def test_queued_messages_survive_a_process_that_never_closed_the_queue(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "q.sqlite")
    outbox.put([("t", b"d", f"m{i}".encode(), i) for i in range(5)])
    outbox.ack([outbox.peek(1)[0].seq])
    # no close(): like kill -9
    again = Outbox(tmp_path / "q.sqlite")
    assert [m.value for m in again.peek(10)] == [b"m1", b"m2", b"m3", b"m4"]
    assert again.rows == 4


def test_a_full_queue_drops_the_oldest_and_counts_them_across_restarts(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "q.sqlite", max_bytes=1024 * 1024)
    value = b"x" * 1000
    dropped = sum(outbox.put([("t", b"d", value, i)]) for i in range(1100))
    assert dropped > 0
    assert outbox.bytes <= 1024 * 1024
    kept = outbox.peek(2000)
    assert kept[-1].ts_ms == 1099
    assert kept[0].ts_ms == dropped
    assert Outbox(tmp_path / "q.sqlite", max_bytes=1024 * 1024).dropped == dropped


def test_the_inflight_note_is_kept_until_cleared_with_the_ack(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "q.sqlite")
    outbox.put([("t", b"d", b"v", 1)])
    outbox.set_inflight({"upto": 1, "starts": {"t|0": 7}})
    assert Outbox(tmp_path / "q.sqlite").inflight() == {"upto": 1, "starts": {"t|0": 7}}
    outbox.ack([1], clear_inflight=True)
    assert outbox.inflight() is None
    assert outbox.rows == 0
