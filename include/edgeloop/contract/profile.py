"""A device's profile of one window: mergeable summaries instead of every record (`<prefix>.profiles`).

In `telemetry.mode: profiles` each device sends, per window and model version, one binary
message (key = device id):

    magic  b"ELP1"
    header u16 length + UTF-8 JSON {device_id, group_id, pipeline, model_version,
           window_start_ms, window_end_ms, records, sent}
    u16    column count, then per column:
           u8 name length + UTF-8 name, u8 kind (0 numeric, 1 categorical),
           u32 count, u32 missing, f64 min, f64 max, f64 mean, f64 variance,
           u32 sketch length + the sketch (Apache DataSketches: a KLL floats sketch for a
           numeric column, a frequent-strings sketch for a categorical one)
    trailer (when signed) b"SIG1" + 16-byte ASCII key id + 64-byte Ed25519 signature of
           everything before the trailer

`records` is how many records the window saw, `sent` how many of them went out raw. Every
length is bounded before anything is read (`decode_profile` raises BadProfile naming the
part), and each sketch is deserialised once to prove it is one.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from edgeloop.contract.identity import DeviceRegistry
from edgeloop.contract.keys import SIGNATURE_PREFIX, Keyring, Signer

MAGIC = b"ELP1"
SIG_MAGIC = b"SIG1"
KEY_ID_BYTES = 16
SIGNATURE_BYTES = 64
TRAILER_BYTES = len(SIG_MAGIC) + KEY_ID_BYTES + SIGNATURE_BYTES
MAX_PROFILE_BYTES = 512 * 1024
MAX_COLUMNS = 256
MAX_HEADER_BYTES = 4096
_COLUMN = struct.Struct("<BIIddddI")
_KINDS = ("numeric", "categorical")
Kind = Literal["numeric", "categorical"]


class BadProfile(ValueError):
    """A profile message that is not well formed; the message names the part."""


@dataclass(frozen=True)
class ColumnProfile:
    """One column's summary: counts, moments and a mergeable sketch."""

    name: str
    kind: Kind
    count: int  # values seen (not missing)
    missing: int
    min: float = math.nan
    max: float = math.nan
    mean: float = math.nan
    variance: float = math.nan
    sketch: bytes = b""


@dataclass(frozen=True)
class DeviceProfile:
    device_id: str
    group_id: str
    pipeline: str
    model_version: str | None
    window_start_ms: int
    window_end_ms: int
    records: int
    sent: int
    columns: tuple[ColumnProfile, ...] = ()
    key_id: str | None = None
    signature: str | None = None  # `ed25519:<base64>`, as Keyring.verify takes it
    signed_part: bytes = field(default=b"", repr=False, compare=False)

    def column(self, name: str) -> ColumnProfile | None:
        return next((c for c in self.columns if c.name == name), None)

    def header(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "group_id": self.group_id,
            "pipeline": self.pipeline,
            "model_version": self.model_version,
            "window_start_ms": self.window_start_ms,
            "window_end_ms": self.window_end_ms,
            "records": self.records,
            "sent": self.sent,
        }

    def verify(self, keys: Keyring) -> None:
        """Raise BadSignature unless the profile is signed by one of `keys`."""
        keys.verify(self.key_id, self.signature, self.signed_part)


def encode_profile(profile: DeviceProfile, signer: Signer | None = None) -> bytes:
    """The wire bytes of `profile`, signed by `signer` (the device's key) when given."""
    header = json.dumps(profile.header(), separators=(",", ":")).encode()
    parts = [MAGIC, struct.pack("<H", len(header)), header, struct.pack("<H", len(profile.columns))]
    for column in profile.columns:
        name = column.name.encode()
        parts += [
            struct.pack("<B", len(name)),
            name,
            _COLUMN.pack(
                _KINDS.index(column.kind),
                column.count,
                column.missing,
                column.min,
                column.max,
                column.mean,
                column.variance,
                len(column.sketch),
            ),
            column.sketch,
        ]
    body = b"".join(parts)
    if signer is None:
        return body
    raw_signature = base64.b64decode(signer.sign(body)[len(SIGNATURE_PREFIX) :])
    return body + SIG_MAGIC + signer.key_id.encode()[:KEY_ID_BYTES].ljust(KEY_ID_BYTES) + raw_signature


