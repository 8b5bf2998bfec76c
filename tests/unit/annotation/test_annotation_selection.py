"""Selection logic: which records a batch takes, in which order, from which alert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from edgeloop.annotation.manifest import batch_id_for
from edgeloop.annotation.selection import ALERT_WINDOWS, ALL_GROUPS, rank_candidates, selection_request
from edgeloop.spec import PipelineSpec, load_spec

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(DEMO)


def frame(rows: list[tuple[str, str, int, float, str]]) -> pd.DataFrame:
    """(record id, device, minutes before NOW, confidence, prediction) rows."""
    return pd.DataFrame(
        {
            "record_id": [r[0] for r in rows],
            "device_id": [r[1] for r in rows],
            "group_id": ["plant-north"] * len(rows),
            "ts": pd.to_datetime([NOW - timedelta(minutes=r[2]) for r in rows], utc=True),
            "confidence": [r[3] for r in rows],
            "prediction": [r[4] for r in rows],
        }
    )


def test_batch_id_is_deterministic_and_ignores_group_order() -> None:
    assert batch_id_for("p", "drift-1", ["b", "a"]) == batch_id_for("p", "drift-1", ["a", "b", "a"])
    assert batch_id_for("p", "drift-1", ["a"]) != batch_id_for("p", "drift-2", ["a"])
    assert batch_id_for("p", "drift-1", ["a"]) != batch_id_for("q", "drift-1", ["a"])


def test_request_from_alert_takes_its_groups_id_and_window(spec: PipelineSpec) -> None:
    alert = {
        "alert_id": "drift-9",
        "groups": ["plant-south", "plant-north"],
        "window": {"start": "2026-03-01T10:56:00+00:00", "end": "2026-03-01T11:00:00Z"},
    }
    request = selection_request(spec, now=NOW, alert=alert)
    assert request.alert_id == "drift-9"
    assert request.groups == ("plant-north", "plant-south")
    assert (request.start, request.end) == (
        datetime(2026, 3, 1, 10, 56, tzinfo=UTC),
        datetime(2026, 3, 1, 11, tzinfo=UTC),
    )
    assert request.size == spec.annotation.batch_size


def test_request_params_override_the_alert_and_manual_runs_get_an_id(spec: PipelineSpec) -> None:
    request = selection_request(
        spec, now=NOW, alert={"groups": ["plant-south"]}, group="plant-north", size=7, run_id="r1"
    )
    assert (request.groups, request.size, request.alert_id) == (("plant-north",), 7, "manual-r1")
    assert request.end == NOW and request.start == NOW - spec.drift.window
    assert selection_request(spec, now=NOW).groups == (ALL_GROUPS,)
    assert selection_request(spec, now=NOW, alert={"groups": ["*", "plant-north"]}).groups == (ALL_GROUPS,)
    lookback = selection_request(spec, now=NOW, lookback=timedelta(hours=3))
    assert lookback.start == NOW - timedelta(hours=3)


def test_request_rejects_unknown_groups_and_bad_windows(spec: PipelineSpec) -> None:
    with pytest.raises(ValueError, match=r"\['mars'\] are not groups of pipeline factory_maintenance"):
        selection_request(spec, now=NOW, group="mars")
    with pytest.raises(ValueError, match=r"alert\.window\.end"):
        selection_request(spec, now=NOW, alert={"window": {"end": "yesterday"}})


ELEVEN = datetime(2026, 3, 1, 11, tzinfo=UTC)


@pytest.mark.parametrize(
    ("window", "start_of", "end"),
    [  # start_of: the expected start, from the spec's drift window W
        ({"start": "0001-01-01T00:00:00Z", "end": "9999-12-31T23:59:59Z"}, lambda w: NOW - 4 * w, NOW),
        ({"start": "2026-03-01T10:00:00Z", "end": "2026-03-01T11:00:00Z"}, lambda w: ELEVEN - 4 * w, ELEVEN),
        ({"end": "2026-03-02T00:00:00Z"}, lambda w: NOW - w, NOW),
    ],
)
def test_an_alert_window_ends_by_now_and_spans_a_few_drift_windows(
    spec: PipelineSpec, window: dict[str, str], start_of: Any, end: datetime
) -> None:
    request = selection_request(spec, now=NOW, alert={"window": window})
    assert request.start == start_of(spec.drift.window)
    assert request.end == end
    assert request.end - request.start <= ALERT_WINDOWS * spec.drift.window


def test_an_alert_window_that_cannot_be_a_window_is_refused_with_its_field(spec: PipelineSpec) -> None:
    with pytest.raises(ValueError, match=r"alert\.window\.end: 0001-01-01T00:00:00\+00:00 is too early"):
        selection_request(spec, now=NOW, alert={"window": {"end": "0001-01-01T00:00:00Z"}})
    with pytest.raises(ValueError, match=r"alert\.window: expected an object"):
        selection_request(spec, now=NOW, alert={"window": ["2026-03-01"]})


def test_low_confidence_orders_by_confidence(spec: PipelineSpec) -> None:
    rows = [("a", "d1", 5, 0.9, "normal"), ("b", "d1", 6, 0.2, "wear"), ("c", "d2", 7, 0.5, "fault")]
    ranked, notes = rank_candidates(
        frame(rows), spec, ["low_confidence"], challenger=None, start=NOW - timedelta(hours=1), end=NOW
    )
    assert list(ranked["record_id"]) == ["b", "c", "a"] and notes == {}


def test_diversity_takes_every_device_before_a_second_record_of_any(spec: PipelineSpec) -> None:
    # device d1 has the five least confident records; diversity still gives d2 and d3 a turn first
    rows = [(f"d1-{i}", "d1", 5 + i, 0.1 + i / 100, "wear") for i in range(5)]
    rows += [("d2-0", "d2", 50, 0.8, "wear"), ("d3-0", "d3", 55, 0.9, "wear")]
    ranked, _ = rank_candidates(
        frame(rows), spec, ["low_confidence", "diversity"], challenger=None, start=NOW - timedelta(hours=1), end=NOW
    )
    assert list(ranked["record_id"])[:3] == ["d1-0", "d2-0", "d3-0"]
    only_confidence, _ = rank_candidates(
        frame(rows), spec, ["low_confidence"], challenger=None, start=NOW - timedelta(hours=1), end=NOW
    )
    assert list(only_confidence["record_id"])[:3] == ["d1-0", "d1-1", "d1-2"]


def test_diversity_spreads_one_device_over_the_window(spec: PipelineSpec) -> None:
    # one device: its second pick comes from another time slice, not the next least confident record
    rows = [("early-0", "d1", 55, 0.10, "wear"), ("early-1", "d1", 54, 0.11, "wear"), ("late-0", "d1", 2, 0.9, "wear")]
    ranked, _ = rank_candidates(
        frame(rows), spec, ["low_confidence", "diversity"], challenger=None, start=NOW - timedelta(hours=1), end=NOW
    )
    assert list(ranked["record_id"]) == ["early-0", "late-0", "early-1"]


def test_disagreement_comes_first_when_a_challenger_is_given(spec: PipelineSpec) -> None:
    rows = [("a", "d1", 5, 0.1, "normal"), ("b", "d1", 6, 0.9, "wear"), ("c", "d2", 7, 0.5, "fault")]
    challenger = pd.Series(["normal", "fault", "fault"])
    ranked, notes = rank_candidates(
        frame(rows),
        spec,
        ["disagreement", "low_confidence"],
        challenger=challenger,
        start=NOW - timedelta(hours=1),
        end=NOW,
    )
    assert list(ranked["record_id"]) == ["b", "a", "c"] and notes == {}
    assert ranked.set_index("record_id").loc["b", "challenger_prediction"] == "fault"
    _, without = rank_candidates(
        frame(rows), spec, ["disagreement"], challenger=None, start=NOW - timedelta(hours=1), end=NOW
    )
    assert without == {"disagreement": "not applied: no challenger predictions were given"}


def test_ranking_is_deterministic_for_the_same_seed(spec: PipelineSpec) -> None:
    rows = [(f"r{i}", f"d{i % 3}", i, 0.5, "wear") for i in range(30)]
    first, _ = rank_candidates(
        frame(rows), spec, ["diversity"], challenger=None, start=NOW - timedelta(hours=1), end=NOW
    )
    second, _ = rank_candidates(
        frame(rows), spec, ["diversity"], challenger=None, start=NOW - timedelta(hours=1), end=NOW
    )
    other, _ = rank_candidates(
        frame(rows), spec, ["diversity"], challenger=None, start=NOW - timedelta(hours=1), end=NOW, seed=1
    )
    assert list(first["record_id"]) == list(second["record_id"])
    assert list(first["record_id"]) != list(other["record_id"])
