"""A drift report made from hostile device values, opened in Chromium as the `viewer`: no script of theirs runs.

Story: devices send a category (and a prediction) such as `</script><script>...</script>`.
Evidently embeds category values unescaped in the report's inline script, and the plugin
serves reports from the Airflow origin, so before this was fixed the value ran as the
reader's Airflow session. The drift stage's Evidently run makes the report from such
values, the report goes where the drift stage puts it, and the browser opens it through
the plugin: the report renders, the injected code never runs, and the page has an opaque
origin (the sandbox CSP), so even a script of the report cannot read Airflow's cookie.

Needs /usr/bin/chromium (Debian package `chromium`) and the Python package playwright.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.helpers.browser import ARTIFACTS, airflow_login, chromium

from edgeloop.drift.detect import ReportInput, evidently_method
from edgeloop.drift.reports import build_report
from edgeloop.drift.results import drift_reports_prefix
from edgeloop.spec import load_spec

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "factory_maintenance.yaml"
PAYLOAD = "document.title='pwned';document.documentElement.setAttribute('data-pwned','1');alert(1)"
HOSTILE = [f"</script><script>{PAYLOAD}</script>", f'<img src=x onerror="{PAYLOAD}">', "normal"]


def hostile_report(spec: Any) -> str:
    """Evidently's HTML for a window whose device-sent strings are hostile (as the drift stage runs it)."""
    rng = np.random.default_rng(21)
    features = list(spec.drift.columns)

    def window(shift: float, values: list[str]) -> pd.DataFrame:
        frame = pd.DataFrame({f: rng.normal(shift, 1.0, 400) for f in features})
        frame["machine_type"] = [values[i % len(values)] for i in range(400)]
        frame["prediction"] = [values[(i + 1) % len(values)] for i in range(400)]
        return frame

    snapshot = build_report(
        ReportInput(
            current=window(1.5, HOSTILE),
            reference=window(0.0, ["normal", "wear"]),
            columns=(*features, "machine_type"),
            categorical=("machine_type",),
            prediction="prediction",
            method=evidently_method(spec.drift.method, 400),
            threshold=spec.drift.threshold,
            drift_share=spec.drift.drift_share,
        )
    )
    html: str = snapshot.get_html_str(as_iframe=False)
    return html


def test_a_report_made_from_hostile_device_values_runs_none_of_their_script(
    stack_env: dict[str, str], s3_client: Any
) -> None:
    from playwright.sync_api import expect

    spec = load_spec(DEMO)
    run = f"hostile__{uuid.uuid4().hex[:10]}"
    prefix = f"{drift_reports_prefix(spec)}/{run}"
    html = hostile_report(spec)
    assert "<script>document.title" not in html, "the drift stage hands Evidently no markup"
    summary = {"status": "</b><script>alert(1)</script>", "drifted_groups": ["plant-north"]}
    bucket = spec.storage.bucket
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}/group=plant-north.html", Body=html.encode())
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}/summary.json", Body=json.dumps(summary).encode())

    base = stack_env["EDGELOOP_AIRFLOW_URL"]
    try:
        with chromium() as browser:
            page = airflow_login(browser, base, "viewer", stack_env["AIRFLOW_VIEWER_PASSWORD"])
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))

            index = page.goto(f"{base}/edgeloop/generator/reports/{spec.name}/{run}/")
            assert index is not None and index.status == 200
            assert index.headers["content-security-policy"].startswith("sandbox;")
            expect(page.locator("h1")).to_have_text(f"Drift reports of {spec.name}")
            expect(page.locator("body")).to_contain_text("</b><script>alert(1)</script>")  # shown as text

            page.get_by_role("link", name="group=plant-north").click()
            page.wait_for_url("**/group=plant-north.html")
            # Evidently's own script draws the report (its text appears only once it ran) ...
            expect(page.locator("body")).to_contain_text("Drift", use_inner_text=True, timeout=60_000)
            page.wait_for_timeout(2_000)
            page.screenshot(path=ARTIFACTS / "hostile-drift-report.png", full_page=False)
            # ... the devices' never does, and the page cannot reach Airflow's session.
            assert page.title() != "pwned"
            assert page.locator("html[data-pwned]").count() == 0
            assert dialogs == []
            assert page.evaluate("window.origin") == "null"
            assert page.evaluate("(() => { try { return document.cookie; } catch (e) { return 'blocked'; } })()") in (
                "blocked",
                "",
            )
    finally:
        for key in (f"{prefix}/group=plant-north.html", f"{prefix}/summary.json"):
            s3_client.delete_object(Bucket=bucket, Key=key)
