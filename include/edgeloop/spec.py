"""The pipeline spec: one YAML file per use case, validated by one pydantic model.

A spec says everything a pipeline needs that is not a secret: topics and record
schema, storage layout, schedules, drift, annotation, training, registry, edge
groups and rollout policy. Endpoints and credentials come from Airflow
connections named here, never from the spec itself.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[a-z][a-z0-9_]{1,39}$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CRON_PRESETS = {"@once", "@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@continuous"}


def parse_duration(value: Any) -> Any:
    """Accept '90s', '15m', '2h', '1d', '250ms' or a number of seconds as a timedelta."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match.group(1)) * _DURATION_UNITS[match.group(2)])
    return value  # let pydantic's own timedelta parsing (ISO 8601) decide


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def parse_schedule(value: str) -> str | timedelta:
    """A schedule is a cron expression, an Airflow preset or a duration such as '15m'."""
    match = _DURATION.match(value)
    if match:
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        return timedelta(seconds=seconds)
    return value


def _check_schedule(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):  # a ValueError, so that pydantic reports it at the field's path
        raise ValueError(f"{value!r} is not a cron expression, a preset like @hourly or a duration like '15m'")
    if _DURATION.match(value) or value in _CRON_PRESETS:
        return value
    fields = value.split()
    if len(fields) not in (5, 6) or not all(re.fullmatch(r"[\d*/,\-A-Za-z?LW#]+", f) for f in fields):
        raise ValueError(f"'{value}' is neither a cron expression, a preset like @hourly nor a duration like 15m")
    return value


Schedule = Annotated[str | None, BeforeValidator(_check_schedule)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


FieldType = Literal["float", "int", "string", "bool", "timestamp"]
FieldRole = Literal[
    "feature",
    "prediction",
    "confidence",
    "device_id",
    "group_id",
    "timestamp",
    "record_id",
    "model_version",
    "config_version",
    "image_ref",
    "sample_reason",
    "meta",
]
_SINGLE_ROLES = (
    "prediction",
    "confidence",
    "device_id",
    "group_id",
    "timestamp",
    "record_id",
    "model_version",
    "sample_reason",
)
_REQUIRED_ROLES = ("device_id", "group_id", "timestamp", "record_id")


class FieldSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    type: FieldType
    role: FieldRole = "feature"
    nullable: bool = False
    description: str = ""


# Every topic of a pipeline, `<prefix>.<kind>` (see edgeloop.fleet.topics for partitions and cleanup);
# `frames` (camera frames, `edgeloop.contract.frame`) only for a spec whose records reference images.
TOPIC_KINDS = (
    "telemetry",
    "health",
    "errors",
    "control",
    "device-state",
    "alerts",
    "devices",
    "profiles",
    "frames",
    "shadow",
)
IMAGE_TOPIC_KINDS = ("frames",)
SHADOW_TOPIC_KINDS = ("shadow",)  # devices' shadow reports (`edgeloop.contract.shadow`), with `rollout.shadow` on
IngestibleKind = Literal["telemetry", "health", "errors", "profiles", "frames"]
INGESTIBLE: tuple[str, ...] = get_args(IngestibleKind)


class TopicsSpec(_Strict):
    """Kafka topic names are `<prefix>.<name>`; the prefix defaults to the pipeline name."""

    prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,100}$")
    partitions: int = Field(default=6, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1, le=7)
    ingest: list[IngestibleKind] = Field(min_length=1)


class StorageSpec(_Strict):
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = Field(default="", pattern=r"^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$")


DEFAULT_DEVICE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]*"


