"""Record schema and field roles inferred from sample messages of a topic.

Given a few dozen recent messages (JSON objects), propose for every top-level field
a spec type (float, int, string, bool, timestamp), whether it may be missing, and a
role (feature, ids, timestamp, prediction, confidence, versions, image reference,
meta). Every guess carries a reason and notes, so the page can say why; the user
corrects what is wrong. Messy samples are expected: a record that is not JSON, a
field that is missing in some records, numbers sent as "n/a", mixed int and float.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edgeloop.contract.safejson import JsonRefused, loads_bounded
from edgeloop.generator.templates import Template
from edgeloop.spec import FieldRole, FieldType

FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}:?\d{2})?$")
_IMAGE = re.compile(r"(^(s3|gs|https?|file)://)|(\.(jpe?g|png|bmp|gif|webp|tiff?)(\?.*)?$)", re.IGNORECASE)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
MAJORITY = 0.9  # share of values that decides a type when the rest disagree
NULLABLE_SHARE = 0.1  # missing in at least this share of records: the field is optional
EPOCH_MIN = 1_000_000_000  # 2001-09-09 in seconds: smaller integers are not epoch times
SINGLE_ROLES: tuple[FieldRole, ...] = (
    "record_id",
    "device_id",
    "group_id",
    "timestamp",
    "prediction",
    "confidence",
    "model_version",
    "config_version",
    "image_ref",
)
REQUIRED_ROLES: tuple[FieldRole, ...] = ("record_id", "device_id", "group_id", "timestamp")
_ID_ROLES = ("record_id", "device_id", "group_id")
MAX_PROBLEMS = 20
MAX_LABELS = 20
MAX_SAMPLE_BYTES = 1 << 20  # a sampled message larger than this is a problem, not a record


@dataclass(frozen=True)
class SampleMessage:
    """One Kafka message as sampled: where it was and its raw bytes."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


@dataclass
class InferredField:
    name: str
    type: FieldType
    role: FieldRole
    nullable: bool
    present: int
    missing: int
    examples: list[str]
    role_reason: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "role": self.role,
            "nullable": self.nullable,
            "present": self.present,
            "missing": self.missing,
            "examples": self.examples,
            "role_reason": self.role_reason,
            "notes": self.notes,
        }


@dataclass
class InferredSchema:
    """The proposal for a topic: fields in first-seen order, and what could not be used."""

    fields: list[InferredField]
    sampled: int
    decoded: int
    problems: list[str]
    skipped_fields: list[str]
    missing_roles: list[str]
    labels: list[str]
    groups: dict[str, int]

    def schema(self) -> list[dict[str, Any]]:
        """The `schema` section of a spec."""
        out = []
        for f in self.fields:
            entry: dict[str, Any] = {"name": f.name, "type": f.type, "role": f.role}
            if f.nullable:
                entry["nullable"] = True
            out.append(entry)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "fields": [f.to_dict() for f in self.fields],
            "sampled": self.sampled,
            "decoded": self.decoded,
            "problems": self.problems,
            "skipped_fields": self.skipped_fields,
            "missing_roles": self.missing_roles,
            "labels": self.labels,
            "groups": self.groups,
        }


def decode_samples(messages: Iterable[SampleMessage]) -> tuple[list[dict[str, Any]], list[str]]:
    """JSON objects of the messages, and one problem per message that is not one (naming its offset)."""
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    for message in messages:
        where = f"partition {message.partition} offset {message.offset}"
        if message.value is None:
            problems.append(f"{where}: empty message (tombstone)")
            continue
        try:
            message.value.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{where}: not UTF-8 text")
            continue
        try:
            body = loads_bounded(message.value, max_bytes=MAX_SAMPLE_BYTES)
        except JsonRefused as exc:
            problems.append(f"{where}: {exc}")
            continue
        if not isinstance(body, dict):
            problems.append(f"{where}: a JSON {type(body).__name__}, not an object")
            continue
        records.append(body)
    return records, problems


def _value_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float" if math.isfinite(value) else "nonfinite"
    if isinstance(value, str):
        return "timestamp" if _is_iso(value) else "string"
    return "nested"


def _is_iso(text: str) -> bool:
    if not _ISO.match(text):
        return False
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _normalise(name: str) -> str:
    return _CAMEL.sub("_", name).lower().replace("-", "_")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class _Column:
    name: str
    values: list[Any] = field(default_factory=list)
    missing: int = 0

    def kinds(self) -> Counter[str]:
        return Counter(_value_kind(v) for v in self.values)


