"""How each pipeline is doing: last run of each DAG, recent alerts, champion model version.

Each source degrades on its own: a page with MLflow down still shows DAG runs and
alerts, and says MLflow is not reachable. DAG state comes from Airflow's metadata DB
(the api-server's own session), alerts from the pipeline's `alerts` topic, champion
versions from one MLflow REST call for all registered models.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CHAMPION = "champion"


class StatusUnavailable(RuntimeError):
    """A status source did not answer; the message names it."""


@dataclass(frozen=True)
class DagStatus:
    dag_id: str
    exists: bool
    paused: bool | None = None
    state: str | None = None
    run_id: str | None = None
    run_after: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "exists": self.exists,
            "paused": self.paused,
            "state": self.state,
            "run_id": self.run_id,
            "run_after": self.run_after,
        }


def airflow_dag_status(dag_ids: Sequence[str]) -> dict[str, DagStatus]:
    """Whether each DAG is parsed, paused, and the state of its latest run (Airflow metadata DB)."""
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    wanted = list(dict.fromkeys(dag_ids))
    out = {d: DagStatus(d, exists=False) for d in wanted}
    if not wanted:
        return out
    with create_session() as session:
        models = session.execute(
            select(DagModel.dag_id, DagModel.is_paused, DagModel.is_stale).where(DagModel.dag_id.in_(wanted))
        ).all()
        latest = (
            select(DagRun.dag_id, func.max(DagRun.id).label("id"))
            .where(DagRun.dag_id.in_(wanted))
            .group_by(DagRun.dag_id)
            .subquery()
        )
        runs = session.execute(
            select(DagRun.dag_id, DagRun.state, DagRun.run_id, DagRun.run_after).join(latest, DagRun.id == latest.c.id)
        ).all()
    last = {r.dag_id: r for r in runs}
    for m in models:
        run = last.get(m.dag_id)
        out[m.dag_id] = DagStatus(
            m.dag_id,
            exists=not m.is_stale,
            paused=bool(m.is_paused),
            state=str(run.state) if run is not None and run.state is not None else None,
            run_id=run.run_id if run is not None else None,
            run_after=run.run_after.isoformat() if run is not None and run.run_after is not None else None,
        )
    return out


def champion_versions(tracking_uri: str, model_names: Iterable[str], timeout: float = 2.0) -> dict[str, str | None]:
    """Champion version of each registered model (None: no champion yet or no such model)."""
    wanted = set(model_names)
    found: dict[str, str | None] = dict.fromkeys(wanted)
    page_token: str | None = None
    base = tracking_uri.rstrip("/")
    for _ in range(20):  # 20 pages of 1000 models
        query = {"max_results": "1000", **({"page_token": page_token} if page_token else {})}
        url = f"{base}/api/2.0/mlflow/registered-models/search?{urllib.parse.urlencode(query)}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - URL from a connection
                body = json.loads(response.read())
        except (OSError, ValueError) as exc:
            raise StatusUnavailable(f"MLflow at {base} is not reachable: {exc}") from exc
        for model in body.get("registered_models", []):
            if model.get("name") in wanted:
                aliases = {a.get("alias"): a.get("version") for a in model.get("aliases", [])}
                version = aliases.get(CHAMPION)
                found[model["name"]] = str(version) if version is not None else None
        page_token = body.get("next_page_token")
        if not page_token:
            break
    return found


@dataclass
class AlertSummary:
    """Alerts of one pipeline in the window: count by kind and the latest one."""

    counts: dict[str, int] = field(default_factory=dict)
    latest: dict[str, Any] | None = None
    latest_ms: int = 0
    bad: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "total": sum(self.counts.values()), "latest": self.latest, "bad": self.bad}


def recent_alerts(
    config: Mapping[str, Any],
    topics: Mapping[str, str],
    since_ms: int,
    timeout: float = 3.0,
    per_partition: int = 200,
) -> dict[str, AlertSummary]:
    """Alerts since `since_ms` on each pipeline's alerts topic (`topics`: pipeline -> topic).

    Reads at most `per_partition` of the newest messages of each partition, in one
    consumer for all topics, within `timeout` seconds; missing topics give no alerts.
    """
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    from edgeloop.fleet.topics import reader_config

    out = {pipeline: AlertSummary() for pipeline in topics}
    by_topic: dict[str, list[str]] = {}
    for pipeline, topic in topics.items():
        by_topic.setdefault(topic, []).append(pipeline)
    consumer = Consumer(reader_config(config))
    try:
        try:
            metadata = consumer.list_topics(timeout=timeout).topics
        except KafkaException as exc:
            raise StatusUnavailable(f"Kafka did not answer: {exc}") from exc
        partitions = [
            TopicPartition(t, p)
            for t in by_topic
            if t in metadata and metadata[t].error is None
            for p in metadata[t].partitions
        ]
        if not partitions:
            return out
        by_time = consumer.offsets_for_times(
            [TopicPartition(tp.topic, tp.partition, since_ms) for tp in partitions], timeout=timeout
        )
        starts: list[TopicPartition] = []
        ends: dict[tuple[str, int], int] = {}
        for tp in by_time:
            _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)
            if tp.offset < 0 or tp.offset >= high:
                continue
            ends[(tp.topic, tp.partition)] = high
            starts.append(TopicPartition(tp.topic, tp.partition, max(tp.offset, high - per_partition)))
        if not starts:
            return out
        consumer.assign(starts)
        remaining = set(ends)
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=0.3):
                key = (message.topic() or "", message.partition() or 0)
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(key)
                    continue
                offset = message.offset() or 0
                if offset >= ends.get(key, 0) - 1:
                    remaining.discard(key)
                if offset >= ends.get(key, 0):
                    continue
                _count_alert(out, by_topic.get(key[0], []), message.value(), message.timestamp()[1])
    finally:
        consumer.close()
    return out


def _count_alert(out: dict[str, AlertSummary], pipelines: Sequence[str], value: bytes | None, ts_ms: int) -> None:
    from edgeloop.events import ALERT_KINDS, AlertError, parse_alert

    try:
        alert = parse_alert(value)
    except AlertError:
        for pipeline in pipelines:
            out[pipeline].bad += 1
        return
    for pipeline in pipelines:
        if alert["pipeline"] != pipeline or alert["kind"] not in ALERT_KINDS:
            continue
        summary = out[pipeline]
        summary.counts[alert["kind"]] = summary.counts.get(alert["kind"], 0) + 1
        if ts_ms >= summary.latest_ms:
            summary.latest_ms = ts_ms
            summary.latest = {
                "kind": alert["kind"],
                "group": alert.get("group"),
                "at_ms": ts_ms,
                "message": str(alert.get("message") or alert.get("reason") or "")[:200],
            }
