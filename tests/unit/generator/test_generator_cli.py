"""`edgeloop spec new` refuses bad arguments before it talks to Kafka (the rest runs against real Kafka)."""

from __future__ import annotations

import io

import pytest

from edgeloop.generator.cli import EXIT_USAGE, build_parser, spec_new


def test_an_invalid_name_is_refused_before_any_network_call() -> None:
    err = io.StringIO()
    code = spec_new(
        ["--from-topic", "plant1.telemetry", "--template", "predictive_maintenance", "--name", "Plant-1"],
        environ={"EDGELOOP_KAFKA_BOOTSTRAP": "127.0.0.1:1"},
        err=err,
    )
    assert code == EXIT_USAGE
    assert err.getvalue().startswith("--name: 'Plant-1' is not a valid pipeline name")


@pytest.mark.parametrize(
    "argv",
    [
        ["--template", "predictive_maintenance"],
        ["--from-topic", "plant1.telemetry", "--template", "fraud_detection"],
        ["--from-topic", "plant1.telemetry", "--template", "anomaly_detection", "--preset", "yolo"],
    ],
)
def test_missing_or_unknown_choices_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err