class IngestSpec(_Strict):
    """How ingest runs, and what it checks in each record beyond its type (a failing record is dead-lettered)."""

    schedule: Schedule = "15m"
    max_records: int = Field(default=2_000_000, ge=1)
    max_duration: Duration = timedelta(minutes=10)
    batch_size: int = Field(default=10_000, ge=1, le=1_000_000)
    file_max_records: int = Field(default=250_000, ge=1)
    max_record_bytes: int = Field(default=1_048_576, ge=64)
    max_clock_skew: Duration = Field(
        default=timedelta(minutes=15), description="how far a record's timestamp may be ahead of its Kafka timestamp"
    )
    max_record_age: Duration = Field(
        default=timedelta(days=7),
        description="how far a record's timestamp may be behind its Kafka timestamp (store-and-forward delay)",
    )
    device_id_pattern: str = Field(
        default=DEFAULT_DEVICE_ID_PATTERN, max_length=200, description="a device id must match it as a whole"
    )
    device_id_max_length: int = Field(default=128, ge=1, le=1024)

    @field_validator("device_id_pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return pattern

    @field_validator("max_clock_skew", "max_record_age")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value


class DriftSpec(_Strict):
    schedule: Schedule = "1h"
    columns: list[str] = Field(default_factory=list, description="feature columns to check; empty = all features")
    method: Literal["auto", "ks", "psi", "wasserstein", "jensenshannon", "kl_div", "z"] = "auto"
    threshold: float | None = Field(default=None, gt=0, description="per-column statistical threshold")
    drift_share: float = Field(default=0.5, gt=0, le=1, description="share of drifted columns that is dataset drift")
    window: Duration = timedelta(hours=1)
    window_records: int | None = Field(default=None, ge=1)
    min_rows: int = Field(default=200, ge=10)
    sample_per_group: int = Field(default=20_000, ge=100)
    per_group: bool = True
    confidence_drop: float = Field(default=0.1, ge=0, le=1)


SampleReason = Literal["all", "uniform", "low_confidence", "local_drift"]
SAMPLE_REASONS: tuple[str, ...] = ("all", "uniform", "low_confidence", "local_drift")


class TelemetrySpec(_Strict):
    """What a device sends: every record (`raw`), or a profile per window plus chosen records (`profiles`).

    In `profiles` mode each device sends, per `window` and model version, a mergeable profile of
    every feature, the confidence and the prediction (Apache DataSketches KLL and frequent items),
    and of its raw records only: a uniform `sample_rate`, every record whose confidence is under
    `low_confidence`, and `drift_sample_rate` while its own window drifts from the reference
    profile in the model (PSI over `local_drift_threshold`). Each sent record names why
    (the schema's `sample_reason` field).
    """

    mode: Literal["raw", "profiles"] = "raw"
    window: Duration = Field(default=timedelta(seconds=60), description="profile window on the device")
    sample_rate: float = Field(default=0.01, ge=0, le=1, description="share of records sent at random")
    low_confidence: float = Field(default=0.5, ge=0, le=1, description="records under this confidence are all sent")
    drift_sample_rate: float = Field(default=0.1, ge=0, le=1, description="share sent while the device sees drift")
    local_drift_threshold: float = Field(
        default=2.5,
        gt=0,
        description="PSI of a device's window against the model's reference profile, above chance (a device's"
        " minute differs from the fleet's mix: in the demo's sensor model 90% of clean minutes score under 2.5)",
    )
    sketch_k: int = Field(default=64, ge=8, le=1000, description="KLL accuracy parameter (larger: finer, bigger)")


SelectionStrategy = Literal["low_confidence", "disagreement", "diversity"]


class AnnotationSpec(_Strict):
    backend: Literal["label_studio"] = "label_studio"
    labels: list[str] = Field(min_length=2)
    batch_size: int = Field(default=200, ge=1, le=100_000)
    strategy: list[SelectionStrategy] = ["low_confidence", "diversity"]
    completion_ratio: float = Field(default=0.95, gt=0, le=1)
    sla: Duration = timedelta(hours=24)
    on_sla: Literal["export_partial", "fail"] = "export_partial"
    poll_interval: Duration = timedelta(seconds=30)

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be unique")
        return labels


class EdgeLimits(_Strict):
    max_model_mb: float = Field(default=50, gt=0)
    max_latency_ms: float = Field(default=20, gt=0)
    max_memory_mb: float = Field(default=256, gt=0)


class TrainingSpec(_Strict):
    estimator: Literal["random_forest", "gradient_boosting", "logistic_regression"] = "random_forest"
    params: dict[str, Any] = Field(default_factory=dict)
    search_space: dict[str, list[Any]] = Field(default_factory=dict)
    search_budget: int = Field(default=10, ge=1, le=500)
    metric: Literal["f1_macro", "accuracy", "balanced_accuracy"] = "f1_macro"
    margin: float = Field(default=0.01, ge=0, le=1)
    group_tolerance: float = Field(default=0.02, ge=0, le=1)
    limits: EdgeLimits = EdgeLimits()


class RegistrySpec(_Strict):
    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class EdgeGroup(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,39}$")
    selector: dict[str, str] = Field(default_factory=dict)
    wave: int = Field(default=1, ge=0)
    devices: int = Field(default=50, ge=0)
    strategy: Literal["kafka", "kubernetes"] = "kafka"

    @field_validator("selector")
    @classmethod
    def _label_syntax(cls, selector: dict[str, str]) -> dict[str, str]:
        key_re = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
        value_re = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
        for key, value in selector.items():
            if not key_re.match(key):
                raise ValueError(f"selector key '{key}' is not a valid Kubernetes label key")
            if not value_re.match(value):
                raise ValueError(f"selector value '{value}' for '{key}' is not a valid Kubernetes label value")
        return selector


class HealthThresholds(_Strict):
    min_applied_ratio: float = Field(default=0.95, ge=0, le=1)
    max_error_rate: float = Field(default=0.02, ge=0, le=1)
    max_offline_ratio: float = Field(default=0.1, ge=0, le=1)
    min_mean_confidence: float = Field(default=0.5, ge=0, le=1)


APPROVER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$"  # an Airflow user name


class Resources(_Strict):
    cpu: str = Field(default="250m", pattern=r"^\d+(\.\d+)?m?$")
    memory: str = Field(default="256Mi", pattern=r"^\d+(Ki|Mi|Gi)?$")


FailureType = Literal["failed", "timed_out", "rejected"]
FAILURE_TYPES: tuple[FailureType, ...] = get_args(FailureType)


class PolicyWave(_Strict):
    """One wave of `rollout.waves`: some groups (or `all` the groups no earlier wave finished), all of their
    devices or a `share` of each (picked by a stable hash of device id and rollout id)."""

    groups: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,39}$")]] | Literal["all"] = Field(min_length=1)
    share: float | None = Field(default=None, gt=0, le=1, description="share of each group's devices; none: all")

    @field_validator("groups", mode="before")
    @classmethod
    def _list_or_all(cls, groups: Any) -> Any:
        if groups != "all" and not isinstance(groups, list):
            raise ValueError(f"{groups!r} is neither a list of group names nor 'all'")
        if isinstance(groups, list) and len(set(map(str, groups))) != len(groups):
            raise ValueError("each group once")
        return groups


