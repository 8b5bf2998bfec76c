"""Ground-truth message layout and the CLI's option parsing."""

from __future__ import annotations

import json

import pytest

from edgeloop.cli import fleet_main
from edgeloop.fleet.cli import CliError
from edgeloop.simulator import groundtruth
from edgeloop.simulator.cli import parse_drift, parse_fault, parse_outage


def test_record_ids_carry_their_generation_time() -> None:
    rid = groundtruth.record_id("plant-north-00042", 1_767_225_600_123, 17)
    assert rid == "plant-north-00042-1767225600123-17"
    assert groundtruth.generated_ms(rid) == 1_767_225_600_123
    assert groundtruth.generated_ms("not-a-simulator-id") is None
    assert groundtruth.generated_ms("abc") is None


def test_truth_messages_are_chunked() -> None:
    labels = [(f"d-{i}-1000-{i}", "wear") for i in range(12_000)]
    messages = [json.loads(m) for m in groundtruth.truth_messages(labels, 1000, 1000)]
    assert [len(m["labels"]) for m in messages] == [5000, 5000, 2000]
    assert messages[0]["from_ms"] == 1000 and messages[0]["labels"]["d-0-1000-0"] == "wear"


def test_drift_option() -> None:
    drift = parse_drift("plant-south:vibration_rms:gain=1.8:offset=-0.5@120s")
    assert (drift.group, drift.feature, drift.gain, drift.offset, drift.at_s, drift.after_records) == (
        "plant-south",
        "vibration_rms",
        1.8,
        -0.5,
        120.0,
        None,
    )
    assert parse_drift("plant-south:rpm:offset=30@5000r").after_records == 5000
    assert parse_drift("plant-south:rpm:offset=30").at_s is None
    with pytest.raises(CliError, match="unknown parameters"):
        parse_drift("plant-south:rpm:scale=2")
    with pytest.raises(CliError, match="expected GROUP:FEATURE"):
        parse_drift("plant-south")


def test_outage_and_fault_options() -> None:
    outage = parse_outage("plant-north:0.25@30+60")
    assert (outage.group, outage.ratio, outage.start_s, outage.duration_s) == ("plant-north", 0.25, 30.0, 60.0)
    assert parse_outage("all@0+5").group is None
    with pytest.raises(CliError):
        parse_outage("plant-north@30")
    assert parse_fault("7=crash") == ("7", "crash")
    with pytest.raises(CliError):
        parse_fault("seven=crash")
    with pytest.raises(CliError):
        parse_fault("7=melt")


def test_cli_usage_errors_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("EDGELOOP_KAFKA_BOOTSTRAP", raising=False)
    assert fleet_main(["status", "--pipeline", "no_such_pipeline"]) == 2
    assert "no such valid pipeline spec" in capsys.readouterr().err
    assert fleet_main(["status", "--pipeline", "factory_maintenance"]) == 2
    assert "EDGELOOP_KAFKA_BOOTSTRAP" in capsys.readouterr().err
    monkeypatch.delenv("EDGELOOP_SIGNING_KEY", raising=False)
    code = fleet_main(
        ["push", "--pipeline", "factory_maintenance", "--bootstrap", "127.0.0.1:1", "--all", "--model-version", "2"]
    )
    assert code == 2
    assert "EDGELOOP_SIGNING_KEY is not set" in capsys.readouterr().err
