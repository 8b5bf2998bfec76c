"""What crosses a task boundary: JSON values, and the one check every typed task result uses to read them back.

Each stage's `tasks.py` returns a frozen dataclass with `to_xcom()` (a JSON-able dict, the XCom the
Airflow UI and the next task see) and `from_xcom(data)`; `from_xcom` goes through `xcom_fields`, so a
missing or renamed key fails where it is read, naming the result and the key.

A task the triggerer ends itself (the rollout's gates: `TaskSuccessEvent(xcoms=...)`) has its XCom stored
JSON-encoded once more by Airflow 3.3 (`XComModel.serialize_value`); a worker then pulls that JSON text, not
the dict. `as_pushed` decodes it, and both readers here go through it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any, Self, TypeAlias

JSON: TypeAlias = bool | int | float | str | list["JSON"] | dict[str, "JSON"] | None


class XComContractError(ValueError):
    """A task's XCom does not have the keys its typed result promises."""


def as_pushed(value: object) -> object:
    """An XCom value as its task pushed it: JSON text of an object (an XCom the triggerer pushed, see above) is
    decoded; anything else comes back as it is."""
    if isinstance(value, str) and value.startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _xcom_dict(name: str, data: object) -> Mapping[Any, Any]:
    """`data` (decoded by `as_pushed`) as the dict result `name` reads; XComContractError if it is none."""
    data = as_pushed(data)
    if not isinstance(data, Mapping):
        raise XComContractError(f"{name}.from_xcom: expected a dict, got {type(data).__name__}")
    return data


def _required(fields: Iterable[dataclasses.Field[Any]]) -> list[str]:
    """The names of the fields without a default."""
    return [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def xcom_fields(cls: type[Any], data: object) -> dict[str, Any]:
    """The constructor arguments of dataclass `cls` from an XCom dict: every required key present, no unknown key.

    Optional fields (those with a default) may be absent. Raise XComContractError naming `cls`
    and the keys that are missing or unknown.
    """
    name = cls.__name__
    data = _xcom_dict(name, data)
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    required = _required(fields)
    missing = [key for key in required if key not in data]
    unknown = sorted(str(key) for key in data if key not in known)
    if missing or unknown:
        problems = [f"missing key(s) {missing}" if missing else "", f"unknown key(s) {unknown}" if unknown else ""]
        raise XComContractError(f"{name}.from_xcom: {'; '.join(p for p in problems if p)}")
    return {key: data[key] for key in known if key in data}


def plain(result: Any, *, omit_none: tuple[str, ...] = ()) -> dict[str, JSON]:
    """A dataclass result as its XCom dict (field name = key); the fields in `omit_none` are left out when None."""
    out: dict[str, JSON] = {}
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if value is None and field.name in omit_none:
            continue
        out[field.name] = value
    return out


class XComResult:
    """A typed task result (a frozen dataclass): `to_xcom()` is its fields as a dict, `from_xcom(data)` reads one
    back through `xcom_fields`. A result whose XCom differs from its fields overrides both."""

    def to_xcom(self) -> dict[str, JSON]:
        return plain(self)

    @classmethod
    def from_xcom(cls, data: object) -> Self:
        return cls(**xcom_fields(cls, data))


def xcom_fields_and_rest(cls: type[Any], data: object, rest: str) -> dict[str, Any]:
    """Like `xcom_fields`, for a result whose other keys are kept as they came, in the dict field `rest`.

    For summaries that come back from a store written by earlier versions (e.g. an MLflow tag):
    the keys the next task reads are checked, the others travel on unchanged.
    """
    name = cls.__name__
    data = _xcom_dict(name, data)
    named = [f for f in dataclasses.fields(cls) if f.name != rest]
    required = _required(named)
    missing = [key for key in required if key not in data]
    if missing:
        raise XComContractError(f"{name}.from_xcom: missing key(s) {missing}")
    known = {f.name for f in named}
    fields = {key: data[key] for key in known if key in data}
    fields[rest] = {str(key): value for key, value in data.items() if key not in known}
    return fields


class XComResultWithDetails:
    """A typed task result (a frozen dataclass) with a dict field `details`: its XCom is the named fields with
    the details' keys beside them, and `from_xcom` keeps every key it does not name in `details`
    (`xcom_fields_and_rest`)."""

    def to_xcom(self) -> dict[str, JSON]:
        named = plain(self)
        del named["details"]
        details: dict[str, JSON] = getattr(self, "details")  # noqa: B009 (a field of the dataclass that mixes this in)
        return {**details, **named}

    @classmethod
    def from_xcom(cls, data: object) -> Self:
        return cls(**xcom_fields_and_rest(cls, data, "details"))
