"""Pipeline specs: the demo spec is valid; broken specs fail with the field path and never block others."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from edgeloop.cli import main as cli_main
from edgeloop.spec import SpecInvalid, load_all, parse_schedule, parse_spec

DEMO = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "factory_maintenance.yaml"


def demo_data() -> dict:
    return yaml.safe_load(DEMO.read_text())


def errors_of(data: dict) -> dict[str, str]:
    with pytest.raises(SpecInvalid) as info:
        parse_spec(yaml.safe_dump(data))
    return {e.location: e.message for e in info.value.errors}


def test_demo_spec_is_valid_and_names_its_parts() -> None:
    spec = parse_spec(DEMO.read_text(), DEMO)
    assert spec.name == "factory_maintenance"
    assert spec.features == [
        "vibration_rms",
        "vibration_peak",
        "temperature_c",
        "motor_current_a",
        "rpm",
        "acoustic_db",
    ]
    assert spec.topic("telemetry") == "factory_maintenance.telemetry"
    assert [g.name for g in spec.canary_groups] == ["line-canary"]
    assert spec.annotation.labels == ["normal", "wear", "fault"]
    assert spec.rollout.soak == timedelta(seconds=60)
    assert spec.storage_prefix("raw") == "raw/factory_maintenance"


def test_wrong_type_names_the_field_path() -> None:
    data = demo_data()
    data["annotation"]["batch_size"] = "two hundred"
    errors = errors_of(data)
    assert "annotation.batch_size" in errors
    assert "integer" in errors["annotation.batch_size"]


def test_unknown_field_is_rejected_with_its_path() -> None:
    data = demo_data()
    data["groups"][1]["colour"] = "blue"
    assert errors_of(data) == {"groups[1].colour": "unknown field"}


def test_missing_topics_section_and_empty_topic_list_are_errors() -> None:
    data = demo_data()
    del data["topics"]
    assert errors_of(data) == {"topics": "required field is missing"}
    data = demo_data()
    data["topics"]["ingest"] = ["telemetry", "telemetri"]
    assert "topics.ingest[1]" in errors_of(data)
    data["topics"]["ingest"] = []
    assert "topics.ingest" in errors_of(data)


def test_every_error_is_reported_not_only_the_first() -> None:
    data = demo_data()
    data["name"] = "Bad Name!"
    data["rollout"]["launcher"] = "ssh"
    data["drift"]["window"] = "soon"
    errors = errors_of(data)
    assert {"name", "rollout.launcher", "drift.window"} <= set(errors)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["rollout"].update(canary_groups=["nowhere"]), "rollout.canary_groups"),
        (lambda d: d["drift"].update(columns=["device_id"]), "drift.columns"),
        (lambda d: d["groups"].append(dict(d["groups"][0])), "group names must be unique"),
        (lambda d: d.update(schema=[f for f in d["schema"] if f.get("role") != "device_id"]), "device_id"),
        (lambda d: d["ingest"].update(schedule="every tuesday"), "cron"),
        (lambda d: d["groups"][0].update(selector={"bad key!": "x"}), "label key"),
    ],
)
def test_cross_field_rules(change, message: str) -> None:
    data = demo_data()
    change(data)
    errors = errors_of(data)
    assert any(message in loc or message in msg for loc, msg in errors.items()), errors


def test_yaml_syntax_error_is_a_spec_error() -> None:
    with pytest.raises(SpecInvalid) as info:
        parse_spec("name: [unclosed\n")
    assert info.value.errors[0].location == "(yaml)"


def test_file_name_must_match_pipeline_name(tmp_path: Path) -> None:
    path = tmp_path / "other_name.yaml"
    path.write_text(DEMO.read_text())
    with pytest.raises(SpecInvalid, match="must match the file name"):
        parse_spec(path.read_text(), path)


def test_a_broken_spec_never_stops_the_others_from_loading(tmp_path: Path) -> None:
    good = demo_data()
    (tmp_path / "factory_maintenance.yaml").write_text(yaml.safe_dump(good))
    second = demo_data() | {"name": "second_line"}
    (tmp_path / "second_line.yaml").write_text(yaml.safe_dump(second))
    broken = demo_data() | {"name": "broken_one", "surprise": 1}
    (tmp_path / "broken_one.yaml").write_text(yaml.safe_dump(broken))
    (tmp_path / "garbage.yaml").write_text(":::\n- [")
    loaded = load_all(tmp_path)
    assert sorted(s.name for s in loaded.specs) == ["factory_maintenance", "second_line"]
    assert {(e.path.name, e.location) for e in loaded.errors} == {
        ("broken_one.yaml", "surprise"),
        ("garbage.yaml", "(yaml)"),
    }


def test_schedules_are_cron_presets_or_durations() -> None:
    assert parse_schedule("15m") == timedelta(minutes=15)
    assert parse_schedule("*/5 * * * *") == "*/5 * * * *"
    assert parse_schedule("@hourly") == "@hourly"


def test_cli_validate_prints_every_error_with_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = demo_data()
    data["annotation"]["batch_size"] = "many"
    data["unknown_block"] = {}
    path = tmp_path / "factory_maintenance.yaml"
    path.write_text(yaml.safe_dump(data))
    assert cli_main(["spec", "validate", str(path), str(DEMO)]) == 1
    out = capsys.readouterr().out
    assert "INVALID (2 errors)" in out
    assert "annotation.batch_size:" in out
    assert "unknown_block: unknown field" in out
    assert f"{DEMO}: ok" in out
    assert cli_main(["spec", "validate", str(DEMO)]) == 0


def test_an_approval_names_who_may_give_it() -> None:
    data = demo_data()
    data["rollout"]["approval_required"] = True
    assert errors_of(data) == {
        "rollout.approvers": "Value error, approval_required needs at least one Airflow user who may approve"
    }
    data["rollout"]["approvers"] = ["alice", "alice"]
    assert errors_of(data) == {"rollout.approvers": "Value error, each Airflow user once"}
    data["rollout"]["approvers"] = ["alice", "bob:admin"]
    assert list(errors_of(data)) == ["rollout.approvers[1]"]
    data["rollout"]["approvers"] = ["alice", "ops.lead@example.com"]
    assert parse_spec(yaml.safe_dump(data)).rollout.approvers == ["alice", "ops.lead@example.com"]


def test_ingest_checks_by_role_have_safe_defaults_and_refuse_a_broken_pattern() -> None:
    from edgeloop.ingest.decode import record_schema

    spec = parse_spec(DEMO.read_text(), DEMO)
    checks = record_schema(spec).checks
    assert checks is not None
    assert (checks.max_clock_skew, checks.max_record_age) == (timedelta(minutes=15), timedelta(days=7))
    assert checks.labels == {"normal", "wear", "fault"}
    assert checks.groups == {"line-canary", "plant-north", "plant-south"}
    assert checks.device_id_ok("plant-north-0042")
    assert not any(checks.device_id_ok(bad) for bad in ("", "../x", "a\u0000b", "a\u202eb", "a" * 129, "-dash"))
    data = demo_data()
    data["ingest"].update(device_id_pattern="([a-z", max_clock_skew="0s", device_id_max_length=0)
    errors = errors_of(data)
    assert "not a regular expression" in errors["ingest.device_id_pattern"]
    assert "must be positive" in errors["ingest.max_clock_skew"]
    assert "ingest.device_id_max_length" in errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 2001-13-45", "a value cannot be read: month must be in 1..12"),
        ('a: !!int "0x"', "a value cannot be read"),
        ("a: \ud800", "a value cannot be read"),
        ("x" * (2 << 20), "more than the limit of 1048576"),
        ("[" * 50_000 + "]" * 50_000, "maximum nesting depth"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcde", "bcdef", strict=True)),
            "more than 100000 values once aliases are expanded",
        ),
    ],
)
def test_hostile_spec_text_is_only_ever_a_spec_error(text: str, message: str) -> None:
    with pytest.raises(SpecInvalid) as info:
        parse_spec(text)
    assert message in str(info.value)


def test_a_spec_file_that_is_not_utf8_is_a_spec_error(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_bytes(b"name: \xff\xfe\n")
    loaded = load_all(tmp_path)
    assert loaded.specs == [] and "not UTF-8 text" in str(loaded.errors[0])


def test_two_pipelines_whose_daemonsets_would_share_a_name_are_not_both_loaded(tmp_path: Path) -> None:
    """`ab` + group `x-inference-c` and `ab_inference_x` + group `c` both make DaemonSet ab-inference-x-inference-c."""
    for name, group in (("ab", "x-inference-c"), ("ab_inference_x", "c")):
        data = demo_data()
        data["name"] = name
        data["topics"]["prefix"] = name
        data["registry"]["model_name"] = name
        data["groups"] = [{"name": group, "strategy": "kubernetes"}]
        data["rollout"]["canary_groups"] = []
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(data))
    loaded = load_all(tmp_path)
    assert [s.name for s in loaded.specs] == ["ab"]
    (error,) = loaded.errors
    assert error.location == "groups"
    shared = "ab/x-inference-c and ab_inference_x/c would share the DaemonSet edge/ab-inference-x-inference-c"
    assert shared in str(error)


def test_a_schedule_that_is_not_text_is_an_error_at_its_path() -> None:
    data = demo_data()
    data["drift"]["schedule"] = 1
    assert "is not a cron expression" in errors_of(data)["drift.schedule"]


VISION = DEMO.parent / "visual_inspection.yaml"


def test_the_camera_spec_names_its_frame_features_and_part_classes() -> None:
    from edgeloop.vision.features import STAT_COLUMNS, embedding_columns
    from edgeloop.vision.frames import LABELS

    spec = parse_spec(VISION.read_text(), VISION)
    assert spec.features == [*STAT_COLUMNS, *embedding_columns(8)]
    assert spec.drift.columns == spec.features
    assert spec.annotation.labels == list(LABELS)
    assert spec.field_with_role("image_ref") == "frame_key"
    assert {f.name: f.role for f in spec.schema_ if f.name.startswith("frame_")} == {
        "frame_key": "image_ref",
        "frame_sha256": "meta",
        "frame_bytes": "meta",
    }
    assert [g.name for g in spec.canary_groups] == ["cell-canary"]


def test_every_shipped_spec_loads() -> None:
    loaded = load_all(DEMO.parent)
    assert loaded.errors == []
    assert {s.name for s in loaded.specs} >= {"factory_maintenance", "visual_inspection"}


def test_only_a_spec_whose_records_reference_images_has_a_frames_topic() -> None:
    camera = parse_spec(VISION.read_text(), VISION)
    tabular = parse_spec(DEMO.read_text(), DEMO)
    assert "visual_inspection.frames" in camera.all_topics
    assert "factory_maintenance.frames" not in tabular.all_topics
    data = demo_data()
    data["topics"]["ingest"] = ["telemetry", "frames"]
    assert "needs a schema field with the role 'image_ref'" in errors_of(data)["(root)"]
