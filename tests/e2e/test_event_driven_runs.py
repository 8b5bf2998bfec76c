"""Through the real api-server, scheduler, dag-processor and triggerer: runs start the way users start them."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

PIPELINE = "factory_maintenance"


def runs_of(api: Any, dag_id: str) -> list[dict[str, Any]]:
    return list(api.get(f"/dags/{dag_id}/dagRuns", limit=100, order_by="-run_after")["dag_runs"])


def test_a_manual_run_from_the_rest_api_completes(airflow_api: Any) -> None:
    dag_id = f"{PIPELINE}__fleet_health"
    airflow_api.wait_for_dags({dag_id})
    airflow_api.patch(f"/dags/{dag_id}", {"is_paused": False})
    run_id = f"manual__e2e_{uuid.uuid4().hex[:8]}"
    airflow_api.post(f"/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None})
    run = airflow_api.wait_for_run(dag_id, run_id, timeout=240)
    assert run["state"] == "success"
    tis = airflow_api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    assert {ti["task_id"] for ti in tis} == {"compute_health", "publish_device_alerts"}
    assert all(ti["state"] in ("success", "skipped") for ti in tis)


def test_a_backlog_alert_on_kafka_starts_an_ingest_run_through_the_triggerer(
    airflow_api: Any, kafka_config: dict[str, str]
) -> None:
    from confluent_kafka import Producer

    dag_id = f"{PIPELINE}__ingest"
    airflow_api.wait_for_dags({dag_id})
    airflow_api.patch(f"/dags/{dag_id}", {"is_paused": False})
    before = {r["dag_run_id"] for r in runs_of(airflow_api, dag_id)}
    time.sleep(5)  # let the triggerer subscribe its watcher after the unpause

    alert = {"kind": "backlog", "pipeline": PIPELINE, "group": "plant-north", "alert_id": uuid.uuid4().hex}
    producer = Producer(kafka_config)
    producer.produce(f"{PIPELINE}.alerts", value=b"not json at all")  # malformed: skipped, never fatal
    producer.produce(f"{PIPELINE}.alerts", value=json.dumps({"kind": "backlog", "pipeline": "other"}).encode())
    producer.produce(f"{PIPELINE}.alerts", value=json.dumps(alert).encode())
    assert producer.flush(10) == 0
    sent = time.monotonic()

    new_run: dict[str, Any] | None = None
    while time.monotonic() - sent < 120 and new_run is None:
        new_runs = [r for r in runs_of(airflow_api, dag_id) if r["dag_run_id"] not in before]
        asset_runs = [r for r in new_runs if r["run_type"] == "asset_triggered"]
        new_run = asset_runs[0] if asset_runs else None
        time.sleep(1)
    assert new_run is not None, "no asset-triggered ingest run after the backlog alert"
    events = airflow_api.get("/assets/events", limit=100, order_by="-timestamp")["asset_events"]
    backlog_events = [e for e in events if e["name"] == f"{PIPELINE}.backlog"]
    ours = [e for e in backlog_events if e["extra"].get("payload", {}).get("alert_id") == alert["alert_id"]]
    assert len(ours) == 1, [e["extra"] for e in backlog_events[:5]]
    assert ours[0]["extra"]["payload"]["group"] == "plant-north"
    assert new_run["dag_run_id"] in {r["run_id"] for r in ours[0]["created_dagruns"]}
    # the other pipeline's alert and the malformed message made no event of this asset
    assert not [e for e in backlog_events if e["extra"].get("payload", {}).get("pipeline") != PIPELINE]
