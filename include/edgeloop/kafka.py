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


def client_config(config: dict[str, Any]) -> dict[str, Any]:
    """Only what every client accepts: drop consumer-only keys for producers and admins."""
    consumer_only = {"group.id", "enable.auto.commit", "auto.offset.reset", "enable.partition.eof"}
    return {k: v for k, v in config.items() if k not in consumer_only}


def ensure_pipeline_topics(spec: PipelineSpec, config: dict[str, Any], timeout: float = 30.0) -> list[str]:
    """Create the pipeline's topics if missing (idempotent; device-state compacted); return those created."""
    from edgeloop.fleet.topics import ensure_topics

    result = ensure_topics(spec, client_config(config), timeout=timeout)
    return sorted(name for name, state in result.items() if state == "created")
