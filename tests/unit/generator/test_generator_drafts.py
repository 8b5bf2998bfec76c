"""From samples to a proposal, from a draft to spec YAML: presets, rendering, validation, safety."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from generator_kit import messages

from edgeloop.generator.discovery import TopicInfo, split_topic
from edgeloop.generator.presets import (
    PRESETS,
    GroupChoice,
    RolloutPlanError,
    group_name_from_id,
    pick_canary,
    plan_rollout,
)
from edgeloop.generator.propose import NotASourceTopic, propose, source_prefix, suggest_name
from edgeloop.generator.render import Draft, check_spec_text, dag_ids, diff_texts, render_spec, render_yaml
from edgeloop.generator.templates import TEMPLATES, get_template
from edgeloop.spec import parse_spec

GROUPS = [GroupChoice("plant-north", 120), GroupChoice("line-canary", 20), GroupChoice("plant-south", 80)]


def topic(name: str, partitions: int = 3, count: int = 10) -> TopicInfo:
    prefix, kind = split_topic(name)
    return TopicInfo(name, partitions, count, prefix, kind)


def proposal_for(template_id: str, state: dict[str, int] | None = None, **kwargs: Any) -> Any:
    template = get_template(template_id)
    records = [template.example_record(i) for i in range(24)]
    source = topic("plant1.telemetry", partitions=4)
    siblings = [topic("plant1.health"), topic("plant1.errors"), topic("other.telemetry")]
    return propose(source, [source, *siblings], messages(records), state, template, ["plant1"], **kwargs)


# --- presets -----------------------------------------------------------------------------------


def test_standard_puts_the_smallest_group_first_then_everyone_in_one_wave() -> None:
    canary = pick_canary(GROUPS)
    groups, rollout = plan_rollout(GROUPS, PRESETS["standard"], canary)
    assert canary == "line-canary"
    assert {g["name"]: g["wave"] for g in groups} == {"plant-north": 1, "line-canary": 0, "plant-south": 1}
    assert rollout["canary_groups"] == ["line-canary"] and not rollout["approval_required"]
    assert groups[0]["selector"] == {"edgeloop.dev/group": "plant-north"}


def test_cautious_rolls_out_one_group_per_wave_smallest_first_with_approval() -> None:
    groups, rollout = plan_rollout(GROUPS, PRESETS["cautious"], "line-canary")
    assert {g["name"]: g["wave"] for g in groups} == {"line-canary": 0, "plant-south": 1, "plant-north": 2}
    assert rollout["approval_required"] and rollout["soak"] == "30m"
    assert rollout["thresholds"]["max_error_rate"] < PRESETS["standard"].thresholds["max_error_rate"]


def test_a_preset_with_approval_names_its_approvers_and_the_others_name_none() -> None:
    _, cautious = plan_rollout(GROUPS, PRESETS["cautious"], "line-canary", ["alice", "ops.lead"])
    assert cautious["approvers"] == ["alice", "ops.lead"]
    _, unnamed = plan_rollout(GROUPS, PRESETS["cautious"], "line-canary")
    assert unnamed["approvers"] == []  # the spec refuses it: rollout.approvers is required with approval
    _, standard = plan_rollout(GROUPS, PRESETS["standard"], "line-canary", ["alice"])
    assert "approvers" not in standard and not standard["approval_required"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_sets_abort_criteria_the_spec_accepts(preset: str) -> None:
    from edgeloop.spec import RolloutSpec

    _, section = plan_rollout(GROUPS, PRESETS[preset], "line-canary", ["alice"])
    rollout = RolloutSpec.model_validate(section)
    assert rollout.abort is not None and rollout.abort.min_executed >= 10
    assert not rollout.shadow.enabled  # a shadow wave needs agents that run the challenger: the spec's choice
    assert (rollout.rate is not None) == (preset == "cautious")


def test_fast_soaks_briefly_and_allows_more_devices_at_once() -> None:
    _, rollout = plan_rollout(GROUPS, PRESETS["fast"], "line-canary")
    assert (rollout["soak"], rollout["max_unavailable"]) == ("2m", "25%")


def test_a_single_group_has_no_canary() -> None:
    groups, rollout = plan_rollout([GroupChoice("only", 5)], PRESETS["cautious"], "only")
    assert pick_canary([GroupChoice("only", 5)]) is None
    assert rollout["canary_groups"] == [] and groups[0]["wave"] == 0


@pytest.mark.parametrize(
    ("groups", "canary", "message"),
    [
        ([GroupChoice("Plant_North")], None, "groups[0].name: 'Plant_North' must be lower case"),
        ([GroupChoice("a"), GroupChoice("a")], None, "groups: group names must be unique"),
        ([GroupChoice("a"), GroupChoice("b")], "c", "canary: 'c' is not one of the groups"),
    ],
)
def test_rollout_plans_name_the_field_that_is_wrong(
    groups: list[GroupChoice], canary: str | None, message: str
) -> None:
    with pytest.raises(RolloutPlanError, match=message.replace("[", r"\[").replace("]", r"\]")):
        plan_rollout(groups, PRESETS["standard"], canary)


@pytest.mark.parametrize(
    ("group_id", "name"),
    [
        ("plant-north", "plant-north"),
        ("line7", "line7"),
        ("Plant_North", None),
        ("line 7", None),
        ("42", None),
        ("", None),
    ],
)
def test_groups_are_proposed_only_under_the_exact_id_devices_report(group_id: str, name: str | None) -> None:
    assert group_name_from_id(group_id) == name


# --- proposals -----------------------------------------------------------------------------------


def test_pipeline_names_come_from_the_topic_prefix_and_avoid_taken_ones() -> None:
    assert suggest_name("plant1", []) == "plant1"
    assert suggest_name("plant1", ["plant1"]) == "plant1_2"
    assert suggest_name("Plant-1.Line.A", []) == "plant_1_line_a"
    assert suggest_name("9lives", []) == "p_9lives"
    assert suggest_name("x", []) == "x_pipeline"


def test_only_telemetry_topics_start_a_pipeline() -> None:
    assert source_prefix("plant1.line.telemetry") == "plant1.line"
    for name in ("plant1.health", "sensors", "plant1.telemetry.v2"):
        with pytest.raises(NotASourceTopic, match=r"<prefix>\.telemetry"):
            source_prefix(name)


@pytest.mark.parametrize("template_id", sorted(TEMPLATES))
def test_the_proposed_draft_of_every_template_is_a_valid_spec(template_id: str) -> None:
    proposal = proposal_for(template_id)
    draft = Draft.model_validate(proposal.draft)
    result = check_spec_text(render_yaml(render_spec(draft), draft.template), draft.name)
    assert result.errors == []
    spec = result.spec
    assert spec is not None
    assert (spec.name, spec.topics.prefix, spec.topics.partitions) == ("plant1_2", "plant1", 4)
    assert spec.topics.ingest == ["telemetry"]
    assert spec.training.estimator == get_template(template_id).sections["training"]["estimator"]
    assert proposal.siblings == ["errors", "health"]


def test_groups_come_from_the_fleet_state_before_the_samples() -> None:
    from_state = proposal_for("predictive_maintenance", {"plant-east": 40, "Bad Group!": 3, "plant-west": 12})
    assert from_state.groups_source == "device-state"
    assert [(g["name"], g["devices"]) for g in from_state.draft["groups"]] == [("plant-east", 40), ("plant-west", 12)]
    assert from_state.draft["canary"] == "plant-west"
    assert any("['Bad Group!'] cannot be spec group names" in n for n in from_state.notes)
    from_samples = proposal_for("predictive_maintenance", None)
    assert from_samples.groups_source == "samples"
    assert {g["name"] for g in from_samples.draft["groups"]} == {"line-canary", "plant-north", "plant-south"}


def test_an_empty_topic_gets_the_template_example_and_says_so() -> None:
    template = get_template("predictive_maintenance")
    source = topic("fresh.telemetry", count=0)
    proposal = propose(source, [source], [], None, template, [])
    assert any("no messages yet" in n for n in proposal.notes)
    assert any("no edge groups" in n for n in proposal.notes)
    assert proposal.draft["groups"] == [{"name": "default", "devices": 0}]
    assert len(proposal.draft["schema"]) == len(template.example_record(0))


# --- rendering and validation ----------------------------------------------------------------------


def draft(**changes: Any) -> Draft:
    base = proposal_for("predictive_maintenance").draft
    return Draft.model_validate({**base, **changes})


def test_user_text_is_yaml_data_never_structure_or_code() -> None:
    hostile = "x\nname: evil\n!!python/object/apply:os.system ['touch /tmp/pwned'] {{ 7*7 }} ${HOME} &a *a"
    rendered = render_yaml(
        render_spec(draft(description=hostile, owner="ops: team # not a comment")), "anomaly_detection"
    )
    spec = parse_spec(rendered)
    assert spec.description == hostile
    assert spec.owner == "ops: team # not a comment"
    assert spec.name == "plant1_2"


@pytest.mark.parametrize("template_id", sorted(TEMPLATES))
def test_profiles_mode_adds_the_profiles_topic_and_the_sample_reason_field(template_id: str) -> None:
    draft = Draft.model_validate({**proposal_for(template_id).draft, "telemetry": "profiles"})
    result = check_spec_text(render_yaml(render_spec(draft), draft.template), draft.name)
    assert result.errors == []
    spec = result.spec
    assert spec is not None and spec.telemetry.mode == "profiles"
    assert spec.topics.ingest == ["telemetry", "profiles"]
    assert spec.field_with_role("sample_reason") == "sample_reason"


def test_rendered_yaml_reads_like_a_hand_written_spec() -> None:
    text = render_yaml(render_spec(draft()), "predictive_maintenance")
    assert text.startswith("# Pipeline spec written by the edgeloop pipeline generator (template: Predictive")
    assert "- {name: record_id, type: string, role: record_id}" in text
    assert "ingest: [telemetry]" in text
    assert yaml.safe_load(text)["registry"] == {"model_name": "plant1_2"}


def test_validation_errors_carry_field_paths() -> None:
    text = render_yaml(render_spec(draft()), None)
    broken = text.replace("drift_share: 0.3", "drift_share: 7").replace("estimator: random_forest", "estimator: svm")
    result = check_spec_text(broken, "plant1_2")
    assert {e.location for e in result.errors} == {"drift.drift_share", "training.estimator"}
    assert result.spec is None


def test_the_file_name_must_match_the_spec_name() -> None:
    result = check_spec_text(render_yaml(render_spec(draft()), None), "another_name")
    assert [(e.location, e.message) for e in result.errors] == [
        ("name", "'plant1_2' must match the file name 'another_name'")
    ]


def test_yaml_anchors_aliases_and_python_tags_are_refused() -> None:
    bomb = 'a: &a ["x", "x"]\nb: &b [*a, *a]\nc: [*b, *b]\n'
    assert check_spec_text(bomb).errors[0].message == "line 1: anchors and aliases (&, *) are not allowed in a spec"
    tagged = check_spec_text("name: !!python/object/apply:os.system ['true']\n")
    assert tagged.errors[0].location == "(yaml)" and "constructor" in tagged.errors[0].message


def test_oversized_specs_are_refused_before_parsing() -> None:
    result = check_spec_text("description: " + "x" * 300_000)
    assert [(e.location, e.message) for e in result.errors] == [("(file)", "larger than 256 KiB")]


def test_draft_names_must_match_the_spec_pattern() -> None:
    for bad in ("../etc/passwd", "Plant1", "1plant", "a", "x" * 41, "plant-1"):
        with pytest.raises(ValueError, match="name"):
            draft(name=bad)


def test_dag_ids_and_diffs() -> None:
    assert dag_ids("plant1") == [
        "plant1__ingest",
        "plant1__drift",
        "plant1__annotate",
        "plant1__train",
        "plant1__rollout",
        "plant1__fleet_health",
        "plant1__config_push",
    ]
    diff = diff_texts("a: 1\nb: 2\n", "a: 1\nb: 3\n", "plant1")
    assert diff.splitlines() == ["--- a/plant1.yaml", "+++ b/plant1.yaml", "@@ -1,2 +1,2 @@", " a: 1", "-b: 2", "+b: 3"]
    assert diff_texts("a: 1\n", "a: 1\n", "plant1") == ""


@pytest.mark.parametrize("template_id", sorted(TEMPLATES))
def test_every_template_search_space_names_parameters_of_its_estimator(template_id: str) -> None:
    from edgeloop.training.estimators import make_estimator

    spec = check_spec_text(render_yaml(render_spec(draft(template=template_id)), template_id), "plant1_2").spec
    assert spec is not None
    make_estimator(spec.training)  # raises TrainingConfigError naming an unknown parameter
