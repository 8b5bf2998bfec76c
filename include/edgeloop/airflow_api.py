"""A small client for Airflow's REST API (v2): the demo and the tests drive Airflow the way an operator would."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests


@dataclass
class AirflowApi:
    base_url: str
    session: requests.Session

    @classmethod
    def login(cls, base_url: str, username: str, password: str) -> AirflowApi:
        response = requests.post(
            f"{base_url}/auth/token", json={"username": username, "password": password}, timeout=30
        )
        response.raise_for_status()
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        return cls(base_url, session)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call; a 5xx (e.g. SQLite busy under load) is retried a few times before it counts."""
        for attempt in range(5):
            response = self.session.request(method, f"{self.base_url}/api/v2{path}", timeout=30, **kwargs)
            if response.status_code < 500 or attempt == 4:
                break
            time.sleep(1 + attempt)
        response.raise_for_status()
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params=params)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("PATCH", path, json=body)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, json=body)

    def wait_for_dags(self, dag_ids: set[str], timeout: float = 180) -> dict[str, Any]:
        """Wait until the dag-processor has parsed and stored every DAG in `dag_ids`."""
        deadline = time.monotonic() + timeout
        found: dict[str, Any] = {}
        while time.monotonic() < deadline:
            found = {d["dag_id"]: d for d in self.get("/dags", limit=1000)["dags"]}
            if dag_ids <= set(found):
                return found
            time.sleep(2)
        raise AssertionError(f"DAGs not loaded after {timeout}s: {sorted(dag_ids - set(found))}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(2)
        raise AssertionError(f"{dag_id} run {run_id} still {run.get('state')} after {timeout}s")

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any] | None = None, note: str | None = None) -> Any:
        body: dict[str, Any] = {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
        if note:
            body["note"] = note
        return self.post(f"/dags/{dag_id}/dagRuns", body)

    def runs(self, dag_id: str, limit: int = 50) -> list[dict[str, Any]]:
        return list(self.get(f"/dags/{dag_id}/dagRuns", limit=limit, order_by="-run_after")["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> list[str]:
        """The whole log of one try of a task, as text lines (see `log_lines`)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        return log_lines(self.get(path, full_content="true", map_index=map_index).get("content") or [])


def log_lines(content: list[Any]) -> list[str]:
    """Text lines of a task log as the log route returns it (JSON `content`).

    Structured messages become `HH:MM:SS level event`, an exception its innermost frame and
    `Type: value`; plain strings (a log the server could not parse) stay as they are. The UI's
    `::group::` markers are left out.
    """
    lines: list[str] = []
    for message in content:
        if not isinstance(message, dict):
            lines.extend(str(message).splitlines())
            continue
        stamp = str(message.get("timestamp") or "")[11:19]
        head = " ".join(part for part in (stamp, message.get("level"), str(message.get("event", ""))) if part)
        lines.extend(line for line in head.splitlines() if "::group::" not in line and "::endgroup::" not in line)
        for stack in message.get("error_detail") or []:
            frames = stack.get("frames") or []
            if frames:
                frame = frames[-1]
                lines.append(f"  File {frame.get('filename')}:{frame.get('lineno')} in {frame.get('name')}")
            lines.append(f"  {stack.get('exc_type')}: {stack.get('exc_value')}")
    return lines
