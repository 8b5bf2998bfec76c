"""The metric catalogue, batch metrics, the push to a Pushgateway and the state exporter."""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeloop.metrics.catalogue import (
    BY_NAME,
    FORBIDDEN_LABELS,
    GATE_DECISIONS,
    LABELS,
    METRICS,
    OVERALL_GROUP,
    REPORT_REFUSALS,
    SPEC_LIMITS,
    MetricLabelError,
    UnknownMetricError,
    label_bounds,
    metric_names,
    unbounded_label_problems,
)
from edgeloop.metrics.collector import Sample, exporter_registry, render_exposition, serve_exporter
from edgeloop.metrics.push import PUSH_JOB, BatchMetrics, MetricsPushError, grouping_key, push_batch_metrics
from edgeloop.spec import STAGES, PipelineSpec, load_spec

DEMO_SPEC = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
STAGE_PREFIXES = (
    "pipeline",
    "ingest",
    "drift",
    "annotation",
    "training",
    "registry",
    "rollout",
    "fleet",
    "spec",
    "exporter",
)


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(DEMO_SPEC)


# --- the catalogue --------------------------------------------------------------------------


def test_every_metric_is_named_edgeloop_stage_what_unit() -> None:
    pattern = re.compile(rf"^edgeloop_({'|'.join(STAGE_PREFIXES)})_[a-z][a-z0-9_]*[a-z0-9]$")
    for metric in METRICS:
        assert pattern.match(metric.name), metric.name
        assert metric.name.endswith("_total") == (metric.kind == "counter"), metric.name
        assert not metric.name.endswith(("_count", "_sum", "_bucket", "_created")), metric.name
        if metric.source == "exporter":
            assert metric.kind == "gauge", f"{metric.name}: exporter state is a gauge"
    assert len(BY_NAME) == len(METRICS), "duplicate metric names"


def test_labels_come_from_the_bounded_vocabulary_only() -> None:
    for metric in METRICS:
        assert set(metric.labels) <= set(LABELS), metric.name
        assert not set(metric.labels) & FORBIDDEN_LABELS, metric.name
        if metric.stage != "exporter":
            assert metric.labels[0] == "pipeline", metric.name
    assert not set(LABELS) & FORBIDDEN_LABELS


def test_the_families_the_stages_emit_are_all_defined() -> None:
    wanted = {
        "edgeloop_ingest_records_total",
        "edgeloop_ingest_bytes_total",
        "edgeloop_ingest_deadletter_records_total",
        "edgeloop_ingest_consumer_lag_records",
        "edgeloop_ingest_run_duration_seconds",
        "edgeloop_drift_score",
        "edgeloop_drift_detected",
        "edgeloop_drift_share_ratio",
        "edgeloop_drift_alerts_open",
        "edgeloop_annotation_batch_tasks",
        "edgeloop_annotation_labelled_ratio",
        "edgeloop_annotation_sla_deadline_timestamp_seconds",
        "edgeloop_annotation_export_records",
        "edgeloop_training_trials",
        "edgeloop_training_best_score",
        "edgeloop_training_duration_seconds",
        "edgeloop_training_model_size_bytes",
        "edgeloop_training_inference_latency_seconds",
        "edgeloop_training_gate_decision",
        "edgeloop_registry_champion_version",
        "edgeloop_rollout_wave",
        "edgeloop_rollout_devices_applied_ratio",
        "edgeloop_rollout_gate_failures_total",
        "edgeloop_rollout_rollbacks_total",
        "edgeloop_rollout_duration_seconds",
        "edgeloop_fleet_devices",
        "edgeloop_fleet_devices_online",
        "edgeloop_fleet_error_ratio",
        "edgeloop_fleet_version_skew_ratio",
    }
    assert wanted <= metric_names(), sorted(wanted - metric_names())


def test_label_bounds_come_from_the_spec(spec: PipelineSpec) -> None:
    bounds = label_bounds(spec)
    assert bounds["group"] == {"line-canary", "plant-north", "plant-south", OVERALL_GROUP}
    assert bounds["column"] == set(spec.features)
    assert bounds["topic"] == set(spec.all_topics)
    assert bounds["wave"] == {"0", "1"}
    assert bounds["partition"] == {str(p) for p in range(spec.topics.partitions)}
    assert bounds["metric"] == {"f1_macro", "accuracy", "balanced_accuracy"}


# --- batch metrics ------------------------------------------------------------------------------


