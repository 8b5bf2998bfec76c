"""Clients from Airflow connections: the one place where tasks turn a connection id into a client.

Stage functions take clients and configs as arguments; DAG tasks call these helpers
inside the task (never at parse time) and hand the result over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeloop.kafka import kafka_config_from_connection
from edgeloop.spec import PipelineSpec

if TYPE_CHECKING:
    from edgeloop.annotation.backend import AnnotationBackend


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


SIGNING_CONN_ID = "edgeloop_signing"


def _signing_connection() -> Any | None:
    """The Airflow connection `edgeloop_signing`, or None when there is none."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(SIGNING_CONN_ID)
    except AirflowNotFoundException:
        return None


def _signer_of(conn: Any | None) -> Any:
    import os

    from edgeloop.contract.keys import Signer, signer_from_env

    if conn is None:
        return signer_from_env(os.environ)
    return Signer.from_text(conn.password or "", f"Airflow connection {SIGNING_CONN_ID!r} (password)")


def control_signer() -> Any:
    """The key that signs orders (`edgeloop.contract.keys.Signer`): the password of the Airflow connection
    `edgeloop_signing` when it exists, else $EDGELOOP_SIGNING_KEY (e.g. from a Kubernetes Secret)."""
    return _signer_of(_signing_connection())


def control_trusted_keys() -> Any:
    """The public keys whose signatures the cloud side accepts (`edgeloop.contract.keys.Keyring`): the signing
    key's, and those in $EDGELOOP_TRUSTED_KEYS or the `trusted_keys` extra of `edgeloop_signing` (a rotation)."""
    import os

    from edgeloop.contract.keys import Keyring, trusted_from_env

    conn = _signing_connection()
    extra = conn.extra_dejson if conn is not None else {}
    keys = dict(trusted_from_env(os.environ, _signer_of(conn)).keys)
    if extra.get("trusted_keys"):
        keys.update(Keyring.from_text(str(extra["trusted_keys"]), f"{SIGNING_CONN_ID}.extra.trusted_keys").keys)
    return Keyring(keys)


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

    def annotation_backend(self) -> AnnotationBackend:
        """The spec's annotation backend (`annotation.backend`), from its Airflow connection."""
        from airflow.sdk import BaseHook

        from edgeloop.annotation.backends import backend_connection_id, backend_from_connection

        conn = BaseHook.get_connection(backend_connection_id(self.spec))
        return backend_from_connection(self.spec.annotation.backend, conn)
