"""Every Prometheus metric edgeloop emits, in one place, and the two ways they leave a process.

Names are ``edgeloop_<stage>_<what>[_<unit>]``. Labels come from a small closed set whose
values are bounded by the pipeline spec (groups, topics, partitions, feature columns, waves)
or by this module (gate decisions, dead-letter reasons, spec limits); device ids, run ids,
record ids and model URIs are never labels. Every value is checked when it is recorded.

- **Batch tasks** record into a :class:`BatchMetrics` (one ``CollectorRegistry`` per task)
  and call :func:`push_batch_metrics`: one Pushgateway group per pipeline + DAG + task (plus
  a bounded key such as the topic of a mapped task), never per run. Counters are carried
  over from the group's previous push so that ``rate()`` and ``increase()`` work across runs.
- **Long-lived state** (fleet per group, consumer lag, registry versions, open alerts, the
  spec's limits) is read at scrape time from callables given to :func:`exporter_registry`;
  the plugin mounts :func:`render_exposition`, or :func:`serve_exporter` runs it as a process.
"""

from __future__ import annotations

import json
import logging
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, pushadd_to_gateway
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from edgeloop.spec import STAGES, PipelineSpec, TrainingSpec

if TYPE_CHECKING:
    import threading
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger(__name__)

Kind = Literal["counter", "gauge"]
Source = Literal["push", "exporter"]

# --- label vocabulary ------------------------------------------------------------------

OVERALL_GROUP = "_all"
"""`group` value for the whole pipeline (group names start with a letter, so it cannot clash)."""

GATE_DECISIONS = ("promote", "reject", "unchanged")
# Why device reports were left out of fleet decisions (edgeloop.contract.identity.REFUSAL_REASONS and out-of-range
# values); a unit test keeps the two in step.
REPORT_REFUSALS = ("unsigned", "unknown_device", "bad_signature", "wrong_group", "bad_value")
DEADLETTER_REASONS = ("decode", "schema", "field", "too_large", "other")
"""Why a record went to dead-letter: not decodable, does not match the schema, a value its role does not allow
(confidence, label, group, device id, clock skew), over max_record_bytes, other."""

SPEC_LIMITS = (
    "fleet_max_offline_ratio",
    "fleet_max_error_ratio",
    "fleet_max_version_skew_ratio",
    "annotation_sla_seconds",
    "annotation_completion_ratio",
    "rollout_min_applied_ratio",
    "drift_share_ratio",
)
"""Thresholds from the spec that alert rules compare against (one source of truth: the spec)."""

TRAINING_METRICS: tuple[str, ...] = get_args(TrainingSpec.model_fields["metric"].annotation)

LABELS: dict[str, str] = {
    "pipeline": "spec name",
    "group": f"edge group of the spec, or '{OVERALL_GROUP}' for the whole pipeline",
    "topic": "full Kafka topic name of the spec (<prefix>.<kind>)",
    "partition": "partition number below the spec's topics.partitions",
    "column": "feature column of the spec's schema",
    "wave": "rollout wave number of one of the spec's groups",
    "decision": f"evaluation gate decision, one of {GATE_DECISIONS}",
    "reason": f"dead-letter reason, one of {DEADLETTER_REASONS}",
    "refusal": f"why a device report was left out of fleet decisions, one of {REPORT_REFUSALS}",
    "metric": f"training metric, one of {TRAINING_METRICS}",
    "stage": f"DAG stage, one of {STAGES}",
    "limit": f"spec limit, one of {SPEC_LIMITS}",
    "reader": "name of an exporter state reader (fixed in code)",
}
"""Every label an edgeloop metric may carry, and what bounds its values."""

GROUPING_LABELS = frozenset({"job", "instance", "dag", "task"})
"""Labels the Pushgateway and Prometheus add to pushed series (bounded: one group per task)."""