def decode_profile(value: bytes | None, *, check_sketches: bool = True) -> DeviceProfile:
    """Parse one profile message; raise BadProfile naming what is wrong (size, header field, column)."""
    if not value:
        raise BadProfile("empty: the message has no value")
    if len(value) > MAX_PROFILE_BYTES:
        raise BadProfile(f"oversized: {len(value)} bytes, more than {MAX_PROFILE_BYTES}")
    if not value.startswith(MAGIC):
        raise BadProfile("magic: not an edgeloop profile (ELP1)")
    key_id = signature = None
    body = value
    if len(value) > TRAILER_BYTES and value[-TRAILER_BYTES:].startswith(SIG_MAGIC):
        trailer = value[-TRAILER_BYTES:]
        body = value[:-TRAILER_BYTES]
        key_id = trailer[len(SIG_MAGIC) : len(SIG_MAGIC) + KEY_ID_BYTES].decode("ascii", "replace").strip()
        signature = SIGNATURE_PREFIX + base64.b64encode(trailer[-SIGNATURE_BYTES:]).decode()
    reader = _Reader(body, len(MAGIC))
    header = _header(reader.take(reader.unpack("<H", "header length")[0], "header"))
    count = _column_count(reader)
    pos, columns = reader.pos, []
    for i in range(count):
        column, pos = _column(body, pos, i, check_sketches)
        columns.append(column)
    if pos != len(body):
        raise BadProfile(f"trailing bytes: {len(body) - pos} after the last column")
    return DeviceProfile(**header, columns=tuple(columns), key_id=key_id, signature=signature, signed_part=body)


def check_signed(profile: DeviceProfile, devices: DeviceRegistry) -> str | None:
    """None if `profile` is signed by its enrolled device and names its group; else the refusal reason
    (`unsigned`, `unknown_device`, `bad_signature`, `wrong_group`)."""
    if profile.signature is None:
        return "unsigned"
    return devices.check_signature(
        profile.device_id, profile.group_id, profile.key_id, profile.signature, lambda: profile.signed_part
    )


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise BadProfile(f"truncated: {what} needs {n} bytes at offset {self.pos}, {len(self.data)} in all")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))


_HEADER_TYPES: Mapping[str, tuple[type, ...]] = {
    "device_id": (str,),
    "group_id": (str,),
    "pipeline": (str,),
    "model_version": (str, type(None)),
    "window_start_ms": (int,),
    "window_end_ms": (int,),
    "records": (int,),
    "sent": (int,),
}


