"""Wire formats of the fleet topics: control assignments, device config, device-state records.

Control messages (`<prefix>.control`, JSON, one partition so every device sees
them in one order) carry an assignment: a model version (with its artifact's URL,
sha256 and size) and/or a config, for one pipeline, addressed to one device, one
group or all devices, with an id. Each is signed with Ed25519 over the canonical JSON
of the message (sorted keys, no spaces, the `signature` field left out) by the
publisher's signing key, named by `key_id`; devices hold only public keys
(`edgeloop.contract.keys`). The signed body also carries an expiry and a sequence
number that grows with every order of the pipeline (microseconds since the epoch at
issue), so a device refuses an order that is expired, or older than (or the same as)
one it already took. A device rejects, with an error report and without crashing,
every message that is not valid JSON, not signed by a trusted key, or not a
well-formed assignment.

Example::

    {"type": "assignment", "id": "asg-1f2e", "pipeline": "demo",
     "issued_at": "2026-01-01T00:00:00.000Z", "expires_at": "2026-01-08T00:00:00.000Z",
     "sequence": 1767225600000000, "issuer": "rollout",
     "target": {"kind": "group", "id": "plant-north"}, "model_version": "3",
     "artifact": {"url": "https://...", "sha256": "9f2c...", "size": 2311, "format": "onnx"},
     "key_id": "3f0c5a9e1b2d4c6f", "signature": "ed25519:Zm9v..."}

An assignment may also carry a `shadow`: a challenger version (with its artifact) that the device
runs beside the model it serves, on the same inputs, reporting each `window_s` how the two compare
(`edgeloop.contract.shadow`) while only the served model answers. The next assignment without a
`shadow` ends it::

    "shadow": {"model_version": "4", "artifact": {...}, "window_s": 60}
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from edgeloop.contract.artifact import ArtifactRef, BadArtifactRef
from edgeloop.contract.keys import BadSignature, Keyring, Signer
from edgeloop.contract.safejson import JsonRefused, loads_object

BASELINE_VERSION = "0"
DEFAULT_ORDER_TTL_S = 7 * 86_400.0  # as long as the artifact's presigned URL
MAX_SEQUENCE = 2**62
MAX_CONTROL_BYTES = 64 * 1024
MAX_DEVICE_MESSAGE_BYTES = 64 * 1024

TargetKind = Literal["device", "group", "all"]
TARGET_KINDS: tuple[TargetKind, ...] = ("device", "group", "all")
ErrorKind = Literal["model_load", "inference", "bad_config", "bad_control"]
ERROR_KINDS: tuple[ErrorKind, ...] = ("model_load", "inference", "bad_config", "bad_control")

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_VERSION_RE = re.compile(r"^\d{1,9}$")
_ASSIGNMENT_FIELDS = {
    "type",
    "id",
    "issued_at",
    "issuer",
    "target",
    "model_version",
    "config",
    "config_version",
    "artifact",
    "shadow",
    "pipeline",
    "sequence",
    "expires_at",
    "key_id",
    "signature",
}
_SHADOW_FIELDS = {"model_version", "artifact", "window_s"}
MAX_SHADOW_WINDOW_S = 86_400.0

# Device configuration keys a device understands, with their allowed ranges.
DEVICE_CONFIG_RANGES: dict[str, tuple[float, float]] = {
    "telemetry_interval_s": (0.05, 3600.0),
    "heartbeat_interval_s": (0.2, 3600.0),
    "confidence_threshold": (0.0, 1.0),
}


def iso_ms(epoch_s: float) -> str:
    """An epoch time as ISO 8601 UTC with milliseconds, e.g. 2026-01-01T00:00:00.123Z."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    """Epoch seconds of an ISO 8601 timestamp (a trailing Z means UTC; naive means UTC)."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