class ExponentialRate(_Strict):
    """Start at `base_per_minute` and multiply the rate by `increment_factor` each time the criterion is met
    (AWS IoT Jobs `exponentialRate`), never above `rate.per_minute`."""

    base_per_minute: int = Field(ge=1, le=1000)
    increment_factor: float = Field(ge=1.1, le=5)
    step_up_after_devices: int | None = Field(default=None, ge=1, description="devices ordered since the last step")
    step_up_after_success: int | None = Field(default=None, ge=1, description="devices applied since the last step")

    @model_validator(mode="after")
    def _one_criterion(self) -> ExponentialRate:
        if (self.step_up_after_devices is None) == (self.step_up_after_success is None):
            raise ValueError("give exactly one of step_up_after_devices and step_up_after_success")
        return self


class RateSpec(_Strict):
    """How fast orders go out, in devices per minute (AWS IoT Jobs `maximumPerMinute`, 1-1000)."""

    per_minute: int = Field(default=1000, ge=1, le=1000)
    exponential: ExponentialRate | None = None

    @model_validator(mode="after")
    def _base_within_max(self) -> RateSpec:
        if self.exponential is not None and self.exponential.base_per_minute > self.per_minute:
            raise ValueError(
                f"exponential.base_per_minute: {self.exponential.base_per_minute} is above per_minute {self.per_minute}"
            )
        return self


