"""Kafka glue shared by the stages: client config from an Airflow connection, pipeline topics."""

from __future__ import annotations

from typing import Any

from edgeloop.spec import PipelineSpec

COMPACTED_KINDS = ("device-state",)


class TopicSetupError(RuntimeError):
    """A pipeline topic could not be created or has the wrong settings."""


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
    """Create the pipeline's topics if missing (idempotent); return the names that were created."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(client_config(config))
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = []
    for kind in ("telemetry", "health", "errors", "control", "device-state", "alerts"):
        name = spec.topic(kind)
        if name in existing:
            continue
        topic_config = {"cleanup.policy": "compact"} if kind in COMPACTED_KINDS else {}
        partitions = spec.topics.partitions if kind in ("telemetry", "health", "errors", "device-state") else 1
        wanted.append(
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=spec.topics.replication_factor,
                config=topic_config,
            )
        )
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items() if wanted else []:
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise TopicSetupError(f"topic '{name}': {exc}") from exc
    return created
