"""Kafka glue shared by the stages: client config from an Airflow connection, pipeline topics."""

from __future__ import annotations

from typing import Any

from edgeloop.spec import PipelineSpec


def kafka_config_from_connection(conn_id: str) -> dict[str, Any]:
    """The confluent-kafka config stored in an Airflow Kafka connection's extra (SASL/SSL pass through)."""
    from airflow.sdk import BaseHook

    config: dict[str, Any] = dict(BaseHook.get_connection(conn_id).extra_dejson)
    if "bootstrap.servers" not in config:
        raise ValueError(f"Airflow connection '{conn_id}': extra has no 'bootstrap.servers'")
    return config


def kafka_config_for_job(conn_id: str) -> dict[str, Any]:
    """Kafka config for a job outside an Airflow task (a pod or a child process), without Airflow's DB.

    `EDGELOOP_KAFKA_CONFIG` (JSON, set by the task that launches a local job) first, then the
    connection as an `AIRFLOW_CONN_<ID>` JSON variable (how a pod gets it from a Kubernetes Secret),
    then Airflow's own connection lookup.
    """
    import json
    import os

    if os.environ.get("EDGELOOP_KAFKA_CONFIG"):
        return dict(json.loads(os.environ["EDGELOOP_KAFKA_CONFIG"]))
    raw = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}", "")
    if raw.lstrip().startswith("{"):
        extra = json.loads(raw).get("extra") or {}
        config = dict(json.loads(extra) if isinstance(extra, str) else extra)
        if "bootstrap.servers" not in config:
            raise ValueError(f"AIRFLOW_CONN_{conn_id.upper()}: extra has no 'bootstrap.servers'")
        return config
    return kafka_config_from_connection(conn_id)


def client_config(config: dict[str, Any]) -> dict[str, Any]:
    """Only what every client accepts: drop consumer-only keys for producers and admins."""
    consumer_only = {"group.id", "enable.auto.commit", "auto.offset.reset", "enable.partition.eof"}
    return {k: v for k, v in config.items() if k not in consumer_only}


def ensure_pipeline_topics(spec: PipelineSpec, config: dict[str, Any], timeout: float = 30.0) -> list[str]:
    """Create the pipeline's topics if missing (idempotent; device-state compacted); return those created."""
    from edgeloop.fleet.topics import ensure_topics

    result = ensure_topics(spec, client_config(config), timeout=timeout)
    return sorted(name for name, state in result.items() if state == "created")
