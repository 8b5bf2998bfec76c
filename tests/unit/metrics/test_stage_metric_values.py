"""Training, gate, annotation and open-alert values, through the real BatchMetrics or the exporter reader."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgeloop.annotation.metrics import record_exported_batch, record_opened_batch
from edgeloop.exporter import drift_alerts_reader
from edgeloop.metrics.push import BatchMetrics
from edgeloop.spec import load_spec
from edgeloop.training.metrics import record_gate_metrics, record_training_metrics

SPEC = load_spec(Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml")


def samples(batch: BatchMetrics) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(batch.registry).decode()):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "pipeline")
                out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def test_a_training_result_gives_every_training_family() -> None:
    trained: dict[str, Any] = {
        "trials": 12,
        "metric": "f1_macro",
        "eval_score": 0.91,
        "timings": {"search_seconds": 40.0, "refit_seconds": 5.0, "log_model_seconds": 1.5},
        "edge": {"model_mb": 2.0, "latency_ms": 0.8, "latency_p95_ms": 1.2, "memory_mb": 10.0},
    }
    batch = BatchMetrics(SPEC)
    record_training_metrics(batch, trained)
    got = samples(batch)
    assert got["edgeloop_training_trials{}"] == 12.0
    assert got["edgeloop_training_best_score{metric=f1_macro}"] == 0.91
    assert got["edgeloop_training_duration_seconds{}"] == 46.5
    assert got["edgeloop_training_model_size_bytes{}"] == 2 * 1024 * 1024
    assert got["edgeloop_training_inference_latency_seconds{}"] == 0.0012
    assert got["edgeloop_training_model_memory_bytes{}"] == 10 * 1024 * 1024
    assert "edgeloop_training_frames_rejected{}" not in got  # a tabular pipeline has no frames
    camera = BatchMetrics(SPEC)
    record_training_metrics(camera, {**trained, "frames_rejected": {"train": {"missing": 2}, "eval": {"digest": 1}}})
    assert samples(camera)["edgeloop_training_frames_rejected{}"] == 3.0


def test_the_gate_marks_the_decision_taken_and_starts_the_others_at_zero() -> None:
    batch = BatchMetrics(SPEC)
    record_gate_metrics(batch, {"decision": "reject"})
    got = samples(batch)
    assert got["edgeloop_training_gate_decision{decision=reject}"] == 1.0
    assert got["edgeloop_training_gate_decision{decision=promote}"] == 0.0
    assert got["edgeloop_training_gate_decisions_total{decision=reject}"] == 1.0
    assert got["edgeloop_training_gate_decisions_total{decision=unchanged}"] == 0.0


def test_an_opened_batch_reports_its_sla_and_an_export_its_progress() -> None:
    batch = BatchMetrics(SPEC)
    record_opened_batch(batch, {"expected": 200, "deadline": "2026-11-25T14:00:00+00:00"})
    record_exported_batch(batch, {"progress": {"expected": 200, "ratio": 0.97}}, {"rows": 194})
    got = samples(batch)
    deadline = datetime(2026, 11, 25, 14, tzinfo=UTC).timestamp()
    assert got["edgeloop_annotation_sla_deadline_timestamp_seconds{group=_all}"] == deadline
    assert got["edgeloop_annotation_labelled_ratio{group=_all}"] == 0.97
    assert got["edgeloop_annotation_export_records{group=_all}"] == 194.0


class StateBucket:
    """An S3 stand-in holding one object (only what the reader calls)."""

    class exceptions:
        class NoSuchKey(Exception):
            pass

    def __init__(self, body: dict[str, Any] | None) -> None:
        self.body = body

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        if self.body is None:
            raise self.exceptions.NoSuchKey(Key)
        return {"Body": io.BytesIO(json.dumps(self.body).encode()), "ETag": '"1"'}


def test_open_drift_alerts_are_counted_per_group_with_zeros_for_the_others() -> None:
    state = {"open": {"a1": {"groups": ["plant-north"]}, "a2": {"groups": ["*"]}}}
    read = {(s.labels["group"]): s.value for s in drift_alerts_reader(SPEC, StateBucket(state))()}
    assert read == {"line-canary": 0, "plant-north": 1, "plant-south": 0, "_all": 1}
    empty = {(s.labels["group"]): s.value for s in drift_alerts_reader(SPEC, StateBucket(None))()}
    assert set(empty.values()) == {0}