def _header(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_HEADER_BYTES:
        raise BadProfile(f"header: {len(raw)} bytes, more than {MAX_HEADER_BYTES}")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadProfile(f"header: not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise BadProfile("header: not an object")
    for name, types in _HEADER_TYPES.items():
        value = header.get(name)
        if not isinstance(value, types) or isinstance(value, bool):
            raise BadProfile(f"header.{name}: missing or not {'/'.join(t.__name__ for t in types)}")
        if isinstance(value, str) and not 0 < len(value) <= 256:
            raise BadProfile(f"header.{name}: empty or longer than 256 characters")
        if isinstance(value, int) and value < 0:
            raise BadProfile(f"header.{name}: negative")
    extra = sorted(set(header) - set(_HEADER_TYPES))
    if extra:
        raise BadProfile(f"header: unknown fields {extra}")
    if header["window_end_ms"] < header["window_start_ms"]:
        raise BadProfile("header.window_end_ms: before window_start_ms")
    if header["sent"] > header["records"]:
        raise BadProfile("header.sent: more than records")
    return header


def _column_count(reader: _Reader) -> int:
    (count,) = reader.unpack("<H", "column count")
    if count > MAX_COLUMNS:
        raise BadProfile(f"columns: {count}, more than {MAX_COLUMNS}")
    return int(count)


def _column(body: bytes, pos: int, index: int, check_sketch: bool) -> tuple[ColumnProfile, int]:
    """The column at `pos` and the position after it (struct.unpack_from: this runs per column of every
    profile the drift stage merges)."""
    size = len(body)
    if pos >= size:
        raise BadProfile(f"truncated: columns[{index}] starts at offset {pos}, {size} bytes in all")
    name_end = pos + 1 + body[pos]
    stats_end = name_end + _COLUMN.size
    if stats_end > size:
        raise BadProfile(f"truncated: columns[{index}] needs {stats_end - pos} bytes at offset {pos}")
    try:
        name = body[pos + 1 : name_end].decode()
    except UnicodeDecodeError:
        raise BadProfile(f"columns[{index}].name: not UTF-8") from None
    kind, count, missing, low, high, mean, variance, sketch_length = _COLUMN.unpack_from(body, name_end)
    if kind >= len(_KINDS):
        raise BadProfile(f"columns[{index}] ({name}).kind: {kind} is not 0 (numeric) or 1 (categorical)")
    end = stats_end + sketch_length
    if end > size:
        raise BadProfile(f"truncated: columns[{index}] ({name}) sketch needs {sketch_length} bytes at {stats_end}")
    sketch = body[stats_end:end]
    column = ColumnProfile(name, _KINDS[kind], count, missing, low, high, mean, variance, sketch)  # type: ignore[arg-type]
    if check_sketch and sketch:
        try:
            n = sketch_n(column)
        except (RuntimeError, ValueError, TypeError, MemoryError) as exc:
            raise BadProfile(f"columns[{index}] ({name}).sketch: not a {column.kind} sketch ({exc})") from None
        if n != count:
            raise BadProfile(f"columns[{index}] ({name}).sketch: holds {n} values, count says {count}")
    return column, end


def load_sketch(column: ColumnProfile) -> Any:
    """The column's DataSketches object (a kll_floats_sketch or a frequent_strings_sketch)."""
    import datasketches as ds

    if column.kind == "numeric":
        return ds.kll_floats_sketch.deserialize(column.sketch)
    return ds.frequent_strings_sketch.deserialize(column.sketch)


def sketch_n(column: ColumnProfile) -> int:
    sketch = load_sketch(column)
    return int(sketch.n if column.kind == "numeric" else sketch.total_weight)


def merge_moments(columns: Iterable[ColumnProfile]) -> tuple[int, int, float, float, float, float]:
    """(count, missing, min, max, mean, variance) of columns merged (Chan's parallel update)."""
    n, missing, low, high, mean, m2 = 0, 0, math.inf, -math.inf, 0.0, 0.0
    for c in columns:
        missing += c.missing
        if c.count == 0:
            continue
        low, high = min(low, c.min), max(high, c.max)
        total = n + c.count
        delta = c.mean - mean
        m2 += c.variance * c.count + delta * delta * n * c.count / total
        mean += delta * c.count / total
        n = total
    if n == 0:
        return 0, missing, math.nan, math.nan, math.nan, math.nan
    return n, missing, low, high, mean, m2 / n


REFERENCE_K = 200


def reference_metadata(columns: Mapping[str, Any], k: int = REFERENCE_K) -> str:
    """The artifact's reference profile: `{column: base64 KLL floats sketch}` as JSON."""
    import datasketches as ds
    import numpy as np

    out = {}
    for name, values in columns.items():
        sketch = ds.kll_floats_sketch(k)
        array = np.asarray(values, dtype=np.float32)
        sketch.update(array[np.isfinite(array)])
        out[name] = base64.b64encode(sketch.serialize()).decode()
    return json.dumps(out, sort_keys=True)


def parse_reference(text: str, columns: Iterable[str]) -> dict[str, Any]:
    """The reference sketches of `columns` from the metadata value; raise BadProfile naming the column."""
    import datasketches as ds

    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        raise BadProfile("reference: not JSON") from None
    if not isinstance(raw, dict):
        raise BadProfile("reference: not an object")
    out = {}
    for name in columns:
        encoded = raw.get(name)
        if not isinstance(encoded, str):
            continue
        try:
            out[name] = ds.kll_floats_sketch.deserialize(base64.b64decode(encoded, validate=True))
        except (ValueError, RuntimeError) as exc:
            raise BadProfile(f"reference.{name}: not a KLL sketch ({exc})") from None
    return out
