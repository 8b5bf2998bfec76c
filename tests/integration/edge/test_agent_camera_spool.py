"""A real camera's agent: PNG frames dropped into its spool directory arrive on the stack's broker, and in S3.

Given an agent process of the `visual_inspection` pipeline (on topics and a storage prefix of its own, on the
stack's broker and S3) with an images source, serving the pipeline's image baseline, when a camera drops N frames
into the spool (temp name, then rename) and one file that is not a PNG, then N records and N frame messages
arrive, each record's frame key is the content address of its frame's PNG, the spool is empty but for the
rejected file (beside its reason), `/metrics` counts N frames and one rejection, and ingest stores each frame in
S3 under the key its record names.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from agent_testkit import AgentProcess, camera_agent, delete_pipeline_topics, http_get, wait_until
from tests.helpers.camera_models import VISION_SPEC
from tests.helpers.keys import OPERATOR

from edgeloop.contract.frame import decode_frame_message, frame_key
from edgeloop.fleet.topics import ensure_topics, read_topic
from edgeloop.spec import PipelineSpec, parse_spec
from edgeloop.vision.frames import encode_png, group_conditions, make_frames

pytestmark = pytest.mark.integration

GROUP = "hall-east"
DEVICE = "hall-east-cam-001"
FRAMES = 6


@pytest.fixture
def camera_spec(kafka_config: dict[str, str], storage_area: tuple[str, str]) -> Iterator[PipelineSpec]:
    """The shipped camera spec on topics of its own and this test's storage area (both removed afterwards)."""
    bucket, prefix = storage_area
    data = yaml.safe_load(VISION_SPEC.read_text())
    data["topics"] |= {"prefix": f"it_camera_spool_{uuid.uuid4().hex[:10]}", "partitions": 2}
    data["storage"] = {"bucket": bucket, "prefix": prefix}
    spec = parse_spec(yaml.safe_dump(data))
    ensure_topics(spec, kafka_config, ground_truth=False)
    try:
        yield spec
    finally:
        delete_pipeline_topics(spec, kafka_config)


@pytest.fixture
def running_camera(camera_spec: PipelineSpec, kafka_config: dict[str, str], tmp_path: Path) -> Iterator[AgentProcess]:
    agent = camera_agent(camera_spec, kafka_config, OPERATOR, GROUP, DEVICE, tmp_path, tmp_path / "spool")
    agent.start()
    try:
        wait_until("the camera agent to serve model 0", lambda: (agent.health() or {}).get("model_version") == "0", 60)
        yield agent
    finally:
        agent.terminate()
        try:
            agent.wait(30)
        finally:
            agent.ensure_stopped()


def drop(spool: Path, name: str, data: bytes) -> None:
    """What a camera does: write under a temporary name, then rename to the final one."""
    tmp = spool / f".{name}.tmp"
    tmp.write_bytes(data)
    tmp.rename(spool / name)


def by_device(kafka_config: dict[str, str], topic: str) -> list[bytes]:
    return [r.value or b"" for r in read_topic(kafka_config, topic, timeout=30) if r.key == DEVICE.encode()]


def test_frames_dropped_into_the_spool_arrive_as_records_and_frames_and_land_in_s3(
    camera_spec: PipelineSpec,
    running_camera: AgentProcess,
    kafka_config: dict[str, str],
    s3_client: Any,
    tmp_path: Path,
) -> None:
    spec = camera_spec
    spool = tmp_path / "spool"
    pixels, _ = make_frames(DEVICE, 0, FRAMES, group_conditions(GROUP))
    pngs = [encode_png(p) for p in pixels]
    for i, png in enumerate(pngs):
        drop(spool, f"frame-{i:06d}.png", png)
    drop(spool, "frame-999999.png", b"this camera wrote garbage\n")

    def arrived() -> tuple[list[bytes], list[bytes]] | None:
        records = by_device(kafka_config, spec.topic("telemetry"))
        frames = by_device(kafka_config, spec.topic("frames"))
        return (records, frames) if len(records) >= FRAMES and len(frames) >= FRAMES else None

    records, frames = wait_until(f"{FRAMES} records and frames", arrived, timeout=90)

    assert len(records) == len(frames) == FRAMES
    decoded = [decode_frame_message(v) for v in frames]
    assert [png for _, png in decoded] == pngs, "every frame, once, in the camera's order"
    headers = {h.record_id: h for h, _ in decoded}
    for value in records:
        record = json.loads(value)
        header = headers[record["record_id"]]
        assert record["frame_sha256"] == header.sha256
        assert record["frame_key"] == frame_key(spec.name, header.sha256, storage_prefix=spec.storage.prefix)
        assert record["model_version"] == "0"
        assert record["prediction"] in spec.annotation.labels
    assert {json.loads(v)["frame_sha256"] for v in records} == {hashlib.sha256(p).hexdigest() for p in pngs}

    assert sorted(p.name for p in spool.iterdir()) == ["rejected"]
    assert sorted(p.name for p in (spool / "rejected").iterdir()) == ["frame-999999.png", "frame-999999.png.reason"]
    assert (spool / "rejected" / "frame-999999.png.reason").read_text().startswith("not_png: ")
    metrics = (http_get(running_camera.port, "/metrics") or b"").decode()
    assert f'edgeloop_agent_frames_total{{device="{DEVICE}",group="{GROUP}"}} {FRAMES}' in metrics
    assert f'edgeloop_agent_frames_rejected_total{{device="{DEVICE}",group="{GROUP}",reason="not_png"}} 1' in metrics

    from edgeloop.ingest import ingest_topic
    from edgeloop.ingest.frames import frame_codec

    ingested = ingest_topic(
        spec, "frames", consumer_config=kafka_config, s3=s3_client, codec=frame_codec(spec, s3_client)
    )
    assert (ingested["records"], ingested["dead_letters"]) == (FRAMES, 0)
    for value in records:
        record = json.loads(value)
        body = s3_client.get_object(Bucket=spec.storage.bucket, Key=record["frame_key"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == record["frame_sha256"]
