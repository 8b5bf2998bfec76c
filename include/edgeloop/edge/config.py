"""The agent's one config file (YAML or JSON), validated at start; every error names its field.

Example (`edgeloop agent-config` writes one from a pipeline spec)::

    device_id: plant-north-00001
    group_id: plant-north
    pipeline: factory_maintenance
    topic_prefix: factory_maintenance
    groups: [canary-line, plant-north, plant-south]
    schema:                      # telemetry fields in the pipeline's schema, with their roles
      - {name: record_id, role: record_id}
      - {name: vibration_rms, role: feature}
      ...
    kafka: {bootstrap.servers: "broker:9092"}
    trusted_keys_file: /etc/edgeloop/trusted.pem   # public keys whose orders it takes (or trusted_keys_env)
    identity_key_file: /var/lib/edgeloop-agent/device.key   # default: <state_dir>/device.key
    state_dir: /var/lib/edgeloop-agent
    source: {kind: replay, path: /var/lib/edgeloop-agent/readings.jsonl}
    # a camera (a schema with an image_ref field): {kind: images, path: /var/spool/camera, frame_shape: [64, 64]}
    http: {host: 127.0.0.1, port: 9464}

Secrets are never in this file. The trusted keys are public (a ConfigMap or a file; the
agent reads the file again when it changes, so a key can be added or retired without a
restart). The device's own key is written by `edgeloop agent enrol` (mode 0600) or
mounted from a Kubernetes Secret; an agent without one refuses to start.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeloop.contract.artifact import MAX_ARTIFACT_BYTES
from edgeloop.contract.keys import TRUSTED_KEYS_ENV, BadKey, Keyring, Signer, read_key_text
from edgeloop.contract.messages import DEVICE_CONFIG_RANGES

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_STORAGE_PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")  # the spec's storage.prefix
ROLES = (
    "feature",
    "record_id",
    "device_id",
    "group_id",
    "timestamp",
    "prediction",
    "confidence",
    "model_version",
    "config_version",
    "image_ref",
    "sample_reason",
    "meta",
)
SOURCE_KINDS = ("replay", "stdin", "none", "external", "images")
SENSOR_SOURCES = ("replay", "stdin")  # readings of numbers: a sensor pipeline's
DEFAULT_FRAME_SHAPE = (64, 64)  # (height, width) of a camera's frames: edgeloop.vision.frames.DEFAULT_SIZE
MAX_CONFIG_BYTES = 256 * 1024


class ConfigError(ValueError):
    """The config file is wrong; the message names the field."""


@dataclass(frozen=True)
class SchemaField:
    name: str
    role: str


@dataclass(frozen=True)
class SourceConfig:
    """Where readings come from. replay: a JSON-lines file of readings; stdin: JSON lines; external: fed by a
    harness; images: a camera's PNG frames in the spool directory `path` (`edgeloop.edge.images`)."""

    kind: str = "none"
    path: str | None = None
    loop: bool = True
    frame_shape: tuple[int, int] = DEFAULT_FRAME_SHAPE  # images: (height, width) the camera's frames have
    keep_done: bool = False  # images: move a queued frame's file to `<path>/done/` instead of deleting it


@dataclass(frozen=True)
class InitialModel:
    path: str
    version: str


