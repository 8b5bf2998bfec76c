"""A stand-in Kafka producer for harness tests: it keeps what is sent, by topic and key, in order."""

from __future__ import annotations

from typing import Any


class Wire:
    """A stand-in producer: what the harness sends, by topic and key, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, **_: Any) -> None:
        self.sent.append((topic, key, value))

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0

    def of(self, device: str, topic: str) -> list[bytes]:
        return [v or b"" for t, k, v in self.sent if k == device.encode() and t == topic]
