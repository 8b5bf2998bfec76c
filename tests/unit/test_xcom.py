"""Typed task results read their XCom back strictly: a missing or renamed key names the result and the key."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edgeloop.xcom import XComContractError, plain, xcom_fields


@dataclass(frozen=True)
class Example:
    key: str
    count: int
    note: str | None = None


def test_required_and_optional_fields_come_back() -> None:
    assert Example(**xcom_fields(Example, {"key": "a", "count": 1})) == Example("a", 1)
    assert Example(**xcom_fields(Example, {"key": "a", "count": 1, "note": "n"})) == Example("a", 1, "n")


def test_a_renamed_key_names_both_the_missing_and_the_unknown_key() -> None:
    with pytest.raises(
        XComContractError, match=r"Example.from_xcom: missing key\(s\) \['count'\]; unknown key\(s\) \['counts'\]"
    ):
        xcom_fields(Example, {"key": "a", "counts": 1})


def test_something_that_is_not_a_dict_is_refused() -> None:
    with pytest.raises(XComContractError, match="expected a dict, got NoneType"):
        xcom_fields(Example, None)


def test_plain_leaves_out_only_the_named_none_fields() -> None:
    assert plain(Example("a", 1)) == {"key": "a", "count": 1, "note": None}
    assert plain(Example("a", 1), omit_none=("note",)) == {"key": "a", "count": 1}
