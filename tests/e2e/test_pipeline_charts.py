"""The Pipelines page's charts through the real api-server, Pushgateway and Prometheus.

Story: a pipeline's drift and rollout tasks pushed their metrics. Without a login the charts
route answers 401; a viewer gets each group's series, and in headless Chromium (Debian's
`chromium`) the page draws them as SVG lines when the viewer clicks "Charts".

Run as a script, this module renders the README picture from the running stack (`make docs-images` does):

    set -a; . .edgeloop/stack.env; set +a
    PYTHONPATH=include:. .venv/bin/python -m tests.e2e.test_pipeline_charts --pipeline factory_maintenance
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import delete_from_gateway
from tests.helpers.browser import ARTIFACTS, README_IMAGES, airflow_login, chromium

from edgeloop.airflow_api import AirflowApi
from edgeloop.metrics.catalogue import OVERALL_GROUP
from edgeloop.metrics.promql import wait_for_metric_families
from edgeloop.metrics.push import PUSH_JOB, BatchMetrics, grouping_key, push_batch_metrics
from edgeloop.spec import STAGES, PipelineSpec, parse_spec

pytestmark = pytest.mark.e2e

DEMO_SPEC = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "factory_maintenance.yaml"
API = "/edgeloop/generator/api"
SCRAPE_DEADLINE_S = 60.0  # four scrapes of the stack's 15 s interval
README_PICTURE = README_IMAGES / "pipelines-charts.png"


def capture_pipeline_charts(
    browser: Any, base: str, user: str, password: str, pipeline: str, out: Path, hours: int = 6
) -> Path:
    """Log in to Airflow, open Pipelines, show `pipeline`'s charts over `hours` and save a screenshot to `out`."""
    from playwright.sync_api import expect

    page = airflow_login(browser, base, user, password)
    page.set_viewport_size({"width": 1440, "height": 1180})
    page.get_by_role("link", name="Pipelines").click()
    frame = page.frame_locator('iframe[title="Pipelines"]')
    row = frame.locator(f"tr[data-pipeline={pipeline}]")
    row.get_by_role("button", name="Charts").click()
    charts = frame.locator(f'tr.charts-row[data-charts-for="{pipeline}"]')
    label = f"{hours // 24} d" if hours % 24 == 0 else f"{hours} h"
    charts.get_by_role("button", name=label, exact=True).click()
    expect(charts.locator('.ranges button[aria-pressed="true"]')).to_have_text(label)
    expect(charts.locator(".charts-status")).not_to_have_text("Loading charts…")
    expect(row.locator("td.champion")).not_to_have_text("…")  # the slower status columns are filled in too
    charts.scroll_into_view_if_needed()
    box = charts.bounding_box()
    out.parent.mkdir(parents=True, exist_ok=True)
    viewport = page.viewport_size or {"width": 1440, "height": 1180}
    bottom = min(viewport["height"], box["y"] + box["height"] + 12) if box else viewport["height"]
    page.screenshot(path=out, clip={"x": 0, "y": 0, "width": viewport["width"], "height": bottom})
    page.context.close()
    return out


# --- the story ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def charted(stack_env: dict[str, str]) -> Iterator[PipelineSpec]:
    """A throwaway pipeline (the demo spec renamed) whose drift and rollout tasks pushed their metrics."""
    base = stack_env["EDGELOOP_AIRFLOW_URL"]
    admin = AirflowApi.login(base, "admin", stack_env["AIRFLOW_ADMIN_PASSWORD"])
    name = f"charts_e2e_{uuid.uuid4().hex[:8]}"
    text = DEMO_SPEC.read_text().replace("factory_maintenance", name)
    spec = parse_spec(text)
    created = admin.session.post(f"{base}{API}/pipelines", json={"text": text, "create_topics": False}, timeout=60)
    assert created.status_code == 201, created.text
    gateway = stack_env["EDGELOOP_PUSHGATEWAY_URL"]
    keys = [grouping_key(spec, f"{name}__drift", "publish_alerts"), grouping_key(spec, f"{name}__rollout", "gate")]
    try:
        drift = BatchMetrics(spec)
        for i, scope in enumerate([*(g.name for g in spec.groups), OVERALL_GROUP]):
            for column in spec.drift.columns:
                drift.set("edgeloop_drift_score", 0.05 * (i + 1), group=scope, column=column)
        push_batch_metrics(drift, gateway, keys[0])
        rollout = BatchMetrics(spec)
        for group in spec.groups:
            rollout.set("edgeloop_rollout_devices_applied_ratio", 1.0, group=group.name, wave=group.wave)
            rollout.set("edgeloop_rollout_model_version", 2, group=group.name)
        push_batch_metrics(rollout, gateway, keys[1])
        yield spec
    finally:
        for key in keys:
            delete_from_gateway(gateway, job=PUSH_JOB, grouping_key=key)
        _remove_spec(admin, base, name)


