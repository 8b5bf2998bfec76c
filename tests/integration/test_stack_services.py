"""The local stack: every service answers on loopback the way the stages will use it."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest
import requests

from edgeloop.spec import STAGES

pytestmark = pytest.mark.integration

DEMO_DAGS = {f"factory_maintenance__{stage}" for stage in STAGES}


def test_kafka_round_trip_and_pipeline_topics(kafka_config: dict[str, str]) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

    admin = AdminClient(kafka_config)
    topic = f"stack-check-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result()
    producer = Producer(kafka_config)
    producer.produce(topic, key=b"k", value=b'{"hello": "edge"}')
    assert producer.flush(10) == 0
    consumer = Consumer(kafka_config | {"group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        message = None
        for _ in range(30):
            message = consumer.poll(1.0)
            if message is not None and not message.error():
                break
        assert message is not None and message.value() == b'{"hello": "edge"}'
    finally:
        consumer.close()
        admin.delete_topics([topic])

    topics = admin.list_topics(timeout=10).topics
    for kind in ("telemetry", "health", "errors", "control", "device-state", "alerts"):
        assert f"factory_maintenance.{kind}" in topics
    assert len(topics["factory_maintenance.telemetry"].partitions) == 6
    resource = ConfigResource("topic", "factory_maintenance.device-state")
    configs = admin.describe_configs([resource])[resource].result()
    assert configs["cleanup.policy"].value == "compact"


def test_s3_put_get_and_conditional_put(s3_client: Any, stack_env: dict[str, str]) -> None:
    from botocore.exceptions import ClientError

    bucket = stack_env["EDGELOOP_BUCKET"]
    key = f"checks/{uuid.uuid4().hex}.txt"
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as info:
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"second", IfNoneMatch="*")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3_client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"first"
    s3_client.delete_object(Bucket=bucket, Key=key)


def test_mlflow_tracks_runs_and_proxies_artifacts_to_s3(
    stack_env: dict[str, str], s3_client: Any, tmp_path: Any
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack_env["MLFLOW_TRACKING_URI"])
    experiment_id = client.create_experiment(f"stack-check-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "answer", 42)
    note = tmp_path / "note.txt"
    note.write_text("artifact through the proxy")
    client.log_artifact(run.info.run_id, str(note))
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).data.metrics["answer"] == 42
    listed = s3_client.list_objects_v2(Bucket=stack_env["EDGELOOP_BUCKET"], Prefix="mlflow/")
    assert any(obj["Key"].endswith(f"{run.info.run_id}/artifacts/note.txt") for obj in listed.get("Contents", []))


def test_label_studio_creates_a_project_with_the_legacy_token(stack_env: dict[str, str]) -> None:
    url = stack_env["EDGELOOP_LABEL_STUDIO_URL"]
    headers = {"Authorization": f"Token {stack_env['EDGELOOP_LABEL_STUDIO_TOKEN']}"}
    config = '<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>'
    created = requests.post(
        f"{url}/api/projects", headers=headers, json={"title": "stack check", "label_config": config}, timeout=30
    )
    assert created.status_code == 201, created.text
    project_id = created.json()["id"]
    assert (
        requests.get(f"{url}/api/projects/{project_id}", headers=headers, timeout=30).json()["title"] == "stack check"
    )
    assert requests.get(f"{url}/api/projects", timeout=30).status_code == 401
    requests.delete(f"{url}/api/projects/{project_id}", headers=headers, timeout=30)


def test_airflow_rest_api_lists_the_demo_dags_with_auth(airflow_api: Any, stack_env: dict[str, str]) -> None:
    dags = airflow_api.wait_for_dags(DEMO_DAGS)
    assert set(dags["factory_maintenance__ingest"]["tags"][i]["name"] for i in range(3)) >= {"edgeloop"}
    assert airflow_api.get("/importErrors")["total_entries"] == 0
    base = stack_env["EDGELOOP_AIRFLOW_URL"]
    assert requests.get(f"{base}/api/v2/dags", timeout=30).status_code == 401
    token = requests.post(
        f"{base}/auth/token",
        json={"username": "viewer", "password": stack_env["AIRFLOW_VIEWER_PASSWORD"]},
        timeout=30,
    ).json()["access_token"]
    viewer = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{base}/api/v2/dags", headers=viewer, timeout=30).status_code == 200
    denied = requests.patch(
        f"{base}/api/v2/dags/factory_maintenance__ingest", headers=viewer, json={"is_paused": False}, timeout=30
    )
    assert denied.status_code == 403
    wrong = requests.post(f"{base}/auth/token", json={"username": "admin", "password": "wrong"}, timeout=30)
    assert wrong.status_code == 401


def test_airflow_and_mlflow_keep_their_metadata_in_the_stacks_database(
    airflow_api: Any, stack_env: dict[str, str]
) -> None:
    """On PostgreSQL (the default; SQLite with EDGELOOP_METADATA_DB=sqlite) the DAGs Airflow's
    dag-processor stored and an experiment made through MLflow's REST API are rows of that database."""
    import sqlalchemy
    from mlflow import MlflowClient

    backend = stack_env.get("EDGELOOP_METADATA_DB")
    assert backend, "the stack's env file names no metadata store: restart the stack (`edgeloop stack up`)"
    dialect = {"postgres": "postgresql", "sqlite": "sqlite"}[backend]
    airflow_db = sqlalchemy.create_engine(stack_env["EDGELOOP_AIRFLOW_DB_URL"])
    mlflow_db = sqlalchemy.create_engine(stack_env["EDGELOOP_MLFLOW_STORE_URL"])
    assert mlflow_db.dialect.name == dialect
    if not os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        assert airflow_db.dialect.name == dialect
    try:
        airflow_api.wait_for_dags(DEMO_DAGS)
        with airflow_db.connect() as connection:
            stored = set(connection.execute(sqlalchemy.text("SELECT dag_id FROM dag")).scalars())
        assert stored >= DEMO_DAGS

        client = MlflowClient(tracking_uri=stack_env["MLFLOW_TRACKING_URI"])
        name = f"stack-store-check-{uuid.uuid4().hex[:8]}"
        experiment_id = client.create_experiment(name)
        query = sqlalchemy.text("SELECT experiment_id FROM experiments WHERE name = :name")
        with mlflow_db.connect() as connection:
            assert str(connection.execute(query, {"name": name}).scalar_one()) == experiment_id
        client.delete_experiment(experiment_id)
    finally:
        airflow_db.dispose()
        mlflow_db.dispose()


