"""Schema inference: clean samples of each template, then the messy records real gateways send."""

from __future__ import annotations

from typing import Any

import pytest
from generator_kit import messages

from edgeloop.generator.inference import InferredSchema, infer_schema
from edgeloop.generator.templates import TEMPLATES, get_template

PM = get_template("predictive_maintenance")
IMAGE = get_template("image_classification")
ANOMALY = get_template("anomaly_detection")


def by_name(schema: InferredSchema) -> dict[str, Any]:
    return {f.name: f for f in schema.fields}


def examples(template_id: str, n: int = 30) -> list[dict[str, Any]]:
    return [get_template(template_id).example_record(i) for i in range(n)]


@pytest.mark.parametrize("template_id", sorted(TEMPLATES))
def test_every_template_example_gets_its_ids_time_and_features(template_id: str) -> None:
    template = get_template(template_id)
    schema = infer_schema(messages(examples(template_id)), template)
    fields = by_name(schema)
    assert schema.decoded == schema.sampled == 30
    assert schema.problems == [] and schema.missing_roles == []
    assert {n: fields[n].role for n in ("record_id", "device_id", "group_id", "ts")} == {
        "record_id": "record_id",
        "device_id": "device_id",
        "group_id": "group_id",
        "ts": "timestamp",
    }
    assert fields["ts"].type == "timestamp"
    assert fields["model_version"].role == "model_version"
    assert any(f.role == "feature" for f in schema.fields)
    assert not any(f.nullable for f in schema.fields)


def test_predictive_maintenance_sensors_are_features_and_labels_come_from_predictions() -> None:
    schema = infer_schema(messages(examples("predictive_maintenance")), PM)
    fields = by_name(schema)
    features = [f.name for f in schema.fields if f.role == "feature"]
    assert features == ["vibration_rms", "vibration_peak", "temperature_c", "motor_current_a", "rpm", "acoustic_db"]
    assert all(fields[f].type == "float" for f in features)
    assert (fields["prediction"].role, fields["confidence"].role) == ("prediction", "confidence")
    assert schema.labels == ["fault", "normal", "wear"]
    assert schema.groups == {"line-canary": 8, "plant-north": 8, "plant-south": 8}


def test_image_classification_finds_the_image_reference_by_its_values() -> None:
    records = examples("image_classification")
    for r in records:
        r["frame_location"] = r.pop("image_uri")  # a name no list knows: the s3:// values give it away
    schema = infer_schema(messages(records), IMAGE)
    fields = by_name(schema)
    assert fields["frame_location"].role == "image_ref"
    assert "image URIs" in fields["frame_location"].role_reason
    assert [f.name for f in schema.fields if f.role == "feature"] == [
        "brightness",
        "sharpness",
        "emb_0",
        "emb_1",
        "emb_2",
    ]
    assert schema.labels == ["defect", "ok"]


def test_image_template_says_so_when_no_field_is_an_image_reference() -> None:
    records = examples("predictive_maintenance", 10)
    schema = infer_schema(messages(records), IMAGE)
    assert any("image reference" in p for p in schema.problems)


def test_anomaly_detection_without_labels_uses_the_score_as_confidence() -> None:
    schema = infer_schema(messages(examples("anomaly_detection")), ANOMALY)
    fields = by_name(schema)
    assert fields["anomaly_score"].role == "confidence"
    assert not any(f.role == "prediction" for f in schema.fields)
    assert schema.labels == []
    assert [f.name for f in schema.fields if f.role == "feature"] == ["flow_lpm", "pressure_bar", "power_w"]


def test_an_anomaly_flag_is_the_prediction_for_the_anomaly_template() -> None:
    records = examples("anomaly_detection", 10)
    for i, r in enumerate(records):
        r["is_anomaly"] = i % 4 == 0
    fields = by_name(infer_schema(messages(records), ANOMALY))
    assert (fields["is_anomaly"].role, fields["is_anomaly"].type) == ("prediction", "bool")


def test_undecodable_messages_are_named_by_offset_and_the_rest_is_used() -> None:
    records: list[Any] = examples("predictive_maintenance", 10)
    records[2] = b'{"device_id": "dev-1", "vibr'  # truncated
    records[4] = b"\xff\xfe{not utf-8"
    records[6] = None  # tombstone
    records[8] = [1, 2, 3]  # JSON, but not an object
    records[9] = b'{"device_id": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"  # 100 KB deep
    schema = infer_schema(messages(records), PM)
    assert (schema.sampled, schema.decoded) == (10, 5)
    assert schema.problems == [
        "partition 0 offset 2: not JSON: Unterminated string starting at: line 1 column 24 (char 23)",
        "partition 0 offset 4: not UTF-8 text",
        "partition 0 offset 6: empty message (tombstone)",
        "partition 0 offset 8: a JSON list, not an object",
        "partition 0 offset 9: nested more than the limit of 32 levels deep",
    ]
    assert by_name(schema)["rpm"].type == "float"


def test_a_feature_missing_from_a_few_records_stays_required_with_a_note() -> None:
    records = examples("predictive_maintenance", 30)
    del records[5]["rpm"]
    rpm = by_name(infer_schema(messages(records), PM))["rpm"]
    assert (rpm.nullable, rpm.missing, rpm.present) == (False, 1, 29)
    assert any("missing or null in 1 of 30 records" in n for n in rpm.notes)