def _remove_spec(admin: AirflowApi, base: str, name: str) -> None:
    found = admin.session.get(f"{base}{API}/pipelines/{name}", timeout=30)
    if found.status_code == 200:
        version = found.json()["version"]
        admin.session.delete(f"{base}{API}/pipelines/{name}", params={"version": version}, timeout=30)
    for stage in STAGES:  # DAGs the dag-processor may have made from the spec meanwhile (paused)
        admin.session.delete(f"{base}/api/v2/dags/{name}__{stage}", timeout=30)


def test_the_charts_route_needs_a_login_and_answers_each_groups_series(
    stack_env: dict[str, str], charted: PipelineSpec
) -> None:
    base = stack_env["EDGELOOP_AIRFLOW_URL"]
    url = f"{base}{API}/pipelines/{charted.name}/charts"
    assert requests.get(url, timeout=30).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer not-a-token"}, timeout=30).status_code in (401, 403)

    missing = wait_for_metric_families(
        stack_env["EDGELOOP_PROMETHEUS_URL"],
        ["edgeloop_drift_score", "edgeloop_rollout_devices_applied_ratio", "edgeloop_rollout_model_version"],
        pipeline=charted.name,
        deadline_s=SCRAPE_DEADLINE_S,
    )
    assert missing == []

    viewer = AirflowApi.login(base, "viewer", stack_env["AIRFLOW_VIEWER_PASSWORD"])
    answer = viewer.session.get(url, params={"hours": 1}, timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["available"] is True, body["message"]
    charts = {chart["id"]: chart for chart in body["charts"]}
    groups = [g.name for g in charted.groups]
    assert [s["name"] for s in charts["drift"]["series"]] == [*groups, "whole fleet"]
    last = {s["name"]: s["points"][-1][1] for s in charts["drift"]["series"]}
    assert last == pytest.approx({"line-canary": 0.05, "plant-north": 0.10, "plant-south": 0.15, "whole fleet": 0.2})
    waves = [f"wave {g.wave} · {g.name}" for g in sorted(charted.groups, key=lambda g: g.wave)]
    assert [s["name"] for s in charts["rollout"]["series"]] == waves
    assert {s["name"] for s in charts["versions"]["series"]} >= set(groups)


def test_a_viewer_sees_the_charts_drawn_on_the_pipelines_page(stack_env: dict[str, str], charted: PipelineSpec) -> None:
    from playwright.sync_api import expect

    wait_for_metric_families(
        stack_env["EDGELOOP_PROMETHEUS_URL"], ["edgeloop_drift_score"], pipeline=charted.name, deadline_s=60
    )
    with chromium() as browser:
        out = capture_pipeline_charts(
            browser,
            stack_env["EDGELOOP_AIRFLOW_URL"],
            "viewer",
            stack_env["AIRFLOW_VIEWER_PASSWORD"],
            charted.name,
            ARTIFACTS / "pipelines-charts-e2e.png",
            hours=1,
        )
        page = airflow_login(browser, stack_env["EDGELOOP_AIRFLOW_URL"], "viewer", stack_env["AIRFLOW_VIEWER_PASSWORD"])
        page.get_by_role("link", name="Pipelines").click()
        frame = page.frame_locator('iframe[title="Pipelines"]')
        frame.locator(f"tr[data-pipeline={charted.name}]").get_by_role("button", name="Charts").click()
        charts = frame.locator("tr.charts-row")
        expect(charts.locator("figure[data-chart=drift] path.series")).to_have_count(len(charted.groups) + 1)
        expect(charts.locator("figure[data-chart=rollout] path.series")).to_have_count(len(charted.groups))
        expect(charts.locator("figure[data-chart=drift] .chart-legend li").first).to_contain_text("line-canary 0.05")
        expect(charts.locator("figure[data-chart=drift] line.threshold")).to_have_count(1)
        frame.locator(f"tr[data-pipeline={charted.name}]").get_by_role("button", name="Charts").click()
        expect(charts).to_have_count(0)  # a second click closes them
    assert out.stat().st_size > 10_000


# --- the README picture ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Render the README picture of a pipeline's charts from the running stack (variables of stack.env)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--pipeline", default="factory_maintenance")
    parser.add_argument("--hours", type=int, default=6, choices=(1, 6, 24, 168))
    parser.add_argument("--out", type=Path, default=README_PICTURE)
    parser.add_argument("--user", default="viewer")
    args = parser.parse_args(argv)
    base = os.environ["EDGELOOP_AIRFLOW_URL"]
    password = os.environ[f"AIRFLOW_{args.user.upper()}_PASSWORD"]
    with chromium() as browser:
        out = capture_pipeline_charts(browser, base, args.user, password, args.pipeline, args.out, args.hours)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
