"""The closed loop with the demo pipeline in profiles mode: devices send profiles and chosen records only.

The demo spec under another name, `telemetry.mode: profiles` (30 s profile windows), on the real
stack: drift injected into plant-north -> the drift stage merges the devices' profiles and raises
one alert for plant-north -> an annotation batch from the sampled records -> a new champion on
every simulated device. The pipeline is removed when the test ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.helpers.pipeline_copy import pipeline_copy

from edgeloop.demo import (
    DemoSettings,
    StageWatcher,
    Timeline,
    all_devices_on,
    fleet_versions,
    load_pipelines,
    run_loop,
    start_bot,
    start_fleet,
    xcom,
)
from edgeloop.devstack.config import StackConfig
from edgeloop.ingest.keys import raw_prefix
from edgeloop.spec import SAMPLE_REASON_FIELD, PipelineSpec

pytestmark = [pytest.mark.timeout(2400)]

DEVICES = 150


def profiles_spec(name: str) -> dict[str, Any]:
    demo = StackConfig.from_env().pipelines_dir / "factory_maintenance.yaml"
    data: dict[str, Any] = yaml.safe_load(demo.read_text())
    data["name"] = name
    data["description"] = "e2e test of the closed loop in profiles mode (removed when the test ends)"
    data["topics"].update({"prefix": name, "ingest": ["telemetry", "profiles"]})
    data["registry"]["model_name"] = name
    data["schema"].append(SAMPLE_REASON_FIELD)
    data["telemetry"] = {"mode": "profiles", "window": "30s"}
    return data


@pytest.fixture(scope="module")
def profiles_pipeline(airflow_api: Any, s3_client: Any) -> Iterator[tuple[PipelineSpec, StackConfig, dict[str, str]]]:
    with pipeline_copy(airflow_api, s3_client, "profiles_e2e", profiles_spec) as copy:
        yield copy.spec, copy.cfg, copy.env


@pytest.mark.loop
def test_drift_seen_in_profiles_ends_in_a_better_model_on_every_device(
    airflow_api: Any,
    profiles_pipeline: tuple[PipelineSpec, StackConfig, dict[str, str]],
    s3_client: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec, cfg, env = profiles_pipeline
    settings = DemoSettings(pipeline=spec.name, devices=DEVICES, clean_seconds=45)
    load_pipelines(airflow_api, [spec])
    start_fleet(cfg, spec, settings, {**env})
    start_bot(cfg, spec, settings, {**env})
    watcher = StageWatcher(airflow_api, spec, Timeline())
    watcher.baseline()
    with capsys.disabled():
        summary = run_loop(airflow_api, env, spec, watcher, settings, cfg)
        print(f"\n  closed loop in profiles mode: {summary['loop_seconds']:.0f} s ({summary.get('stage_seconds')})")

    assert summary["batch_group"] == ["plant-north"]
    assert summary["gate_decision"] == "promote"
    assert summary["trained_version"] == summary["champion_now"] != summary["first_champion"]
    assert summary["rollout_waves"] == ["pass", "pass"]
    assert all_devices_on(fleet_versions(env, spec), summary["champion_now"], DEVICES)

    checked = xcom(airflow_api, f"{spec.name}__drift", summary["drift_run"], "check_drift") or {}
    assert checked.get("telemetry") == "profiles", checked
    assert checked["profiles"] > 0 and checked["records"] > 10 * checked["sampled_records"] > 0, checked
    listed = s3_client.list_objects_v2(Bucket=spec.storage.bucket, Prefix=raw_prefix(spec, spec.topic("profiles")))
    assert listed.get("KeyCount", 0) > 0
