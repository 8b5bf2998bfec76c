"""Hostile input for every parser at a trust boundary: Hypothesis strategies and one property per parser.

Each target takes what a device, an alert publisher, a spec author or an API caller could
send and states what the parser promises: it returns, or it raises its own "bad input"
type, and never anything else (no RecursionError, no crash inside Arrow, no hang). The
unit suite (`tests/unit/test_hostile_input.py`) runs every target with a bounded
number of examples; `make fuzz` (`python -m tests.helpers.fuzz`) runs the same targets
for a time budget.

Payloads are generated JSON, arbitrary bytes, valid messages mutated byte by byte, and
the known bad cases (a lone `null`, 100 KB of nested brackets, a 900 KB device id, NaN,
integers of 5,000 digits, invalid UTF-8, lone surrogates, `</script>` in a label).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

REPO = Path(__file__).resolve().parents[2]
DEMO_SPEC = REPO / "include" / "pipelines" / "factory_maintenance.yaml"
PRODUCED_MS = 1_767_262_500_000  # 2026-01-01T10:15:00Z, the Kafka timestamp of generated messages

_DATABASE = DirectoryBasedExampleDatabase(str(REPO / ".pytest_cache" / "hypothesis"))
settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,  # shared 2-core machines: a slow example is not a bug
    database=_DATABASE,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz",
    max_examples=2_000,
    deadline=None,
    database=_DATABASE,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# --- payloads -------------------------------------------------------------------------------

DEEP = b"[" * 50_000 + b"]" * 50_000  # 100 KB of nesting
KNOWN_BAD: list[bytes] = [
    b"null",
    b" null",
    b"null\n",
    b"[]",
    b"{}",
    b"",
    b" ",
    b"\n",
    b'{"a": 1} null',
    b'{"a": 1}{"a": 2}',
    DEEP,
    b'{"a": ' + DEEP + b"}",
    b'{"a": ' + b'{"a": ' * 20_000 + b"1" + b"}" * 20_000 + b"}",
    b"[" * 50_000,
    b'{"a": NaN}',
    b'{"a": Infinity, "b": -Infinity}',
    b'{"a": 1e400}',
    b'{"a": ' + b"9" * 5_000 + b"}",
    b'{"a": "\xff\xfe"}',
    b'{"a": "\\ud800"}',
    b"\xef\xbb\xbf{}",  # a byte order mark
    b'{"a": "' + b"x" * 900_000 + b'"}',
    b'{"a": 1, "a": 2}',
    b'{"__proto__": {"x": 1}}',
    b'"</script><script>alert(1)</script>"',
]
TOKENS = [
    b"null",
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b"\\",
    b",",
    b":",
    b"\n",
    b"\r",
    b"\x00",
    b"\xff",
    b"NaN",
    b"-Infinity",
    b"1e999",
    b"\\u0000",
    b"\\ud800",
    b"\xe2\x80\xae",  # U+202E, right-to-left override
    b"</script>",
    b"../",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid payload with a few byte-level edits: truncation, insertion of a token, flips, repeats."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["truncate", "insert", "flip", "delete", "repeat"]))
        if action == "truncate":
            del data[where:]
        elif action == "insert":
            data[where:where] = draw(st.sampled_from(TOKENS))
        elif action == "flip" and where < len(data):
            data[where] = draw(st.integers(0, 255))
        elif action == "delete":
            del data[where : where + draw(st.integers(1, 8))]
        elif action == "repeat":
            data[where:where] = data[where : where + draw(st.integers(1, 16))] * draw(st.integers(1, 3))
    return bytes(data)


def payloads(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """What one message value may be: a known bad case, random bytes, any JSON, or a valid message mutated."""
    return st.one_of(
        st.sampled_from(KNOWN_BAD),
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        valid,
        mutated(valid),
    )


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode()


def hostile_texts() -> st.SearchStrategy[str]:
    """Strings a device could put in any field."""
    return st.one_of(
        st.text(max_size=40),
        st.sampled_from(["", "../../etc/passwd", "a\x00b", "dev\u202eeno", "</script><script>alert(1)</script>"]),
        st.just("d" * 900_000),
    )


# --- the demo spec and valid messages of each kind -------------------------------------------


def demo_spec() -> Any:
    from edgeloop.spec import load_spec

    return load_spec(DEMO_SPEC)


@st.composite
def telemetry(draw: st.DrawFn) -> bytes:
    """A demo telemetry record whose role fields may hold anything a device could send."""
    record: dict[str, Any] = {
        "record_id": draw(st.text(min_size=1, max_size=10)),
        "device_id": draw(st.one_of(st.just("plant-north-00007"), hostile_texts())),
        "group_id": draw(st.sampled_from(["plant-north", "line-canary", "plant-south", "mars", ""])),
        "ts": draw(
            st.one_of(
                st.just("2026-01-01T10:14:59Z"),
                st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
                st.integers(min_value=-(10**15), max_value=10**15),
                st.text(max_size=12),
            )
        ),
        "prediction": draw(st.one_of(st.sampled_from(["normal", "wear", "fault"]), hostile_texts())),
        "confidence": draw(st.one_of(st.floats(0, 1), st.floats(allow_nan=False, allow_infinity=False))),
        "model_version": "3",
        "config_version": draw(st.one_of(st.none(), st.text(max_size=8))),
    }
    for name in ("vibration_rms", "vibration_peak", "temperature_c", "motor_current_a", "rpm", "acoustic_db"):
        record[name] = draw(st.one_of(st.floats(-1e6, 1e6), json_values))
    if draw(st.booleans()):
        record["extra"] = draw(json_values)
    return encoded(record)


def device_body(**fields: Any) -> bytes:
    return encoded({"device_id": "plant-north-00007", "group_id": "plant-north", **fields})


@st.composite
def heartbeat(draw: st.DrawFn) -> bytes:
    numbers = st.one_of(st.integers(-(10**400), 10**400), st.floats(allow_nan=False), json_values)
    return device_body(
        interval_s=draw(numbers),
        records=draw(numbers),
        errors=draw(numbers),
        uptime_s=draw(numbers),
        model_version=draw(json_values),
        confidence_mean=draw(numbers),
    )


@st.composite
def device_state(draw: st.DrawFn) -> bytes:
    return device_body(desired=draw(json_values), reported=draw(json_values), updated_at=draw(json_values))


@st.composite
def alert(draw: st.DrawFn) -> bytes:
    window = st.fixed_dictionaries(
        {
            "start": st.one_of(st.datetimes().map(lambda d: d.isoformat()), json_values),
            "end": st.one_of(st.datetimes().map(lambda d: d.isoformat()), json_values),
        }
    )
    return encoded(
        {
            "kind": draw(st.sampled_from(["drift", "backlog", "device", "nope"])),
            "pipeline": draw(st.sampled_from(["factory_maintenance", "other"])),
            "alert_id": draw(st.one_of(st.text(max_size=20), json_values)),
            "groups": draw(st.one_of(st.lists(st.sampled_from(["plant-north", "mars"]), max_size=3), json_values)),
            "window": draw(st.one_of(window, json_values)),
        }
    )


GROUPS = ("line-canary", "plant-north", "plant-south")


@st.composite
def assignment(draw: st.DrawFn) -> bytes:
    """A signed assignment whose fields may be anything (signed, so the field checks are reached)."""
    from edgeloop.contract.messages import sign
    from tests.helpers.keys import OPERATOR

    body: dict[str, Any] = {
        "type": draw(st.sampled_from(["assignment", "other"])),
        "id": draw(st.one_of(st.just("asg-1"), json_values)),
        "issued_at": draw(st.one_of(st.just("2026-01-01T00:00:00.000Z"), json_values)),
        "issuer": "rollout",
        "target": draw(
            st.one_of(st.just({"kind": "group", "id": "plant-north"}), st.just({"kind": "all"}), json_values)
        ),
        "model_version": draw(st.one_of(st.just("3"), json_values)),
        "pipeline": draw(st.one_of(st.just("factory_maintenance"), json_values)),
        "sequence": draw(st.one_of(st.integers(-(2**70), 2**70), json_values)),
        "expires_at": draw(st.one_of(st.just("2999-01-01T00:00:00.000Z"), json_values)),
        "key_id": draw(st.one_of(st.just(OPERATOR.key_id), json_values)),
    }
    if draw(st.booleans()):
        body["config"] = draw(st.one_of(st.just({"telemetry_interval_s": 2}), json_values))
        body["config_version"] = draw(st.one_of(st.just("cfg-1"), json_values))
    if draw(st.booleans()):
        body["artifact"] = draw(json_values)
    body["signature"] = sign(body, OPERATOR)
    return encoded(body)


SPEC_TEXT = DEMO_SPEC.read_text()


@st.composite
def spec_texts(draw: st.DrawFn) -> str:
    """The demo spec with a few edits, any YAML-ish text, or JSON (which is YAML)."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(mutated(st.just(SPEC_TEXT.encode()))).decode("utf-8", "replace")
    if choice == 1:
        return draw(st.text(max_size=300))
    if choice == 2:
        return json.dumps(draw(json_values))
    lines = SPEC_TEXT.splitlines()
    where = draw(st.integers(0, len(lines)))
    lines.insert(where, draw(st.sampled_from(["a: 2001-13-45", "x: !!int '0x'", "b: &a [*a]", "  - [", "? [a]: 1"])))
    return "\n".join(lines)


