"""The gate's decision rule, its alert and asset event, and the tags a registered version carries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgeloop.events import parse_alert
from edgeloop.registry.errors import RegistryError
from edgeloop.registry.register import version_tags
from edgeloop.spec import PipelineSpec
from edgeloop.training.gate import decide, model_asset_extra, rejection_alert

FIT = {"ok": True, "violations": []}


def result(score: float, **groups: tuple[float, int]) -> dict[str, Any]:
    return {"score": score, "groups": {g: {"score": s, "records": n} for g, (s, n) in groups.items()}}


def test_a_challenger_that_wins_by_the_margin_without_group_regressions_is_promoted(
    training_spec: PipelineSpec,
) -> None:
    training = training_spec.training  # margin 0.01, tolerance 0.02
    champion = result(0.80, north=(0.70, 50), south=(0.90, 50))
    assert decide(training, result(0.81, north=(0.80, 50), south=(0.89, 50)), champion, FIT) == []


def test_a_challenger_short_of_the_margin_is_rejected_with_the_numbers(training_spec: PipelineSpec) -> None:
    champion = result(0.80, north=(0.80, 50))
    reasons = decide(training_spec.training, result(0.805, north=(0.80, 50)), champion, FIT)
    assert reasons == ["f1_macro 0.8050 does not beat the champion's 0.8000 by the margin 0.01 (needs at least 0.8100)"]


def test_a_group_regressing_beyond_the_tolerance_blocks_promotion(training_spec: PipelineSpec) -> None:
    champion = result(0.80, north=(0.70, 50), south=(0.95, 40))
    reasons = decide(training_spec.training, result(0.90, north=(0.95, 50), south=(0.92, 40)), champion, FIT)
    assert len(reasons) == 1 and reasons[0].startswith("group south: f1_macro 0.9200 is below the champion's 0.9500")
    # Within the tolerance, or with too few records to judge, a group does not block.
    assert decide(training_spec.training, result(0.90, north=(0.95, 50), south=(0.935, 40)), champion, FIT) == []
    few = decide(
        training_spec.training, result(0.90, north=(0.95, 50), south=(0.5, 40)), champion, FIT, min_group_records=41
    )
    assert few == []


def test_an_edge_unfit_challenger_is_rejected_even_without_a_champion(training_spec: PipelineSpec) -> None:
    unfit = {"ok": False, "violations": ["model size 60.00 MB > limit 40 MB"]}
    assert decide(training_spec.training, result(0.99), None, unfit) == [
        "edge fitness: model size 60.00 MB > limit 40 MB"
    ]
    assert decide(training_spec.training, result(0.10), None, FIT) == []  # the first model only has to fit


def test_rejection_alert_and_model_event_carry_what_the_next_stage_needs() -> None:
    decision = {
        "pipeline": "factory_maintenance",
        "model_name": "factory_maintenance",
        "version": "7",
        "model_uri": "models:/factory_maintenance/7",
        "reason": "f1_macro 0.70 does not beat ...",
        "metric": "f1_macro",
        "challenger": {"score": 0.7},
        "champion": {"score": 0.8},
        "champion_version": "5",
        "dataset_version": "v3",
        "code_version": "src-1",
        "first_run": False,
    }
    alert = rejection_alert(decision)
    assert alert["kind"] == "model" and alert["reason"] == decision["reason"] and alert["champion_score"] == 0.8
    assert model_asset_extra(decision)["model_uri"] == "models:/factory_maintenance/7"
    assert parse_alert(json.dumps(alert)) == alert  # a valid message for the alerts topic


def test_version_tags_need_the_training_result(training_spec: PipelineSpec) -> None:
    with pytest.raises(RegistryError, match="missing 'candidate'"):
        version_tags(training_spec, {"edge": FIT})
