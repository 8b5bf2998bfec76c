"""The shadow report: how a challenger model compared with the champion on one device's live inputs.

A device in a shadow wave runs the challenger beside the champion on the same inputs and serves
only the champion's answers; per window it reports, signed with its own key like its other
reports (`edgeloop.contract.identity`)::

    {"type": "shadow_report", "device_id": "plant-north-00007", "group_id": "plant-north",
     "pipeline": "demo", "champion_version": "3", "challenger_version": "4",
     "window_start": "2026-01-01T00:00:00.000Z", "window_end": "2026-01-01T00:01:00.000Z",
     "records": 60, "answered": 60, "agreements": 58, "challenger_errors": 0,
     "mean_confidence_delta": -0.012, "champion_p95_ms": 0.21, "challenger_p95_ms": 0.34,
     "key_id": "9a1c...", "signature": "ed25519:..."}

`records` counts inputs, `answered` those the challenger answered (the rest are its errors),
`agreements` the answered inputs both models gave the same label, `mean_confidence_delta` the
challenger's confidence minus the champion's over the answered inputs, and the p95 latencies are
per input, in milliseconds. The counts let a reader merge windows exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from edgeloop.contract.keys import Signer
from edgeloop.contract.messages import (
    _ID_RE,
    _VERSION_RE,
    ReportChecker,
    device_message,
    parse_iso,
    require_signed,
    signed_json,
)

SHADOW_REPORT = "shadow_report"
MAX_WINDOW_RECORDS = 10_000_000
_FIELDS = {
    "type",
    "device_id",
    "group_id",
    "pipeline",
    "champion_version",
    "challenger_version",
    "window_start",
    "window_end",
    "records",
    "answered",
    "agreements",
    "challenger_errors",
    "mean_confidence_delta",
    "champion_p95_ms",
    "challenger_p95_ms",
    "key_id",
    "signature",
}


class BadShadowReport(ValueError):
    """A shadow report that cannot be read; the message names the field."""


@dataclass(frozen=True)
class ShadowReport:
    device_id: str
    group_id: str
    pipeline: str
    champion_version: str
    challenger_version: str
    window_start: str
    window_end: str
    records: int
    answered: int
    agreements: int
    challenger_errors: int
    mean_confidence_delta: float | None
    champion_p95_ms: float | None
    challenger_p95_ms: float | None

    @property
    def agreement(self) -> float | None:
        return self.agreements / self.answered if self.answered else None

    @property
    def latency_ratio(self) -> float | None:
        """The challenger's p95 latency over the champion's (None without both)."""
        if self.champion_p95_ms is None or self.challenger_p95_ms is None or self.champion_p95_ms <= 0:
            return None
        return self.challenger_p95_ms / self.champion_p95_ms

    def to_dict(self) -> dict[str, Any]:
        return {"type": SHADOW_REPORT, **asdict(self)}

    def to_wire(self, signer: Signer | None = None) -> bytes:
        """JSON, signed with the device's key when it has one."""
        return json.dumps(self.to_dict()).encode() if signer is None else signed_json(self.to_dict(), signer)


def _count(body: Mapping[str, Any], name: str, where: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WINDOW_RECORDS:
        raise BadShadowReport(f"{where}.{name}: {value!r} is not a count between 0 and {MAX_WINDOW_RECORDS}")
    return value


def _number(body: Mapping[str, Any], name: str, where: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadShadowReport(f"{where}.{name}: {value!r} is not a number")
    if not low <= value <= high:
        raise BadShadowReport(f"{where}.{name}: {value} is outside [{low}, {high}]")
    return float(value)


def _text(body: Mapping[str, Any], name: str, where: str, pattern: Any) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not pattern.match(value):
        raise BadShadowReport(f"{where}.{name}: {value!r} must be a string matching {pattern.pattern}")
    return value


def _timestamp(body: Mapping[str, Any], name: str, where: str) -> str:
    value = body.get(name)
    try:
        parse_iso(value) if isinstance(value, str) else None
    except ValueError:
        value = None
    if not isinstance(value, str):
        raise BadShadowReport(f"{where}.{name}: missing or not an ISO 8601 timestamp")
    return value


def parse_shadow_report(value: bytes | None, registry: ReportChecker | None = None) -> ShadowReport:
    """One shadow report; raise BadShadowReport naming the field, or (with a `registry`) RefusedReport
    unless its enrolled device signed it."""
    body = device_message(value, "shadow_report", BadShadowReport)
    where = f"shadow_report[{body['device_id']}]"
    require_signed(registry, body, where)
    unknown = sorted(set(body) - _FIELDS)
    if unknown or body.get("type") != SHADOW_REPORT:
        raise BadShadowReport(f"{where}: unknown fields {unknown} or type {body.get('type')!r}")
    records = _count(body, "records", where)
    answered = _count(body, "answered", where)
    agreements = _count(body, "agreements", where)
    errors = _count(body, "challenger_errors", where)
    if answered + errors != records or agreements > answered:
        raise BadShadowReport(
            f"{where}: answered {answered} + challenger_errors {errors} must be records {records},"
            f" agreements {agreements} at most answered"
        )
    start, end = _timestamp(body, "window_start", where), _timestamp(body, "window_end", where)
    if parse_iso(end) < parse_iso(start):
        raise BadShadowReport(f"{where}.window_end: {end} is before window_start {start}")
    return ShadowReport(
        device_id=_text(body, "device_id", where, _ID_RE),
        group_id=_text(body, "group_id", where, _ID_RE),
        pipeline=_text(body, "pipeline", where, _ID_RE),
        champion_version=_text(body, "champion_version", where, _VERSION_RE),
        challenger_version=_text(body, "challenger_version", where, _VERSION_RE),
        window_start=start,
        window_end=end,
        records=records,
        answered=answered,
        agreements=agreements,
        challenger_errors=errors,
        mean_confidence_delta=_number(body, "mean_confidence_delta", where, -1.0, 1.0),
        champion_p95_ms=_number(body, "champion_p95_ms", where, 0.0, 3_600_000.0),
        challenger_p95_ms=_number(body, "challenger_p95_ms", where, 0.0, 3_600_000.0),
    )
