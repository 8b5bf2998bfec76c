"""The device registry on Kafka: enrol devices, read who is enrolled (see edgeloop.contract.identity).

`enrol` publishes one registry record per device on the compacted `<prefix>.devices`
topic, signed with the operator's key; `read_registry` reads the topic to its end and
keeps, per device, the newest record signed by a trusted key (a forged record does not
hide the real one; it is counted in `bad_records`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from edgeloop.contract.identity import BadEnrolment, DeviceRegistry, Enrolment, enrolment_record, parse_enrolment
from edgeloop.contract.keys import Keyring, Signer
from edgeloop.contract.messages import iso_ms
from edgeloop.fleet.topics import TopicMissing, records_by_key
from edgeloop.kafka import publish_messages
from edgeloop.spec import PipelineSpec


def enrol(
    spec: PipelineSpec,
    kafka_config: Mapping[str, Any],
    operator: Signer,
    devices: Iterable[tuple[str, str, str]],
    *,
    now: float,
) -> int:
    """Register (device id, group, device public key hex) triples; return how many records were published.

    Raise ValueError naming a group the spec does not have.
    """
    groups = {g.name for g in spec.groups}
    messages = []
    for device_id, group_id, public in devices:
        if group_id not in groups:
            raise ValueError(f"group: {group_id!r} is not a group of {spec.name}")
        record = enrolment_record(
            operator,
            device_id=device_id,
            group_id=group_id,
            pipeline=spec.name,
            device_public_hex=public,
            enrolled_at=iso_ms(now),
        )
        messages.append((device_id.encode(), record))
    for start in range(0, len(messages), 5000):
        publish_messages(kafka_config, spec.topic("devices"), messages[start : start + 5000])
    return len(messages)


def read_registry(
    spec: PipelineSpec, kafka_config: Mapping[str, Any], trusted: Keyring, *, timeout: float = 60.0
) -> DeviceRegistry:
    """The enrolled devices of the pipeline (tombstones remove a device)."""
    try:
        history = records_by_key(kafka_config, spec.topic("devices"), timeout=timeout)
    except TopicMissing:
        return DeviceRegistry()
    registry = DeviceRegistry()
    for key, records in history.items():
        enrolled, bad = enrolment_of(spec, trusted, key, records)
        registry.bad_records.extend(bad)
        if enrolled is not None:
            registry.devices[enrolled.device_id] = enrolled
    return registry


def enrolment_of(
    spec: PipelineSpec, trusted: Keyring, key: bytes, records: list[tuple[int, bytes | None]]
) -> tuple[Enrolment | None, list[str]]:
    """A device's enrolment from its registry records, oldest first: the newest valid one counts (None after a
    tombstone or with none valid); and the records refused on the way, each with its reason."""
    bad: list[str] = []
    for offset, value in reversed(records):
        if value is None:
            return None, bad
        try:
            return parse_enrolment(key, value, trusted, spec.name), bad
        except BadEnrolment as exc:
            bad.append(f"{exc} (offset {offset})")
    return None, bad