def _decide_type(column: _Column, total: int) -> tuple[FieldType | None, list[str]]:
    """The spec type of a column, or None when it cannot be one (nested values); notes say why."""
    kinds = column.kinds()
    kinds.pop("null", None)
    seen = sum(kinds.values())
    notes: list[str] = []
    if seen == 0:
        return "string", ["always missing or null in the samples: type is a guess"]
    if kinds["nested"] > seen / 2:
        return None, []
    numeric = kinds["int"] + kinds["float"]

    def odd_note(count: int, what: str, good: tuple[str, ...]) -> None:
        if count:
            example = next((_short(v) for v in column.values if _value_kind(v) not in ("null", *good)), "?")
            notes.append(f"{count} of {seen} values are not {what}s (e.g. {example}): such records go to dead-letter")

    if kinds["bool"] == seen:
        return "bool", notes
    if numeric >= MAJORITY * seen:
        odd_note(seen - numeric, "number", ("int", "float"))
        if kinds["float"] or kinds["nonfinite"]:
            if kinds["int"] and kinds["float"]:
                notes.append(f"mixed integers ({kinds['int']}) and decimals ({kinds['float']}): using float")
            return "float", notes
        return "int", notes
    if kinds["timestamp"] >= MAJORITY * seen:
        odd_note(seen - kinds["timestamp"], "timestamp", ("timestamp",))
        return "timestamp", notes
    if numeric and kinds["string"]:
        notes.append(f"mixed numbers ({numeric}) and text ({kinds['string']}): kept as text")
    return "string", notes


@dataclass
class _Candidate:
    column: _Column
    type: FieldType
    notes: list[str]


def _role_score(candidate: _Candidate, role: FieldRole, template: Template) -> tuple[int, str]:
    """How well a column fits a single role (0: not at all) and why."""
    name = _normalise(candidate.column.name)
    kind = candidate.type
    values = [v for v in candidate.column.values if v is not None]
    names = [_normalise(n) for n in template.names_for(role)]
    by_name = 100 - min(names.index(name), 40) if name in names else 0
    reason = f"the name '{candidate.column.name}' is usual for this role" if by_name else ""
    if role in _ID_ROLES:
        if kind not in ("string", "int"):
            return 0, ""
        if not by_name and name.endswith("_id") and role.split("_")[0] in name:
            by_name, reason = 70, f"the name '{candidate.column.name}' names a {role.split('_')[0]} id"
        unique = len(values) > 2 and len(set(map(str, values))) == len(values)
        if role == "record_id" and not by_name and kind == "string" and unique and "id" in name.split("_"):
            return 40, "every sampled value is different"
        return by_name, reason
    if role == "timestamp":
        if kind == "timestamp":
            return max(by_name, 50), reason or "the values are ISO 8601 times"
        if kind in ("int", "float") and by_name and values and min(values) >= EPOCH_MIN:
            return by_name, reason + " and the values look like epoch times"
        return 0, ""
    if role == "confidence":
        if kind not in ("float", "int"):
            return 0, ""
        in_unit = bool(values) and all(0 <= v <= 1 for v in values)
        if by_name:
            return by_name, reason
        if in_unit and any(t in name for t in ("conf", "prob", "score")):
            return 60, "values between 0 and 1 and the name suggests a confidence"
        return 0, ""
    if role == "image_ref":
        if kind != "string":
            return 0, ""
        looks = bool(values) and sum(1 for v in values if _IMAGE.search(str(v))) >= MAJORITY * len(values)
        if looks:
            return max(by_name, 80), "the values are image URIs or paths"
        return by_name, reason
    if role == "prediction":
        if kind not in ("string", "bool", "int"):
            return 0, ""
        return by_name, reason
    # model_version, config_version
    if kind not in ("string", "int"):
        return 0, ""
    return by_name, reason