FORBIDDEN_LABELS = frozenset(
    {
        "device",
        "device_id",
        "record",
        "record_id",
        "run",
        "run_id",
        "dag_run",
        "dag_run_id",
        "try_number",
        "offset",
        "key",
        "object_key",
        "path",
        "model_uri",
        "model_version",
        "version",
        "timestamp",
        "ts",
        "user",
        "task_id",
        "batch_id",
        "trial",
    }
)
"""Label names whose values grow with devices, runs, records or time: never allowed."""

PUSH_JOB = "edgeloop"
"""The `job` of every pushed group; the grouping key adds pipeline, dag and task."""


# --- the metric definitions -------------------------------------------------------------


@dataclass(frozen=True)
class MetricDef:
    """One metric family: its sample name (counters end in `_total`), kind, labels and source."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    source: Source

    @property
    def stage(self) -> str:
        return self.name.split("_")[1]

    @property
    def family(self) -> str:
        """The name prometheus_client takes (without the `_total` of counters)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


def _push(name: str, kind: Kind, labels: tuple[str, ...], help_: str) -> MetricDef:
    return MetricDef(name, kind, help_, ("pipeline", *labels), "push")


def _state(name: str, labels: tuple[str, ...], help_: str) -> MetricDef:
    return MetricDef(name, "gauge", help_, ("pipeline", *labels), "exporter")


