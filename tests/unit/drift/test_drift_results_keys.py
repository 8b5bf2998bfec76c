"""Where a run's drift results go: stable keys under reports/drift/<pipeline>/<run>/."""

from __future__ import annotations

import pytest

from edgeloop.drift.alert_state import alert_state_key
from edgeloop.drift.results import report_key, safe_segment, summary_key
from edgeloop.drift.sample import FLEET, Stratum
from edgeloop.drift.synthetic import synthetic_spec

SPEC = synthetic_spec(["a"], ["plant-north"], name="fm", storage_prefix="tenant1")
RUN = "scheduled__2026-03-01T12:00:00+00:00"


def test_run_ids_from_airflow_become_safe_key_segments() -> None:
    assert safe_segment(RUN) == "scheduled__2026-03-01T12_00_00_00_00"
    assert safe_segment("manual run / 7") == "manual_run_7"
    with pytest.raises(ValueError, match="no character usable"):
        safe_segment("///")


def test_reports_summary_and_alert_state_live_under_the_pipelines_drift_prefix() -> None:
    run = "tenant1/reports/drift/fm/scheduled__2026-03-01T12_00_00_00_00"
    assert summary_key(SPEC, RUN) == f"{run}/summary.json"
    assert report_key(SPEC, RUN, FLEET) == f"{run}/fleet.html"
    assert report_key(SPEC, RUN, Stratum("group", "plant-north")) == f"{run}/group=plant-north.html"
    assert report_key(SPEC, RUN, Stratum("model_version", "v1.2+b")) == f"{run}/model_version=v1.2_b.html"
    assert alert_state_key(SPEC) == "tenant1/reports/drift/fm/open_alerts.json"