def infer_schema(messages: Sequence[SampleMessage], template: Template) -> InferredSchema:
    """Propose the record schema and the field roles of a topic from sample messages."""
    records, problems = decode_samples(messages)
    candidates, skipped = _candidates(records)
    roles = _single_roles(candidates, template)
    taken: set[FieldRole] = {role for role, _ in roles.values()}
    fields = [_inferred_field(candidate, roles.get(candidate.column.name), len(records)) for candidate in candidates]

    missing_roles: list[str] = [r for r in REQUIRED_ROLES if r not in taken]
    if template.wants_image_ref and "image_ref" not in taken:
        problems.append("no field looks like an image reference (s3://, http(s):// or a file path)")
    if records and not any(f.role == "feature" for f in fields):
        problems.append("no numeric field to use as a feature")
    if len(problems) > MAX_PROBLEMS:
        problems = [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more"]
    return InferredSchema(
        fields=fields,
        sampled=len(messages),
        decoded=len(records),
        problems=problems,
        skipped_fields=skipped,
        missing_roles=missing_roles,
        labels=_labels(records, roles),
        groups=_groups(records, roles),
    )


def _candidates(records: list[dict[str, Any]]) -> tuple[list[_Candidate], list[str]]:
    """The record fields that can be spec fields, with their types; and why the others cannot."""
    columns: dict[str, _Column] = {}
    for record in records:
        for name, value in record.items():
            columns.setdefault(name, _Column(name)).values.append(value)
    skipped: list[str] = []
    candidates: list[_Candidate] = []
    for name, column in columns.items():
        column.missing = len(records) - len(column.values) + sum(1 for v in column.values if v is None)
        if not FIELD_NAME.match(name):
            skipped.append(f"'{name}': a spec field name must match {FIELD_NAME.pattern}")
            continue
        kind, notes = _decide_type(column, len(records))
        if kind is None:
            skipped.append(f"'{name}': nested objects or lists are not supported in a spec schema")
            continue
        candidates.append(_Candidate(column, kind, notes))
    return candidates, skipped


def _single_roles(candidates: Sequence[_Candidate], template: Template) -> dict[str, tuple[FieldRole, str]]:
    """Each single role (ids, time, outputs) given to the field that scores best for it, one role per field."""
    roles: dict[str, tuple[FieldRole, str]] = {}
    scored = [
        (score, SINGLE_ROLES.index(role), i, role, reason)
        for i, c in enumerate(candidates)
        for role in SINGLE_ROLES
        for score, reason in [_role_score(c, role, template)]
        if score > 0
    ]
    taken: set[FieldRole] = set()
    for _, _, i, single, why in sorted(scored, key=lambda s: (-s[0], s[1], s[2])):
        name = candidates[i].column.name
        if single in taken or name in roles:
            continue
        roles[name] = (single, why)
        taken.add(single)
    return roles


def _inferred_field(candidate: _Candidate, assigned: tuple[FieldRole, str] | None, records: int) -> InferredField:
    """One field of the proposed schema: its single role if it has one, else feature (numbers) or meta (text)."""
    column = candidate.column
    kind = candidate.type
    notes = list(candidate.notes)
    if assigned is not None:
        role, reason = assigned
    elif kind in ("float", "int", "bool"):
        role, reason = "feature", "a number that is not an id, a time or an output"
    else:
        role, reason = "meta", "text that is not an id, a time or an output: kept, not used as a feature"
    if role == "timestamp" and kind in ("int", "float"):
        kind = "timestamp"
        notes.append("epoch times: seconds, or milliseconds when 1e11 or more")
    if role == "confidence" and kind == "int":
        kind = "float"
    missing_share = column.missing / records if records else 0.0
    has_null = any(v is None for v in column.values)
    nullable = role not in REQUIRED_ROLES and (has_null or missing_share >= NULLABLE_SHARE)
    if column.missing and not nullable:
        notes.append(
            f"missing or null in {column.missing} of {records} records: treated as bad records "
            "(dead-letter); mark it optional if that is normal"
        )
    examples = list(dict.fromkeys(_short(v) for v in column.values if v is not None))[:3]
    return InferredField(
        name=column.name,
        type=kind,
        role=role,
        nullable=nullable,
        present=len(column.values) - sum(1 for v in column.values if v is None),
        missing=column.missing,
        examples=examples,
        role_reason=reason,
        notes=notes,
    )


def _field_with(roles: dict[str, tuple[FieldRole, str]], role: FieldRole) -> str | None:
    return next((name for name, (r, _) in roles.items() if r == role), None)


def _labels(records: list[dict[str, Any]], roles: dict[str, tuple[FieldRole, str]]) -> list[str]:
    """Distinct predicted labels, when the prediction field holds a few strings."""
    name = _field_with(roles, "prediction")
    if name is None:
        return []
    values = {str(r[name]) for r in records if isinstance(r.get(name), (str, bool))}
    return sorted(values) if 2 <= len(values) <= MAX_LABELS else []


def _groups(records: list[dict[str, Any]], roles: dict[str, tuple[FieldRole, str]]) -> dict[str, int]:
    """Group id -> distinct devices seen in the samples."""
    group_field = _field_with(roles, "group_id")
    device_field = _field_with(roles, "device_id")
    if group_field is None:
        return {}
    devices: dict[str, set[str]] = {}
    for record in records:
        group = record.get(group_field)
        if isinstance(group, (str, int)) and not isinstance(group, bool):
            seen = devices.setdefault(str(group), set())
            if device_field is not None and record.get(device_field) is not None:
                seen.add(str(record[device_field]))
    return {g: len(d) for g, d in sorted(devices.items())}
