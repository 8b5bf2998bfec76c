"""Bounded JSON decoding for hostile input: size and nesting depth are checked before parsing.

`json.loads` recurses once per nesting level, so a 100 KB value of nested brackets
raises RecursionError deep inside the parser; a multi-megabyte value costs memory
before any field is looked at. `loads_bounded` refuses both up front, with a linear
scan that never recurses, and raises only `JsonRefused` (a ValueError) for any bad
input, so callers catch one type.
"""

from __future__ import annotations

import json
import re
from typing import Any

DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_MAX_DEPTH = 32
# `json.loads` turns an unpaired \\ud800 escape into a str that UTF-8 cannot encode: signing,
# hashing or storing it raises later, far from the parser.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class JsonRefused(ValueError):
    """Input that is not JSON, too large or too deeply nested; the message says which."""


def nesting_depth(data: bytes, stop_above: int | None = None) -> int:
    """The deepest nesting of arrays and objects in `data`, ignoring brackets inside strings.

    With `stop_above`, the scan ends as soon as the depth passes it (the result is then
    `stop_above + 1`): a hostile value is refused after its first few bytes.
    """
    limit = len(data) + 1 if stop_above is None else stop_above
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def loads_bounded(
    data: bytes | bytearray | str | None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Decode JSON from UTF-8 bytes (or text) after checking its size and nesting depth.

    Raise JsonRefused naming the limit that was crossed or the decoding error; never
    RecursionError, MemoryError or UnicodeDecodeError. NaN and Infinity are refused:
    they are not JSON and no device field may carry them.
    """
    if data is None:
        raise JsonRefused("empty message")
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise JsonRefused(f"{len(raw)} bytes is more than the limit of {max_bytes}")
    if too_deep(raw, max_depth):
        raise JsonRefused(f"nested more than the limit of {max_depth} levels deep")
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise JsonRefused(f"not JSON: {exc}") from None
    if has_surrogate_escape(raw) and _has_lone_surrogate(value):
        raise JsonRefused("not JSON text: a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)")
    return value


def has_surrogate_escape(data: bytes) -> bool:
    """Whether `data` holds a \\uD800-\\uDFFF escape (paired or not): readers disagree on what it means."""
    return _SURROGATE_ESCAPE.search(data) is not None


def too_deep(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> bool:
    """Whether arrays and objects in `data` nest deeper than `max_depth` (linear, never recursive)."""
    # Fewer opening brackets than the limit cannot nest deeper than it: no scan.
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False
    return nesting_depth(data, stop_above=max_depth) > max_depth


def loads_object(data: bytes | bytearray | str | None, **limits: int) -> dict[str, Any]:
    """`loads_bounded` for a message that must be a JSON object."""
    body = loads_bounded(data, **limits)
    if not isinstance(body, dict):
        raise JsonRefused(f"not a JSON object but {type(body).__name__}")
    return body


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a decoded value holds a string that cannot be encoded as UTF-8 (an unpaired \\udXXX escape)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
