"""Clients from Airflow connections: the one place where tasks turn a connection id into a client.

Stage functions take clients and configs as arguments; DAG tasks call these helpers
inside the task (never at parse time) and hand the result over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeloop.kafka import kafka_config_from_connection
from edgeloop.spec import PipelineSpec


def s3_client(conn_id: str) -> Any:
    """A boto3 S3 client from an Airflow AWS connection (endpoint_url in the extra for MinIO or moto)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id).get_conn()


def _base_url(conn: Any, conn_id: str, what: str) -> str:
    """`host` of an HTTP connection as a URL: scheme from `schema` (default http), `port` appended."""
    host = (conn.host or "").rstrip("/")
    if not host:
        raise ValueError(f"Airflow connection '{conn_id}': host ({what}) is empty")
    if "://" not in host:
        host = f"{conn.schema or 'http'}://{host}"
    if conn.port and host.count(":") < 2:
        host = f"{host}:{conn.port}"
    return host


def mlflow_tracking_uri(conn_id: str) -> str:
    from airflow.sdk import BaseHook

    return _base_url(BaseHook.get_connection(conn_id), conn_id, "the MLflow tracking URL")


@dataclass(frozen=True)
class PipelineClients:
    """Everything a stage task of one pipeline may need, resolved from the spec's connection ids."""

    spec: PipelineSpec

    def kafka(self) -> dict[str, Any]:
        return kafka_config_from_connection(self.spec.connections.kafka)

    def s3(self) -> Any:
        return s3_client(self.spec.connections.s3)

    def mlflow_uri(self) -> str:
        return mlflow_tracking_uri(self.spec.connections.mlflow)

    def annotation_backend(self) -> Any:
        """The annotation backend of the spec (Label Studio), from its Airflow connection."""
        from airflow.sdk import BaseHook

        from edgeloop.annotation.label_studio import LabelStudioBackend, settings_from_connection

        conn = BaseHook.get_connection(self.spec.connections.label_studio)
        return LabelStudioBackend.connect(settings_from_connection(conn))
