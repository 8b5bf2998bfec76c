"""The agent stays small: it imports neither Airflow, MLflow, pandas nor scikit-learn, and checks its config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeloop.edge.agent import parse_reading
from edgeloop.edge.config import ConfigError, parse_config
from edgeloop.fleet.agents import agent_config
from edgeloop.spec import PipelineSpec

FORBIDDEN = ("airflow", "mlflow", "pandas", "sklearn", "evidently", "pydantic", "edgeloop.spec", "edgeloop.fleet")


ROOT = Path(__file__).resolve().parents[3]


def modules_of_the_agent(*, camera: bool = False) -> list[str]:
    """Every module a fresh interpreter holds after importing the agent (only the bundle on its path); with
    `camera`, also after what a camera's agent imports when it takes a frame (decoding, the pixel layout)."""
    more = "import edgeloop.vision.model, numpy; from edgeloop.vision.frames import decode_png, encode_png; "
    more += "decode_png(encode_png(numpy.zeros((4, 4), dtype=numpy.uint8))); "
    code = f"import json, sys, edgeloop.edge.agent; {more if camera else ''}print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "include")},
    )
    return list(json.loads(result.stdout))


@pytest.mark.parametrize("camera", [False, True])
def test_the_agent_imports_nothing_of_the_cloud(camera: bool) -> None:
    modules = modules_of_the_agent(camera=camera)
    assert [m for m in modules if m.split(".")[0] in FORBIDDEN or m in FORBIDDEN] == []


# The distribution that provides each third-party module the agent imports.
DISTRIBUTIONS = {"confluent_kafka": "confluent-kafka", "cryptography": "cryptography", "numpy": "numpy"}
DISTRIBUTIONS |= {"onnxruntime": "onnxruntime", "yaml": "pyyaml", "PIL": "pillow"}


@pytest.mark.parametrize("camera", [False, True])
def test_every_package_the_agent_imports_is_in_its_pinned_set(camera: bool) -> None:
    """What `sys.modules` holds after importing the agent (and taking a camera's frame), beyond the standard
    library, is installed on a gateway by requirements-agent.txt (a missing pin is an agent that does not start
    there)."""
    loaded = {m.split(".")[0] for m in modules_of_the_agent(camera=camera)}
    third_party = {m for m in loaded - set(sys.stdlib_module_names) if not m.startswith("_") and m != "edgeloop"}
    pinned = {line.split("==")[0].lower() for line in (ROOT / "requirements-agent.txt").read_text().splitlines()}
    unknown = sorted(m for m in third_party if m not in DISTRIBUTIONS and m not in pinned)
    assert not unknown, f"modules of unknown distributions: {unknown}"
    missing = sorted(DISTRIBUTIONS[m] for m in third_party if m in DISTRIBUTIONS and DISTRIBUTIONS[m] not in pinned)
    assert not missing, f"not in requirements-agent.txt: {missing}"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"device_id": "../etc"}, "device_id"),
        ({"group_id": "plant-east"}, "group_id"),
        ({"telemetry_interval_s": 0}, "telemetry_interval_s"),
        ({"kafka": {}}, "kafka"),
        ({"source": {"kind": "replay"}}, "source.path"),
        ({"http": {"port": 70000}}, "http.port"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_config_errors_name_the_field(
    spec: PipelineSpec, tmp_path: Path, change: dict[str, object], field: str
) -> None:
    raw = agent_config(spec, "plant-north", "plant-north-00001", {"bootstrap.servers": "x:1"}, tmp_path)
    raw.update(change)
    with pytest.raises(ConfigError, match=f"^{field}"):
        parse_config(raw)


def test_readings_from_outside_are_checked() -> None:
    features = ["a", "b"]
    assert parse_reading(b'{"a": 1, "b": 2.5}', features) == [1.0, 2.5]
    assert parse_reading(b"[1, 2]", features) == [1.0, 2.0]
    for bad, reason in (
        (b'{"a": 1}', "b: None"),
        (b"[1]", "needs 2 values"),
        (b'[1, "x"]', "b: 'x'"),
        (b"[[[[[[1]]]]]]", "nested"),
    ):
        with pytest.raises(ValueError, match=reason):
            parse_reading(bad, features)


def test_the_agent_knows_every_field_role_a_spec_may_give() -> None:
    from typing import get_args

    from edgeloop.edge.config import ROLES
    from edgeloop.spec import FieldRole

    assert set(ROLES) == set(get_args(FieldRole))
