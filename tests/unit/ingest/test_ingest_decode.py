"""Decoding Kafka values into rows of the spec's schema, and naming what is wrong with the rest."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from edgeloop.ingest.decode import FieldChecks, RecordSchema, decode_records, validate_record
from edgeloop.spec import FieldSpec

SCHEMA = RecordSchema(
    fields=(
        FieldSpec(name="record_id", type="string", role="record_id"),
        FieldSpec(name="ts", type="timestamp", role="timestamp"),
        FieldSpec(name="temperature_c", type="float"),
        FieldSpec(name="count", type="int"),
        FieldSpec(name="ok", type="bool"),
        FieldSpec(name="note", type="string", role="meta", nullable=True),
    ),
    max_record_bytes=400,
)


def record(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "record_id": "r1",
        "ts": "2026-01-01T10:15:00Z",
        "temperature_c": 40.5,
        "count": 3,
        "ok": True,
        "note": "x",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def encode(value: dict[str, object]) -> bytes:
    return json.dumps(value).encode()


def test_a_batch_of_good_records_becomes_one_table_in_input_order() -> None:
    values = [encode(record(record_id=f"r{i}", extra_field=[1, 2])) for i in range(50)]
    decoded = decode_records(values, SCHEMA)
    assert decoded.bad == []
    assert decoded.table.column("record_id").to_pylist() == [f"r{i}" for i in range(50)]
    assert decoded.indices.to_pylist() == list(range(50))
    assert decoded.table.column("ts")[0].as_py() == datetime(2026, 1, 1, 10, 15, tzinfo=UTC)
    assert decoded.table.schema.names == ["record_id", "ts", "temperature_c", "count", "ok", "note"]


BAD_CASES = [
    (None, "empty", "no value"),
    (b"", "empty", "no value"),
    (b"{" + b" " * 500 + b"}", "oversized", "more than max_record_bytes 400"),
    (b'{"record_id": "\xff\xfe"}', "undecodable", "not UTF-8"),
    (b'{"record_id": "r1", "ts": ', "invalid_json", "invalid JSON"),
    (b"   ", "invalid_json", "invalid JSON: Expecting value"),
    (encode(record()).replace(b"40.5", b"NaN"), "invalid_json", "NaN is not valid JSON"),
    (b'{"record_id": "a"} {"record_id": "b"}', "invalid_json", "Extra data"),
    (b"[1, 2, 3]", "schema", "expected a JSON object, got array"),
    (b"null", "schema", "expected a JSON object, got null"),
    (b'{"record_id": "a"} null', "invalid_json", "Extra data"),
    (b'{"note": ' + b"[" * 40 + b"]" * 40 + b"}", "invalid_json", "nested more than the limit of 32 levels deep"),
    (encode(record(temperature_c=_DROP)), "schema", "field 'temperature_c' is missing and not nullable"),
    (encode(record(count=None)), "schema", "field 'count' is null and not nullable"),
    (encode(record(temperature_c="hot")), "schema", "field 'temperature_c' (float): expected number, got string"),
    (encode(record(count=2.5)), "schema", "field 'count' (int): expected integer, got number 2.5"),
    (encode(record(count=True)), "schema", "field 'count' (int): expected integer, got boolean"),
    (encode(record(count=2**64)), "schema", "does not fit in a 64-bit integer"),
    (encode(record(ok="yes")), "schema", "field 'ok' (bool): expected boolean, got string"),
    (encode(record(record_id=17)), "schema", "field 'record_id' (string): expected string, got number"),
    (encode(record(ts="yesterday")), "schema", "field 'ts' (timestamp): \"yesterday\" is not an ISO 8601 timestamp"),
    (encode(record(ts={"s": 1})), "schema", "field 'ts' (timestamp): expected an ISO 8601 string or epoch number"),
]


@pytest.mark.parametrize(("value", "kind", "reason"), BAD_CASES)
def test_each_kind_of_bad_record_is_refused_with_a_reason(value: bytes | None, kind: str, reason: str) -> None:
    good = encode(record())
    decoded = decode_records([good, value, good], SCHEMA)
    assert decoded.indices.to_pylist() == [0, 2], "good neighbours are kept"
    assert [(b.position, b.kind) for b in decoded.bad] == [(1, kind)]
    assert reason in decoded.bad[0].reason


def test_a_nullable_field_may_be_missing_or_null() -> None:
    decoded = decode_records([encode(record(note=_DROP)), encode(record(note=None))], SCHEMA)
    assert decoded.bad == []
    assert decoded.table.column("note").to_pylist() == [None, None]


def test_records_with_line_breaks_are_validated_one_by_one_and_kept() -> None:
    pretty = json.dumps(record(record_id="pretty"), indent=2).encode()
    decoded = decode_records([encode(record(record_id="a")), pretty, encode(record(record_id="b"))], SCHEMA)
    assert decoded.bad == []
    assert decoded.table.column("record_id").to_pylist() == ["a", "pretty", "b"]


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (1767262500, datetime(2026, 1, 1, 10, 15, tzinfo=UTC)),  # epoch seconds
        (1767262500123, datetime(2026, 1, 1, 10, 15, 0, 123000, tzinfo=UTC)),  # epoch milliseconds
        ("2026-01-01T12:15:00+02:00", datetime(2026, 1, 1, 10, 15, tzinfo=UTC)),
        ("2026-01-01 10:15:00", datetime(2026, 1, 1, 10, 15, tzinfo=UTC)),  # naive means UTC
    ],
)
def test_timestamps_in_the_accepted_forms_land_in_utc(ts: object, expected: datetime) -> None:
    decoded = decode_records([encode(record(ts=ts))], SCHEMA)
    assert decoded.bad == []
    assert decoded.table.column("ts")[0].as_py() == expected


def test_integers_are_accepted_for_float_fields() -> None:
    decoded = decode_records([encode(record(temperature_c=41))], SCHEMA)
    assert decoded.table.column("temperature_c").to_pylist() == [41.0]


def test_the_verdict_on_a_record_does_not_depend_on_its_batch() -> None:
    """A redo of a flush must give the same rows: decode each record alone and in one batch, compare."""
    values: list[bytes | None] = []
    for i in range(120):
        case = BAD_CASES[i % len(BAD_CASES)][0] if i % 3 == 0 else encode(record(record_id=f"r{i}", count=i))
        values.append(case)
    together = decode_records(values, SCHEMA)
    alone_rows, alone_bad = [], []
    for i, value in enumerate(values):
        one = decode_records([value], SCHEMA)
        if one.table.num_rows:
            alone_rows.append((i, one.table.to_pylist()[0]))
        alone_bad.extend((i, b.kind, b.reason) for b in one.bad)
    assert list(zip(together.indices.to_pylist(), together.table.to_pylist(), strict=True)) == alone_rows
    assert [(b.position, b.kind, b.reason) for b in together.bad] == alone_bad


def test_validate_record_converts_a_good_record() -> None:
    row = validate_record(encode(record(ts=1767262500)), SCHEMA)
    assert row == {
        "record_id": "r1",
        "ts": datetime(2026, 1, 1, 10, 15, tzinfo=UTC),
        "temperature_c": 40.5,
        "count": 3,
        "ok": True,
        "note": "x",
    }


@pytest.mark.parametrize(
    "values",
    [
        [b"null"],
        [b"null", b"null"],
        [b" null", encode(record())],
        [b"null", encode(record()), encode(record())],
        [encode(record()), b"null", encode(record())],
    ],
)
def test_a_null_value_is_refused_without_reaching_arrows_reader(values: list[bytes]) -> None:
    """Arrow's JSON reader crashes the process (SIGSEGV) on a buffer that starts with `null`."""
    decoded = decode_records(values, SCHEMA)
    nulls = [i for i, v in enumerate(values) if v.strip() == b"null"]
    assert [b.position for b in decoded.bad] == nulls
    assert all(b.reason == "schema: expected a JSON object, got null" for b in decoded.bad)
    assert decoded.table.num_rows == len(values) - len(nulls)


