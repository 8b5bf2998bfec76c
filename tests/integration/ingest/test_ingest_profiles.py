"""Device profiles through the real broker into S3: signed ones land once, the rest are dead letters with reasons."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from benchmarks.soak_ingest import produce
from tests.helpers.keys import OPERATOR, TRUSTED, device_key

from edgeloop.contract.keys import public_hex
from edgeloop.contract.profile import decode_profile, load_sketch
from edgeloop.edge.config import parse_config
from edgeloop.edge.device import DeviceCore
from edgeloop.fleet.agents import agent_config
from edgeloop.fleet.registry import enrol
from edgeloop.fleet.topics import ensure_topics
from edgeloop.ingest import ingest_topic
from edgeloop.ingest.profiles import profile_codec
from edgeloop.spec import PipelineSpec, with_profiles

pytestmark = pytest.mark.integration


def _profiles(spec: PipelineSpec, device: str, group: str, tmp_path: Path, start: float) -> list[bytes]:
    """Two windows of one enrolled device's profiles (its real core, readings fed by hand)."""
    raw = agent_config(spec, group, device, {"bootstrap.servers": "127.0.0.1:1"}, tmp_path)
    clock = [start]
    core = DeviceCore.for_config(
        parse_config(raw), TRUSTED, identity=device_key(spec.name, device), clock=lambda: clock[0]
    )
    out: list[bytes] = []
    for window in range(2):
        for i in range(50):
            core.observe([1.0 + i % 5, 2.0, 50.0 + window, 10.0, 1400.0, 60.0], None, start + window * 60 + i)
        out += [m.value for m in core.profiles_due(start + (window + 1) * 60)]
    return out


def test_profiles_land_once_and_forged_or_broken_ones_are_dead_letters(
    make_spec: Callable[..., PipelineSpec], kafka_config: dict[str, str], s3_client: Any, tmp_path: Path
) -> None:
    spec = with_profiles(make_spec(partitions=2))
    ensure_topics(spec, kafka_config)
    now = time.time()
    devices = [("plant-north-00001", "plant-north"), ("plant-south-00002", "plant-south")]
    enrol(
        spec, kafka_config, OPERATOR, [(d, g, public_hex(device_key(spec.name, d).public)) for d, g in devices], now=now
    )
    good = [v for d, g in devices for v in _profiles(spec, d, g, tmp_path, now - 300)]
    stranger = _profiles(spec, "plant-north-09999", "plant-north", tmp_path, now - 300)[0]  # never enrolled
    forged = bytearray(good[0])
    forged[-100] ^= 1
    bad = {b"not a profile": "magic", bytes(forged): "bad_signature", stranger: "unknown_device"}
    topic = spec.topic("profiles")
    produce(kafka_config["bootstrap.servers"], topic, [(i % 2, v) for i, v in enumerate([*good, *bad])])

    codec = profile_codec(spec, kafka_config, TRUSTED)
    result = ingest_topic(spec, "profiles", consumer_config=kafka_config, s3=s3_client, codec=codec)
    assert (result["records"], result["dead_letters"]) == (len(good), len(bad)) == (4, 3)
    assert result["dead_letters_by_kind"] == {"profile": 1, "refused": 2}

    rows = []
    for key in result["objects"]:
        body = s3_client.get_object(Bucket=spec.storage.bucket, Key=key)["Body"].read()
        rows += pq.read_table(io.BytesIO(body)).to_pylist()
        assert f"/{topic}/dt=" in key and "/hour=" in key
    assert sorted(r["profile"] for r in rows) == sorted(good)
    assert {r["device_id"] for r in rows} == {d for d, _ in devices}
    assert all(r["records"] == 50 for r in rows)
    merged = load_sketch(decode_profile(rows[0]["profile"]).columns[0])
    assert merged.n == 50

    letters = []
    for key in result["deadletter_objects"]:
        body = s3_client.get_object(Bucket=spec.storage.bucket, Key=key)["Body"].read()
        letters += [json.loads(line) for line in body.splitlines()]
    reasons = " | ".join(letter["reason"] for letter in letters)
    for part in bad.values():
        assert part in reasons

    again = ingest_topic(spec, "profiles", consumer_config=kafka_config, s3=s3_client, codec=codec)
    assert (again["records"], again["dead_letters"], again["objects_created"]) == (0, 0, 0)
