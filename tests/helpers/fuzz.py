"""Fuzz every parser at a trust boundary for a time budget: `python -m tests.helpers.fuzz --minutes 10`.

Runs the targets of `tests.helpers.hostile` (the same properties `make test` checks with a
few dozen examples) in rounds of fresh random examples until each target's share of the
budget is spent. A failure prints Hypothesis' smallest failing input, is saved in the
example database (`.pytest_cache/hypothesis`, replayed first by the unit suite) and ends
the run with exit code 1. `make fuzz` runs it; it is not part of `make test`.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from hypothesis import given, settings

from tests.helpers.hostile import TARGETS

ROUND_EXAMPLES = 200


def fuzz(name: str, seconds: float) -> int:
    """Run one target for about `seconds`; return the number of examples tried (raise on a failure)."""
    target = TARGETS[name]
    run = settings(settings.get_profile("fuzz"), max_examples=ROUND_EXAMPLES)(given(target.inputs)(target.check))
    deadline = time.monotonic() + seconds
    examples = 0
    while True:
        run()
        examples += ROUND_EXAMPLES
        if time.monotonic() >= deadline:
            return examples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="the whole budget, shared by the targets")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="only these (repeatable)")
    args = parser.parse_args(argv)
    names = args.target or sorted(TARGETS)
    share = args.minutes * 60 / len(names)
    started = time.monotonic()
    for name in names:
        began = time.monotonic()
        try:
            examples = fuzz(name, share)
        except Exception as exc:
            traceback.print_exc()  # with Hypothesis' note of the smallest failing input
            print(f"FAIL {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"ok   {name:<22} {examples:>7} examples in {time.monotonic() - began:6.0f} s", flush=True)
    print(f"all {len(names)} targets clean for {(time.monotonic() - started) / 60:.1f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