class ControlRejected(ValueError):
    """A control message a device must not apply; `reason` says why, ids are best effort.

    `authenticated`: the message was signed by a trusted key (refused for what it says, e.g. expired);
    only then may a device's report name its id as an order it refused (anyone can write an id).
    """

    def __init__(
        self,
        reason: str,
        *,
        control_id: str | None = None,
        target: Target | None = None,
        authenticated: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.control_id = control_id
        self.target = target
        self.authenticated = authenticated


class BadConfig(ValueError):
    """A device configuration that a device cannot apply; the message names the key."""


@dataclass(frozen=True)
class Target:
    """Who an assignment is for: one device, one group, or every device (`id` is None)."""

    kind: TargetKind
    id: str | None = None

    def matches(self, device_id: str, group_id: str) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "group":
            return self.id == group_id
        return self.id == device_id

    @property
    def key(self) -> str:
        return "all" if self.kind == "all" else f"{self.kind}:{self.id}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind} if self.kind == "all" else {"kind": self.kind, "id": self.id}


@dataclass(frozen=True)
class ShadowOrder:
    """A challenger for the device to run in shadow beside the model it serves (see the module docstring)."""

    model_version: str
    artifact: ArtifactRef
    window_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "artifact": self.artifact.to_dict(), "window_s": self.window_s}

    @classmethod
    def from_dict(cls, value: Any, served_version: str | None) -> ShadowOrder:
        """Raise ControlRejected naming the field of `shadow` that is wrong."""
        if not isinstance(value, dict):
            raise ControlRejected("shadow: not an object")
        unknown = sorted(set(value) - _SHADOW_FIELDS)
        if unknown:
            raise ControlRejected(f"shadow: unknown fields {unknown}")
        version = value.get("model_version")
        if not isinstance(version, str) or not _VERSION_RE.match(version):
            raise ControlRejected(f"shadow.model_version: {version!r} is not a registry version number string")
        if served_version is None or version == served_version:
            raise ControlRejected(f"shadow.model_version: {version} needs a different model_version to serve beside")
        window = value.get("window_s")
        if isinstance(window, bool) or not isinstance(window, (int, float)) or not 1 <= window <= MAX_SHADOW_WINDOW_S:
            raise ControlRejected(
                f"shadow.window_s: {window!r} is not a number of seconds in [1, {MAX_SHADOW_WINDOW_S:g}]"
            )
        try:
            artifact = ArtifactRef.from_dict(value.get("artifact"), where="shadow.artifact")
        except BadArtifactRef as exc:
            raise ControlRejected(str(exc)) from None
        return cls(version, artifact, float(window))


@dataclass(frozen=True)
class Assignment:
    """A desired model version and/or config for the devices of one pipeline that a target addresses."""

    id: str
    target: Target
    issued_at: str
    issuer: str
    pipeline: str
    sequence: int
    expires_at: str
    model_version: str | None = None
    config: Mapping[str, Any] | None = None
    config_version: str | None = None
    artifact: ArtifactRef | None = None  # the ONNX file of model_version (none for the baseline "0")
    key_id: str | None = None  # who signed it (set when read from the wire)
    shadow: ShadowOrder | None = None  # a challenger to run in shadow beside model_version

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "assignment",
            "id": self.id,
            "pipeline": self.pipeline,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "sequence": self.sequence,
            "issuer": self.issuer,
            "target": self.target.to_dict(),
        }
        if self.model_version is not None:
            body["model_version"] = self.model_version
        if self.artifact is not None:
            body["artifact"] = self.artifact.to_dict()
        if self.config is not None:
            body["config"] = dict(self.config)
            body["config_version"] = self.config_version
        if self.shadow is not None:
            body["shadow"] = self.shadow.to_dict()
        return body

    def to_wire(self, signer: Signer) -> bytes:
        """The signed JSON message for the control topic."""
        return signed_json(self.payload(), signer)

    def to_dict(self) -> dict[str, Any]:
        return self.payload()


def config_version_of(config: Mapping[str, Any]) -> str:
    """A content hash of a config, so that the same config always has the same version."""
    return "cfg-" + hashlib.sha256(_canonical(dict(config))).hexdigest()[:12]


