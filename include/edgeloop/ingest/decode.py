"""Decode Kafka message values into Arrow rows of the spec's schema, or into dead-letter reasons.

A batch is parsed by Arrow's JSON reader in one call (C++, no Python per field). When
Arrow refuses a batch, it is split in halves until the bad records are isolated; a
single record Arrow refuses goes through a Python validator that either accepts it or
names exactly what is wrong. Whether a record is accepted depends on its own bytes
only, never on the batch it arrived in, so re-running a flush gives the same rows.

Arrow's reader only ever sees lines that start with `{` and end with `}`, hold no line
break, are valid UTF-8 without surrogate escapes (\\ud800 to \\udfff) and nest at most
`MAX_DEPTH` deep; every other value goes to the Python validator. The reader crashes the
process (SIGSEGV, pyarrow 25) on a buffer whose first value is `null`, reads a line such
as `{...} null` or a blank line as a different number of rows than records (rows could
shift), and passes invalid UTF-8 inside strings through to the table.

Rules: a value must be one UTF-8 JSON object; fields of the schema are checked by type
(`int` takes integer literals only, `float` takes any finite number, `timestamp` takes an
ISO 8601 string, naive meaning UTC, or epoch seconds, or epoch milliseconds when the
number is 1e11 or more); a missing or null field is allowed only when the field is
nullable; fields not in the schema are ignored.

Then fields are checked by role (`FieldChecks`, from the spec; kind `field`): confidence
in [0, 1], prediction one of the labels, group id one of the groups, device id matching
the spec's pattern and length, and the timestamp no further ahead of the message's Kafka
timestamp than `ingest.max_clock_skew` nor behind it than `ingest.max_record_age`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from edgeloop.contract.safejson import JsonRefused, has_surrogate_escape, loads_bounded, too_deep
from edgeloop.spec import DEFAULT_DEVICE_ID_PATTERN, FieldSpec, PipelineSpec

BadKind = Literal["empty", "oversized", "undecodable", "invalid_json", "schema", "field", "profile", "frame", "refused"]
ARROW_TYPES: dict[str, pa.DataType] = {
    "float": pa.float64(),
    "int": pa.int64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
_INT64 = (-(2**63), 2**63 - 1)
_EPOCH_MS_FROM = 1e11  # numbers this large are epoch milliseconds (1e11 s would be the year 5138)
MAX_DEPTH = 32  # nesting of arrays and objects a record may have (schema fields are flat)
_OPEN, _CLOSE = 0x7B, 0x7D


class BadRecord(NamedTuple):
    position: int  # position in the decoded batch
    kind: BadKind
    reason: str


class Decoded(NamedTuple):
    table: pa.Table  # the schema's columns, good rows in input order
    indices: pa.Array  # int64: position in the batch of each row of `table`
    bad: list[BadRecord]


@dataclass(frozen=True)
class FieldChecks:
    """What values the fields with a role may take (see the module docstring); empty sets are not checked."""

    labels: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    device_id_pattern: str = DEFAULT_DEVICE_ID_PATTERN
    device_id_max_length: int = 128
    max_clock_skew: timedelta = timedelta(minutes=15)
    max_record_age: timedelta = timedelta(days=7)
    _device_re: re.Pattern[str] = dataclass_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_device_re", re.compile(self.device_id_pattern))

    def device_id_ok(self, device_id: str) -> bool:
        return len(device_id) <= self.device_id_max_length and self._device_re.fullmatch(device_id) is not None


@dataclass(frozen=True)
class RecordSchema:
    """What the decoder needs from a spec: fields, their Arrow types, the size limit and the role checks."""

    fields: tuple[FieldSpec, ...]
    max_record_bytes: int
    checks: FieldChecks | None = None

    @property
    def arrow(self) -> pa.Schema:
        """The stored schema: not-null where the spec says so."""
        return pa.schema([pa.field(f.name, ARROW_TYPES[f.type], nullable=f.nullable) for f in self.fields])

    @property
    def parsed(self) -> pa.Schema:
        """The schema of decoded tables (all nullable: Arrow's JSON reader does not mark not-null)."""
        return pa.schema([pa.field(f.name, ARROW_TYPES[f.type]) for f in self.fields])


def timestamp_field(schema: RecordSchema) -> str:
    """The field that places each record in its hour: role `timestamp`, type `timestamp`."""
    field = next((f for f in schema.fields if f.role == "timestamp"), None)
    if field is None or field.type != "timestamp":
        name = field.name if field else None
        raise ValueError(
            f"schema: the field with role 'timestamp' ({name}) must exist and have type timestamp: "
            "it places each record in its hour"
        )
    return field.name


class Codec(Protocol):
    """What ingest needs to turn a topic's message values into rows: the stored columns, the column
    that places a row in its hour, and the decoder (good rows as a table, bad ones with reasons)."""

    @property
    def arrow(self) -> pa.Schema: ...

    @property
    def timestamp_field(self) -> str: ...

    def decode(self, values: Sequence[bytes | None], kafka_timestamps_ms: Sequence[int]) -> Decoded: ...


@dataclass(frozen=True)
class JsonRecords:
    """The spec's JSON records (`decode_records`)."""

    schema: RecordSchema

    @property
    def arrow(self) -> pa.Schema:
        return self.schema.arrow

    @property
    def timestamp_field(self) -> str:
        return timestamp_field(self.schema)

    def decode(self, values: Sequence[bytes | None], kafka_timestamps_ms: Sequence[int]) -> Decoded:
        return decode_records(values, self.schema, kafka_timestamps_ms)


def int64_array(values: Sequence[int] | np.ndarray) -> pa.Array:
    """An Arrow int64 array from ints, built from a numpy buffer (pa.array would import pandas)."""
    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def record_schema(spec: PipelineSpec) -> RecordSchema:
    ingest = spec.ingest
    checks = FieldChecks(
        labels=frozenset(spec.annotation.labels),
        groups=frozenset(g.name for g in spec.groups),
        device_id_pattern=ingest.device_id_pattern,
        device_id_max_length=ingest.device_id_max_length,
        max_clock_skew=ingest.max_clock_skew,
        max_record_age=ingest.max_record_age,
    )
    return RecordSchema(fields=tuple(spec.schema_), max_record_bytes=ingest.max_record_bytes, checks=checks)


def decode_records(
    values: Sequence[bytes | None], schema: RecordSchema, kafka_timestamps_ms: Sequence[int] | None = None
) -> Decoded:
    """Split message values into good rows (an Arrow table) and bad records with reasons.

    `kafka_timestamps_ms` (one per value, negative when the broker gave none) lets the
    timestamp field be checked against the time the message was produced; without it
    that one check is skipped.
    """
    decoded = _decode(values, schema)
    if schema.checks is None or not decoded.table.num_rows:
        return decoded
    return _check_fields(decoded, schema, schema.checks, kafka_timestamps_ms)


def _decode(values: Sequence[bytes | None], schema: RecordSchema) -> Decoded:
    bad: list[BadRecord] = []
    fast: list[int] = []
    slow: list[int] = []
    limit = schema.max_record_bytes
    arrow_schema = schema.parsed
    pieces: list[tuple[pa.Array, pa.Table]] = []
    joined = _join_if_all_plain(values, limit)
    if joined is not None:  # the common case, checked in C and numpy: no per-record Python loop
        _parse_fast(
            values,
            indices=list(range(len(values))),
            schema=schema,
            arrow_schema=arrow_schema,
            pieces=pieces,
            slow=slow,
            joined=joined,
        )
        return _assemble(values, schema, arrow_schema, pieces, slow, bad)
    for i, value in enumerate(values):
        if not value:
            bad.append(BadRecord(i, "empty", "empty: the message has no value"))
        elif len(value) > limit:
            bad.append(BadRecord(i, "oversized", f"oversized: {len(value)} bytes, more than max_record_bytes {limit}"))
        elif _arrow_safe(value):
            fast.append(i)
        else:
            slow.append(i)

    _parse_fast(values, indices=fast, schema=schema, arrow_schema=arrow_schema, pieces=pieces, slow=slow)
    return _assemble(values, schema, arrow_schema, pieces, slow, bad)


def _arrow_safe(value: bytes) -> bool:
    """Whether Arrow's reader may see this value: one line from `{` to `}`, nested at most MAX_DEPTH."""
    return (
        value[:1] == b"{"
        and value[-1:] == b"}"
        and b"\n" not in value
        and b"\r" not in value
        and _is_utf8(value)
        and not has_surrogate_escape(value)
        and not too_deep(value, MAX_DEPTH)
    )


def _is_utf8(data: bytes) -> bool:
    if data.isascii():  # the common case, without decoding
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _join_if_all_plain(values: Sequence[bytes | None], limit: int) -> bytes | None:
    """The values joined by newlines when every one is `_arrow_safe` and within the size limit; else None."""
    if not values or None in values or b"" in values:
        return None
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))  # type: ignore[arg-type]
    if lengths.max() > limit:
        return None
    joined = b"\n".join(values)  # type: ignore[arg-type]
    if joined.count(b"\n") != len(values) - 1 or b"\r" in joined:
        return None
    if not _is_utf8(joined) or has_surrogate_escape(joined):
        return None
    data = np.frombuffer(joined, dtype=np.uint8)
    lasts = np.cumsum(lengths + 1) - 2  # the byte before each line break (and the last byte)
    if not ((data[lasts - lengths + 1] == _OPEN).all() and (data[lasts] == _CLOSE).all()):
        return None
    # Each line opens one object; only extra brackets beyond those can make a line nest deeper.
    if joined.count(b"{") + joined.count(b"[") - len(values) >= MAX_DEPTH:
        return None
    return joined