class AbortSpec(_Strict):
    """Stop the whole rollout once `min_executed` devices finished and the failures of `failure_types` reach
    `failure_threshold_pct` percent of them (AWS IoT Jobs `abortConfig`, hawkBit error threshold)."""

    failure_threshold_pct: float = Field(gt=0, le=100)
    min_executed: int = Field(default=1, ge=1)
    failure_types: list[FailureType] = Field(default_factory=lambda: list(FAILURE_TYPES), min_length=1)

    @field_validator("failure_types")
    @classmethod
    def _unique_types(cls, types: list[str]) -> list[str]:
        if len(set(types)) != len(types):
            raise ValueError("each failure type once")
        return types


class ShadowSpec(_Strict):
    """An optional shadow wave before any device serves the new model: the devices run it beside the champion
    on live inputs, serve only the champion's answers and report each `window` how the two compare."""

    enabled: bool = False
    groups: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,39}$")]] = Field(
        default_factory=list, description="groups that shadow; none: the groups of the first wave"
    )
    share: float | None = Field(default=None, gt=0, le=1, description="share of those groups' devices; none: all")
    window: Duration = timedelta(seconds=60)
    min_windows: int = Field(default=3, ge=1, le=100_000, description="device windows reported before deciding")
    min_agreement: float = Field(default=0.95, ge=0, le=1, description="share of inputs both models label alike")
    max_confidence_drop: float = Field(default=0.1, ge=0, le=1, description="mean confidence the challenger may lose")
    max_latency_ratio: float = Field(default=2.0, gt=0, description="challenger's p95 latency over the champion's")
    max_error_rate: float = Field(default=0.01, ge=0, le=1, description="share of inputs the challenger failed on")

    @field_validator("window")
    @classmethod
    def _window_positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value


