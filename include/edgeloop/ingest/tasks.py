"""The tasks of the `ingest` DAG: one function each, typed results across the boundary."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeloop.spec import INGESTIBLE, PipelineSpec
from edgeloop.xcom import XComResult

if TYPE_CHECKING:
    from edgeloop.connections import PipelineClients
    from edgeloop.metrics.push import TaskMetrics


@dataclass(frozen=True)
class TopicIngested(XComResult):
    """One topic's ingest run (`ingest.run.ingest_topic`'s summary): object keys, counts, lag, why it stopped."""

    pipeline: str
    topic: str
    objects: list[str]
    deadletter_objects: list[str]
    objects_created: int
    records: int
    dead_letters: int
    dead_letters_by_kind: dict[str, int]
    bytes: int
    value_bytes: int
    messages: int
    flushes: int
    lag: dict[str, int]
    lag_total: int
    skipped_by_retention: dict[str, int]
    stopped: str
    duration_s: float


@dataclass(frozen=True)
class RawEvent(XComResult):
    """The `raw` asset event's extra of one run (`ingest.events.raw_event_extra`): keys and counts, no data."""

    records: int
    dead_letters: int
    topics: dict[str, dict[str, int]]
    objects: list[str]
    objects_total: int
    lag_total: int


def plan(spec: PipelineSpec, topics: Sequence[str] | None) -> list[str]:
    """The topics of this run (short names; default: the spec's); raise ValueError naming any that is not ingestible."""
    chosen = list(topics or spec.topics.ingest)
    unknown = sorted(set(chosen) - set(INGESTIBLE))
    if unknown:
        raise ValueError(f"params.topics: {unknown} are not ingestible topics {list(INGESTIBLE)}")
    return chosen


def ingest_topic(
    spec: PipelineSpec,
    clients: PipelineClients,
    topic: str,
    *,
    max_records: int | None,
    accept_lost_offsets: bool,
    metrics: TaskMetrics,
) -> TopicIngested:
    """Move the new records of one topic to object storage (budget: `max_records`, default the spec's)."""
    from edgeloop.connections import control_trusted_keys
    from edgeloop.ingest import run
    from edgeloop.ingest.frames import frame_codec
    from edgeloop.ingest.metrics import record_ingest_metrics
    from edgeloop.ingest.profiles import profile_codec
    from edgeloop.metrics.push import push_task_metrics

    s3 = clients.s3()
    codec: Any = None  # the spec's JSON records
    if topic == "profiles":
        codec = profile_codec(spec, clients.kafka(), control_trusted_keys())
    elif topic == "frames":  # the claim check: each frame's PNG to its content address, then its row
        codec = frame_codec(spec, s3)
    summary = run.ingest_topic(
        spec,
        topic,
        consumer_config=clients.kafka(),
        s3=s3,
        codec=codec,
        max_records=int(max_records or spec.ingest.max_records),
        accept_lost_offsets=accept_lost_offsets,
    )
    push_task_metrics(spec, metrics, lambda batch: record_ingest_metrics(batch, summary), topic=spec.topic(topic))
    return TopicIngested.from_xcom(summary)


def publish(results: Iterable[TopicIngested]) -> RawEvent:
    """Merge the topics' results into the `raw` asset event; skip the task (no event) when no record came in."""
    from airflow.exceptions import AirflowSkipException

    from edgeloop.ingest.events import raw_event_extra

    event = RawEvent.from_xcom(raw_event_extra([r.to_xcom() for r in results]))
    if not event.records:
        raise AirflowSkipException("no new records: no raw asset event")
    return event


# --- the DAG's tasks: each reads its inputs from the Airflow context and calls the function above


def run_ingest_topic(spec: PipelineSpec, topic: str, context: Mapping[str, Any]) -> TopicIngested:
    from edgeloop.connections import PipelineClients
    from edgeloop.metrics.push import TaskMetrics

    params = context["params"]
    return ingest_topic(
        spec,
        PipelineClients(spec),
        topic,
        max_records=params.get("max_records"),
        accept_lost_offsets=bool(params.get("accept_lost_offsets")),
        metrics=TaskMetrics.of_task(context),
    )


def run_publish(results: Iterable[object]) -> RawEvent:
    return publish(TopicIngested.from_xcom(r) for r in results)
