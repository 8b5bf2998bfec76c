"""A camera's frames for the agent: PNG files in a spool directory (`source: {kind: images, path: DIR}`).

The protocol is the usual one of spool directories: the camera, or the program that captures
its frames, writes each frame under a temporary name in DIR (a name starting with a dot or
not ending in `.png`, e.g. `.frame-000123.png.tmp`) and renames it to its final `*.png` name
once it is complete. A rename within one filesystem is atomic, so the agent sees whole files
only; it never reads a temporary name. Final names sort in capture order (a zero-padded
counter or a UTC time stamp), and the agent takes the frames in name order.

Each frame is read at most `MAX_FRAME_PNG_BYTES` (the bound of a frame message,
`edgeloop.contract.frame`), its PNG signature and IHDR dimensions are checked against the
shape the device's models take before a pixel is decoded, and only then is it decoded.
A bad file (too large, not a PNG, another shape, undecodable, not a regular file) is moved
to `DIR/rejected/` with a `<name>.reason` text file beside it, and the agent goes on; once
`rejected/` holds `max_rejected` files, further bad files are deleted (still counted and
logged), so a camera writing garbage cannot fill the disk.

The agent removes a frame's file (or moves it to `DIR/done/`) only after the frame and its
record are committed to the store-and-forward queue, together with the file's name
(`Outbox.put(notes=...)`): after a kill -9 between the two, the file is found again, its name
is the one last queued, and it is removed without being queued a second time.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeloop.contract.frame import MAX_FRAME_PNG_BYTES, BadFrame, png_shape
from edgeloop.edge.store import atomic_write

REJECTED_DIR = "rejected"
DONE_DIR = "done"
REASON_SUFFIX = ".reason"
REJECT_REASONS = ("unreadable", "too_large", "not_png", "shape", "undecodable", "inference")
MAX_REJECTED = 500  # bad files kept in rejected/ for a look; later ones are deleted


class RejectedFrame(ValueError):
    """A frame file the agent will not send: `reason` is one of `REJECT_REASONS`, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SpoolFrame:
    """A checked, decoded frame from the spool: its file, PNG bytes and pixels (uint8, H x W)."""

    path: Path
    png: bytes
    pixels: np.ndarray


class ImageSpool:
    """The spool directory a camera writes its frames into (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        shape: tuple[int, int],
        *,
        keep_done: bool = False,
        max_bytes: int = MAX_FRAME_PNG_BYTES,
        max_rejected: int = MAX_REJECTED,
    ) -> None:
        self.directory = directory
        self.shape = shape
        self.keep_done = keep_done
        self.max_bytes = max_bytes
        self.max_rejected = max_rejected
        directory.mkdir(parents=True, exist_ok=True)
        rejected = directory / REJECTED_DIR
        self.rejected_kept = (
            sum(1 for p in rejected.iterdir() if not p.name.endswith(REASON_SUFFIX)) if rejected.is_dir() else 0
        )

    def pending(self, limit: int) -> list[Path]:
        """Up to `limit` finished frames (`*.png`, not starting with a dot), in name order."""
        with os.scandir(self.directory) as entries:
            names = sorted(
                e.name
                for e in entries
                if e.name.endswith(".png") and not e.name.startswith(".") and not e.is_dir(follow_symlinks=False)
            )
        return [self.directory / name for name in names[:limit]]

    def read(self, path: Path) -> SpoolFrame:
        """The frame in `path`, read size-bounded and checked before decoding; RejectedFrame naming what is wrong."""
        data = self._read_bounded(path)
        try:
            height, width = png_shape(data)
        except BadFrame as exc:
            raise RejectedFrame("not_png", f"{path.name}: {exc}") from None
        if (height, width) != self.shape:
            raise RejectedFrame(
                "shape",
                f"{path.name}: {width}x{height} pixels, the model takes {self.shape[1]}x{self.shape[0]}",
            )
        from edgeloop.vision.frames import decode_png

        try:
            pixels = decode_png(data)
        except Exception as exc:  # a corrupt stream: the decoder raises several kinds
            raise RejectedFrame("undecodable", f"{path.name}: cannot be decoded: {exc}") from None
        if pixels.shape != self.shape:
            raise RejectedFrame("undecodable", f"{path.name}: decoded to {pixels.shape}, not {self.shape}")
        return SpoolFrame(path, data, pixels)

    def _read_bounded(self, path: Path) -> bytes:
        """At most `max_bytes` of a regular file (no symlink, no device or pipe), or RejectedFrame."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise RejectedFrame("unreadable", f"{path.name}: cannot be opened: {exc.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RejectedFrame("unreadable", f"{path.name}: not a regular file")
            chunks: list[bytes] = []
            size = 0
            while size <= self.max_bytes:
                chunk = os.read(fd, self.max_bytes + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            raise RejectedFrame("unreadable", f"{path.name}: cannot be read: {exc.strerror}") from None
        finally:
            os.close(fd)
        if size > self.max_bytes:
            raise RejectedFrame("too_large", f"{path.name}: over {self.max_bytes} bytes, the bound of a frame")
        return b"".join(chunks)

    def finish(self, path: Path) -> None:
        """A queued frame's file: deleted, or moved to `done/` when the config keeps them."""
        try:
            if self.keep_done:
                (self.directory / DONE_DIR).mkdir(exist_ok=True)
                os.replace(path, self.directory / DONE_DIR / path.name)
            else:
                path.unlink()
        except FileNotFoundError:  # removed by someone else meanwhile: nothing left to do
            pass

    def reject(self, path: Path, reason: str) -> bool:
        """Move a bad frame's file to `rejected/`, with `<name>.reason` beside it saying why; once `rejected/`
        is full, delete it instead. Return whether it was kept."""
        if self.rejected_kept >= self.max_rejected:
            path.unlink(missing_ok=True)
            return False
        rejected = self.directory / REJECTED_DIR
        rejected.mkdir(exist_ok=True)
        atomic_write(rejected / f"{path.name}{REASON_SUFFIX}", (reason.rstrip() + "\n").encode())
        with contextlib.suppress(FileNotFoundError):  # removed by someone else meanwhile
            os.replace(path, rejected / path.name)
        self.rejected_kept += 1
        return True