class RolloutSpec(_Strict):
    canary_groups: list[str] = Field(default_factory=list)
    soak: Duration = timedelta(minutes=10)
    thresholds: HealthThresholds = HealthThresholds()
    max_failure_ratio: float = Field(default=0.05, ge=0, le=1)
    max_unavailable: str = Field(default="10%", pattern=r"^\d+%?$")
    approval_required: bool = False
    approval_timeout: Duration = timedelta(hours=24)  # unanswered by then: rejected (the canary is rolled back)
    # the Airflow users who may answer the approval (and no one else); required when approval_required
    approvers: list[Annotated[str, Field(pattern=APPROVER_PATTERN)]] = Field(
        default_factory=list, max_length=100, validate_default=True
    )
    launcher: Literal["kubernetes", "local"] = "local"
    image: str = "edgeloop/bundle:latest"  # the rollout job's image (the bundle)
    # what edge nodes of `kubernetes` groups run: the agent image, and the Secret holding its control key
    agent_image: str = "edgeloop/agent:latest"
    agent_secret: str = Field(default="edgeloop-agent-keys", pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    namespace: str = Field(default="edge", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    service_account: str = "edgeloop-rollout"
    kubernetes_conn_id: str = "kubernetes_default"
    resources: Resources = Resources()
    timeout: Duration = timedelta(minutes=30)
    # The rollout policy (evaluated by `edgeloop.rollout.policy`). Each field left out keeps the rollout
    # as the fields above shape it: canary groups, then groups by `wave` number, every device at once.
    waves: list[PolicyWave] = Field(default_factory=list, max_length=50)
    rate: RateSpec | None = None
    abort: AbortSpec | None = None
    success_threshold: float | None = Field(
        default=None, gt=0, le=1, description="share of a wave's devices that must apply for the next wave to start"
    )
    device_timeout: Duration | None = Field(
        default=None, description="a device that has not applied its order by then counts as failed (timed_out)"
    )
    shadow: ShadowSpec = ShadowSpec()

    @field_validator("device_timeout")
    @classmethod
    def _timeout_positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be positive")
        return value

    @field_validator("approvers")
    @classmethod
    def _approvers_named(cls, approvers: list[str], info: ValidationInfo) -> list[str]:
        if len(set(approvers)) != len(approvers):
            raise ValueError("each Airflow user once")
        if info.data.get("approval_required") and not approvers:
            raise ValueError("approval_required needs at least one Airflow user who may approve")
        return approvers


class FleetHealthSpec(_Strict):
    schedule: Schedule = "5m"
    max_offline_ratio: float = Field(default=0.2, ge=0, le=1)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_version_skew: float = Field(default=0.1, ge=0, le=1)
    stale_after: Duration = timedelta(minutes=5)


class ConnectionsSpec(_Strict):
    """Airflow connection ids. Endpoints and secrets live in the connections."""

    kafka: str = "edgeloop_kafka"
    s3: str = "edgeloop_s3"
    mlflow: str = "edgeloop_mlflow"
    label_studio: str = "edgeloop_label_studio"


STAGES = ("ingest", "drift", "annotate", "train", "rollout", "fleet_health", "config_push")
"""The stages every pipeline spec becomes, one DAG each: dag_id `<pipeline>__<stage>`."""

STAGE_SUMMARIES = {
    "ingest": "Move device records from Kafka into object storage as Parquet, exactly once.",
    "drift": "Check the recent window per edge group with Evidently's drift tests against what the champion was "
    "trained for; alert; then render the reports of the scopes without drift.",
    "annotate": "Select the samples worth labelling, open a Label Studio batch, wait, export a curated dataset.",
    "train": "Retrain with a bounded hyperparameter search, register the challenger and run the evaluation gate.",
    "rollout": "Roll the new model out to edge groups in waves with health gates and automatic rollback.",
    "fleet_health": "Compute per-group fleet health from heartbeats and error reports; alert on thresholds.",
    "config_push": "Push a configuration (models go through the rollout) to a group and wait until it is applied.",
}
"""What each stage's DAG does, in one sentence (its description and the start of its doc)."""


class PipelineSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    owner: str = "edgeloop"
    retries: int = Field(default=2, ge=0, le=10)
    retry_delay: Duration = timedelta(seconds=30)
    connections: ConnectionsSpec = ConnectionsSpec()
    topics: TopicsSpec
    schema_: list[FieldSpec] = Field(alias="schema", min_length=1)
    storage: StorageSpec
    ingest: IngestSpec = IngestSpec()
    telemetry: TelemetrySpec = TelemetrySpec()
    drift: DriftSpec = DriftSpec()
    annotation: AnnotationSpec
    training: TrainingSpec = TrainingSpec()
    registry: RegistrySpec
    groups: list[EdgeGroup] = Field(min_length=1)
    rollout: RolloutSpec = RolloutSpec()
    fleet_health: FleetHealthSpec = FleetHealthSpec()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> PipelineSpec:
        names = [f.name for f in self.schema_]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"schema: duplicate field names {duplicates}")
        for role in _SINGLE_ROLES:
            holders = [f.name for f in self.schema_ if f.role == role]
            if len(holders) > 1:
                raise ValueError(f"schema: role '{role}' is given to several fields {holders}")
        missing = [r for r in _REQUIRED_ROLES if not any(f.role == r for f in self.schema_)]
        if missing:
            raise ValueError(f"schema: no field has the role(s) {missing}")
        if not self.features:
            raise ValueError("schema: at least one field must have the role 'feature'")
        if self.telemetry.mode == "profiles":
            needed = [r for r in ("sample_reason", "model_version") if not any(f.role == r for f in self.schema_)]
            if needed:
                raise ValueError(f"telemetry.mode profiles: the schema needs a field with the role(s) {needed}")
            if "profiles" not in self.topics.ingest:
                raise ValueError("topics.ingest: telemetry.mode profiles needs 'profiles' among the ingested topics")
        if "frames" in self.topics.ingest and self.field_with_role("image_ref") is None:
            raise ValueError("topics.ingest: 'frames' needs a schema field with the role 'image_ref' (the frame's key)")
        unknown = sorted(set(self.drift.columns) - set(self.features))
        if unknown:
            raise ValueError(f"drift.columns: {unknown} are not feature fields of the schema")
        group_names = [g.name for g in self.groups]
        if len(set(group_names)) != len(group_names):
            raise ValueError("groups: group names must be unique")
        unknown_canary = sorted(set(self.rollout.canary_groups) - set(group_names))
        if unknown_canary:
            raise ValueError(f"rollout.canary_groups: {unknown_canary} are not groups of this pipeline")
        policy_problems = rollout_policy_problems(self)
        if policy_problems:
            raise ValueError(policy_problems[0])
        clashes = _claim_kubernetes_names({}, self)
        if clashes:
            raise ValueError(f"groups: {clashes[0]}")
        return self

    # Derived names: one place for every name the stages share.
    @property
    def features(self) -> list[str]:
        return [f.name for f in self.schema_ if f.role == "feature"]

    def field_with_role(self, role: FieldRole) -> str | None:
        return next((f.name for f in self.schema_ if f.role == role), None)

    def topic(self, kind: str) -> str:
        """Full topic name of one of telemetry, health, errors, control, device-state, alerts, devices."""
        return f"{self.topics.prefix or self.name}.{kind}"

    @property
    def topic_kinds(self) -> list[str]:
        """The kinds of topic this pipeline has: `frames` only when its records reference images, `shadow`
        only with a shadow wave."""
        left_out: set[str] = set()
        if self.field_with_role("image_ref") is None:
            left_out.update(IMAGE_TOPIC_KINDS)
        if not self.rollout.shadow.enabled:
            left_out.update(SHADOW_TOPIC_KINDS)
        return [k for k in TOPIC_KINDS if k not in left_out]

    @property
    def all_topics(self) -> list[str]:
        return [self.topic(k) for k in self.topic_kinds]

    def storage_prefix(self, area: str) -> str:
        """Key prefix of one storage area (raw, deadletter, curated, reports, annotations, rollouts)."""
        base = f"{self.storage.prefix}/" if self.storage.prefix else ""
        return f"{base}{area}/{self.name}"

    def asset_uri(self, stage: str) -> str:
        return f"s3://{self.storage.bucket}/{self.storage_prefix(stage)}"

    @property
    def canary_groups(self) -> list[EdgeGroup]:
        return [g for g in self.groups if g.name in self.rollout.canary_groups]


def rollout_policy_problems(spec: PipelineSpec) -> list[str]:
    """What is wrong between `rollout.waves` / `rollout.shadow` and the spec's groups, each naming its field."""
    names = [g.name for g in spec.groups]
    rollout = spec.rollout
    problems = []
    for index, wave in enumerate(rollout.waves):
        unknown = [] if wave.groups == "all" else sorted(set(wave.groups) - set(names))
        if unknown:
            problems.append(f"rollout.waves[{index}].groups: {unknown} are not groups of this pipeline")
    unknown_shadow = sorted(set(rollout.shadow.groups) - set(names))
    if unknown_shadow:
        problems.append(f"rollout.shadow.groups: {unknown_shadow} are not groups of this pipeline")
    if not rollout.waves or problems:
        return problems
    # wave numbers that differ are a second order of the rollout (equal ones, as a dumped spec has, order nothing)
    numbered = [i for i, g in enumerate(spec.groups) if g.wave != spec.groups[0].wave]
    if numbered:
        problems.append(
            f"groups[{numbered[0]}].wave: rollout.waves orders the rollout; leave out the groups' wave numbers"
        )
    first = rollout.waves[0].groups
    first_groups = names if first == "all" else first
    if rollout.canary_groups and sorted(rollout.canary_groups) != sorted(first_groups):
        problems.append(
            f"rollout.canary_groups: {rollout.canary_groups} must be the groups of rollout.waves[0] ({first_groups})"
            " or be left out"
        )
    reached: dict[str, float] = {}
    for index, wave in enumerate(rollout.waves):
        groups = [n for n in names if reached.get(n, 0.0) < 1] if wave.groups == "all" else wave.groups
        share = 1.0 if wave.share is None else wave.share
        if not groups:
            problems.append(f"rollout.waves[{index}].groups: 'all' names no group that earlier waves left")
        for group in groups:
            if reached.get(group, 0.0) >= share:
                problems.append(
                    f"rollout.waves[{index}]: group {group} already reached share {reached[group]:g} in an earlier wave"
                )
            reached[group] = max(share, reached.get(group, 0.0))
    unfinished = [n for n in names if reached.get(n, 0.0) < 1]
    if unfinished:
        problems.append(f"rollout.waves: groups {unfinished} never get all their devices (add a wave without share)")
    return problems


SAMPLE_REASON_FIELD = {"name": "sample_reason", "type": "string", "role": "sample_reason", "nullable": True}


def with_profiles(spec: PipelineSpec, **telemetry: Any) -> PipelineSpec:
    """`spec` in `telemetry.mode: profiles` (other telemetry settings from `telemetry`), with a
    `sample_reason` field added to its schema when it has none."""
    data = spec.model_dump(by_alias=True)
    data["telemetry"] = {**data["telemetry"], **telemetry, "mode": "profiles"}
    data["topics"]["ingest"] = sorted({*data["topics"]["ingest"], "telemetry", "profiles"})
    if not any(f.role == "sample_reason" for f in spec.schema_):
        data["schema"] = [*data["schema"], SAMPLE_REASON_FIELD]
    return PipelineSpec.model_validate(data)


# --- Kubernetes object names (the rollout's manifests use them; loading checks they do not clash) ---


def _fit(name: str, suffix: str = "") -> str:
    """`name + suffix` within 63 characters; a name cut short ends with a hash of all of it, so cuts never collide."""
    if len(name) + len(suffix) <= 63:
        return name + suffix
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: 63 - len(suffix) - 9].rstrip('-')}-{digest}{suffix}"


