"""Use-case templates: what a pipeline of each kind looks like before the data says more.

A template gives the spec sections that do not come from the data (ingest and drift
schedules, annotation labels and strategy, training estimator and search space) and
the field names that usually hold each role, so schema inference can recognise them.
Everything here is plain data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from edgeloop.spec import FieldRole

TemplateId = Literal["predictive_maintenance", "image_classification", "anomaly_detection"]
TEMPLATE_IDS: tuple[TemplateId, ...] = get_args(TemplateId)

# Field names that usually carry each role, for every template (snake case; camelCase and
# '-' in a record's field names are normalised to this before comparing).
COMMON_ROLE_NAMES: Mapping[FieldRole, tuple[str, ...]] = {
    "record_id": ("record_id", "recordid", "rid", "id", "uuid", "message_id", "msg_id", "event_id", "reading_id"),
    "device_id": (
        "device_id",
        "device",
        "deviceid",
        "dev_id",
        "gateway_id",
        "gateway",
        "sensor_id",
        "node_id",
        "machine_id",
        "asset_id",
        "edge_id",
    ),
    "group_id": (
        "group_id",
        "group",
        "edge_group",
        "fleet",
        "site",
        "site_id",
        "plant",
        "plant_id",
        "line",
        "line_id",
        "zone",
        "cluster",
    ),
    "timestamp": ("ts", "timestamp", "time", "event_time", "datetime", "created_at", "recorded_at", "captured_at"),
    "prediction": ("prediction", "predicted", "pred", "predicted_label", "predicted_class", "label", "class", "output"),
    "confidence": ("confidence", "conf", "probability", "prob", "certainty", "score"),
    "model_version": ("model_version", "model", "model_id", "model_ver"),
    "config_version": ("config_version", "cfg_version", "config_id"),
    "image_ref": ("image_ref", "image", "image_uri", "image_url", "image_path", "image_key"),
}


@dataclass(frozen=True)
class Template:
    """One use case: its title, what it expects from the data, and its spec defaults."""

    id: TemplateId
    title: str
    summary: str
    expects: str
    labels: tuple[str, ...]
    sections: Mapping[str, Mapping[str, Any]]
    role_names: Mapping[FieldRole, tuple[str, ...]] = field(default_factory=dict)
    wants_image_ref: bool = False

    def names_for(self, role: FieldRole) -> tuple[str, ...]:
        """Field names that suggest `role`: this template's first, then the common ones."""
        return self.role_names.get(role, ()) + COMMON_ROLE_NAMES.get(role, ())

    def example_record(self, index: int = 0) -> dict[str, Any]:
        """A record of the shape this template expects (shown on the page, used by tests)."""
        wave = math.sin(index / 3.0)
        device = f"dev-{index % 8:03d}"
        group = ("line-canary", "plant-north", "plant-south")[index % 3]
        base: dict[str, Any] = {
            "record_id": f"{device}-{1_767_225_600_000 + index * 1000}-{index}",
            "device_id": device,
            "group_id": group,
            "ts": f"2026-01-01T00:{index // 60 % 60:02d}:{index % 60:02d}.000Z",
        }
        if self.id == "predictive_maintenance":
            label = self.labels[index % len(self.labels)]
            base.update(
                {
                    "vibration_rms": round(2.5 + wave, 3),
                    "vibration_peak": round(7.0 + 2 * wave, 3),
                    "temperature_c": round(55.0 + 5 * wave, 3),
                    "motor_current_a": round(11.0 + wave, 3),
                    "rpm": round(1450.0 + 20 * wave, 3),
                    "acoustic_db": round(71.0 + 3 * wave, 3),
                    "prediction": label,
                    "confidence": round(0.7 + 0.25 * abs(wave), 4),
                    "model_version": "1",
                }
            )
        elif self.id == "image_classification":
            label = self.labels[index % len(self.labels)]
            base.update(
                {
                    "image_uri": f"s3://edgeloop/frames/{group}/{device}/{index:06d}.jpg",
                    "brightness": round(0.5 + 0.2 * wave, 4),
                    "sharpness": round(0.8 + 0.1 * wave, 4),
                    "emb_0": round(wave, 4),
                    "emb_1": round(math.cos(index / 3.0), 4),
                    "emb_2": round(wave * 0.5, 4),
                    "prediction": label,
                    "confidence": round(0.6 + 0.35 * abs(wave), 4),
                    "model_version": "1",
                }
            )
        else:
            base.update(
                {
                    "flow_lpm": round(12.0 + wave, 3),
                    "pressure_bar": round(4.0 + 0.3 * wave, 3),
                    "power_w": round(800.0 + 40 * wave, 3),
                    "anomaly_score": round(0.1 + 0.8 * abs(wave) ** 4, 4),
                    "model_version": "1",
                }
            )
        return base