METRICS: tuple[MetricDef, ...] = (
    # pipeline-wide
    _push(
        "edgeloop_pipeline_last_success_timestamp_seconds",
        "gauge",
        ("stage",),
        "Unix time at which a task of this stage last finished successfully.",
    ),
    # ingest
    _push("edgeloop_ingest_records_total", "counter", ("topic",), "Records written to raw storage."),
    _push("edgeloop_ingest_bytes_total", "counter", ("topic",), "Bytes of record values read from Kafka and stored."),
    _push("edgeloop_ingest_files_total", "counter", ("topic",), "Parquet objects written to raw storage."),
    _push(
        "edgeloop_ingest_deadletter_records_total",
        "counter",
        ("topic", "reason"),
        "Records written to dead-letter storage instead of raw, by reason.",
    ),
    _push("edgeloop_ingest_run_duration_seconds", "gauge", ("topic",), "Wall time of the last ingest run of a topic."),
    _state(
        "edgeloop_ingest_consumer_lag_records",
        ("topic", "partition"),
        "Records between the ingest consumer group's committed offset and the partition's high watermark.",
    ),
    # drift
    _push(
        "edgeloop_drift_score",
        "gauge",
        ("group", "column"),
        "Drift score of one feature column in the last check (the statistic of the column's method).",
    ),
    _push("edgeloop_drift_detected", "gauge", ("group",), "1 when the last check found dataset drift, else 0."),
    _push(
        "edgeloop_drift_share_ratio", "gauge", ("group",), "Share of checked columns that drifted in the last check."
    ),
    _push("edgeloop_drift_sample_rows", "gauge", ("group",), "Rows of the current window used by the last check."),
    _push(
        "edgeloop_drift_last_alert_timestamp_seconds",
        "gauge",
        (),
        "Unix time of the last drift alert published on the alerts topic.",
    ),
    _state("edgeloop_drift_alerts_open", ("group",), "Drift alerts not yet answered by a new champion."),
    # annotation
    _push(
        "edgeloop_annotation_batch_tasks",
        "gauge",
        ("group",),
        "Tasks in the open annotation batch (0 once the batch is exported).",
    ),
    _push(
        "edgeloop_annotation_labelled_ratio", "gauge", ("group",), "Share of the open batch's tasks that are labelled."
    ),
    _push(
        "edgeloop_annotation_sla_deadline_timestamp_seconds",
        "gauge",
        ("group",),
        "Unix time at which the open batch's SLA ends (remaining time = this - time()).",
    ),
    _push("edgeloop_annotation_export_records", "gauge", ("group",), "Labelled records in the last exported dataset."),
    # training
    _push("edgeloop_training_trials", "gauge", (), "Hyperparameter trials run by the last training."),
    _push("edgeloop_training_best_score", "gauge", ("metric",), "Best validation score of the last training."),
    _push("edgeloop_training_duration_seconds", "gauge", (), "Wall time of the last training, search included."),
    _push("edgeloop_training_model_size_bytes", "gauge", (), "Serialized size of the last trained model."),
    _push(
        "edgeloop_training_inference_latency_seconds",
        "gauge",
        (),
        "Single-record inference latency (p95) of the last trained model on the training machine.",
    ),
    _push("edgeloop_training_model_memory_bytes", "gauge", (), "Memory estimate of the last trained model."),
    _push(
        "edgeloop_training_gate_decision",
        "gauge",
        ("decision",),
        "1 for the evaluation gate's last decision, 0 for the other decisions.",
    ),
    _push("edgeloop_training_gate_decisions_total", "counter", ("decision",), "Evaluation gate decisions."),
    # registry
    _state("edgeloop_registry_champion_version", (), "Registry version behind the `champion` alias."),
    _state("edgeloop_registry_challenger_version", (), "Registry version behind the `challenger` alias."),
    _state(
        "edgeloop_registry_champion_updated_timestamp_seconds",
        (),
        "Unix time at which the `champion` alias last moved.",
    ),
    # rollout
    _push("edgeloop_rollout_wave", "gauge", (), "Wave the last rollout reached."),
    _push(
        "edgeloop_rollout_devices_applied_ratio",
        "gauge",
        ("group", "wave"),
        "Share of the group's devices that report the new model applied.",
    ),
    _push(
        "edgeloop_rollout_gate_passed",
        "gauge",
        ("group", "wave"),
        "1 when the group's last health gate passed, 0 when it failed.",
    ),
    _push("edgeloop_rollout_gate_failures_total", "counter", ("group", "wave"), "Failed health gates."),
    _push("edgeloop_rollout_rollbacks_total", "counter", ("group",), "Automatic or manual rollbacks."),
    _push("edgeloop_rollout_duration_seconds", "gauge", ("group", "wave"), "Wall time of the group's last rollout."),
    _push("edgeloop_rollout_model_version", "gauge", ("group",), "Registry version the group was last rolled out to."),
    # fleet
    _state("edgeloop_fleet_devices", ("group",), "Devices known in the group (device-state)."),
    _state("edgeloop_fleet_devices_online", ("group",), "Devices of the group with a recent heartbeat."),
    _state("edgeloop_fleet_devices_stale", ("group",), "Devices of the group whose state is older than stale_after."),
    _state("edgeloop_fleet_error_ratio", ("group",), "Share of the group's devices that reported errors recently."),
    _state(
        "edgeloop_fleet_refused_reports",
        ("refusal",),
        "Device reports in the health window left out of every decision: unsigned, unknown_device, bad_signature,"
        " wrong_group, bad_value.",
    ),
    _state(
        "edgeloop_fleet_version_skew_ratio",
        ("group",),
        "Share of the group's devices whose reported model differs from the desired one.",
    ),
    # the spec's limits, for alert rules
    _state("edgeloop_spec_limit", ("limit",), "A threshold from the pipeline spec, for alert rules to compare with."),
    # the exporter itself (no pipeline label)
    MetricDef(
        "edgeloop_exporter_reader_up",
        "gauge",
        "1 when the state reader answered in this scrape, else 0.",
        ("reader",),
        "exporter",
    ),
    MetricDef(
        "edgeloop_exporter_rejected_samples",
        "gauge",
        "Samples a reader returned in this scrape that were dropped (unknown metric or label out of bounds).",
        ("reader",),
        "exporter",
    ),
)

BY_NAME: Mapping[str, MetricDef] = {m.name: m for m in METRICS}


def metric_names() -> frozenset[str]:
    """Sample names of every edgeloop metric (counters with their `_total`)."""
    return frozenset(BY_NAME)


# --- bounds ----------------------------------------------------------------------------------


class MetricLabelError(ValueError):
    """A metric recorded with a label that is unknown, missing, forbidden or out of its bounds."""