def test_a_value_holding_two_objects_never_lends_one_to_a_blank_neighbour() -> None:
    """Arrow reads `{..}{..}` as two rows and a blank line as none: counts would match and rows shift."""
    two = encode(record(record_id="a")) + encode(record(record_id="b"))
    decoded = decode_records([two, b"  ", encode(record(record_id="c"))], SCHEMA)
    assert decoded.table.column("record_id").to_pylist() == ["c"]
    assert [(b.position, b.kind) for b in decoded.bad] == [(0, "invalid_json"), (1, "invalid_json")]


def test_a_100_kb_nested_value_is_refused_quickly_and_its_neighbours_kept() -> None:
    schema = RecordSchema(fields=SCHEMA.fields, max_record_bytes=1 << 20)
    nested = b'{"note": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    decoded = decode_records([encode(record()), nested, encode(record())], schema)
    assert decoded.indices.to_pylist() == [0, 2]
    assert [(b.position, b.kind) for b in decoded.bad] == [(1, "invalid_json")]
    assert "nested more than the limit of 32 levels deep" in decoded.bad[0].reason


# --- checks by role -------------------------------------------------------------------

ROLES = RecordSchema(
    fields=(
        FieldSpec(name="record_id", type="string", role="record_id"),
        FieldSpec(name="device_id", type="string", role="device_id"),
        FieldSpec(name="group_id", type="string", role="group_id"),
        FieldSpec(name="ts", type="timestamp", role="timestamp"),
        FieldSpec(name="rpm", type="float"),
        FieldSpec(name="prediction", type="string", role="prediction", nullable=True),
        FieldSpec(name="confidence", type="float", role="confidence", nullable=True),
    ),
    max_record_bytes=2_000_000,
    checks=FieldChecks(labels=frozenset({"normal", "fault"}), groups=frozenset({"plant-north", "line-canary"})),
)
PRODUCED_MS = 1_767_262_500_000  # 2026-01-01T10:15:00Z


def device_record(**overrides: object) -> bytes:
    base: dict[str, object] = {
        "record_id": "r1",
        "device_id": "plant-north-0007",
        "group_id": "plant-north",
        "ts": "2026-01-01T10:14:58Z",
        "rpm": 1450.0,
        "prediction": "normal",
        "confidence": 0.93,
    }
    base.update(overrides)
    return encode({k: v for k, v in base.items() if v is not _DROP})


