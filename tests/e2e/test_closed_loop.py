"""The closed loop through the real api-server, scheduler, dag-processor and triggerer.

Story 1: drift injected into plant-north only -> one drift alert -> one annotation batch from plant-north
-> a new curated version -> a new model version that passes the gate -> canary, then production rollout
-> every simulated device reports the new version -> `champion` moved -> the audit record is complete.
Story 2: a deliberately bad model stops at the canary gate and the canary devices are rolled back.

Everything is driven the way an operator would: Airflow's REST API (token login), Kafka, S3 and MLflow.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.helpers.browser import ARTIFACTS, airflow_login, chromium, keep_readme_picture

from edgeloop.demo import (
    DemoSettings,
    StageWatcher,
    Timeline,
    all_devices_on,
    champion,
    fleet_versions,
    load_pipelines,
    run_loop,
    start_bot,
    start_fleet,
    xcom,
)
from edgeloop.devstack.config import StackConfig
from edgeloop.devstack.stack import read_env_file, stop_process
from edgeloop.registry.register import copy_version
from edgeloop.spec import load_all

# The two stories run with `make test-loop` (about 15 minutes); the config push runs in the e2e tier.
pytestmark = [pytest.mark.timeout(2700)]

PIPELINE = "factory_maintenance"
DEVICES = 150


@pytest.fixture(scope="module")
def loop_env(stack_env: dict[str, str]) -> Iterator[dict[str, Any]]:
    cfg = StackConfig.from_env()
    env = read_env_file(cfg)
    spec = next(s for s in load_all(cfg.pipelines_dir).specs if s.name == PIPELINE)
    yield {"cfg": cfg, "env": env, "spec": spec}
    stop_process("fleet-simulator", cfg)
    stop_process("annotate-bot", cfg)


def audit_record(s3: Any, bucket: str, spec: Any, rollout_id: str) -> dict[str, Any]:
    from edgeloop.rollout.audit import audit_key

    return dict(json.loads(s3.get_object(Bucket=bucket, Key=audit_key(spec, rollout_id))["Body"].read()))


def loop_runs(api: Any, spec: Any) -> dict[str, Any]:
    """The newest drift run that raised an alert and the newest finished annotate run, from the REST API."""
    found: dict[str, Any] = {}
    for run in api.runs(f"{spec.name}__drift", limit=50):
        published = xcom(api, f"{spec.name}__drift", run["dag_run_id"], "publish_alerts") or {}
        if published.get("alert_ids"):
            found["drift_run"] = run["dag_run_id"]
            break
    for run in api.runs(f"{spec.name}__annotate", limit=20):
        if run["state"] == "success":
            opened = xcom(api, f"{spec.name}__annotate", run["dag_run_id"], "open_batch") or {}
            found.update(annotate_run=run["dag_run_id"], batch_url=opened.get("url"), batch=opened.get("batch_id"))
            break
    return found


@pytest.mark.loop
def test_drift_in_one_group_ends_in_a_better_model_on_every_device(
    airflow_api: Any, loop_env: dict[str, Any], s3_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, env, spec = loop_env["cfg"], loop_env["env"], loop_env["spec"]
    settings = DemoSettings(devices=DEVICES, clean_seconds=45)
    load_pipelines(airflow_api, [spec])
    child_env = {**env}
    start_fleet(cfg, spec, settings, child_env)
    start_bot(cfg, spec, settings, child_env)
    timeline = Timeline()
    watcher = StageWatcher(airflow_api, spec, timeline)
    watcher.baseline()
    with capsys.disabled():
        summary = run_loop(airflow_api, env, spec, watcher, settings, cfg)
        shares = ", ".join(f"{k} {v:.0f} s" for k, v in (summary.get("stage_seconds") or {}).items())
        print(
            f"\n  closed loop: drift injection to every device on the new champion in {summary['loop_seconds']:.0f} s"
            f" ({shares})"
        )

    # one alert, one batch, from the drifted group only
    assert summary["batch_group"] == ["plant-north"]
    assert summary["curated_version"]
    assert summary["gate_decision"] == "promote"
    assert summary["trained_version"] == summary["champion_now"] != summary["first_champion"]
    assert summary["rollout_waves"] == ["pass", "pass"]
    versions = fleet_versions(env, spec)
    assert all_devices_on(versions, summary["champion_now"], DEVICES), versions
    record = audit_record(s3_client, spec.storage.bucket, spec, summary["rollout_id"])
    assert record["outcome"] == "promoted"
    steps = [step["step"] for step in record["steps"]]
    assert steps[0] == "plan" and steps[-1] == "promote"
    assert {"apply-wave-0", "gate-wave-0", "apply-wave-1", "gate-wave-1"} <= set(steps)
    loop_env["good_version"] = summary["champion_now"]
    loop_env["summary"] = summary


@pytest.mark.loop
def test_the_airflow_ui_shows_the_loop_and_opens_its_drift_report_and_label_studio_batch(
    stack_env: dict[str, str], airflow_api: Any, loop_env: dict[str, Any]
) -> None:
    """In headless Chromium, as the read-only `viewer`: the demo DAGs with their runs, then the extra links."""
    from playwright.sync_api import expect

    summary = loop_env.get("summary") or loop_runs(airflow_api, loop_env["spec"])
    assert summary.get("drift_run") and summary.get("annotate_run") and summary.get("batch_url"), summary
    base = stack_env["EDGELOOP_AIRFLOW_URL"]
    with chromium() as browser:
        page = airflow_login(browser, base, "viewer", stack_env["AIRFLOW_VIEWER_PASSWORD"])
        page.goto(f"{base}/dags")
        page.get_by_placeholder(re.compile("search dags", re.IGNORECASE)).fill(PIPELINE)
        for stage in ("ingest", "drift", "annotate", "train", "rollout"):
            expect(page.get_by_role("link", name=f"{PIPELINE}__{stage}", exact=True)).to_be_visible()
        page.screenshot(path=ARTIFACTS / "loop-dags.png")

        page.goto(f"{base}/dags/{PIPELINE}__drift/runs/{summary['drift_run']}/tasks/check_drift/details")
        report_link = page.get_by_role("link", name="Drift report")
        expect(report_link).to_be_visible()
        page.screenshot(path=ARTIFACTS / "loop-drift-task.png")
        report_link.click()  # same origin: the plugin serves it behind the Airflow login
        page.wait_for_url("**/edgeloop/generator/reports/**")
        expect(page.locator("h1")).to_have_text(f"Drift reports of {PIPELINE}")
        expect(page.locator("tbody tr", has_text="group=plant-north")).to_contain_text("drifted")
        for clean in ("group=plant-south", "group=line-canary"):
            expect(page.locator("tbody tr", has_text=clean)).not_to_contain_text("drifted")
        page.screenshot(path=ARTIFACTS / "loop-drift-reports.png")
        page.get_by_role("link", name="group=plant-north").click()
        page.wait_for_url("**/group=plant-north.html")
        expect(page.locator("body")).to_contain_text("Drift", timeout=60_000)  # Evidently's report renders
        page.screenshot(path=ARTIFACTS / "loop-drift-report.png", full_page=False)

        page.goto(f"{base}/dags/{PIPELINE}__annotate/runs/{summary['annotate_run']}/tasks/wait_for_labels/details")
        batch_link = page.get_by_role("link", name="Label Studio batch")
        expect(batch_link).to_have_attribute("href", summary["batch_url"])
        page.screenshot(path=ARTIFACTS / "loop-annotate-task.png")

        # the link opens the batch in Label Studio (its own login)
        secrets = json.loads((loop_env["cfg"].secrets_file).read_text())
        tool = page.context.new_page()
        tool.goto(summary["batch_url"])
        tool.locator("input[name=email]").fill("admin@edgeloop.local")
        tool.locator("input[name=password]").fill(secrets["label_studio_password"])
        tool.locator("input[name=password]").press("Enter")
        tool.wait_for_url(re.compile(r".*/projects/\d+.*"))
        tool.goto(summary["batch_url"])
        expect(tool.get_by_text(str(summary["batch"])).first).to_be_visible(timeout=60_000)
        tool.screenshot(path=ARTIFACTS / "loop-label-studio-batch.png")
    for name in ("loop-drift-task.png", "loop-drift-reports.png", "loop-annotate-task.png"):
        keep_readme_picture(ARTIFACTS / name, name)


@pytest.mark.loop
def test_a_bad_model_stops_at_the_canary_and_is_rolled_back(
    airflow_api: Any, loop_env: dict[str, Any], s3_client: Any
) -> None:
    from mlflow import MlflowClient

    cfg, env, spec = loop_env["cfg"], loop_env["env"], loop_env["spec"]
    good = loop_env.get("good_version") or champion(env, spec)
    assert good, "story 1 must leave a champion"
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    bad = copy_version(client, spec.registry.model_name, good, "deliberately bad")
    # the simulated devices crash on this version (restarted with the fault; their twin state survives)
    stop_process("fleet-simulator", cfg)
    start_fleet(cfg, spec, DemoSettings(devices=DEVICES, faults=(f"{bad}=crash",)), {**env})
    time.sleep(10)

    run_id = f"manual__e2e_bad_model_{bad}_{int(time.time())}"  # a reused state folder may hold an older run
    airflow_api.trigger(f"{PIPELINE}__rollout", run_id, conf={"model_version": str(bad)}, note="e2e: a bad model")
    run = airflow_api.wait_for_run(f"{PIPELINE}__rollout", run_id, timeout=900)
    assert run["state"] == "failed"
    tis = {
        t["task_id"]: t["state"]
        for t in airflow_api.get(f"/dags/{PIPELINE}__rollout/dagRuns/{run_id}/taskInstances")["task_instances"]
    }
    assert tis["gate_canary"] == "failed"
    assert tis["apply_wave_1"] in ("upstream_failed", "skipped")
    assert tis["promote"] == "skipped"
    assert tis["rollback"] == "failed"  # it rolls back, then fails the run on purpose

    assert champion(env, spec) == good
    deadline = time.monotonic() + 120
    versions: dict[str, dict[str, int]] = {}
    while time.monotonic() < deadline:
        versions = fleet_versions(env, spec)
        if versions.get("line-canary", {}).get(str(good)) == sum(versions.get("line-canary", {}).values()):
            break
        time.sleep(3)
    assert set(versions["line-canary"]) == {str(good)}, versions
    for production in ("plant-north", "plant-south"):
        assert str(bad) not in versions[production], versions

    plan = airflow_api.get(f"/dags/{PIPELINE}__rollout/dagRuns/{run_id}/taskInstances/plan/xcomEntries/return_value")
    record = audit_record(s3_client, spec.storage.bucket, spec, plan["value"]["rollout_id"])
    assert record["outcome"] == "rolled_back"
    assert record["rolled_back_groups"] == ["line-canary"]
    assert any("error rate" in reason or "failed" in reason for reason in record["reasons"])


@pytest.mark.loop
def test_every_metric_family_reaches_prometheus_after_the_loop(stack_env: dict[str, str]) -> None:
    """After both stories every family of the catalogue has a series of the pipeline in the real Prometheus."""
    from edgeloop.metrics.catalogue import pipeline_metric_names
    from edgeloop.metrics.promql import wait_for_metric_families

    families = pipeline_metric_names(cameras=False)  # the demo pipeline's devices are sensors
    missing = wait_for_metric_families(stack_env["EDGELOOP_PROMETHEUS_URL"], families, pipeline=PIPELINE, deadline_s=90)
    assert missing == [], f"no series in Prometheus for: {missing}"


@pytest.mark.e2e
def test_a_config_push_waits_in_the_triggerer_until_the_group_applied_it(
    airflow_api: Any, loop_env: dict[str, Any]
) -> None:
    cfg, env, spec = loop_env["cfg"], loop_env["env"], loop_env["spec"]
    load_pipelines(airflow_api, [spec])
    start_fleet(cfg, spec, DemoSettings(devices=DEVICES), {**env})  # no-op when it is already running
    run_id = f"manual__e2e_config_push_{int(time.time())}"
    config = {"telemetry_interval_s": 1.0, "confidence_threshold": 0.4}
    airflow_api.trigger(
        f"{PIPELINE}__config_push", run_id, conf={"group": "line-canary", "config": config, "timeout_seconds": 300}
    )
    run = airflow_api.wait_for_run(f"{PIPELINE}__config_push", run_id, timeout=420)
    assert run["state"] == "success"
    dag = f"{PIPELINE}__config_push"
    waited = airflow_api.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances/wait_until_applied/xcomEntries/return_value")
    progress = waited["value"]
    assert progress["devices"] > 0
    assert progress["applied"] == progress["devices"]
    assert progress["failed_count"] == 0 and progress["pending_count"] == 0