def daemonset_name(spec: PipelineSpec, group: str) -> str:
    """The group's inference DaemonSet: `<pipeline>-inference-<group>`, hashed when longer than 63 characters."""
    return _fit(f"{spec.name.replace('_', '-')}-inference-{group}")


def agent_config_name(spec: PipelineSpec, group: str) -> str:
    return _fit(f"{spec.name.replace('_', '-')}-inference-{group}", "-agent")


def assignment_config_name(spec: PipelineSpec, group: str, assignment_id: str) -> str:
    digest = hashlib.sha256(assignment_id.encode()).hexdigest()[:10]
    return _fit(f"{spec.name.replace('_', '-')}-inference-{group}", f"-asg-{digest}")


def kubernetes_objects(spec: PipelineSpec) -> list[tuple[str, str, str, str]]:
    """(namespace, kind, name, group) of each object the rollout makes for the spec's kubernetes groups."""
    namespace = spec.rollout.namespace
    return [
        obj
        for g in spec.groups
        if g.strategy == "kubernetes"
        for obj in (
            (namespace, "DaemonSet", daemonset_name(spec, g.name), g.name),
            (namespace, "ConfigMap", agent_config_name(spec, g.name), g.name),
        )
    ]


def _claim_kubernetes_names(owners: dict[tuple[str, str, str], str], spec: PipelineSpec) -> list[str]:
    """Record the spec's Kubernetes object names in `owners`, or (recording nothing) say which are taken."""
    mine: dict[tuple[str, str, str], str] = {}
    clashes = []
    for namespace, kind, name, group in kubernetes_objects(spec):
        key, me = (namespace, kind, name), f"{spec.name}/{group}"
        owner = owners.get(key) or mine.setdefault(key, me)
        if owner != me:
            clashes.append(f"{owner} and {me} would share the {kind} {namespace}/{name}")
    if not clashes:
        owners.update(mine)
    return clashes


