"""Every parser at a trust boundary, fed generated and mutated hostile payloads (Hypothesis, bounded).

The targets and their promises are in `tests/helpers/hostile.py`; `make fuzz` runs the same
targets for longer. A crash, a hang or an exception other than the parser's own is a failure.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from tests.helpers.hostile import KNOWN_BAD, TARGETS

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_parser_keeps_its_promise_on_hostile_input(name: str) -> None:
    target = TARGETS[name]
    given(target.inputs)(target.check)()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_parser_keeps_its_promise_on_each_known_bad_payload(name: str) -> None:
    """The known cases every run, whatever Hypothesis draws: a lone null, 100 KB of nesting, ..."""
    target = TARGETS[name]
    for payload in KNOWN_BAD:
        if name in ("ingest_decode", "fleet_error_reports", "generator_samples"):
            target.check([payload])
        elif name == "spec_text":
            target.check(payload.decode("utf-8", "replace"))
        else:
            target.check(payload)
