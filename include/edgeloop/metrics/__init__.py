"""Every Prometheus metric edgeloop emits, in one place, and the two ways they leave a process.

- :mod:`~edgeloop.metrics.catalogue` — the metric definitions, their label vocabulary and its bounds;
- :mod:`~edgeloop.metrics.push` — **batch tasks** record into a :class:`BatchMetrics` (one
  ``CollectorRegistry`` per task) and call :func:`push_batch_metrics`: one Pushgateway group per
  pipeline + DAG + task, never per run, counters carried over across runs;
- :mod:`~edgeloop.metrics.collector` — **long-lived state** (fleet per group, consumer lag,
  registry versions, open alerts, the spec's limits) read at scrape time from callables given to
  :func:`exporter_registry`; the plugin mounts :func:`render_exposition`, or
  :func:`serve_exporter` runs it as a process;
- :mod:`~edgeloop.metrics.promql` — reading Prometheus back (range queries, which families have series).

The names below are re-exported so that ``from edgeloop.metrics import X`` works for all of them.
"""

from edgeloop.metrics.catalogue import (
    BY_NAME,
    DEADLETTER_REASONS,
    FORBIDDEN_LABELS,
    GATE_DECISIONS,
    GROUPING_LABELS,
    LABELS,
    METRICS,
    OVERALL_GROUP,
    REPORT_REFUSALS,
    SPEC_LIMITS,
    TRAINING_METRICS,
    Kind,
    MetricDef,
    MetricLabelError,
    Source,
    UnknownMetricError,
    check_labels,
    label_bounds,
    metric_definition,
    metric_names,
    unbounded_label_problems,
)
from edgeloop.metrics.collector import (
    Sample,
    StateCollector,
    StateReader,
    exporter_registry,
    render_exposition,
    serve_exporter,
    spec_limit_samples,
)
from edgeloop.metrics.promql import (
    EDGELOOP_NAMES_MATCH,
    SERIES_SUFFIXES,
    PrometheusQueryError,
    PrometheusUnavailable,
    metric_names_in_prometheus,
    missing_families,
    missing_metric_families,
    prometheus_data,
    promql_string,
    query_prometheus,
    query_range,
    series_names,
    wait_for_metric_families,
)
from edgeloop.metrics.push import (
    PUSH_JOB,
    BatchMetrics,
    MetricsPushError,
    grouping_key,
    push_batch_metrics,
    read_pushed_counters,
)

__all__ = [
    "BY_NAME",
    "DEADLETTER_REASONS",
    "EDGELOOP_NAMES_MATCH",
    "FORBIDDEN_LABELS",
    "GATE_DECISIONS",
    "GROUPING_LABELS",
    "LABELS",
    "METRICS",
    "OVERALL_GROUP",
    "PUSH_JOB",
    "REPORT_REFUSALS",
    "SERIES_SUFFIXES",
    "SPEC_LIMITS",
    "TRAINING_METRICS",
    "BatchMetrics",
    "Kind",
    "MetricDef",
    "MetricLabelError",
    "MetricsPushError",
    "PrometheusQueryError",
    "PrometheusUnavailable",
    "Sample",
    "Source",
    "StateCollector",
    "StateReader",
    "UnknownMetricError",
    "check_labels",
    "exporter_registry",
    "grouping_key",
    "label_bounds",
    "metric_definition",
    "metric_names",
    "metric_names_in_prometheus",
    "missing_families",
    "missing_metric_families",
    "prometheus_data",
    "promql_string",
    "push_batch_metrics",
    "query_prometheus",
    "query_range",
    "read_pushed_counters",
    "render_exposition",
    "series_names",
    "serve_exporter",
    "spec_limit_samples",
    "unbounded_label_problems",
    "wait_for_metric_families",
]