# --- the targets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One parser, what it may be fed, and the property it must keep for every input."""

    name: str
    inputs: st.SearchStrategy[Any]
    check: Callable[[Any], None]


def check_ingest_decode(batch: list[bytes | None]) -> None:
    """Never raises or crashes; every record is a row or a bad record once; the verdict ignores the batch."""
    from edgeloop.ingest.decode import decode_records, record_schema

    schema = record_schema(_SPEC())
    stamps = [PRODUCED_MS] * len(batch)
    decoded = decode_records(batch, schema, stamps)
    rows = decoded.indices.to_pylist()
    bad = [b.position for b in decoded.bad]
    assert sorted(rows + bad) == list(range(len(batch))), (rows, bad)
    for spot in decoded.bad:
        assert spot.reason and len(spot.reason) < 1000, spot
    for row in decoded.table.to_pylist():
        assert 0 <= row["confidence"] <= 1
        assert row["prediction"] in ("normal", "wear", "fault")
        assert row["group_id"] in GROUPS
        assert len(row["device_id"]) <= 128
        ahead = row["ts"] - datetime.fromtimestamp(PRODUCED_MS / 1000, UTC)
        assert -timedelta(days=7) <= ahead <= timedelta(minutes=15)
    for position, value in enumerate(batch):
        alone = decode_records([value], schema, [PRODUCED_MS])
        assert bool(alone.table.num_rows) == (position in rows), (position, value[:200] if value else value)