ROLE_CASES = [
    (device_record(confidence=7.5), "'confidence' (confidence): 7.5 is outside [0, 1]"),
    (device_record(confidence=-0.01), "-0.01 is outside [0, 1]"),
    (device_record(prediction="</script><script>alert(1)</script>"), "is not one of the labels ['fault', 'normal']"),
    (device_record(group_id="plant-south"), "'group_id' (group_id): \"plant-south\" is not one of the groups"),
    (device_record(device_id="dev\u0000one"), "does not match"),
    (device_record(device_id="dev\u202eeno"), "\\u202e"),
    (device_record(device_id="../../etc/passwd"), "does not match"),
    (device_record(device_id="d" * 900_000), "(900000 characters) does not match"),
    (device_record(ts="0001-01-01T00:00:00Z"), "behind the Kafka timestamp 2026-01-01T10:15:00+00:00, more than"),
    (device_record(ts="9999-12-31T23:59:59Z"), "ahead of the Kafka timestamp"),
    (device_record(ts="2026-01-01T10:31:00Z"), "more than ingest.max_clock_skew 0:15:00"),
    (device_record(ts="2025-12-24T10:14:00Z"), "more than ingest.max_record_age 7 days, 0:00:00"),
]


@pytest.mark.parametrize(("value", "reason"), ROLE_CASES)
def test_a_value_its_role_does_not_allow_is_dead_lettered_with_a_reason(value: bytes, reason: str) -> None:
    good = device_record()
    decoded = decode_records([good, value, good], ROLES, [PRODUCED_MS] * 3)
    assert decoded.indices.to_pylist() == [0, 2], "good neighbours are kept"
    assert [(b.position, b.kind) for b in decoded.bad] == [(1, "field")]
    assert reason in decoded.bad[0].reason
    assert decoded.bad[0].reason.isprintable() and len(decoded.bad[0].reason) < 300


def test_role_checks_give_the_same_verdict_on_the_fast_and_the_slow_path() -> None:
    """A record with a line break is validated in Python, the others by Arrow: the checks see both."""
    values = [device_record(record_id=f"r{i}", confidence=7.5 if i % 2 else 0.5) for i in range(6)]
    values[1] = json.dumps(json.loads(values[1]), indent=1).encode()
    values[2] = json.dumps(json.loads(values[2]), indent=1).encode()
    decoded = decode_records(values, ROLES, [PRODUCED_MS] * 6)
    assert decoded.indices.to_pylist() == [0, 2, 4]
    assert [b.position for b in decoded.bad] == [1, 3, 5]


def test_within_the_limits_and_with_nulls_records_pass() -> None:
    values = [
        device_record(ts="2026-01-01T10:29:00Z", confidence=1.0),  # 14 minutes ahead
        device_record(ts="2025-12-26T10:15:00Z", confidence=0.0),  # 6 days behind
        device_record(prediction=None, confidence=None),
        device_record(device_id="a" * 128),
    ]
    decoded = decode_records(values, ROLES, [PRODUCED_MS] * 4)
    assert decoded.bad == []
    assert decoded.table.num_rows == 4


def test_without_a_kafka_timestamp_the_clock_check_is_skipped() -> None:
    old = device_record(ts="2020-01-01T00:00:00Z")
    assert decode_records([old], ROLES).bad == []
    assert decode_records([old], ROLES, [-1]).bad == []
    assert [b.kind for b in decode_records([old], ROLES, [PRODUCED_MS]).bad] == ["field"]


def test_the_device_id_rule_comes_from_the_spec() -> None:
    checks = FieldChecks(device_id_pattern=r"gw-\d{4}", device_id_max_length=7)
    schema = RecordSchema(ROLES.fields, ROLES.max_record_bytes, checks)
    decoded = decode_records([device_record(device_id="gw-0001"), device_record(device_id="gw-00001")], schema)
    assert [(b.position, b.kind) for b in decoded.bad] == [(1, "field")]
    assert "does not match 'gw-\\\\d{4}' within 7 characters" in decoded.bad[0].reason


@pytest.mark.parametrize(
    ("value", "kind", "reason"),
    [
        (device_record().replace(b"plant-north-0007", b"\x80lant-north-0007"), "undecodable", "not UTF-8"),
        (device_record(device_id="\ud800x"), "invalid_json", "lone UTF-16 surrogate"),
        (device_record(device_id="\U0001f600"), "field", "'device_id' (device_id)"),
    ],
)
def test_strings_arrow_would_pass_through_are_judged_by_the_validator(value: bytes, kind: str, reason: str) -> None:
    """Arrow's reader keeps invalid UTF-8 inside strings; such values never take the fast path."""
    decoded = decode_records([device_record(), value], ROLES, [PRODUCED_MS] * 2)
    assert decoded.indices.to_pylist() == [0]
    assert [(b.position, b.kind) for b in decoded.bad] == [(1, kind)]
    assert reason in decoded.bad[0].reason
