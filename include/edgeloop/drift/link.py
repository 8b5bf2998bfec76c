"""Where a drift run's reports open in the Airflow UI, and the task's "Drift report" extra link.

The plugin serves reports behind the Airflow login at
`/edgeloop/generator/reports/<pipeline>/<run>/` (an index of the run's reports) and
`.../<run>/<file>` (one report). This module imports only the Task SDK: the DAG factory
uses it at parse time.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink

REPORTS_PATH = "/edgeloop/generator/reports"


def report_url(pipeline: str, key: str) -> str:
    """The UI path of one report object (`.../<run>/<file>` are the key's last two segments)."""
    return f"{REPORTS_PATH}/{pipeline}/{'/'.join(key.split('/')[-2:])}"


def run_index_url(pipeline: str, summary_key: str) -> str:
    """The UI path of the index page of the run that wrote `summary_key`."""
    return f"{REPORTS_PATH}/{pipeline}/{summary_key.split('/')[-2]}/"


def drift_link_for(result: Any, pipeline: str) -> str:
    """The link for a check_drift result (a dict with `summary_key`); "" when the run has no report.

    A run has reports when it wrote some (`reports`, the drifted scopes) or left some to
    the `render_reports` task (`pending_reports`).
    """
    if not isinstance(result, dict) or not result.get("summary_key"):
        return ""
    if not result.get("reports") and not result.get("pending_reports"):
        return ""
    return run_index_url(pipeline, str(result["summary_key"]))


class DriftReportLink(BaseOperatorLink):
    """Extra link "Drift report" on the drift DAG's check task: the run's report index.

    Airflow 3 evaluates `get_link` in the worker when the task ends and stores the URL in
    XCom; the UI shows the button for every run whose check wrote or planned reports.
    """

    @property
    def name(self) -> str:
        return "Drift report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        pipeline = str(ti_key.dag_id).rsplit("__", 1)[0]
        return drift_link_for(XCom.get_value(key="return_value", ti_key=ti_key), pipeline)
