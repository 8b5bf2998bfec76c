"""The catalogue of every Prometheus metric edgeloop emits, and the bounds of their labels.

Names are ``edgeloop_<stage>_<what>[_<unit>]``. Labels come from a small closed set whose
values are bounded by the pipeline spec (groups, topics, partitions, feature columns, waves)
or by this module (gate decisions, dead-letter reasons, spec limits); device ids, run ids,
record ids and model URIs are never labels. Every value is checked when it is recorded
(:mod:`edgeloop.metrics.push`, :mod:`edgeloop.metrics.collector`) and any exposition can be
checked with :func:`unbounded_label_problems`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from prometheus_client.parser import text_string_to_metric_families

from edgeloop.spec import STAGES, PipelineSpec, TrainingSpec

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
    cameras_only: bool = False  # only a camera pipeline (records with a frame) has a series of it

    @property
    def stage(self) -> str:
        return self.name.split("_")[1]

    @property
    def family(self) -> str:
        """The name prometheus_client takes (without the `_total` of counters)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


def _push(name: str, kind: Kind, labels: tuple[str, ...], help_: str, *, cameras_only: bool = False) -> MetricDef:
    return MetricDef(name, kind, help_, ("pipeline", *labels), "push", cameras_only)


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
        "edgeloop_training_frames_rejected",
        "gauge",
        (),
        "Rows the last training of a camera pipeline dropped for their frames (missing, too large, other digest...).",
        cameras_only=True,
    ),
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


def pipeline_metric_names(*, cameras: bool) -> list[str]:
    """The sample names a pipeline has series of once every stage ran: the camera-only ones only for cameras."""
    return [m.name for m in METRICS if cameras or not m.cameras_only]


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


def metric_definition(name: str) -> MetricDef:
    """The definition of metric `name`; UnknownMetricError when the catalogue has none."""
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