class UnknownMetricError(KeyError):
    """A metric name that is not defined in edgeloop.metrics."""


def label_bounds(spec: PipelineSpec) -> dict[str, frozenset[str]]:
    """The values each label may take for one pipeline; none depends on devices or runs."""
    return {
        "pipeline": frozenset({spec.name}),
        "group": frozenset({g.name for g in spec.groups} | {OVERALL_GROUP}),
        "topic": frozenset(spec.all_topics),
        "partition": frozenset(str(p) for p in range(spec.topics.partitions)),
        "column": frozenset(spec.features),
        "wave": frozenset(str(g.wave) for g in spec.groups),
        "decision": frozenset(GATE_DECISIONS),
        "reason": frozenset(DEADLETTER_REASONS),
        "refusal": frozenset(REPORT_REFUSALS),
        "metric": frozenset(TRAINING_METRICS),
        "stage": frozenset(STAGES),
        "limit": frozenset(SPEC_LIMITS),
    }


def _lookup(name: str) -> MetricDef:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UnknownMetricError(f"metric '{name}' is not defined in edgeloop.metrics.METRICS") from None


def check_labels(definition: MetricDef, labels: Mapping[str, str], bounds: Mapping[str, frozenset[str]]) -> None:
    """Raise MetricLabelError unless `labels` are exactly the metric's labels, each within its bounds."""
    given, expected = set(labels), set(definition.labels)
    if given != expected:
        missing, extra = sorted(expected - given), sorted(given - expected)
        raise MetricLabelError(
            f"{definition.name}: labels must be {sorted(expected)}; missing {missing}, extra {extra}"
        )
    for label, value in labels.items():
        allowed = bounds.get(label)
        if allowed is not None and value not in allowed:
            raise MetricLabelError(
                f"{definition.name}: label {label}={value!r} is not one of the {len(allowed)} allowed values "
                f"({LABELS[label]})"
            )


# --- batch tasks: record, then push ------------------------------------------------------------


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
        definition = _lookup(name)
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


def _gateway_url(gateway: str) -> str:
    return gateway if "://" in gateway else f"http://{gateway}"


def read_pushed_counters(
    gateway: str, job: str, key: Mapping[str, str], timeout: float = 10.0
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Current counter values of one Pushgateway group, keyed by (sample name, sorted labels).

    The labels include the group's (job and grouping key), as the Pushgateway stores them.
    """
    url = f"{_gateway_url(gateway).rstrip('/')}/api/v1/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the configured gateway URL
            payload = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise MetricsPushError(f"cannot read {url}: {exc}") from exc
    wanted = {"job": job, **key}
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for group in payload.get("data", []):
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
        pushadd_to_gateway(_gateway_url(gateway), job=job, registry=snapshot, grouping_key=dict(key), timeout=timeout)
    except (urllib.error.URLError, OSError) as exc:
        raise MetricsPushError(f"cannot push to {gateway} group {dict(key)}: {exc}") from exc
    return metrics.recorded()


# --- long-lived state: the exporter ------------------------------------------------------------


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
    registry.register(StateCollector(all_readers, specs))  # type: ignore[arg-type]
    return registry


def render_exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """Body and content type of one scrape, for the plugin's metrics endpoint."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve_exporter(
    registry: CollectorRegistry, port: int, addr: str = "127.0.0.1"
) -> tuple[WSGIServer, threading.Thread]:
    """Serve the registry on http://addr:port/metrics in a background thread (exporter process mode)."""
    return start_http_server(port, addr, registry)


# --- checking an exposition ---------------------------------------------------------------------