def test_batch_metrics_fill_the_pipeline_label_and_keep_only_what_was_recorded(spec: PipelineSpec) -> None:
    batch = BatchMetrics(spec)
    batch.inc("edgeloop_ingest_records_total", 120, topic="factory_maintenance.telemetry")
    batch.set("edgeloop_drift_score", 0.42, group="plant-north", column="rpm")
    batch.mark_success("drift", when=1_700_000_000)

    assert batch.recorded() == [
        "edgeloop_drift_score",
        "edgeloop_ingest_records_total",
        "edgeloop_pipeline_last_success_timestamp_seconds",
    ]
    value = batch.registry.get_sample_value(
        "edgeloop_ingest_records_total", {"pipeline": spec.name, "topic": "factory_maintenance.telemetry"}
    )
    assert value == 120
    assert (
        batch.registry.get_sample_value(
            "edgeloop_pipeline_last_success_timestamp_seconds", {"pipeline": spec.name, "stage": "drift"}
        )
        == 1_700_000_000
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: b.inc("edgeloop_ingest_records_total", 1, topic="t", device_id="d-1"), "extra \\['device_id'\\]"),
        (lambda b: b.inc("edgeloop_ingest_records_total", 1), "missing \\['topic'\\]"),
        (lambda b: b.set("edgeloop_drift_detected", 1, group="plant-east"), "group='plant-east'"),
        (lambda b: b.set("edgeloop_drift_score", 1, group="plant-north", column="firmware"), "column='firmware'"),
        (lambda b: b.set("edgeloop_training_gate_decision", 1, decision="maybe"), "decision='maybe'"),
        (lambda b: b.set("edgeloop_fleet_devices", 3, group="plant-north"), "read by the exporter"),
        (lambda b: b.set("edgeloop_ingest_records_total", 3, topic="factory_maintenance.health"), "is a counter"),
    ],
)
def test_batch_metrics_reject_unbounded_or_wrong_labels(spec: PipelineSpec, call: Any, message: str) -> None:
    batch = BatchMetrics(spec)
    with pytest.raises(MetricLabelError, match=message):
        call(batch)
    assert batch.recorded() == [], "a rejected call must not leave an empty family behind"


def test_unknown_metrics_and_negative_increments_are_refused(spec: PipelineSpec) -> None:
    batch = BatchMetrics(spec)
    with pytest.raises(UnknownMetricError, match="edgeloop_ingest_rows_total"):
        batch.inc("edgeloop_ingest_rows_total", 1, topic="factory_maintenance.telemetry")
    with pytest.raises(ValueError, match="only goes up"):
        batch.inc("edgeloop_ingest_records_total", -1, topic="factory_maintenance.telemetry")


def test_grouping_key_is_per_task_and_refuses_run_ids(spec: PipelineSpec) -> None:
    key = grouping_key(spec, "factory_maintenance__ingest", "ingest_topic", topic="factory_maintenance.health")
    assert key == {
        "pipeline": "factory_maintenance",
        "dag": "factory_maintenance__ingest",
        "task": "ingest_topic",
        "topic": "factory_maintenance.health",
    }
    with pytest.raises(MetricLabelError, match="run_id"):
        grouping_key(spec, "factory_maintenance__ingest", "ingest_topic", run_id="scheduled__2026-01-01")
    with pytest.raises(MetricLabelError, match="group='plant-east'"):
        grouping_key(spec, "factory_maintenance__rollout", "run_wave", group="plant-east")


# --- pushing -------------------------------------------------------------------------------------