@dataclass(frozen=True)
class TelemetryPolicy:
    """What the device sends (the spec's `telemetry` section): every record, or profiles and chosen records."""

    mode: str = "raw"
    window_s: float = 60.0
    sample_rate: float = 0.01
    low_confidence: float = 0.5
    drift_sample_rate: float = 0.1
    local_drift_threshold: float = 2.5
    sketch_k: int = 64

    @property
    def profiles(self) -> bool:
        return self.mode == "profiles"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class AgentConfig:
    device_id: str
    group_id: str
    pipeline: str
    groups: tuple[str, ...]
    schema: tuple[SchemaField, ...]
    kafka: Mapping[str, Any]
    state_dir: Path
    topic_prefix: str = ""
    trusted_keys_env: str | None = TRUSTED_KEYS_ENV
    trusted_keys_file: str | None = None
    identity_key_file: str | None = None  # default: <state_dir>/device.key
    source: SourceConfig = field(default_factory=SourceConfig)
    telemetry_interval_s: float = 1.0
    heartbeat_interval_s: float = 10.0
    confidence_threshold: float = 0.5
    queue_max_bytes: int = 128 * 1024 * 1024
    queue_synchronous: str = "NORMAL"
    send_batch: int = 1000
    http_host: str = "127.0.0.1"
    http_port: int | None = None
    initial_model: InitialModel | None = None
    max_artifact_bytes: int = 64 * 1024 * 1024
    download_timeout_s: float = 60.0
    control_topic: bool = True  # read orders from `<prefix>.control` (agents outside Kubernetes)
    assignment_file: str | None = None  # read the order from this file (a ConfigMap in a DaemonSet pod)
    telemetry: TelemetryPolicy = field(default_factory=TelemetryPolicy)
    frame_prefix: str = ""  # a camera's frame keys start with the pipeline's storage prefix (contract.frame)

    @property
    def features(self) -> list[str]:
        return [f.name for f in self.schema if f.role == "feature"]

    @property
    def camera(self) -> bool:
        """Whether this device is a camera: its records reference a frame (a schema field of role `image_ref`)."""
        return any(f.role == "image_ref" for f in self.schema)

    @property
    def model_inputs(self) -> list[str]:
        """What the device's models take: a camera's frame pixels (`px_<row>_<col>`), else the features."""
        if not self.camera:
            return self.features
        from edgeloop.vision.model import pixel_features

        return list(pixel_features(self.source.frame_shape))

    def topic(self, kind: str) -> str:
        return f"{self.topic_prefix or self.pipeline}.{kind}"

    def trusted_keys(self) -> Keyring:
        """The public keys whose orders this device takes; raise ConfigError if there are none."""
        try:
            text, where = read_key_text(
                env_name=self.trusted_keys_env, file=self.trusted_keys_file, environ=os.environ, what="trusted keys"
            )
            return Keyring.from_text(text, where)
        except BadKey as exc:
            raise ConfigError(str(exc)) from None

    @property
    def identity_path(self) -> Path:
        """`identity_key_file` (`{device_id}` in it is replaced: a Secret with one key per node) or the default."""
        if self.identity_key_file:
            return Path(self.identity_key_file.replace("{device_id}", self.device_id))
        return self.state_dir / "device.key"

    def identity(self) -> Signer:
        """The device's own key; raise ConfigError if the device is not enrolled."""
        path = self.identity_path
        try:
            return Signer.from_text(path.read_text(), str(path))
        except FileNotFoundError:
            raise ConfigError(
                f"identity_key_file: {path} does not exist: enrol the device first (edgeloop agent enrol)"
            ) from None
        except OSError as exc:
            raise ConfigError(f"identity_key_file: cannot read {path}: {exc.strerror}") from None
        except BadKey as exc:
            raise ConfigError(f"identity_key_file: {exc}") from None


def _str(raw: Mapping[str, Any], name: str, *, pattern: re.Pattern[str] | None = None, default: Any = ...) -> Any:
    value = raw.get(name, default)
    if value is ...:
        raise ConfigError(f"{name}: required")
    if value is None and default is None:
        return None
    if not isinstance(value, str) or not value or (pattern is not None and not pattern.match(value)):
        raise ConfigError(
            f"{name}: {value!r} is not " + (f"a string matching {pattern.pattern}" if pattern else "a string")
        )
    return value


def _number(raw: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}: {value!r} is not a number")
    if not low <= value <= high:
        raise ConfigError(f"{name}: {value} is outside [{low:g}, {high:g}]")
    return float(value)


