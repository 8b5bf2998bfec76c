"""Long-lived state as metrics: an exporter that asks state readers for their samples at scrape time.

Fleet per group, consumer lag, registry versions, open alerts and the spec's limits are read
from callables given to :func:`exporter_registry`; the plugin mounts :func:`render_exposition`,
or :func:`serve_exporter` runs it as a process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, start_http_server

from edgeloop.metrics.catalogue import BY_NAME, MetricLabelError, check_labels, label_bounds
from edgeloop.spec import PipelineSpec

if TYPE_CHECKING:
    import threading
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One value of an exporter metric, as a state reader returns it."""

    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


StateReader = Callable[[], Iterable[Sample]]
"""Reads one kind of long-lived state (fleet, lag, registry, alerts) and returns its samples."""


def spec_limit_samples(specs: Sequence[PipelineSpec]) -> list[Sample]:
    """The spec thresholds that alert rules compare with, as `edgeloop_spec_limit` samples."""
    samples = []
    for spec in specs:
        limits = {
            "fleet_max_offline_ratio": spec.fleet_health.max_offline_ratio,
            "fleet_max_error_ratio": spec.fleet_health.max_error_rate,
            "fleet_max_version_skew_ratio": spec.fleet_health.max_version_skew,
            "annotation_sla_seconds": spec.annotation.sla.total_seconds(),
            "annotation_completion_ratio": spec.annotation.completion_ratio,
            "rollout_min_applied_ratio": spec.rollout.thresholds.min_applied_ratio,
            "drift_share_ratio": spec.drift.drift_share,
        }
        samples += [Sample("edgeloop_spec_limit", v, {"pipeline": spec.name, "limit": k}) for k, v in limits.items()]
    return samples


class StateCollector:
    """A prometheus_client collector that asks each reader for its samples at scrape time.

    A reader that raises is reported as ``edgeloop_exporter_reader_up{reader} 0`` and the others
    still answer; samples of unknown metrics, of pushed metrics, of unknown pipelines or with
    labels out of bounds are dropped, logged and counted in ``edgeloop_exporter_rejected_samples``.
    """

    def __init__(self, readers: Mapping[str, StateReader], specs: Sequence[PipelineSpec]) -> None:
        self.readers = dict(readers)
        self._bounds = {spec.name: label_bounds(spec) for spec in specs}

    def _accept(self, reader: str, sample: Sample) -> bool:
        definition = BY_NAME.get(sample.name)
        try:
            if definition is None or definition.source != "exporter" or definition.stage == "exporter":
                raise MetricLabelError(f"'{sample.name}' is not an exporter metric")
            pipeline = sample.labels.get("pipeline", "")
            if pipeline not in self._bounds:
                raise MetricLabelError(f"{sample.name}: pipeline {pipeline!r} has no spec")
            check_labels(definition, sample.labels, self._bounds[pipeline])
        except MetricLabelError as exc:
            log.warning("exporter reader %s: dropped a sample: %s", reader, exc)
            return False
        return True

    def collect(self) -> Iterator[Metric]:
        values: dict[str, dict[tuple[str, ...], float]] = {}
        up = GaugeMetricFamily(
            "edgeloop_exporter_reader_up", BY_NAME["edgeloop_exporter_reader_up"].help, labels=["reader"]
        )
        rejected = GaugeMetricFamily(
            "edgeloop_exporter_rejected_samples", BY_NAME["edgeloop_exporter_rejected_samples"].help, labels=["reader"]
        )
        for reader, read in sorted(self.readers.items()):
            try:
                samples = list(read())
            except Exception:  # one broken source must not blank the whole scrape
                log.exception("exporter reader %s failed", reader)
                up.add_metric([reader], 0)
                continue
            up.add_metric([reader], 1)
            dropped = 0
            for sample in samples:
                if not self._accept(reader, sample):
                    dropped += 1
                    continue
                label_values = tuple(str(sample.labels[name]) for name in BY_NAME[sample.name].labels)
                values.setdefault(sample.name, {})[label_values] = float(sample.value)
            rejected.add_metric([reader], dropped)
        for name, series in sorted(values.items()):
            definition = BY_NAME[name]
            family = GaugeMetricFamily(name, definition.help, labels=list(definition.labels))
            for label_values, value in sorted(series.items()):
                family.add_metric(list(label_values), value)
            yield family
        yield up
        yield rejected


def exporter_registry(readers: Mapping[str, StateReader], specs: Sequence[PipelineSpec]) -> CollectorRegistry:
    """A registry holding the edgeloop state collector, with the spec limits as a built-in reader."""
    registry = CollectorRegistry(auto_describe=False)
    all_readers: dict[str, StateReader] = {"spec_limits": lambda: spec_limit_samples(specs), **readers}
    registry.register(StateCollector(all_readers, specs))
    return registry


def render_exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """Body and content type of one scrape, for the plugin's metrics endpoint."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve_exporter(
    registry: CollectorRegistry, port: int, addr: str = "127.0.0.1"
) -> tuple[WSGIServer, threading.Thread]:
    """Serve the registry on http://addr:port/metrics in a background thread (exporter process mode)."""
    return start_http_server(port, addr, registry)
