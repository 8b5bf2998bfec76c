"""Spec files in the pipelines folder: read with a content version, write atomically, refuse stale edits.

The version of a spec is a hash of its bytes. An edit names the version it started
from; if the file changed since, the edit is refused (`VersionConflict`) instead of
silently overwriting someone else's change. Writes go to a temporary file in the same
folder, are flushed to disk, and replace the spec in one `os.replace`, so the DAG
processor reads either the old spec or the new one, never half of one. A lock on the
folder makes check-and-write one step across the api-server's workers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeloop.spec import NAME_PATTERN

_NAME = re.compile(NAME_PATTERN)
SUFFIXES = (".yaml", ".yml")


class StoreError(Exception):
    """A spec file operation that cannot be done; the message says why."""


class InvalidName(StoreError, ValueError):
    pass


class PipelineNotFound(StoreError, LookupError):
    pass


class PipelineExists(StoreError):
    pass


class VersionConflict(StoreError):
    def __init__(self, name: str, expected: str, current: str) -> None:
        super().__init__(
            f"pipeline '{name}' was changed by someone else since you opened it (your version {expected}, "
            f"current version {current}): reload it, re-apply your change and save again"
        )
        self.name = name
        self.expected = expected
        self.current = current


class FolderNotWritable(StoreError):
    pass


def content_version(data: bytes) -> str:
    """The version of a spec: the first 16 hex digits of the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True)
class StoredSpec:
    name: str
    path: Path
    text: str
    version: str
    mtime_ns: int


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidName(
            f"'{name}' is not a valid pipeline name: lower case letters, digits and '_', "
            f"starting with a letter, 2 to 40 characters ({NAME_PATTERN})"
        )
    return name


def _existing_path(folder: Path, name: str) -> Path | None:
    for suffix in SUFFIXES:
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def _read(path: Path, name: str) -> StoredSpec:
    data = path.read_bytes()
    return StoredSpec(name, path, data.decode("utf-8", "replace"), content_version(data), path.stat().st_mtime_ns)


def read_spec_file(folder: Path, name: str) -> StoredSpec:
    path = _existing_path(folder, check_name(name))
    if path is None:
        raise PipelineNotFound(f"pipeline '{name}' does not exist in {folder}")
    return _read(path, name)


def list_spec_files(folder: Path) -> list[StoredSpec]:
    """Every spec file in the folder (sorted by name); names that are not valid are listed too."""
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.iterdir()):
        if path.suffix in SUFFIXES and path.is_file() and not path.name.startswith("."):
            with contextlib.suppress(OSError):
                out.append(_read(path, path.stem))
    return out


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder itself (no lock file left behind)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_atomic(path: Path, text: str) -> None:
    """Write text so that readers see the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _writable(folder: Path) -> None:
    if not folder.is_dir():
        raise FolderNotWritable(f"pipelines folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise FolderNotWritable(f"pipelines folder {folder} is read-only here (specs synced from git?)")


def create_spec_file(folder: Path, name: str, text: str) -> StoredSpec:
    """Write a new spec; refuse if a pipeline of that name exists."""
    check_name(name)
    _writable(folder)
    with folder_lock(folder):
        existing = _existing_path(folder, name)
        if existing is not None:
            raise PipelineExists(f"pipeline '{name}' already exists ({existing.name}): pick another name or edit it")
        path = folder / f"{name}.yaml"
        write_atomic(path, text)
        return _read(path, name)


@contextlib.contextmanager
def _at_version(folder: Path, name: str, expected_version: str) -> Iterator[Path]:
    """The spec's path, under the folder lock, if the spec exists and is still at `expected_version`."""
    check_name(name)
    _writable(folder)
    with folder_lock(folder):
        path = _existing_path(folder, name)
        if path is None:
            raise PipelineNotFound(f"pipeline '{name}' does not exist (deleted meanwhile?)")
        current = content_version(path.read_bytes())
        if current != expected_version:
            raise VersionConflict(name, expected_version, current)
        yield path


def update_spec_file(folder: Path, name: str, text: str, expected_version: str) -> StoredSpec:
    """Replace a spec if it is still at `expected_version`; else raise VersionConflict."""
    with _at_version(folder, name, expected_version) as path:
        write_atomic(path, text)
        return _read(path, name)


def delete_spec_file(folder: Path, name: str, expected_version: str) -> None:
    """Remove a spec if it is still at `expected_version` (its DAGs go away after the next parse)."""
    with _at_version(folder, name, expected_version) as path:
        path.unlink()
