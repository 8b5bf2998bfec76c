"""Every Prometheus metric edgeloop emits, in one place, and the two ways they leave a process.

- :mod:`~edgeloop.metrics.catalogue` — the metric definitions, their label vocabulary and its bounds;
- :mod:`~edgeloop.metrics.push` — **batch tasks** record into a ``BatchMetrics`` (one
  ``CollectorRegistry`` per task) and call ``push_batch_metrics``: one Pushgateway group per
  pipeline + DAG + task, never per run, counters carried over across runs;
- :mod:`~edgeloop.metrics.collector` — **long-lived state** (fleet per group, consumer lag,
  registry versions, open alerts, the spec's limits) read at scrape time from callables given to
  ``exporter_registry``; the plugin mounts ``render_exposition``, or ``serve_exporter`` runs it
  as a process;
- :mod:`~edgeloop.metrics.promql` — reading Prometheus back (range queries, which families have series).

Callers import a name from the module that owns it (``from edgeloop.metrics.push import BatchMetrics``).
"""