# --- loading -----------------------------------------------------------------


@dataclass(frozen=True)
class SpecError:
    """One problem in one spec file: where (field path) and why."""

    path: Path
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.path.name}: {self.location}: {self.message}"


class SpecInvalid(Exception):
    def __init__(self, path: Path, errors: list[SpecError]):
        self.path = path
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(root)"


def errors_from_validation(path: Path, exc: ValidationError) -> list[SpecError]:
    out = []
    for err in exc.errors():
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "required field is missing"
        out.append(SpecError(path, _location(err["loc"]), message))
    return out


MAX_SPEC_TEXT_BYTES = 1 << 20
MAX_SPEC_NODES = 100_000  # values after YAML aliases are expanded: a few anchors may not make millions


def _too_many_nodes(data: Any, limit: int) -> bool:
    """Whether `data` holds more than `limit` values, each alias counted every time it is used (no recursion)."""
    stack, seen = [data], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_spec(text: str, path: Path = Path("<spec>")) -> PipelineSpec:
    """Parse and validate spec text; raise SpecInvalid listing every error with its field path.

    SpecInvalid is the only exception: text too large, YAML the safe loader refuses or cannot
    construct (a date such as 2001-13-45), or aliases that expand past MAX_SPEC_NODES values.
    """

    def invalid(location: str, message: str) -> SpecInvalid:
        return SpecInvalid(path, [SpecError(path, location, message)])

    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SPEC_TEXT_BYTES:
        raise invalid("(yaml)", f"{size} bytes, more than the limit of {MAX_SPEC_TEXT_BYTES}")
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader, the C one when present
    except yaml.YAMLError as exc:
        raise invalid("(yaml)", str(exc).replace("\n", " ")) from exc
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # a scalar its constructor refuses
        raise invalid("(yaml)", f"a value cannot be read: {exc}") from exc
    if _too_many_nodes(data, MAX_SPEC_NODES):
        raise invalid("(yaml)", f"more than {MAX_SPEC_NODES} values once aliases are expanded")
    if not isinstance(data, dict):
        raise SpecInvalid(path, [SpecError(path, "(root)", "a spec must be a YAML mapping")])
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecInvalid(path, errors_from_validation(path, exc)) from exc
    except (TypeError, ValueError, OverflowError) as exc:  # a validator that met a value it did not expect
        raise invalid("(root)", f"cannot be validated: {exc}") from exc
    if path.suffix in (".yaml", ".yml") and path.stem != spec.name:
        raise SpecInvalid(path, [SpecError(path, "name", f"'{spec.name}' must match the file name '{path.stem}'")])
    return spec