def test_a_field_often_missing_or_ever_null_is_optional() -> None:
    records = examples("predictive_maintenance", 30)
    for r in records[:10]:
        del r["acoustic_db"]
    for r in records:
        r["config_version"] = None if r["device_id"] == "dev-003" else "cfg-1"
    fields = by_name(infer_schema(messages(records), PM))
    assert fields["acoustic_db"].nullable and fields["acoustic_db"].missing == 10
    assert fields["config_version"].nullable and fields["config_version"].role == "config_version"


def test_ids_are_never_optional_even_when_some_records_lack_them() -> None:
    records = examples("predictive_maintenance", 20)
    for r in records[:5]:
        del r["device_id"]
    device = by_name(infer_schema(messages(records), PM))["device_id"]
    assert device.role == "device_id" and not device.nullable
    assert any("dead-letter" in n for n in device.notes)


def test_numbers_sent_as_text_keep_the_number_type_and_are_reported() -> None:
    records = examples("predictive_maintenance", 30)
    records[3]["temperature_c"] = "n/a"
    temperature = by_name(infer_schema(messages(records), PM))["temperature_c"]
    assert temperature.type == "float" and temperature.role == "feature"
    assert temperature.notes == ["1 of 30 values are not numbers (e.g. n/a): such records go to dead-letter"]


def test_mixed_integers_and_decimals_are_float_and_many_strings_make_text() -> None:
    records = examples("predictive_maintenance", 20)
    for i, r in enumerate(records):
        r["rpm"] = 1450 if i % 2 else 1450.5
        r["firmware"] = "v2" if i % 2 else 7
    fields = by_name(infer_schema(messages(records), PM))
    assert fields["rpm"].type == "float"
    assert any("mixed integers" in n for n in fields["rpm"].notes)
    assert (fields["firmware"].type, fields["firmware"].role) == ("string", "meta")
    assert any("mixed numbers" in n for n in fields["firmware"].notes)


def test_epoch_milliseconds_under_a_time_name_are_the_timestamp() -> None:
    records = examples("predictive_maintenance", 10)
    for i, r in enumerate(records):
        del r["ts"]
        r["time"] = 1_767_225_600_000 + i
    time_field = by_name(infer_schema(messages(records), PM))["time"]
    assert (time_field.role, time_field.type) == ("timestamp", "timestamp")


def test_camel_case_names_are_recognised() -> None:
    records = [
        {"recordId": f"r{i}", "deviceId": "d1", "groupId": "g1", "eventTime": "2026-01-01T00:00:00Z", "temp": 1.5 + i}
        for i in range(5)
    ]
    fields = by_name(infer_schema(messages(records), PM))
    roles = {n: f.role for n, f in fields.items()}
    assert roles == {
        "recordId": "record_id",
        "deviceId": "device_id",
        "groupId": "group_id",
        "eventTime": "timestamp",
        "temp": "feature",
    }


def test_nested_values_and_names_a_spec_cannot_hold_are_skipped_with_a_reason() -> None:
    records = examples("predictive_maintenance", 5)
    for r in records:
        r["location"] = {"lat": 1.0, "lon": 2.0}
        r["temp-c"] = 20.5
    schema = infer_schema(messages(records), PM)
    assert "location" not in by_name(schema) and "temp-c" not in by_name(schema)
    assert schema.skipped_fields == [
        "'location': nested objects or lists are not supported in a spec schema",
        "'temp-c': a spec field name must match ^[A-Za-z_][A-Za-z0-9_]{0,63}$",
    ]


def test_missing_required_roles_are_listed_for_the_user_to_pick() -> None:
    records = [{"sensor_id": "s1", "reading": 1.0 + i, "at": "2026-01-01T00:00:00Z"} for i in range(5)]
    schema = infer_schema(messages(records), PM)
    assert schema.missing_roles == ["record_id", "group_id"]
    assert {f.name: f.role for f in schema.fields} == {
        "sensor_id": "device_id",
        "reading": "feature",
        "at": "timestamp",
    }


def test_a_field_that_is_always_null_is_an_optional_guess() -> None:
    records = examples("predictive_maintenance", 5)
    for r in records:
        r["notes"] = None
    notes = by_name(infer_schema(messages(records), PM))["notes"]
    assert (notes.type, notes.nullable) == ("string", True)
    assert notes.notes[0].startswith("always missing or null")


def test_only_one_field_gets_each_single_role() -> None:
    records = examples("predictive_maintenance", 10)
    for r in records:
        r["device"] = r["device_id"]  # a second candidate for device_id
    schema = infer_schema(messages(records), PM)
    holders = [f.name for f in schema.fields if f.role == "device_id"]
    assert holders == ["device_id"]
    assert by_name(schema)["device"].role == "meta"


def test_no_messages_give_an_empty_proposal_not_an_error() -> None:
    schema = infer_schema([], PM)
    assert schema.fields == [] and schema.decoded == 0
    assert schema.missing_roles == ["record_id", "device_id", "group_id", "timestamp"]


def test_problem_lists_are_capped() -> None:
    schema = infer_schema(messages([b"nope"] * 30), PM)
    assert len(schema.problems) == 21
    assert schema.problems[-1] == "... and 10 more"
