"""The exporter: long-lived state of every pipeline for Prometheus (fleet per group, consumer lag, registry).

Runs as its own small process (`python -m edgeloop.exporter`, started by the stack), so that
Prometheus scrapes it without an Airflow login. Endpoints come from the environment, the same
variables the stack writes to `stack.env`.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from edgeloop.metrics.catalogue import REPORT_REFUSALS
from edgeloop.metrics.collector import Sample, StateReader, exporter_registry, serve_exporter
from edgeloop.registry.tags import TAG_CHAMPION_SINCE
from edgeloop.spec import PipelineSpec, default_pipelines_dir, load_all

log = logging.getLogger(__name__)


def fleet_reader(spec: PipelineSpec, kafka_config: Mapping[str, Any]) -> StateReader:
    def read() -> Iterable[Sample]:
        from edgeloop.contract.keys import trusted_from_env
        from edgeloop.fleet.health import fleet_status

        status = fleet_status(spec, kafka_config, trusted_from_env(os.environ), timeout=20)
        for reason in REPORT_REFUSALS:
            count = status.refused_reports.get(reason, 0)
            yield Sample("edgeloop_fleet_refused_reports", count, {"pipeline": spec.name, "refusal": reason})
        for group in status.groups:
            labels = {"pipeline": spec.name, "group": group.group}
            yield Sample("edgeloop_fleet_devices", group.devices, labels)
            yield Sample("edgeloop_fleet_devices_online", group.online, labels)
            yield Sample("edgeloop_fleet_devices_stale", group.stale, labels)
            yield Sample("edgeloop_fleet_version_skew_ratio", group.version_skew, labels)
            if group.error_rate is not None:
                yield Sample("edgeloop_fleet_error_ratio", group.error_rate, labels)

    return read


def lag_reader(spec: PipelineSpec, kafka_config: Mapping[str, Any]) -> StateReader:
    """Records between the ingest consumer group's committed offsets and the end of each topic."""

    def read() -> Iterable[Sample]:
        from confluent_kafka import Consumer, TopicPartition

        group = f"edgeloop.{spec.name}.ingest"
        consumer = Consumer({**kafka_config, "group.id": group, "enable.auto.commit": False})
        try:
            for short in spec.topics.ingest:
                topic = spec.topic(short)
                metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
                if metadata is None or metadata.error is not None:
                    continue
                partitions = [TopicPartition(topic, p) for p in metadata.partitions]
                for committed in consumer.committed(partitions, timeout=10):
                    low, high = consumer.get_watermark_offsets(committed, timeout=10)
                    position = committed.offset if committed.offset >= 0 else low
                    yield Sample(
                        "edgeloop_ingest_consumer_lag_records",
                        max(0, high - position),
                        {"pipeline": spec.name, "topic": topic, "partition": str(committed.partition)},
                    )
        finally:
            consumer.close()

    return read


def registry_reader(spec: PipelineSpec, tracking_uri: str) -> StateReader:
    def read() -> Iterable[Sample]:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=tracking_uri)
        for alias, name in (
            ("champion", "edgeloop_registry_champion_version"),
            ("challenger", "edgeloop_registry_challenger_version"),
        ):
            try:
                version = client.get_model_version_by_alias(spec.registry.model_name, alias)
            except MlflowException:
                continue
            yield Sample(name, float(version.version), {"pipeline": spec.name})
            if alias == "champion":
                since = (version.tags or {}).get(TAG_CHAMPION_SINCE)
                moved = float(since) if since else (version.last_updated_timestamp or 0) / 1000
                yield Sample("edgeloop_registry_champion_updated_timestamp_seconds", moved, {"pipeline": spec.name})

    return read


def drift_alerts_reader(spec: PipelineSpec, s3: Any) -> StateReader:
    """Open drift alerts per group (0 for a group without one; `_all` for fleet-wide alerts)."""

    def read() -> Iterable[Sample]:
        from edgeloop.drift.alert_state import alert_state_key, load_alert_state
        from edgeloop.drift.metrics import open_alerts_by_group
        from edgeloop.metrics.catalogue import OVERALL_GROUP

        state, _ = load_alert_state(s3, spec.storage.bucket, alert_state_key(spec))
        counts = open_alerts_by_group(state)
        for group in [g.name for g in spec.groups]:
            yield Sample("edgeloop_drift_alerts_open", counts.get(group, 0), {"pipeline": spec.name, "group": group})
        fleet = sum(n for g, n in counts.items() if g not in {x.name for x in spec.groups})
        yield Sample("edgeloop_drift_alerts_open", fleet, {"pipeline": spec.name, "group": OVERALL_GROUP})

    return read


def s3_from_env(env: Mapping[str, str]) -> Any:
    """An S3 client for the endpoint and credentials in the environment (AWS defaults when no endpoint)."""
    import boto3

    return boto3.client(
        "s3", endpoint_url=env.get("EDGELOOP_S3_ENDPOINT") or None, region_name=env.get("AWS_DEFAULT_REGION")
    )


def build_readers(specs: Sequence[PipelineSpec], env: Mapping[str, str]) -> dict[str, StateReader]:
    kafka = {"bootstrap.servers": env["EDGELOOP_KAFKA_BOOTSTRAP"]}
    readers: dict[str, StateReader] = {}
    s3 = s3_from_env(env) if env.get("EDGELOOP_S3_ENDPOINT") or env.get("AWS_ACCESS_KEY_ID") else None
    for spec in specs:
        readers[f"{spec.name}.fleet"] = fleet_reader(spec, kafka)
        readers[f"{spec.name}.lag"] = lag_reader(spec, kafka)
        if env.get("MLFLOW_TRACKING_URI"):
            readers[f"{spec.name}.registry"] = registry_reader(spec, env["MLFLOW_TRACKING_URI"])
        if s3 is not None:
            readers[f"{spec.name}.drift_alerts"] = drift_alerts_reader(spec, s3)
    return readers


def main(argv: Sequence[str] | None = None, stop: threading.Event | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeloop.exporter", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("EDGELOOP_EXPORTER_PORT", "19100")))
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    specs = load_all(default_pipelines_dir()).specs
    registry = exporter_registry(build_readers(specs, os.environ), specs)
    serve_exporter(registry, args.port, args.host)
    log.info("edgeloop exporter on http://%s:%d/metrics for %s", args.host, args.port, [s.name for s in specs])
    (stop or threading.Event()).wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