def check_safejson(value: bytes) -> None:
    from edgeloop.contract.safejson import JsonRefused, loads_bounded

    with contextlib.suppress(JsonRefused):
        loads_bounded(value, max_bytes=1 << 20)


def check_assignment(value: bytes | None) -> None:
    from edgeloop.contract.messages import ControlRejected, parse_assignment
    from tests.helpers.keys import TRUSTED

    try:
        parse_assignment(value, TRUSTED, GROUPS)
    except ControlRejected as exc:
        assert exc.reason


def check_device_state(value: bytes) -> None:
    from edgeloop.contract.messages import BadDeviceState, parse_device_state

    with contextlib.suppress(BadDeviceState):
        parse_device_state(b"plant-north-00007", value)


def check_heartbeat(value: bytes | None) -> None:
    from edgeloop.fleet.health import BadFeedback, parse_heartbeat
    from edgeloop.fleet.topics import TopicRecord

    try:
        beat = parse_heartbeat(TopicRecord(0, 1, PRODUCED_MS, b"plant-north-00007", value))
    except BadFeedback:
        return
    assert beat.interval_s > 0 and beat.records >= 0 and beat.errors >= 0


def check_fleet_errors(values: list[bytes | None]) -> None:
    """Error reports and heartbeats of any shape only ever count as bad feedback."""
    from edgeloop.fleet.control import DeviceStates
    from edgeloop.fleet.health import summarize_fleet
    from edgeloop.fleet.topics import TopicRecord

    records = [TopicRecord(0, i, PRODUCED_MS, None, v) for i, v in enumerate(values)]
    status = summarize_fleet(
        _SPEC(), DeviceStates(), records, records, now_ms=PRODUCED_MS + 1, window_s=600, stale_after_s=300
    )
    assert status.bad_feedback <= 2 * len(values)


def check_alert(value: bytes | None) -> None:
    """parse_alert raises only AlertError; an alert it accepts gives a bounded annotation window or a ValueError."""
    from edgeloop.annotation.selection import ALERT_WINDOWS, selection_request
    from edgeloop.events import AlertError, parse_alert

    try:
        parsed = parse_alert(value)
    except AlertError:
        return
    spec = _SPEC()
    now = datetime.fromtimestamp(PRODUCED_MS / 1000, UTC)
    try:
        request = selection_request(spec, now=now, alert=parsed)
    except ValueError:
        return
    assert request.end <= now
    assert request.end - request.start <= ALERT_WINDOWS * spec.drift.window


def check_generator_samples(values: list[bytes | None]) -> None:
    """Sampled messages of any shape give problems and a schema proposal, never an exception."""
    from edgeloop.generator.inference import SampleMessage, decode_samples, infer_schema
    from edgeloop.generator.templates import get_template

    messages = [SampleMessage(0, i, PRODUCED_MS, None, v) for i, v in enumerate(values)]
    records, problems = decode_samples(messages)
    assert len(records) + len(problems) == len(values)
    infer_schema(messages, get_template("predictive_maintenance"))


def check_spec_text(text: str) -> None:
    from edgeloop.generator.render import check_spec_text as check_text
    from edgeloop.spec import SpecInvalid, parse_spec

    try:
        parse_spec(text)
    except SpecInvalid as exc:
        assert exc.errors
    check_text(text, "factory_maintenance")


_spec_cache: list[Any] = []


def _SPEC() -> Any:  # a constant, loaded once
    if not _spec_cache:
        _spec_cache.append(demo_spec())
    return _spec_cache[0]


def batches(values: st.SearchStrategy[bytes]) -> st.SearchStrategy[list[bytes | None]]:
    return st.lists(st.one_of(st.none(), values), min_size=1, max_size=6)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("ingest_decode", batches(payloads(telemetry())), check_ingest_decode),
        Target("safejson", payloads(json_values.map(encoded)), check_safejson),
        Target("control_assignment", st.one_of(st.none(), payloads(assignment())), check_assignment),
        Target("device_state", payloads(device_state()), check_device_state),
        Target("heartbeat", st.one_of(st.none(), payloads(heartbeat())), check_heartbeat),
        Target("fleet_error_reports", batches(payloads(heartbeat())), check_fleet_errors),
        Target("alert", st.one_of(st.none(), payloads(alert())), check_alert),
        Target("generator_samples", batches(payloads(telemetry())), check_generator_samples),
        Target("spec_text", spec_texts(), check_spec_text),
    )
}