def new_assignment(
    target: Target,
    *,
    model_version: str | None = None,
    config: Mapping[str, Any] | None = None,
    config_version: str | None = None,
    pipeline: str,
    issuer: str = "edgeloop",
    assignment_id: str | None = None,
    issued_at: float | None = None,
    artifact: ArtifactRef | None = None,
    ttl_s: float = DEFAULT_ORDER_TTL_S,
    sequence: int | None = None,
    shadow: ShadowOrder | None = None,
) -> Assignment:
    """Build an assignment; raise ValueError naming the field that is wrong.

    The sequence defaults to the microseconds since the epoch at issue: it grows across
    every publisher of the pipeline as long as their clocks agree to within the time
    between two orders to the same devices.
    """
    if artifact is not None and model_version is None:
        raise ValueError("artifact: given without a model_version")
    if model_version is None and config is None:
        raise ValueError("an assignment needs a model_version, a config or both")
    if model_version is not None and not _VERSION_RE.match(model_version):
        raise ValueError(f"model_version: {model_version!r} is not a registry version number")
    if shadow is not None:
        ShadowOrder.from_dict(shadow.to_dict(), model_version)  # the checks a device makes
    if config is not None:
        validate_device_config(config)
    if target.kind != "all" and not target.id:
        raise ValueError(f"target: a {target.kind} target needs an id")
    ident = assignment_id or f"asg-{uuid.uuid4().hex[:16]}"
    if not _ID_RE.match(ident):
        raise ValueError(f"assignment_id: {ident!r} must match {_ID_RE.pattern}")
    if not _ID_RE.match(pipeline):
        raise ValueError(f"pipeline: {pipeline!r} is not a pipeline name")
    if not ttl_s > 0:
        raise ValueError(f"ttl_s: {ttl_s} must be positive")
    at = issued_at if issued_at is not None else datetime.now(UTC).timestamp()
    return Assignment(
        id=ident,
        target=target,
        issued_at=iso_ms(at),
        issuer=issuer,
        pipeline=pipeline,
        sequence=sequence if sequence is not None else next_sequence(),
        expires_at=iso_ms(at + ttl_s),
        model_version=model_version,
        config=dict(config) if config is not None else None,
        config_version=(config_version or config_version_of(config)) if config is not None else None,
        artifact=artifact,
        shadow=shadow,
    )


_issued = [0]  # the last sequence issued by this process