def parse_config(raw: Any) -> AgentConfig:
    """Validate a decoded config; raise ConfigError naming the first wrong field."""
    if not isinstance(raw, Mapping):
        raise ConfigError("config: not a mapping")
    known = set(AgentConfig.__dataclass_fields__) | {"http", "device_id_env"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown field")
    groups = raw.get("groups")
    if not isinstance(groups, list) or not groups or not all(isinstance(g, str) and ID_RE.match(g) for g in groups):
        raise ConfigError("groups: a non-empty list of group names")
    group_id = _str(raw, "group_id", pattern=ID_RE)
    if group_id not in groups:
        raise ConfigError(f"group_id: {group_id!r} is not one of groups {groups}")
    schema = _schema(raw.get("schema"))
    kafka = raw.get("kafka")
    if not isinstance(kafka, Mapping) or not isinstance(kafka.get("bootstrap.servers"), str):
        raise ConfigError("kafka: a mapping of client settings with bootstrap.servers")
    if not all(isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in kafka.items()):
        raise ConfigError("kafka: settings must be strings, numbers or booleans")
    http = raw.get("http") or {}
    if not isinstance(http, Mapping) or set(http) - {"host", "port"}:
        raise ConfigError("http: a mapping with host and port")
    port = http.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
        raise ConfigError(f"http.port: {port!r} is not a port number")
    low, high = DEVICE_CONFIG_RANGES["telemetry_interval_s"]
    hb_low, hb_high = DEVICE_CONFIG_RANGES["heartbeat_interval_s"]
    sync = raw.get("queue_synchronous", "NORMAL")
    if sync not in ("NORMAL", "FULL"):
        raise ConfigError(f"queue_synchronous: {sync!r} is not NORMAL or FULL")
    source = _source(raw.get("source"))
    _check_source_fits(source, schema)
    return AgentConfig(
        device_id=_device_id(raw),
        group_id=group_id,
        pipeline=_str(raw, "pipeline", pattern=ID_RE),
        groups=tuple(groups),
        schema=schema,
        kafka=dict(kafka),
        state_dir=Path(_str(raw, "state_dir")),
        topic_prefix=_str(raw, "topic_prefix", default=""),
        trusted_keys_env=_str(raw, "trusted_keys_env", pattern=re.compile(r"^[A-Z_][A-Z0-9_]*$"), default=None)
        if "trusted_keys_env" in raw
        else TRUSTED_KEYS_ENV,
        trusted_keys_file=_str(raw, "trusted_keys_file", default=None),
        identity_key_file=_str(raw, "identity_key_file", default=None),
        source=source,
        telemetry_interval_s=_number(raw, "telemetry_interval_s", 1.0, low, high),
        heartbeat_interval_s=_number(raw, "heartbeat_interval_s", 10.0, hb_low, hb_high),
        confidence_threshold=_number(raw, "confidence_threshold", 0.5, 0.0, 1.0),
        queue_max_bytes=int(_number(raw, "queue_max_bytes", 128 * 1024 * 1024, 1024 * 1024, 64 * 1024**3)),
        queue_synchronous=str(sync),
        send_batch=int(_number(raw, "send_batch", 1000, 1, 100_000)),
        http_host=_str(http, "host", default="127.0.0.1"),
        http_port=port,
        initial_model=_initial_model(raw.get("initial_model")),
        max_artifact_bytes=int(_number(raw, "max_artifact_bytes", 64 * 1024 * 1024, 1024, MAX_ARTIFACT_BYTES)),
        download_timeout_s=_number(raw, "download_timeout_s", 60.0, 1.0, 3600.0),
        control_topic=_bool(raw, "control_topic", True),
        assignment_file=_str(raw, "assignment_file", default=None),
        telemetry=_telemetry(raw.get("telemetry")),
        frame_prefix=_str(raw, "frame_prefix", pattern=_STORAGE_PREFIX_RE, default="")
        if raw.get("frame_prefix")
        else "",
    )


def _telemetry(raw: Any) -> TelemetryPolicy:
    if raw is None:
        return TelemetryPolicy()
    if not isinstance(raw, Mapping) or set(raw) - set(TelemetryPolicy.__dataclass_fields__):
        raise ConfigError(f"telemetry: a mapping of {sorted(TelemetryPolicy.__dataclass_fields__)}")
    mode = raw.get("mode", "raw")
    if mode not in ("raw", "profiles"):
        raise ConfigError(f"telemetry.mode: {mode!r} is not raw or profiles")
    return TelemetryPolicy(
        mode=mode,
        window_s=_number(raw, "window_s", 60.0, 1.0, 86400.0),
        sample_rate=_number(raw, "sample_rate", 0.01, 0.0, 1.0),
        low_confidence=_number(raw, "low_confidence", 0.5, 0.0, 1.0),
        drift_sample_rate=_number(raw, "drift_sample_rate", 0.1, 0.0, 1.0),
        local_drift_threshold=_number(raw, "local_drift_threshold", 2.5, 1e-6, 100.0),
        sketch_k=int(_number(raw, "sketch_k", 64, 8, 1000)),
    )


def _bool(raw: Mapping[str, Any], name: str, default: bool) -> bool:
    value = raw.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: {value!r} is not true or false")
    return value


def _device_id(raw: Mapping[str, Any]) -> str:
    """`device_id`, or the value of the environment variable `device_id_env` names (a DaemonSet's node name)."""
    if "device_id_env" in raw:
        if "device_id" in raw:
            raise ConfigError("device_id_env: give device_id or device_id_env, not both")
        name = _str(raw, "device_id_env", pattern=re.compile(r"^[A-Z_][A-Z0-9_]*$"))
        value = os.environ.get(name, "")
        if not ID_RE.match(value):
            raise ConfigError(f"device_id_env: ${name} is {value!r}, not a device id matching {ID_RE.pattern}")
        return value
    return str(_str(raw, "device_id", pattern=ID_RE))


def _schema(raw: Any) -> tuple[SchemaField, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("schema: a non-empty list of {name, role}")
    fields = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping) or set(item) != {"name", "role"}:
            raise ConfigError(f"schema[{index}]: a mapping with exactly name and role")
        if not isinstance(item["name"], str) or not item["name"]:
            raise ConfigError(f"schema[{index}].name: not a string")
        if item["role"] not in ROLES:
            raise ConfigError(f"schema[{index}].role: {item['role']!r} is not one of {list(ROLES)}")
        fields.append(SchemaField(item["name"], item["role"]))
    if not any(f.role == "feature" for f in fields):
        raise ConfigError("schema: no field has the role 'feature'")
    return tuple(fields)


def _source(raw: Any) -> SourceConfig:
    if raw is None:
        return SourceConfig()
    if not isinstance(raw, Mapping) or set(raw) - {"kind", "path", "loop", "frame_shape", "keep_done"}:
        raise ConfigError("source: a mapping with kind, path, loop, frame_shape and keep_done")
    kind = raw.get("kind", "none")
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"source.kind: {kind!r} is not one of {list(SOURCE_KINDS)}")
    path = raw.get("path")
    if kind == "replay" and not isinstance(path, str):
        raise ConfigError("source.path: a replay source needs the path of its file")
    if kind == "images" and (not isinstance(path, str) or not path):
        raise ConfigError("source.path: an images source needs the directory the camera writes its frames into")
    shape = raw.get("frame_shape", list(DEFAULT_FRAME_SHAPE))
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 1024 for n in shape)
    ):
        raise ConfigError(f"source.frame_shape: {shape!r} is not [height, width] in pixels (1 to 1024 each)")
    return SourceConfig(
        kind, path, _bool(raw, "loop", True), (int(shape[0]), int(shape[1])), _bool(raw, "keep_done", False)
    )