def unbounded_label_problems(exposition: str, specs: Sequence[PipelineSpec]) -> list[str]:
    """Problems that make an exposition's series grow with devices or runs; empty when it is sound.

    Looks at every `edgeloop_*` sample: forbidden label names, labels the metric does not
    declare, unknown pipelines and values outside the spec's bounds.
    """
    bounds = {spec.name: label_bounds(spec) for spec in specs}
    problems: list[str] = []
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if not sample.name.startswith("edgeloop_"):
                continue
            # a counter family also exposes `<family>_created` (prometheus_client) next to `<family>_total`
            definition = BY_NAME.get(sample.name) or BY_NAME.get(f"{sample.name.removesuffix('_created')}_total")
            if definition is None:
                problems.append(f"{sample.name}: not defined in edgeloop.metrics")
                continue
            for label, value in sample.labels.items():
                if label in FORBIDDEN_LABELS:
                    problems.append(f"{sample.name}: forbidden label '{label}' (grows with devices or runs)")
                elif label not in definition.labels and label not in GROUPING_LABELS and label not in LABELS:
                    problems.append(f"{sample.name}: label '{label}' is neither declared nor a known bounded label")
                elif label in LABELS and label != "reader":
                    # a declared label, or a bounded grouping-key label (e.g. topic) the Pushgateway added
                    pipeline = sample.labels.get("pipeline")
                    if pipeline not in bounds:
                        problems.append(f"{sample.name}: pipeline {pipeline!r} has no spec")
                    elif value not in bounds[pipeline][label]:
                        problems.append(f"{sample.name}: {label}={value!r} is out of bounds ({LABELS[label]})")
    return problems


# --- reading Prometheus back ---------------------------------------------------------------------

SERIES_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
"""Suffixes under which Prometheus stores a family's samples (counter, histogram and summary parts)."""

EDGELOOP_NAMES_MATCH = '{__name__=~"edgeloop[_:].+"}'
"""Series selector of every edgeloop metric and recording rule."""


class PrometheusQueryError(RuntimeError):
    """Prometheus did not answer a query, or answered with an error; the message names the URL."""


class PrometheusUnavailable(PrometheusQueryError):
    """Prometheus could not be reached at all (connection refused, timeout, not HTTP)."""


def promql_string(value: str) -> str:
    """`value` as a PromQL string literal (double quotes; backslash, quote and control characters escaped)."""
    return json.dumps(value)