def next_sequence() -> int:
    """Microseconds since the epoch, strictly growing within this process."""
    _issued[0] = max(_issued[0] + 1, time.time_ns() // 1000)
    return _issued[0]


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed_bytes(body: Mapping[str, Any]) -> bytes:
    """What a signature covers: the canonical JSON of `body` without its `signature` field."""
    return _canonical({k: v for k, v in body.items() if k != "signature"})


def sign(body: Mapping[str, Any], signer: Signer) -> str:
    return signer.sign(signed_bytes(body))


def signed_json(body: Mapping[str, Any], signer: Signer) -> bytes:
    """`body` as JSON with `key_id` and `signature` (Ed25519 over the canonical JSON without the signature):
    how orders, enrolments and device reports are signed."""
    out = dict(body)
    out["key_id"] = signer.key_id
    out["signature"] = sign(out, signer)
    return json.dumps(out).encode()


def _target_of(raw: Any, groups: Collection[str]) -> Target:
    if not isinstance(raw, dict):
        raise ControlRejected("target: missing or not an object")
    kind = raw.get("kind")
    if kind not in TARGET_KINDS:
        raise ControlRejected(f"target.kind: {kind!r} is not one of {list(TARGET_KINDS)}")
    if set(raw) - {"kind", "id"}:
        raise ControlRejected(f"target: unknown fields {sorted(set(raw) - {'kind', 'id'})}")
    if kind == "all":
        return Target("all")
    ident = raw.get("id")
    if not isinstance(ident, str) or not ident:
        raise ControlRejected(f"target.id: a {kind} target needs a non-empty string id")
    if kind == "group" and ident not in groups:
        raise ControlRejected(f"target.id: group {ident!r} is not a group of this pipeline")
    return Target(kind, ident)


def parse_assignment(
    value: bytes | None, keys: Keyring, groups: Collection[str], *, now: float | None = None
) -> Assignment:
    """Decode, authenticate and validate one control message; raise ControlRejected naming the problem.

    The target and id are read before the signature is checked only so that the
    rejection can name them; nothing of an unauthenticated message is applied. An
    order past its `expires_at` (at `now`, default the clock) is refused.
    """
    if value is None:
        raise ControlRejected("empty message (tombstone)")
    try:
        body = loads_object(value, max_bytes=MAX_CONTROL_BYTES)
    except JsonRefused as exc:
        raise ControlRejected(str(exc)) from None
    control_id = body.get("id") if isinstance(body.get("id"), str) else None
    try:
        target: Target | None = _target_of(body.get("target"), groups)
    except ControlRejected:
        target = None
    signature = body.get("signature")
    if not isinstance(signature, str) or not signature:
        raise ControlRejected("signature: missing (unsigned message)", control_id=control_id, target=target)
    try:
        keys.verify(body.get("key_id"), signature, signed_bytes(body))
    except BadSignature as exc:
        raise ControlRejected(str(exc), control_id=control_id, target=target) from None
    try:
        assignment = _assignment_from(body, groups)
    except ControlRejected as exc:
        raise ControlRejected(exc.reason, control_id=control_id, target=target, authenticated=True) from None
    clock = time.time() if now is None else now
    if parse_iso(assignment.expires_at) < clock:
        raise ControlRejected(
            f"expires_at: the order expired at {assignment.expires_at}",
            control_id=control_id,
            target=target,
            authenticated=True,
        )
    return assignment


def _assignment_from(body: dict[str, Any], groups: Collection[str]) -> Assignment:
    unknown = sorted(set(body) - _ASSIGNMENT_FIELDS)
    if unknown:
        raise ControlRejected(f"unknown fields {unknown}")
    if body.get("type") != "assignment":
        raise ControlRejected(f"type: {body.get('type')!r} is not 'assignment'")
    ident = body.get("id")
    if not isinstance(ident, str) or not _ID_RE.match(ident):
        raise ControlRejected(f"id: {ident!r} must be a string matching {_ID_RE.pattern}")
    target = _target_of(body.get("target"), groups)
    issued_at = body.get("issued_at")
    try:
        parse_iso(issued_at) if isinstance(issued_at, str) else None
    except ValueError:
        issued_at = None
    if not isinstance(issued_at, str):
        raise ControlRejected("issued_at: missing or not an ISO 8601 timestamp")
    issuer = body.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        raise ControlRejected("issuer: missing or not a string")
    model_version = body.get("model_version")
    if model_version is not None and (not isinstance(model_version, str) or not _VERSION_RE.match(model_version)):
        raise ControlRejected(f"model_version: {model_version!r} is not a registry version number string")
    config = body.get("config")
    config_version = body.get("config_version")
    if config is not None:
        if not isinstance(config, dict):
            raise ControlRejected("config: not an object")
        if not isinstance(config_version, str) or not _ID_RE.match(config_version):
            raise ControlRejected("config_version: required with a config, a string matching " + _ID_RE.pattern)
    elif config_version is not None:
        raise ControlRejected("config_version: given without a config")
    if model_version is None and config is None:
        raise ControlRejected("an assignment needs a model_version, a config or both")
    artifact = None
    if body.get("artifact") is not None:
        if model_version is None:
            raise ControlRejected("artifact: given without a model_version")
        try:
            artifact = ArtifactRef.from_dict(body["artifact"])
        except BadArtifactRef as exc:
            raise ControlRejected(str(exc)) from None
    shadow = ShadowOrder.from_dict(body["shadow"], model_version) if body.get("shadow") is not None else None
    pipeline = body.get("pipeline")
    if not isinstance(pipeline, str) or not _ID_RE.match(pipeline):
        raise ControlRejected(f"pipeline: {pipeline!r} is not a pipeline name")
    sequence = body.get("sequence")
    if isinstance(sequence, bool) or not isinstance(sequence, int) or not 0 < sequence < MAX_SEQUENCE:
        raise ControlRejected(f"sequence: {sequence!r} is not a positive integer below 2^62")
    expires_at = body.get("expires_at")
    try:
        parse_iso(expires_at) if isinstance(expires_at, str) else None
    except ValueError:
        expires_at = None
    if not isinstance(expires_at, str):
        raise ControlRejected("expires_at: missing or not an ISO 8601 timestamp")
    return Assignment(
        ident,
        target,
        issued_at,
        issuer,
        pipeline,
        sequence,
        expires_at,
        model_version,
        config,
        config_version,
        artifact,
        key_id=str(body["key_id"]),
        shadow=shadow,
    )


def validate_device_config(config: Mapping[str, Any]) -> dict[str, float]:
    """The settings a device applies from a config; raise BadConfig naming the key that is wrong."""
    out: dict[str, float] = {}
    for name, value in config.items():
        if name not in DEVICE_CONFIG_RANGES:
            raise BadConfig(f"config.{name}: unknown setting (known: {sorted(DEVICE_CONFIG_RANGES)})")
        low, high = DEVICE_CONFIG_RANGES[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BadConfig(f"config.{name}: {value!r} is not a number")
        if not low <= value <= high:
            raise BadConfig(f"config.{name}: {value} is outside [{low}, {high}]")
        out[name] = float(value)
    return out


# --- device-state (the twin) ---------------------------------------------------------


@dataclass
class DeviceState:
    """One device's twin: what the control plane wants (desired) and what the device reports."""

    device_id: str
    group_id: str
    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    updated_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "group_id": self.group_id,
            "desired": self.desired,
            "reported": self.reported,
            "updated_at": self.updated_at,
        }

    def to_wire(self) -> bytes:
        return json.dumps(self.to_dict()).encode()

    @property
    def in_sync(self) -> bool:
        """The device reports the model and config versions it is asked to run."""
        for name in ("model_version", "config_version"):
            wanted = self.desired.get(name)
            if wanted is not None and self.reported.get(name) != wanted:
                return False
        return True


class BadDeviceState(ValueError):
    """A device-state record that cannot be read; the message names the key and the field."""


class ReportChecker(Protocol):
    """Says whether a decoded device report is signed by its enrolled device (edgeloop.contract.identity)."""

    def check(self, body: Mapping[str, Any]) -> str | None: ...


class RefusedReport(ValueError):
    """A well-formed device report that is not signed by its enrolled device; `reason` is the class."""

    def __init__(self, reason: str, where: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.reason = reason


def require_signed(registry: ReportChecker | None, body: Mapping[str, Any], where: str) -> None:
    """Raise RefusedReport unless `body` is signed by its enrolled device (no `registry`: nothing is checked)."""
    if registry is not None:
        refused = registry.check(body)
        if refused is not None:
            raise RefusedReport(refused, where)


def device_message(value: bytes | None, where: str, error: type[ValueError]) -> dict[str, Any]:
    """Decode a JSON object that names a device and its group; raise `error` naming `where` and the field."""
    try:
        body = loads_object(value, max_bytes=MAX_DEVICE_MESSAGE_BYTES)
    except JsonRefused as exc:
        raise error(f"{where}: {exc}") from None
    for name in ("device_id", "group_id"):
        if not isinstance(body.get(name), str):
            raise error(f"{where}.{name}: missing or not a string")
    return body


def parse_device_state(key: bytes | None, value: bytes, registry: ReportChecker | None = None) -> DeviceState:
    """One device-state record; with a `registry`, raise RefusedReport unless its device signed it."""
    device_id = key.decode("utf-8", "replace") if key else "<no key>"
    body = device_message(value, f"device-state[{device_id}]", BadDeviceState)
    require_signed(registry, body, f"device-state[{device_id}]")
    if body["device_id"] != device_id:
        raise BadDeviceState(f"device-state[{device_id}].device_id: {body['device_id']!r} differs from the key")
    desired = body.get("desired") or {}
    reported = body.get("reported") or {}
    if not isinstance(desired, dict) or not isinstance(reported, dict):
        raise BadDeviceState(f"device-state[{device_id}]: desired and reported must be objects")
    return DeviceState(device_id, body["group_id"], desired, reported, body.get("updated_at"))