def load_spec(path: Path) -> PipelineSpec:
    """Read and parse one spec file; raise SpecInvalid (also for a file that is not UTF-8) or OSError."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problem = SpecError(path, "(file)", f"not UTF-8 text: {exc.reason} at byte {exc.start}")
        raise SpecInvalid(path, [problem]) from exc
    return parse_spec(text, path)


def default_pipelines_dir() -> Path:
    """`EDGELOOP_PIPELINES_DIR` when set (git-synced specs), else the specs shipped in the bundle."""
    configured = os.environ.get("EDGELOOP_PIPELINES_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parent.parent / "pipelines"


@dataclass
class SpecSet:
    specs: list[PipelineSpec]
    errors: list[SpecError]


def load_all(folder: Path | None = None) -> SpecSet:
    """Load every `*.yaml` spec in a folder; a broken file is reported, never fatal to the others."""
    folder = folder or default_pipelines_dir()
    specs: list[PipelineSpec] = []
    errors: list[SpecError] = []
    seen: dict[str, Path] = {}
    kubernetes_names: dict[tuple[str, str, str], str] = {}
    for path in sorted(folder.glob("*.y*ml")):
        try:
            spec = load_spec(path)
        except SpecInvalid as exc:
            errors.extend(exc.errors)
            continue
        except OSError as exc:
            errors.append(SpecError(path, "(file)", str(exc)))
            continue
        if spec.name in seen:
            errors.append(SpecError(path, "name", f"'{spec.name}' is already defined in {seen[spec.name].name}"))
            continue
        clashes = _claim_kubernetes_names(kubernetes_names, spec)
        if clashes:
            errors.append(SpecError(path, "groups", clashes[0]))
            continue
        seen[spec.name] = path
        specs.append(spec)
    return SpecSet(specs, errors)