def query_prometheus(prometheus_url: str, path: str, params: Sequence[tuple[str, str]], timeout: float = 10.0) -> Any:
    """GET one Prometheus HTTP API path (e.g. ``/api/v1/query_range``) and return its ``data``.

    Raises PrometheusQueryError when Prometheus is unreachable, the answer is not JSON or its
    status is not ``success`` (the message names the URL and Prometheus' own error).
    """
    base = _gateway_url(prometheus_url).rstrip("/")
    url = f"{base}{path}?{urllib.parse.urlencode(list(params))}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the configured Prometheus URL
            payload = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        # Prometheus answers 400/422/503 with a JSON error body that says what is wrong
        try:
            payload = json.loads(exc.read())
        except ValueError:
            raise PrometheusQueryError(f"{base}{path}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PrometheusUnavailable(f"Prometheus at {base} is not reachable ({path}): {exc}") from exc
    return prometheus_data(payload, f"{base}{path}")


def prometheus_data(payload: Any, where: str) -> Any:
    """The ``data`` of a Prometheus API answer; PrometheusQueryError unless its status is ``success``."""
    if not isinstance(payload, dict) or payload.get("status") != "success":
        error = payload.get("error") if isinstance(payload, dict) else None
        raise PrometheusQueryError(f"{where}: {error or 'not a Prometheus API answer'}")
    return payload.get("data")


def query_range(
    prometheus_url: str, expr: str, start: float, end: float, step: float, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """A PromQL range query: Prometheus' matrix, one ``{"metric": labels, "values": [[t, "v"], ...]}`` per series."""
    params = [("query", expr), ("start", f"{start:.3f}"), ("end", f"{end:.3f}"), ("step", f"{step:g}")]
    data = query_prometheus(prometheus_url, "/api/v1/query_range", params, timeout)
    if not isinstance(data, dict) or data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        raise PrometheusQueryError(f"{prometheus_url}: a range query did not answer a matrix for {expr}")
    return list(data["result"])


def series_names(family: str) -> frozenset[str]:
    """Sample names under which Prometheus may hold a family's series.

    ``edgeloop_ingest_records_total`` and ``edgeloop_ingest_records`` both name the counter
    family; a histogram or summary shows up as ``_bucket``, ``_count`` or ``_sum`` series.
    """
    base = family.removesuffix("_total")
    return frozenset({family, base, *(f"{base}{suffix}" for suffix in SERIES_SUFFIXES)})


def missing_families(present: Iterable[str], families: Iterable[str]) -> list[str]:
    """The `families` (in their order, without repeats) none of whose series names is in `present`."""
    seen = frozenset(present)
    return [f for f in dict.fromkeys(families) if not series_names(f) & seen]


def metric_names_in_prometheus(
    prometheus_url: str,
    match: Sequence[str] = (EDGELOOP_NAMES_MATCH,),
    *,
    since: float | None = None,
    timeout: float = 10.0,
) -> set[str]:
    """Metric names Prometheus holds series for, among the series that `match` selects.

    `since` (Unix seconds) limits the look to series with samples from then on; without it
    Prometheus answers from everything it stores.
    """
    params = [("match[]", selector) for selector in match]
    if since is not None:
        params += [("start", f"{since:.3f}"), ("end", f"{time.time():.3f}")]
    data = query_prometheus(prometheus_url, "/api/v1/label/__name__/values", params, timeout)
    if not isinstance(data, list):
        raise PrometheusQueryError(f"{prometheus_url}: label values are not a list: {data!r}"[:300])
    return {str(name) for name in data}


def missing_metric_families(
    prometheus_url: str,
    families: Iterable[str] | None = None,
    *,
    pipeline: str | None = None,
    since: float | None = None,
    timeout: float = 10.0,
) -> list[str]:
    """Metric families (default: the whole catalogue, METRICS) that have no series in Prometheus yet.

    A family is there when any of its series names is (see series_names). With `pipeline`,
    a family that carries the `pipeline` label needs a series of that pipeline; the exporter's
    own families (no `pipeline` label) need any series. Names outside the catalogue (e.g. a
    recording rule such as ``edgeloop:drift_score:max``) are treated as carrying `pipeline`.
    Raises PrometheusQueryError when Prometheus cannot be asked.
    """
    wanted = list(dict.fromkeys(families if families is not None else (m.name for m in METRICS)))
    if pipeline is None:
        return missing_families(metric_names_in_prometheus(prometheus_url, since=since, timeout=timeout), wanted)
    per_pipeline = [f for f in wanted if f not in BY_NAME or "pipeline" in BY_NAME[f].labels]
    global_ = [f for f in wanted if f in BY_NAME and "pipeline" not in BY_NAME[f].labels]
    missing: set[str] = set()
    if per_pipeline:
        selector = f'{{__name__=~"edgeloop[_:].+", pipeline={promql_string(pipeline)}}}'
        names = metric_names_in_prometheus(prometheus_url, (selector,), since=since, timeout=timeout)
        missing.update(missing_families(names, per_pipeline))
    if global_:
        names = metric_names_in_prometheus(prometheus_url, since=since, timeout=timeout)
        missing.update(missing_families(names, global_))
    return [f for f in wanted if f in missing]


def wait_for_metric_families(
    prometheus_url: str,
    families: Iterable[str] | None = None,
    *,
    pipeline: str | None = None,
    since: float | None = None,
    deadline_s: float = 60.0,
    poll_s: float = 2.0,
) -> list[str]:
    """Ask missing_metric_families until nothing is missing or `deadline_s` has passed; return what is missing.

    Meant for tests and the demo after a push: a pushed family reaches Prometheus with its next
    scrape of the Pushgateway (the local stack scrapes every 15 s).
    """
    wanted = list(families) if families is not None else None
    deadline = time.monotonic() + deadline_s
    while True:
        missing = missing_metric_families(prometheus_url, wanted, pipeline=pipeline, since=since)
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