def test_airflow_components_report_healthy(stack_env: dict[str, str]) -> None:
    health = requests.get(f"{stack_env['EDGELOOP_AIRFLOW_URL']}/api/v2/monitor/health", timeout=30).json()
    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", json.dumps(health)


def test_prometheus_scrapes_the_pushgateway(stack_env: dict[str, str]) -> None:
    targets = requests.get(f"{stack_env['EDGELOOP_PROMETHEUS_URL']}/api/v1/targets", timeout=30).json()
    jobs = {t["labels"]["job"]: t for t in targets["data"]["activeTargets"]}
    assert {"prometheus", "pushgateway"} <= set(jobs)
    assert requests.get(f"{stack_env['EDGELOOP_PUSHGATEWAY_URL']}/-/ready", timeout=10).status_code == 200


def test_exporter_serves_bounded_state_metrics(stack_env: dict[str, str]) -> None:
    from edgeloop.metrics.catalogue import unbounded_label_problems
    from edgeloop.spec import load_all

    text = requests.get(f"{stack_env['EDGELOOP_EXPORTER_URL']}/metrics", timeout=60).text
    assert 'edgeloop_exporter_reader_up{reader="factory_maintenance.fleet"} 1.0' in text
    assert 'edgeloop_spec_limit{limit="fleet_max_offline_ratio",pipeline="factory_maintenance"}' in text
    assert unbounded_label_problems(text, load_all().specs) == []
