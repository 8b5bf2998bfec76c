"""Device profiles (`<prefix>.profiles`) into object storage: one row per profile, the message kept whole.

Ingest lands profiles like records, exactly once, under `raw/<pipeline>/<prefix>.profiles/dt=.../hour=...`
(placed by the window's start). A row has the header's fields and the message bytes (`profile`), so
the drift stage merges the sketches without going back to Kafka. A profile that does not parse,
names another pipeline or an unknown group, or is not signed by its enrolled device (when a device
registry is given) is a dead letter with its reason.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from edgeloop.contract.identity import DeviceRegistry
from edgeloop.contract.keys import Keyring
from edgeloop.contract.profile import BadProfile, DeviceProfile, check_signed, decode_profile
from edgeloop.ingest.decode import BadRecord, Decoded, int64_array
from edgeloop.spec import PipelineSpec

PROFILE_COLUMNS = pa.schema(
    [
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("group_id", pa.string(), nullable=False),
        pa.field("model_version", pa.string()),
        pa.field("window_start", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("window_end", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("records", pa.int64(), nullable=False),
        pa.field("sent", pa.int64(), nullable=False),
        pa.field("profile", pa.binary(), nullable=False),
    ]
)


@dataclass(frozen=True)
class ProfileCodec:
    """Profiles of `pipeline`'s devices in `groups`; `registry` set: only those signed by their device."""

    pipeline: str
    groups: Collection[str]
    registry: DeviceRegistry | None = None

    @property
    def arrow(self) -> pa.Schema:
        return PROFILE_COLUMNS

    @property
    def timestamp_field(self) -> str:
        return "window_start"

    def decode(self, values: Sequence[bytes | None], kafka_timestamps_ms: Sequence[int]) -> Decoded:
        good: list[tuple[int, DeviceProfile, bytes]] = []
        bad: list[BadRecord] = []
        for i, value in enumerate(values):
            try:
                profile = decode_profile(value)
            except BadProfile as exc:
                bad.append(BadRecord(i, "profile", f"profile: {exc}"))
                continue
            problem = self._problem(profile)
            if problem is not None:
                bad.append(BadRecord(i, "refused", problem))
                continue
            assert value is not None
            good.append((i, profile, value))
        return Decoded(_table(good), int64_array([i for i, _, _ in good]), bad)

    def _problem(self, profile: DeviceProfile) -> str | None:
        if profile.pipeline != self.pipeline:
            return f"pipeline: the profile is of {profile.pipeline!r}, not {self.pipeline!r}"
        if profile.group_id not in self.groups:
            return f"group_id: {profile.group_id!r} is not a group of {self.pipeline}"
        if self.registry is not None:
            refusal = check_signed(profile, self.registry)
            if refusal is not None:
                return f"{refusal}: the profile of {profile.device_id!r} is not signed by that enrolled device"
        return None


def _table(rows: list[tuple[int, DeviceProfile, bytes]]) -> pa.Table:
    profiles = [p for _, p, _ in rows]
    stamp = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "device_id": pa.array([p.device_id for p in profiles], pa.string()),
            "group_id": pa.array([p.group_id for p in profiles], pa.string()),
            "model_version": pa.array([p.model_version for p in profiles], pa.string()),
            "window_start": pa.array(np.array([p.window_start_ms for p in profiles], np.int64) * 1000, stamp),
            "window_end": pa.array(np.array([p.window_end_ms for p in profiles], np.int64) * 1000, stamp),
            "records": pa.array([p.records for p in profiles], pa.int64()),
            "sent": pa.array([p.sent for p in profiles], pa.int64()),
            "profile": pa.array([value for _, _, value in rows], pa.binary()),
        },
        schema=PROFILE_COLUMNS,
    )


def profile_codec(spec: PipelineSpec, kafka_config: Mapping[str, Any], trusted: Keyring) -> ProfileCodec:
    """The codec of the pipeline's profiles, checking signatures against its device registry
    (enrolments verified with `trusted`, the operator's keys)."""
    from edgeloop.fleet.registry import read_registry

    groups = [g.name for g in spec.groups]
    return ProfileCodec(spec.name, groups, read_registry(spec, kafka_config, trusted))
