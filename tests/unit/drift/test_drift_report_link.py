"""The "Drift report" extra link and the report index page: pure functions, no services."""

from __future__ import annotations

from edgeloop.drift.link import drift_link_for, report_url, run_index_url
from edgeloop.generator.app import render_report_index

SUMMARY_KEY = "edgeloop/reports/drift/factory_maintenance/scheduled__2026-11-25T10_00_00_00_00/summary.json"


def test_report_urls_name_the_pipeline_the_run_and_the_file() -> None:
    key = SUMMARY_KEY.replace("summary.json", "group=plant-north.html")
    assert report_url("factory_maintenance", key) == (
        "/edgeloop/generator/reports/factory_maintenance/scheduled__2026-11-25T10_00_00_00_00/group=plant-north.html"
    )
    assert run_index_url("factory_maintenance", SUMMARY_KEY) == (
        "/edgeloop/generator/reports/factory_maintenance/scheduled__2026-11-25T10_00_00_00_00/"
    )


def test_the_link_shows_only_for_runs_that_wrote_or_planned_reports() -> None:
    fleet = SUMMARY_KEY.replace("summary.json", "fleet.html")
    result = {"summary_key": SUMMARY_KEY, "reports": {"fleet": fleet}}
    assert drift_link_for(result, "factory_maintenance").endswith("/scheduled__2026-11-25T10_00_00_00_00/")
    clean = {"summary_key": SUMMARY_KEY, "reports": {}, "pending_reports": {"fleet": fleet}}
    assert drift_link_for(clean, "factory_maintenance").endswith("/scheduled__2026-11-25T10_00_00_00_00/")
    assert drift_link_for({"summary_key": SUMMARY_KEY, "reports": {}}, "factory_maintenance") == ""
    assert drift_link_for(None, "factory_maintenance") == ""
    assert drift_link_for("skipped: not enough data", "factory_maintenance") == ""


def test_the_index_lists_drifted_reports_first_with_their_columns() -> None:
    summary = {
        "status": "drift",
        "drifted_groups": ["plant-north"],
        "overall": {"dataset_drift": False, "drift_share": 0.2, "drifted_columns": {}},
        "groups": {
            "plant-north": {"dataset_drift": True, "drift_share": 0.6, "drifted_columns": {"temperature_c": 0.9}},
            "plant-south": {"dataset_drift": False, "drift_share": 0.0, "drifted_columns": {}},
        },
    }
    files = ["fleet.html", "group=plant-north.html", "group=plant-south.html", "summary.json"]
    page = render_report_index("factory_maintenance", "run_1", files, summary)
    links = [line.split('href="')[1].split('"')[0] for line in page.splitlines() if 'href="' in line]
    assert links[0] == "group=plant-north.html"
    assert set(links) == set(files)
    assert "columns: temperature_c" in page and "drifted groups: <b>plant-north</b>" in page


def test_the_index_escapes_what_it_shows() -> None:
    page = render_report_index("p", "r", ["<script>.html"], {"status": "<b>"})
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_the_index_names_reports_still_being_written_without_a_link() -> None:
    summary = {
        "status": "drift",
        "drifted_groups": ["plant-north"],
        "groups": {"plant-north": {"dataset_drift": True}, "plant-south": {"dataset_drift": False}},
        "pending_reports": {"fleet": "p/r/fleet.html", "group=plant-south": "p/r/group=plant-south.html"},
    }
    page = render_report_index("p", "r", ["group=plant-north.html", "fleet.html", "summary.json"], summary)
    assert 'href="fleet.html"' in page  # written meanwhile
    assert "<td>group=plant-south</td><td></td><td>report being written</td>" in page
    assert 'href="group=plant-south.html"' not in page
