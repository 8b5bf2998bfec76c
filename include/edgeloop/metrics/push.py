"""Batch tasks record their metrics into a :class:`BatchMetrics` and push them to the Pushgateway.

One ``CollectorRegistry`` per task; :func:`push_batch_metrics` writes one Pushgateway group per
pipeline + DAG + task (plus a bounded key such as the topic of a mapped task), never per run.
Counters are carried over from the group's previous push so that ``rate()`` and ``increase()``
work across runs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, delete_from_gateway, pushadd_to_gateway
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edgeloop.metrics.catalogue import (
    FORBIDDEN_LABELS,
    LABELS,
    Kind,
    MetricDef,
    MetricLabelError,
    check_labels,
    label_bounds,
    metric_definition,
)
from edgeloop.metrics.urls import http_url
from edgeloop.spec import PipelineSpec

PUSH_JOB = "edgeloop"


class BatchMetrics:
    """The metrics one batch task records for one pipeline, checked against the spec's bounds.

    Only metrics that were recorded are pushed, so a push replaces exactly those families in the
    task's Pushgateway group and leaves the others (for instance the last drift alert time).
    The `pipeline` label is filled in from the spec. Call ``inc(name, 0, ...)`` to start a
    counter series at zero so that its first increase is visible to ``increase()``.
    """

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self.registry = CollectorRegistry(auto_describe=True)
        self._bounds = label_bounds(spec)
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}

    def _check_kind(self, name: str, kind: Kind) -> MetricDef:
        definition = metric_definition(name)
        if definition.source != "push":
            raise MetricLabelError(f"{name} is long-lived state read by the exporter, not pushed by batch tasks")
        if definition.kind != kind:
            raise MetricLabelError(f"{name} is a {definition.kind}, not a {kind}")
        return definition

    def _labels(self, definition: MetricDef, labels: Mapping[str, str | int]) -> dict[str, str]:
        full = {"pipeline": self.spec.name, **{k: str(v) for k, v in labels.items()}}
        check_labels(definition, full, self._bounds)
        return full

    def inc(self, name: str, amount: float = 1.0, **labels: str | int) -> None:
        """Add `amount` (>= 0) to a counter."""
        if amount < 0 or math.isnan(amount):
            raise ValueError(f"{name}: a counter only goes up, got {amount}")
        definition = self._check_kind(name, "counter")
        values = self._labels(definition, labels)
        if name not in self._counters:
            self._counters[name] = Counter(
                definition.family, definition.help, definition.labels, registry=self.registry
            )
        self._counters[name].labels(**values).inc(amount)

    def set(self, name: str, value: float, **labels: str | int) -> None:
        """Set a gauge."""
        definition = self._check_kind(name, "gauge")
        values = self._labels(definition, labels)
        if name not in self._gauges:
            self._gauges[name] = Gauge(definition.family, definition.help, definition.labels, registry=self.registry)
        self._gauges[name].labels(**values).set(value)

    def mark_success(self, stage: str, when: float | None = None) -> None:
        """Record that a task of `stage` finished now (or at `when`, Unix seconds)."""
        self.set("edgeloop_pipeline_last_success_timestamp_seconds", time.time() if when is None else when, stage=stage)

    def recorded(self) -> list[str]:
        return sorted([*self._counters, *self._gauges])


def grouping_key(spec: PipelineSpec, dag_id: str, task_id: str, **extra: str) -> dict[str, str]:
    """The Pushgateway group of one task: pipeline, dag and task, plus bounded keys (e.g. topic).

    Never a run id: each push replaces the task's previous values instead of adding a group per run.
    """
    bounds = label_bounds(spec)
    key = {"pipeline": spec.name, "dag": dag_id, "task": task_id}
    for label, value in extra.items():
        if label in FORBIDDEN_LABELS or label not in bounds:
            raise MetricLabelError(f"grouping key: '{label}' is not a bounded label ({sorted(bounds)})")
        if value not in bounds[label]:
            raise MetricLabelError(f"grouping key: {label}={value!r} is out of bounds ({LABELS[label]})")
        key[label] = value
    return key


class MetricsPushError(RuntimeError):
    """The Pushgateway could not be read or written; the message names the gateway and group."""


def _pushed(gateway: str, timeout: float) -> list[dict[str, Any]]:
    """Every group the Pushgateway holds (`/api/v1/metrics`): its `labels` (job and grouping key) and families."""
    url = f"{http_url(gateway).rstrip('/')}/api/v1/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the configured gateway URL
            payload = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise MetricsPushError(f"cannot read {url}: {exc}") from exc
    groups = payload.get("data", []) if isinstance(payload, dict) else []
    return [g for g in groups if isinstance(g, dict) and isinstance(g.get("labels"), dict)]


def delete_pipeline_groups(
    gateway: str, pipeline: str, *, job: str = PUSH_JOB, timeout: float = 10.0
) -> list[dict[str, str]]:
    """Delete every Pushgateway group of `job` whose grouping key names `pipeline`; return their grouping keys.

    One DELETE /metrics/job/<job>/<label>/<value>... per group (the keys `grouping_key` made: pipeline,
    dag, task and any bounded extra). Raises MetricsPushError naming the gateway and the group.
    """
    keys = [
        {k: v for k, v in group["labels"].items() if k != "job"}
        for group in _pushed(gateway, timeout)
        if group["labels"].get("job") == job and group["labels"].get("pipeline") == pipeline
    ]
    for key in keys:
        try:
            delete_from_gateway(http_url(gateway), job=job, grouping_key=key, timeout=timeout)
        except (urllib.error.URLError, OSError) as exc:
            raise MetricsPushError(f"cannot delete group {key} from {gateway}: {exc}") from exc
    return keys


def read_pushed_counters(
    gateway: str, job: str, key: Mapping[str, str], timeout: float = 10.0
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Current counter values of one Pushgateway group, keyed by (sample name, sorted labels).

    The labels include the group's (job and grouping key), as the Pushgateway stores them.
    """
    wanted = {"job": job, **key}
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for group in _pushed(gateway, timeout):
        if group.get("labels") != wanted:
            continue
        for name, family in group.items():
            if not isinstance(family, dict) or family.get("type") != "COUNTER":
                continue
            for sample in family.get("metrics", []):
                labels = tuple(sorted((k, v) for k, v in sample.get("labels", {}).items() if k != "instance"))
                values[(name, labels)] = float(sample["value"])
    return values


