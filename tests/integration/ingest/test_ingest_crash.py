"""SIGKILL an ingest process at 50 random points, restart it each time: every record stored exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.soak_ingest import run_kill_test

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_fifty_kills_lose_and_duplicate_nothing(stack_env: dict[str, str], tmp_path: Path) -> None:
    result = run_kill_test(
        bootstrap=stack_env["EDGELOOP_KAFKA_BOOTSTRAP"],
        endpoint=stack_env["EDGELOOP_S3_ENDPOINT"],
        bucket=stack_env.get("EDGELOOP_BUCKET", "edgeloop"),
        kills=50,
        seed=11,
        spool_dir=tmp_path,
        log=lambda _line: None,
    )
    assert result.kills == 50
    assert len(result.kill_steps) >= 4, f"kills spread over the steps: {result.kill_steps}"
    assert (result.lost, result.duplicates) == (0, 0)
    assert (result.deadletter_lost, result.deadletter_duplicates, result.misplaced) == (0, 0, 0)
    assert result.produced_good > 1000 and result.produced_bad > 10