def _check_source_fits(source: SourceConfig, schema: tuple[SchemaField, ...]) -> None:
    """A camera (a schema with an `image_ref` field) takes frames, a sensor device readings: ConfigError otherwise."""
    camera = any(f.role == "image_ref" for f in schema)
    if source.kind == "images" and not camera:
        raise ConfigError(
            "source.kind: an images source needs a camera pipeline (a schema field of role image_ref);"
            " this schema's devices take readings (replay or stdin)"
        )
    if camera and source.kind in SENSOR_SOURCES:
        raise ConfigError(
            f"source.kind: {source.kind} gives readings of numbers, but this pipeline's devices are cameras"
            " (a schema field of role image_ref): use an images source"
        )


def _initial_model(raw: Any) -> InitialModel | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) != {"path", "version"}:
        raise ConfigError("initial_model: a mapping with path and version")
    if not isinstance(raw["path"], str) or not isinstance(raw["version"], str) or not raw["version"].isdigit():
        raise ConfigError("initial_model: path is a string, version a registry version number as a string")
    return InitialModel(raw["path"], raw["version"])


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate the config file (YAML or JSON); raise ConfigError naming the field or the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        if str(path).endswith(".json"):
            raw = json.loads(data)
        else:
            import yaml

            raw = yaml.safe_load(data)
    except Exception as exc:  # YAML and JSON raise many types; all mean the same here
        raise ConfigError(f"config file {path}: not YAML or JSON: {exc}") from None
    return parse_config(raw)
