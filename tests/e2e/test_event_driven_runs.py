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


def telemetry_record(record_id: str, device: int) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "device_id": f"e2e-dev-{device:03d}",
        "group_id": "plant-north",
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "vibration_rms": 2.1,
        "vibration_peak": 6.3,
        "temperature_c": 48.0,
        "motor_current_a": 11.2,
        "rpm": 1480.0,
        "acoustic_db": 71.0,
        "prediction": "normal",
        "confidence": 0.91,
        "model_version": "1",
        "config_version": None,
    }


def test_a_backlog_alert_on_kafka_starts_an_ingest_run_through_the_triggerer(
    airflow_api: Any, kafka_config: dict[str, str], s3_client: Any, stack_env: dict[str, str]
) -> None:
    from confluent_kafka import Producer

    dag_id = f"{PIPELINE}__ingest"
    airflow_api.wait_for_dags({dag_id})
    airflow_api.patch(f"/dags/{dag_id}", {"is_paused": False})
    before = {r["dag_run_id"] for r in runs_of(airflow_api, dag_id)}
    time.sleep(5)  # let the triggerer subscribe its watcher after the unpause

    alert = {"kind": "backlog", "pipeline": PIPELINE, "group": "plant-north", "alert_id": uuid.uuid4().hex}
    producer = Producer(kafka_config)
    marker = uuid.uuid4().hex[:10]
    record_ids = [f"e2e-{marker}-{i}" for i in range(300)]
    for i, record_id in enumerate(record_ids):
        producer.produce(
            f"{PIPELINE}.telemetry",
            key=str(i % 7).encode(),
            value=json.dumps(telemetry_record(record_id, i % 7)).encode(),
        )
    producer.produce(f"{PIPELINE}.telemetry", value=b"{broken json")  # dead-lettered, never fatal
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

    # the run moves the records into object storage and announces them on the raw asset
    finished = airflow_api.wait_for_run(dag_id, new_run["dag_run_id"], timeout=300)
    assert finished["state"] == "success"
    import io

    import pyarrow.parquet as pq

    raw_events = [
        e
        for e in airflow_api.get("/assets/events", limit=50, order_by="-timestamp")["asset_events"]
        if e["name"] == f"{PIPELINE}.raw" and e["source_run_id"] == new_run["dag_run_id"]
    ]
    assert len(raw_events) == 1
    keys = raw_events[0]["extra"]["objects"]
    assert keys and raw_events[0]["extra"]["records"] >= len(record_ids)
    stored: list[str] = []
    for key in keys:
        body = s3_client.get_object(Bucket=stack_env["EDGELOOP_BUCKET"], Key=key)["Body"].read()
        stored += pq.read_table(io.BytesIO(body), columns=["record_id"]).column("record_id").to_pylist()
    ours = [r for r in stored if r.startswith(f"e2e-{marker}-")]
    assert sorted(ours) == sorted(record_ids)
