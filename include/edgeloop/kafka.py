"""Kafka glue shared by the stages: client config from an Airflow connection, pipeline topics, acknowledged writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edgeloop.spec import PipelineSpec

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message


class PublishError(RuntimeError):
    """A message was not acknowledged by Kafka; the message names the topic."""


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


CONSUMER_ONLY = ("group.", "enable.auto.", "auto.offset.", "enable.partition.eof")
"""Prefixes of the settings only a consumer takes (group membership, offset commits and resets, end-of-partition)."""


def client_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Only what every client accepts: the config of a producer or an admin client made from a consumer's config.

    The one rule by which a Kafka config becomes a producer config: settings starting with one of
    CONSUMER_ONLY are left out, everything else (bootstrap servers, SASL/SSL) passes through.
    """
    return {k: v for k, v in config.items() if not k.startswith(CONSUMER_ONLY)}


def ensure_pipeline_topics(spec: PipelineSpec, config: dict[str, Any], timeout: float = 30.0) -> list[str]:
    """Create the pipeline's topics if missing (idempotent; device-state compacted); return those created."""
    from edgeloop.fleet.topics import ensure_topics

    result = ensure_topics(spec, client_config(config), timeout=timeout)
    return sorted(name for name, state in result.items() if state == "created")


def publish_messages(
    kafka_config: Mapping[str, Any],
    topic: str,
    items: Sequence[tuple[bytes | None, bytes | None]],
    *,
    timeout: float = 30.0,
) -> None:
    """Produce (key, value) pairs and wait for every acknowledgement (idempotent producer, acks from all replicas).

    Raise PublishError, naming the topic and the first failed keys, unless all are acknowledged within `timeout` s.
    """
    from confluent_kafka import Producer

    producer = Producer({**client_config(kafka_config), "enable.idempotence": True, "acks": "all"})
    failures: list[str] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            key = message.key()
            failures.append(f"{key.decode('utf-8', 'replace') if key else '?'}: {error}")

    for key, value in items:
        producer.produce(topic, value, key, on_delivery=delivered)
    remaining = producer.flush(timeout)
    if remaining or failures:
        raise PublishError(
            f"topic {topic}: {remaining} message(s) undelivered after {timeout:.0f} s, "
            f"{len(failures)} failed: " + "; ".join(failures[:3])
        )