class _FakePushgateway(BaseHTTPRequestHandler):
    """Just enough of the Pushgateway: POST replaces same-named families of a group, GET /api/v1/metrics."""

    groups: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        parts = [unquote(p) for p in self.path.split("/")[2:]]  # /metrics/job/<job>/<k>/<v>...
        labels = dict(zip(parts[::2], parts[1::2], strict=True))
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        group = self.groups.setdefault(tuple(sorted(labels.items())), {})
        for family in text_string_to_metric_families(body):
            group[family.name] = {
                "type": family.type.upper(),
                "samples": [(s.name, {**s.labels, **labels}, s.value) for s in family.samples],
            }
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:
        data = []
        for key, families in self.groups.items():
            entry: dict[str, Any] = {"labels": dict(key)}
            for family in families.values():
                for name, labels, value in family["samples"]:
                    out = entry.setdefault(name, {"type": family["type"], "metrics": []})
                    out["metrics"].append({"labels": {**labels, "instance": ""}, "value": str(value)})
            data.append(entry)
        body = json.dumps({"status": "success", "data": data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def gateway() -> Iterator[tuple[str, dict[tuple[tuple[str, str], ...], dict[str, Any]]]]:
    _FakePushgateway.groups = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakePushgateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}", _FakePushgateway.groups
    finally:
        server.shutdown()
        server.server_close()


def _pushed(groups: dict[Any, Any], key: dict[str, str], sample: str) -> dict[tuple[tuple[str, str], ...], float]:
    group = groups[tuple(sorted({"job": PUSH_JOB, **key}.items()))]
    return {
        tuple(sorted(labels.items())): value
        for family in group.values()
        for name, labels, value in family["samples"]
        if name == sample
    }


def test_counters_keep_growing_across_runs_and_gauges_are_replaced(spec: PipelineSpec, gateway: Any) -> None:
    address, groups = gateway
    key = grouping_key(spec, "factory_maintenance__ingest", "ingest_topic", topic="factory_maintenance.telemetry")
    topic = "factory_maintenance.telemetry"
    for records, dead, seconds in ((500, 0, 3.0), (300, 7, 2.0)):
        batch = BatchMetrics(spec)
        batch.inc("edgeloop_ingest_records_total", records, topic=topic)
        batch.inc("edgeloop_ingest_deadletter_records_total", dead, topic=topic, reason="schema")
        batch.set("edgeloop_ingest_run_duration_seconds", seconds, topic=topic)
        pushed = push_batch_metrics(batch, address, key)
        assert "edgeloop_ingest_records_total" in pushed

    assert list(_pushed(groups, key, "edgeloop_ingest_records_total").values()) == [800]
    assert list(_pushed(groups, key, "edgeloop_ingest_deadletter_records_total").values()) == [7]
    assert list(_pushed(groups, key, "edgeloop_ingest_run_duration_seconds").values()) == [2.0]
    assert _pushed(groups, key, "edgeloop_ingest_records_created") == {}, "_created must not be pushed"


def test_counters_of_another_group_are_not_carried_over(spec: PipelineSpec, gateway: Any) -> None:
    address, groups = gateway
    telemetry = grouping_key(spec, "factory_maintenance__ingest", "ingest_topic", topic="factory_maintenance.telemetry")
    health = grouping_key(spec, "factory_maintenance__ingest", "ingest_topic", topic="factory_maintenance.health")
    for key, count in ((telemetry, 50), (health, 9)):
        batch = BatchMetrics(spec)
        batch.inc("edgeloop_ingest_records_total", count, topic=key["topic"])
        push_batch_metrics(batch, address, key)
    assert list(_pushed(groups, health, "edgeloop_ingest_records_total").values()) == [9]
    assert list(_pushed(groups, telemetry, "edgeloop_ingest_records_total").values()) == [50]


def test_an_unreachable_gateway_is_a_push_error_naming_it(spec: PipelineSpec) -> None:
    batch = BatchMetrics(spec)
    batch.set("edgeloop_training_trials", 12)
    key = grouping_key(spec, "factory_maintenance__train", "train_model")
    with pytest.raises(MetricsPushError, match=r"127\.0\.0\.1:9"):
        push_batch_metrics(batch, "127.0.0.1:9", key, timeout=2)


def test_nothing_recorded_means_nothing_pushed(spec: PipelineSpec) -> None:
    key = grouping_key(spec, "factory_maintenance__train", "train_model")
    assert push_batch_metrics(BatchMetrics(spec), "127.0.0.1:9", key) == []


# --- the exporter ------------------------------------------------------------------------------


def _families(registry: Any) -> dict[str, list[Any]]:
    body, content_type = render_exposition(registry)
    assert content_type.startswith("text/plain")
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(body.decode()):
        out.setdefault(family.name, []).extend(family.samples)
    return out


def test_exporter_reports_each_reader_and_the_spec_limits(spec: PipelineSpec) -> None:
    def fleet() -> list[Sample]:
        return [Sample("edgeloop_fleet_devices", 120, {"pipeline": spec.name, "group": "plant-north"})]

    def broken() -> list[Sample]:
        raise ConnectionError("kafka is down")

    def sloppy() -> list[Sample]:
        return [
            Sample("edgeloop_registry_champion_version", 4, {"pipeline": spec.name}),
            Sample("edgeloop_fleet_devices_online", 1, {"pipeline": spec.name, "group": "d-0001"}),
            Sample("edgeloop_ingest_records_total", 1, {"pipeline": spec.name, "topic": spec.topic("telemetry")}),
            Sample("edgeloop_registry_champion_version", 4, {"pipeline": "other_pipeline"}),
        ]

    families = _families(exporter_registry({"fleet": fleet, "lag": broken, "registry": sloppy}, [spec]))

    up = {s.labels["reader"]: s.value for s in families["edgeloop_exporter_reader_up"]}
    assert up == {"fleet": 1, "lag": 0, "registry": 1, "spec_limits": 1}
    rejected = {s.labels["reader"]: s.value for s in families["edgeloop_exporter_rejected_samples"]}
    assert rejected["registry"] == 3
    assert [(s.labels, s.value) for s in families["edgeloop_fleet_devices"]] == [
        ({"pipeline": spec.name, "group": "plant-north"}, 120)
    ]
    assert "edgeloop_fleet_devices_online" not in families
    limits = {s.labels["limit"]: s.value for s in families["edgeloop_spec_limit"]}
    assert set(limits) == set(SPEC_LIMITS)
    assert limits["annotation_sla_seconds"] == 4 * 3600
    assert limits["fleet_max_offline_ratio"] == spec.fleet_health.max_offline_ratio


def test_exporter_process_serves_metrics_over_http(spec: PipelineSpec) -> None:
    server, thread = serve_exporter(exporter_registry({}, [spec]), port=0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert 'edgeloop_spec_limit{limit="annotation_sla_seconds",pipeline="factory_maintenance"} 14400.0' in text


# --- no label grows with devices or runs ---------------------------------------------------------


def _simulate(spec: PipelineSpec, devices: int, runs: int) -> str:
    """A fleet of `devices` devices over `runs` runs, through every edgeloop metric; the exposition."""
    groups = [g.name for g in spec.groups]
    fleet = [{"id": f"dev-{i:05d}", "group": groups[i % len(groups)], "online": i % 7 != 0} for i in range(devices)]
    texts = []
    for run in range(runs):
        batch = BatchMetrics(spec)
        for device in fleet:
            for topic in spec.topics.ingest:
                batch.inc("edgeloop_ingest_records_total", 10, topic=spec.topic(topic))
                batch.inc("edgeloop_ingest_bytes_total", 2_000, topic=spec.topic(topic))
            if int(str(device["id"])[-1]) == run % 10:
                batch.inc("edgeloop_ingest_deadletter_records_total", 1, topic=spec.topic("telemetry"), reason="schema")
        for topic in spec.topics.ingest:
            batch.set("edgeloop_ingest_run_duration_seconds", 4.2, topic=spec.topic(topic))
            batch.inc("edgeloop_ingest_files_total", 1 + devices // 250, topic=spec.topic(topic))
        for group in [*groups, OVERALL_GROUP]:
            for column in spec.features:
                batch.set("edgeloop_drift_score", 0.1 * run, group=group, column=column)
            batch.set("edgeloop_drift_detected", run % 2, group=group)
            batch.set("edgeloop_drift_share_ratio", 0.3, group=group)
            batch.set("edgeloop_drift_sample_rows", devices * 10, group=group)
            batch.set("edgeloop_annotation_batch_tasks", 200, group=group)
            batch.set("edgeloop_annotation_labelled_ratio", 0.5, group=group)
            batch.set("edgeloop_annotation_sla_deadline_timestamp_seconds", 1e9 + run, group=group)
            batch.set("edgeloop_annotation_export_records", devices, group=group)
        batch.set("edgeloop_drift_last_alert_timestamp_seconds", 1e9 + run)
        batch.set("edgeloop_training_trials", spec.training.search_budget)
        batch.set("edgeloop_training_best_score", 0.9, metric=spec.training.metric)
        names = ("duration_seconds", "model_size_bytes", "inference_latency_seconds", "model_memory_bytes")
        for name in (*names, "frames_rejected"):
            batch.set(f"edgeloop_training_{name}", 1.0)
        for decision in GATE_DECISIONS:
            batch.set("edgeloop_training_gate_decision", float(decision == "promote"), decision=decision)
            batch.inc("edgeloop_training_gate_decisions_total", 1, decision=decision)
        for group in spec.groups:
            wave = str(group.wave)
            batch.set("edgeloop_rollout_wave", group.wave)
            applied = sum(1 for d in fleet if d["group"] == group.name) / max(1, devices)
            batch.set("edgeloop_rollout_devices_applied_ratio", applied, group=group.name, wave=wave)
            batch.set("edgeloop_rollout_gate_passed", 1, group=group.name, wave=wave)
            batch.inc("edgeloop_rollout_gate_failures_total", 0, group=group.name, wave=wave)
            batch.inc("edgeloop_rollout_rollbacks_total", 0, group=group.name)
            batch.set("edgeloop_rollout_duration_seconds", 60, group=group.name, wave=wave)
            batch.set("edgeloop_rollout_model_version", run + 1, group=group.name)
        for stage in STAGES:
            batch.mark_success(stage, when=1e9 + run)
        texts.append(render_exposition(batch.registry)[0].decode())

    def fleet_state() -> list[Sample]:
        samples = []
        for group in groups:
            members = [d for d in fleet if d["group"] == group]
            labels = {"pipeline": spec.name, "group": group}
            samples += [
                Sample("edgeloop_fleet_devices", len(members), labels),
                Sample("edgeloop_fleet_devices_online", sum(1 for d in members if d["online"]), labels),
                Sample("edgeloop_fleet_devices_stale", 0, labels),
                Sample("edgeloop_fleet_error_ratio", 0.01, labels),
                Sample("edgeloop_fleet_version_skew_ratio", 0.0, labels),
                Sample("edgeloop_drift_alerts_open", 1, labels),
            ]
        for reason in REPORT_REFUSALS:
            samples.append(Sample("edgeloop_fleet_refused_reports", 3, {"pipeline": spec.name, "refusal": reason}))
        return samples

    def lag() -> list[Sample]:
        return [
            Sample(
                "edgeloop_ingest_consumer_lag_records",
                devices,
                {"pipeline": spec.name, "topic": t, "partition": str(p)},
            )
            for t in (spec.topic(k) for k in spec.topics.ingest)
            for p in range(spec.topics.partitions)
        ]

    def registry_state() -> list[Sample]:
        labels = {"pipeline": spec.name}
        return [
            Sample("edgeloop_registry_champion_version", runs, labels),
            Sample("edgeloop_registry_challenger_version", runs + 1, labels),
            Sample("edgeloop_registry_champion_updated_timestamp_seconds", 1e9, labels),
        ]

    exporter = exporter_registry({"fleet": fleet_state, "lag": lag, "registry": registry_state}, [spec])
    texts.append(render_exposition(exporter)[0].decode())
    return "\n".join(texts)


def _series(exposition: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name.startswith("edgeloop_") and not s.name.endswith("_created")
    }


def test_no_label_grows_with_devices_or_runs(spec: PipelineSpec) -> None:
    small = _simulate(spec, devices=10, runs=2)
    large = _simulate(spec, devices=1000, runs=20)

    assert unbounded_label_problems(large, [spec]) == []
    assert _series(large) == _series(small), "the set of series must not depend on fleet size or run count"
    names = {name for name, _ in _series(large)}
    assert names == metric_names(), f"not simulated: {sorted(metric_names() - names)}"
    bounds = label_bounds(spec)
    for _, labels in _series(large):
        for label, value in labels:
            assert label not in FORBIDDEN_LABELS
            if label in bounds:
                assert value in bounds[label]
    assert len(_series(large)) < 500


def test_the_exposition_check_catches_device_and_run_labels(spec: PipelineSpec) -> None:
    exposition = "\n".join(
        [
            "# TYPE edgeloop_fleet_devices_online gauge",
            'edgeloop_fleet_devices_online{pipeline="factory_maintenance",group="plant-north",device_id="d-1"} 1',
            "# TYPE edgeloop_training_trials gauge",
            'edgeloop_training_trials{pipeline="factory_maintenance",run_id="manual__2026"} 4',
            "# TYPE edgeloop_drift_detected gauge",
            'edgeloop_drift_detected{pipeline="factory_maintenance",group="dev-00042"} 1',
            "# TYPE edgeloop_ingest_rows gauge",
            'edgeloop_ingest_rows{pipeline="factory_maintenance"} 1',
            "",
        ]
    )
    problems = unbounded_label_problems(exposition, [spec])
    assert any("device_id" in p for p in problems)
    assert any("run_id" in p for p in problems)
    assert any("group='dev-00042'" in p for p in problems)
    assert any("edgeloop_ingest_rows: not defined" in p for p in problems)


def test_a_sensor_pipeline_is_not_expected_to_have_the_camera_only_families() -> None:
    from edgeloop.metrics.catalogue import metric_names, pipeline_metric_names

    sensors = set(pipeline_metric_names(cameras=False))
    assert sensors == metric_names() - {"edgeloop_training_frames_rejected"}
    assert set(pipeline_metric_names(cameras=True)) == metric_names()