def _assemble(
    values: Sequence[bytes | None],
    schema: RecordSchema,
    arrow_schema: pa.Schema,
    pieces: list[tuple[pa.Array, pa.Table]],
    slow: list[int],
    bad: list[BadRecord],
) -> Decoded:
    if slow:
        rows: list[dict[str, Any]] = []
        accepted: list[int] = []
        for i in sorted(slow):
            result = validate_record(values[i] or b"", schema)
            if isinstance(result, BadRecord):
                bad.append(result._replace(position=i))
            else:
                rows.append(result)
                accepted.append(i)
        if rows:
            pieces.append((int64_array(accepted), pa.Table.from_pylist(rows, schema=arrow_schema)))

    bad.sort()
    if not pieces:
        return Decoded(arrow_schema.empty_table(), int64_array([]), bad)
    if len(pieces) == 1:
        return Decoded(pieces[0][1], pieces[0][0], bad)
    indices = pa.concat_arrays([p[0] for p in pieces])
    table = pa.concat_tables([p[1] for p in pieces])
    order = pc.sort_indices(indices)
    return Decoded(table.take(order), indices.take(order), bad)


def _read_json(data: bytes, arrow_schema: pa.Schema, block_size: int) -> pa.Table | None:
    try:
        return pj.read_json(
            pa.py_buffer(data),
            read_options=pj.ReadOptions(use_threads=True, block_size=block_size),
            parse_options=pj.ParseOptions(explicit_schema=arrow_schema, unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowException, ValueError):  # ValueError: invalid UTF-8 comes out as UnicodeDecodeError
        return None


def _parse_fast(
    values: Sequence[bytes | None],
    *,
    indices: list[int],
    schema: RecordSchema,
    arrow_schema: pa.Schema,
    pieces: list[tuple[pa.Array, pa.Table]],
    slow: list[int],
    joined: bytes | None = None,
) -> None:
    """Parse `indices` with Arrow; bisect refused chunks; send single refused records to `slow`."""
    block_size = max(1 << 20, 2 * schema.max_record_bytes + 2)
    stack = [indices]
    while stack:
        chunk = stack.pop()
        if not chunk:
            continue
        if joined is not None:  # `values` already joined: the first chunk is all of them
            data, joined = joined, None
        else:
            data = b"\n".join([values[i] or b"" for i in chunk])
        table = _read_json(data, arrow_schema, block_size)
        if table is None or table.num_rows != len(chunk):
            if len(chunk) == 1:
                slow.append(chunk[0])
            else:
                middle = len(chunk) // 2
                stack.append(chunk[middle:])
                stack.append(chunk[:middle])  # popped first: pieces stay in input order
            continue
        chunk_indices = int64_array(chunk)
        violations = _violations(table, schema)
        if violations is not None:
            # Arrow parsed these but they break a rule it does not check; the validator names which.
            slow.extend(chunk_indices.filter(violations).to_pylist())
            keep = pc.invert(violations)
            table, chunk_indices = table.filter(keep), chunk_indices.filter(keep)
        pieces.append((chunk_indices, table))


def _violations(table: pa.Table, schema: RecordSchema) -> pa.Array | None:
    """Rows with a null in a non-nullable field or a NaN/infinite float; None when there are none."""
    masks = []
    for field in schema.fields:
        column = table.column(field.name)
        if not field.nullable and column.null_count:
            masks.append(pc.is_null(column))
        if field.type == "float":
            not_finite = pc.and_kleene(pc.invert(pc.is_finite(column)), pc.is_valid(column))
            if pc.any(not_finite).as_py():
                masks.append(not_finite)
    if not masks:
        return None
    combined = masks[0]
    for mask in masks[1:]:
        combined = pc.or_(combined, mask)
    return combined.combine_chunks() if isinstance(combined, pa.ChunkedArray) else combined


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _timestamp(value: Any) -> datetime | str:
    """A UTC datetime, or what is wrong with the value."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return f"{_shown(value)} is not an ISO 8601 timestamp"
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if abs(value) >= _EPOCH_MS_FROM else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return f"{_shown(value)} is out of range for an epoch timestamp"
    return f"expected an ISO 8601 string or epoch number, got {_json_type(value)} {_shown(value)}"


def _field_value(field: FieldSpec, value: Any) -> tuple[Any, str | None]:
    """The value converted for Arrow, or an error message about it."""
    kind = field.type
    if kind == "string":
        return (value, None) if isinstance(value, str) else (None, f"expected string, got {_json_type(value)}")
    if kind == "bool":
        return (value, None) if isinstance(value, bool) else (None, f"expected boolean, got {_json_type(value)}")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            if _INT64[0] <= value <= _INT64[1]:
                return value, None
            return None, f"{value} does not fit in a 64-bit integer"
        return None, f"expected integer, got {_json_type(value)} {_shown(value)}"
    if kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
            return (number, None) if math.isfinite(number) else (None, f"{_shown(value)} is not a finite number")
        return None, f"expected number, got {_json_type(value)} {_shown(value)}"
    stamp = _timestamp(value)
    return (stamp, None) if isinstance(stamp, datetime) else (None, stamp)


def validate_record(value: bytes, schema: RecordSchema) -> dict[str, Any] | BadRecord:
    """One record checked field by field: the row for Arrow, or a BadRecord saying what is wrong (index 0)."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadRecord(0, "undecodable", f"undecodable: not UTF-8 ({exc.reason} at byte {exc.start})")
    try:
        record = loads_bounded(value, max_bytes=schema.max_record_bytes, max_depth=MAX_DEPTH)
    except JsonRefused as exc:
        return BadRecord(0, "invalid_json", f"invalid JSON: {str(exc).removeprefix('not JSON: ')}")
    if not isinstance(record, dict):
        return BadRecord(0, "schema", f"schema: expected a JSON object, got {_json_type(record)}")
    row: dict[str, Any] = {}
    for field in schema.fields:
        present = field.name in record
        raw = record.get(field.name)
        if raw is None:
            if field.nullable:
                row[field.name] = None
                continue
            state = "null" if present else "missing"
            return BadRecord(0, "schema", f"schema: field '{field.name}' is {state} and not nullable")
        converted, problem = _field_value(field, raw)
        if problem:
            return BadRecord(0, "schema", f"schema: field '{field.name}' ({field.type}): {problem}")
        row[field.name] = converted
    return row


# --- checks by role ---------------------------------------------------------------------


def _check_fields(
    decoded: Decoded, schema: RecordSchema, checks: FieldChecks, kafka_timestamps_ms: Sequence[int] | None
) -> Decoded:
    """Move rows whose role fields break `checks` from the table to the bad records (kind `field`)."""
    table, indices = decoded.table, decoded.indices
    failing: list[tuple[FieldSpec, np.ndarray]] = []
    for spec_field in schema.fields:
        mask = _role_mask(table, indices, spec_field, checks, kafka_timestamps_ms)
        if mask is not None and mask.any():
            failing.append((spec_field, mask))
    if not failing:
        return decoded
    refused = np.logical_or.reduce([mask for _, mask in failing])
    positions = indices.to_numpy()
    bad = list(decoded.bad)
    for row in np.flatnonzero(refused):
        spec_field, _ = next((f, m) for f, m in failing if m[row])
        value = table.column(spec_field.name)[int(row)].as_py()
        kafka_ms = None if kafka_timestamps_ms is None else kafka_timestamps_ms[int(positions[row])]
        reason = _role_problem(spec_field, value, checks, kafka_ms)
        bad.append(BadRecord(int(positions[row]), "field", f"field: '{spec_field.name}' ({spec_field.role}): {reason}"))
    bad.sort()
    keep = pa.array(~refused)
    return Decoded(table.filter(keep), indices.filter(keep), bad)


def _role_mask(
    table: pa.Table,
    indices: pa.Array,
    spec_field: FieldSpec,
    checks: FieldChecks,
    kafka_timestamps_ms: Sequence[int] | None,
) -> np.ndarray | None:
    """Rows whose value breaks the check of this field's role (null values pass), or None when not checked."""
    column = table.column(spec_field.name)
    role, kind = spec_field.role, spec_field.type
    if role == "confidence" and kind in ("float", "int"):
        mask = pc.or_(pc.less(column, 0), pc.greater(column, 1))
    elif role in ("prediction", "group_id") and kind == "string":
        allowed = checks.labels if role == "prediction" else checks.groups
        if not allowed:
            return None
        mask = pc.and_(pc.is_valid(column), pc.invert(pc.is_in(column, value_set=pa.array(sorted(allowed)))))
    elif role == "device_id" and kind == "string":
        # Few distinct devices per batch: the Python pattern runs once per distinct id.
        refused = [d for d in pc.unique(column).to_pylist() if d is not None and not checks.device_id_ok(d)]
        if not refused:
            return None
        mask = pc.is_in(column, value_set=pa.array(refused, pa.string()))
    elif role == "timestamp" and kind == "timestamp" and kafka_timestamps_ms is not None:
        kafka_ms = np.asarray(kafka_timestamps_ms, dtype=np.int64)[indices.to_numpy()]
        stamps_us = pc.fill_null(pc.cast(column, pa.int64()), 0).to_numpy()
        known = pc.is_valid(column).to_numpy(zero_copy_only=False) & (kafka_ms >= 0)
        ahead_us = np.where(known, stamps_us - kafka_ms * 1000, 0)
        limit_ahead = int(checks.max_clock_skew / timedelta(microseconds=1))
        limit_behind = int(checks.max_record_age / timedelta(microseconds=1))
        return np.asarray((ahead_us > limit_ahead) | (ahead_us < -limit_behind))
    else:
        return None
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def _role_problem(spec_field: FieldSpec, value: Any, checks: FieldChecks, kafka_ms: int | None) -> str:
    """What is wrong with one value that `_role_mask` refused."""
    role = spec_field.role
    if role == "confidence":
        return f"{value} is outside [0, 1]"
    if role == "prediction":
        return f"{_shown(value)} is not one of the labels {sorted(checks.labels)}"
    if role == "group_id":
        return f"{_shown(value)} is not one of the groups {sorted(checks.groups)}"
    if role == "device_id":
        return (
            f"{_shown(value)} ({len(value)} characters) does not match {checks.device_id_pattern!r} "
            f"within {checks.device_id_max_length} characters"
        )
    produced = datetime.fromtimestamp((kafka_ms or 0) / 1000, tz=UTC)
    ahead = value - produced
    if ahead > timedelta(0):
        return (
            f"{value.isoformat()} is {ahead} ahead of the Kafka timestamp {produced.isoformat()}, "
            f"more than ingest.max_clock_skew {checks.max_clock_skew}"
        )
    return (
        f"{value.isoformat()} is {-ahead} behind the Kafka timestamp {produced.isoformat()}, "
        f"more than ingest.max_record_age {checks.max_record_age}"
    )