TEMPLATES: dict[TemplateId, Template] = {
    "predictive_maintenance": Template(
        id="predictive_maintenance",
        title="Predictive maintenance on sensor records",
        summary=(
            "Gateways on machines send sensor readings (vibration, temperature, current...) and a predicted "
            "machine state. Drift on one site retrains the classifier and rolls it out."
        ),
        expects="numeric sensor readings per record, a device and group id, a timestamp; ideally a prediction",
        labels=("normal", "wear", "fault"),
        sections={
            "ingest": {"schedule": "10m"},
            "drift": {"schedule": "1h", "method": "auto", "drift_share": 0.3, "window": "30m", "min_rows": 300},
            "annotation": {"batch_size": 200, "strategy": ["low_confidence", "diversity"], "sla": "4h"},
            "training": {
                "estimator": "random_forest",
                "metric": "f1_macro",
                "search_budget": 12,
                "search_space": {"n_estimators": [50, 100, 200], "max_depth": [6, 10, 16, None]},
            },
        },
    ),
    "image_classification": Template(
        id="image_classification",
        title="Image classification on camera frames",
        summary=(
            "Cameras classify frames on the device and send a reference to each frame (an object key or URL) "
            "with a few frame features. Annotators label the frames themselves in Label Studio."
        ),
        expects="an image reference per record (s3://, http(s):// or a path), frame features, ids, a timestamp",
        labels=("ok", "defect"),
        role_names={
            "image_ref": ("frame_uri", "frame_url", "frame_path", "frame_key", "frame", "snapshot", "uri", "url"),
            "device_id": ("camera_id", "camera", "cam_id"),
            "record_id": ("frame_id", "image_id"),
        },
        wants_image_ref=True,
        sections={
            "ingest": {"schedule": "15m"},
            "drift": {"schedule": "1h", "method": "wasserstein", "drift_share": 0.5, "window": "1h"},
            "annotation": {
                "batch_size": 100,
                "strategy": ["low_confidence", "disagreement", "diversity"],
                "sla": "8h",
            },
            "training": {
                "estimator": "logistic_regression",
                "metric": "balanced_accuracy",
                "search_budget": 6,
                "search_space": {"C": [0.1, 1.0, 10.0]},
                "limits": {"max_model_mb": 100, "max_latency_ms": 50, "max_memory_mb": 512},
            },
        },
    ),
    "anomaly_detection": Template(
        id="anomaly_detection",
        title="Anomaly detection without labels",
        summary=(
            "Devices score how unusual each reading is; there are no labels yet. The first annotation batch "
            "picks diverse records for people to label normal or anomaly, and training starts from there."
        ),
        expects="numeric readings, a device and group id, a timestamp; optionally an anomaly score or flag",
        labels=("normal", "anomaly"),
        role_names={
            "prediction": ("is_anomaly", "anomaly", "anomaly_flag", "outlier", "is_outlier"),
            "confidence": ("anomaly_score", "outlier_score", "anomaly_probability"),
        },
        sections={
            "ingest": {"schedule": "15m"},
            "drift": {"schedule": "1h", "method": "wasserstein", "drift_share": 0.3, "window": "1h"},
            "annotation": {"batch_size": 150, "strategy": ["diversity", "low_confidence"], "sla": "24h"},
            "training": {
                "estimator": "gradient_boosting",
                "metric": "balanced_accuracy",
                "search_budget": 8,
                "search_space": {"n_estimators": [50, 100], "max_depth": [2, 3, 4]},
            },
        },
    ),
}


class UnknownTemplate(KeyError):
    """A template id that is not one of TEMPLATE_IDS."""


def get_template(template_id: str) -> Template:
    try:
        return TEMPLATES[template_id]  # type: ignore[index]
    except KeyError:
        raise UnknownTemplate(f"template '{template_id}' is not one of {list(TEMPLATE_IDS)}") from None