class _Snapshot:
    """A frozen copy of a registry's families, counters carried over from the previous push."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def _carry_over(
    registry: CollectorRegistry,
    previous: Mapping[tuple[str, tuple[tuple[str, str], ...]], float],
    group: Mapping[str, str],
) -> _Snapshot:
    families: list[Metric] = []
    for family in registry.collect():
        if family.type == "counter":
            out: Metric = CounterMetricFamily(family.name, family.documentation, labels=None)
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue  # drop `_created`: a pushed counter's creation time is meaningless
                stored = tuple(sorted({**sample.labels, **group}.items()))
                out.samples.append(sample._replace(value=sample.value + previous.get((sample.name, stored), 0.0)))
        else:
            out = GaugeMetricFamily(family.name, family.documentation, labels=None)
            out.samples.extend(family.samples)
        families.append(out)
    return _Snapshot(families)


def push_batch_metrics(
    metrics: BatchMetrics,
    gateway: str,
    key: Mapping[str, str],
    *,
    job: str = PUSH_JOB,
    timeout: float = 10.0,
) -> list[str]:
    """Push what a task recorded to its Pushgateway group; return the metric names pushed.

    Uses POST (``pushadd``): only the recorded families of the group are replaced. Counters are
    added to the group's current values first, so they keep growing across runs (a Pushgateway
    restart looks like a counter reset, which Prometheus handles). Raises MetricsPushError;
    the caller decides whether a failed push fails the task.
    """
    if not metrics.recorded():
        return []
    previous = read_pushed_counters(gateway, job, key, timeout)
    snapshot = _carry_over(metrics.registry, previous, {"job": job, **key})
    try:
        pushadd_to_gateway(http_url(gateway), job=job, registry=snapshot, grouping_key=dict(key), timeout=timeout)
    except (urllib.error.URLError, OSError) as exc:
        raise MetricsPushError(f"cannot push to {gateway} group {dict(key)}: {exc}") from exc
    return metrics.recorded()


PUSHGATEWAY_ENV = "EDGELOOP_PUSHGATEWAY_URL"


@dataclass(frozen=True)
class TaskMetrics:
    """Where one task's metrics go: the Pushgateway (None: nowhere) and the DAG and task that pushes them."""

    gateway: str | None
    dag_id: str
    task_id: str

    @classmethod
    def of_task(cls, context: Mapping[str, Any]) -> TaskMetrics:
        """The running task's target: ids from the Airflow context, the gateway from $EDGELOOP_PUSHGATEWAY_URL."""
        ti = context["ti"]
        return cls(gateway=os.environ.get(PUSHGATEWAY_ENV) or None, dag_id=ti.dag_id, task_id=ti.task_id)


def push_task_metrics(
    spec: PipelineSpec, target: TaskMetrics, fill: Callable[[BatchMetrics], None], **grouping: str
) -> None:
    """Record one task's metrics with `fill` and push them; any metrics problem costs a warning, not the task."""
    if not target.gateway:
        return
    try:
        batch = BatchMetrics(spec)
        fill(batch)
        push_batch_metrics(batch, target.gateway, grouping_key(spec, target.dag_id, target.task_id, **grouping))
    except Exception as exc:  # the work is done and durable; a metrics problem must not fail or retry it
        logging.getLogger(__name__).warning("metrics not pushed: %s", exc)
