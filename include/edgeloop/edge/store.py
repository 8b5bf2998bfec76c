"""The models on a device's disk: the current one, the previous one (local rollback), swapped atomically.

Files are named by digest (`<sha256>.onnx`) and `slots.json` says which digest is the
current and which the previous model, with their versions. Every write is temp file,
fsync, rename, fsync of the folder: after a power cut the device finds either the old
or the new state, never half of one. Digests are checked again when a file is read.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeloop.contract.artifact import sha256_hex


@dataclass(frozen=True)
class Slot:
    version: str
    sha256: str


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `data` to `path` (created with `mode`) so that a crash leaves the old content or the new, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStore:
    """Current and previous model of one device, under `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.current: Slot | None = None
        self.previous: Slot | None = None
        slots = self.folder / "slots.json"
        if slots.exists():
            body: dict[str, Any] = json.loads(slots.read_text())
            self.current = Slot(**body["current"]) if body.get("current") else None
            self.previous = Slot(**body["previous"]) if body.get("previous") else None

    def path_of(self, sha256: str) -> Path:
        return self.folder / f"{sha256}.onnx"

    def read(self, slot: Slot) -> bytes:
        """The bytes of a slot's model, re-verified; raise OSError if missing or changed on disk."""
        data = self.path_of(slot.sha256).read_bytes()
        if sha256_hex(data) != slot.sha256:
            raise OSError(f"model file {self.path_of(slot.sha256)} changed on disk (digest mismatch)")
        return data

    def install(self, version: str, data: bytes) -> Slot:
        """Keep `data` as the current model; the current one becomes the previous one."""
        slot = Slot(version, sha256_hex(data))
        if not self.path_of(slot.sha256).exists():
            atomic_write(self.path_of(slot.sha256), data)
        if self.current != slot:
            self._save(slot, self.current)
        return slot

    def rollback(self) -> Slot | None:
        """Make the previous model current again (local rollback); None when there is none."""
        if self.previous is None:
            return None
        self._save(self.previous, self.current)
        return self.current

    def _save(self, current: Slot | None, previous: Slot | None) -> None:
        body = {"current": asdict(current) if current else None, "previous": asdict(previous) if previous else None}
        atomic_write(self.folder / "slots.json", json.dumps(body).encode())
        keep = {s.sha256 for s in (current, previous) if s}
        for stale in self.folder.glob("*.onnx"):
            if stale.stem not in keep:
                stale.unlink(missing_ok=True)
        self.current, self.previous = current, previous
