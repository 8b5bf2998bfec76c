"""A camera feeds the agent through a spool directory: finished PNG files, taken in name order, checked before
they are decoded, queued with their record, removed only after the queue commit, rejected with a reason."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.helpers.camera_models import camera_model_bytes, vision_spec
from tests.helpers.keys import TRUSTED

from edgeloop.contract.frame import MAX_FRAME_PNG_BYTES, PNG_SIGNATURE, decode_frame_message
from edgeloop.contract.keys import Signer
from edgeloop.edge.agent import LAST_FRAME_NOTE, Agent
from edgeloop.edge.config import ConfigError, parse_config
from edgeloop.edge.images import ImageSpool, RejectedFrame
from edgeloop.fleet.agents import agent_config
from edgeloop.spec import PipelineSpec
from edgeloop.vision.frames import encode_png, group_conditions, make_frames

NOW = 1_767_225_600.0
SHAPE = (64, 64)


def frames(count: int, start: int = 0) -> list[bytes]:
    pixels, _ = make_frames("cam-1", start, count, group_conditions("hall-east"))
    return [encode_png(p) for p in pixels]


def drop(directory: Path, name: str, data: bytes) -> Path:
    """What a camera does: write under a temporary name, then rename to the final one."""
    tmp = directory / f".{name}.tmp"
    tmp.write_bytes(data)
    tmp.rename(directory / name)
    return directory / name


def png_header_only(width: int, height: int, body: bytes = b"garbage") -> bytes:
    """A PNG signature and IHDR chunk of the given size, followed by bytes that do not decode."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return PNG_SIGNATURE + chunk + body


# --- the spool ---------------------------------------------------------------


def test_finished_frames_are_taken_in_name_order_and_partial_ones_are_not_seen(tmp_path: Path) -> None:
    spool = ImageSpool(tmp_path, SHAPE)
    data = frames(1)[0]
    for name in ("f-0003.png", "f-0001.png", "f-0002.png"):
        drop(tmp_path, name, data)
    (tmp_path / ".f-0004.png.tmp").write_bytes(data[:100])  # still being written
    (tmp_path / "f-0005.png.partial").write_bytes(data)
    (tmp_path / "rejected").mkdir()
    (tmp_path / "notes.txt").write_text("not a frame")

    assert [p.name for p in spool.pending(10)] == ["f-0001.png", "f-0002.png", "f-0003.png"]
    assert [p.name for p in spool.pending(2)] == ["f-0001.png", "f-0002.png"]


def test_a_good_frame_reads_as_its_bytes_and_pixels(tmp_path: Path) -> None:
    data = frames(1)[0]
    frame = ImageSpool(tmp_path, SHAPE).read(drop(tmp_path, "f.png", data))
    assert frame.png == data
    assert frame.pixels.shape == SHAPE
    assert frame.pixels.dtype == np.uint8


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x89PNG" + b"x" * (MAX_FRAME_PNG_BYTES + 10), "too_large"),
        (b"GIF89a not a png at all", "not_png"),
        (b"", "not_png"),
        (png_header_only(32, 48), "shape"),  # refused on its header: the garbage after it is never decoded
        (png_header_only(64, 64), "undecodable"),
    ],
)
def test_a_bad_file_is_refused_naming_why(tmp_path: Path, content: bytes, reason: str) -> None:
    with pytest.raises(RejectedFrame) as caught:
        ImageSpool(tmp_path, SHAPE).read(drop(tmp_path, "bad.png", content))
    assert caught.value.reason == reason


def test_a_frame_of_another_size_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(data: bytes) -> Any:
        raise AssertionError("decoded")

    monkeypatch.setattr("edgeloop.vision.frames.decode_png", no_decoding)
    other = encode_png(np.zeros((32, 32), dtype=np.uint8))
    with pytest.raises(RejectedFrame, match="32x32 pixels, the model takes 64x64"):
        ImageSpool(tmp_path, SHAPE).read(drop(tmp_path, "small.png", other))


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()
    target = tmp_path / "secret.png"
    target.write_bytes(frames(1)[0])
    (tmp_path / "spool" / "link.png").symlink_to(target)
    with pytest.raises(RejectedFrame) as caught:
        ImageSpool(tmp_path / "spool", SHAPE).read(tmp_path / "spool" / "link.png")
    assert caught.value.reason == "unreadable"


def test_a_rejected_file_moves_aside_with_its_reason_and_a_done_one_is_deleted_or_kept(tmp_path: Path) -> None:
    spool = ImageSpool(tmp_path, SHAPE)
    spool.reject(drop(tmp_path, "a.png", b"junk"), "not_png: a.png: not a PNG image")
    assert (tmp_path / "rejected" / "a.png").read_bytes() == b"junk"
    assert (tmp_path / "rejected" / "a.png.reason").read_text() == "not_png: a.png: not a PNG image\n"
    assert spool.pending(10) == []

    spool.finish(drop(tmp_path, "b.png", b"x"))
    assert not (tmp_path / "b.png").exists()
    ImageSpool(tmp_path, SHAPE, keep_done=True).finish(drop(tmp_path, "c.png", b"y"))
    assert (tmp_path / "done" / "c.png").read_bytes() == b"y"


# --- the agent ---------------------------------------------------------------


@pytest.fixture(scope="module")
def camera_spec() -> PipelineSpec:
    return vision_spec()


def camera_raw(spec: PipelineSpec, tmp_path: Path, **settings: Any) -> dict[str, Any]:
    (tmp_path / "trusted.pem").write_bytes(TRUSTED.pem())
    key = tmp_path / "device.key"
    if not key.exists():
        key.write_bytes(Signer.generate().private_pem())
    model = tmp_path / "baseline.onnx"
    if not model.exists():
        model.write_bytes(camera_model_bytes())
    raw = agent_config(spec, "hall-east", "cam-1", {"bootstrap.servers": "127.0.0.1:1"}, tmp_path / "state")
    raw.update(
        trusted_keys_file=str(tmp_path / "trusted.pem"),
        identity_key_file=str(key),
        source={"kind": "images", "path": str(tmp_path / "spool")},
        initial_model={"path": str(model), "version": "0"},
    )
    raw.update(settings)
    return raw


def camera_agent(spec: PipelineSpec, tmp_path: Path, **settings: Any) -> Agent:
    """A camera's agent as `start` leaves it, without Kafka: state restored, model loaded, spool open."""
    agent = Agent(parse_config(camera_raw(spec, tmp_path, **settings)))
    agent._restore_state()
    agent._load_current_model()
    agent.open_source()
    return agent


def queued(agent: Agent) -> list[tuple[str, bytes]]:
    return [(m.topic, m.value) for m in agent.outbox.peek(10_000)]


def test_each_frame_is_queued_with_its_record_and_its_file_removed(camera_spec: PipelineSpec, tmp_path: Path) -> None:
    agent = camera_agent(camera_spec, tmp_path)
    pngs = frames(3)
    spool = tmp_path / "spool"
    for i, png in enumerate(pngs):
        drop(spool, f"f-{i:04d}.png", png)

    assert agent.take_frames(NOW) == 3

    messages = queued(agent)
    assert [t for t, _ in messages] == ["visual_inspection.frames", "visual_inspection.telemetry"] * 3
    for i, png in enumerate(pngs):
        header, body = decode_frame_message(messages[2 * i][1])
        record = json.loads(messages[2 * i + 1][1])
        assert body == png
        assert record["record_id"] == header.record_id
        assert record["frame_sha256"] == header.sha256
        assert record["frame_key"].endswith(f"/{header.sha256}.png")
        assert record["model_version"] == "0"
        assert isinstance(record["brightness"], float)
    assert agent.spool is not None
    assert agent.spool.pending(10) == []
    assert agent.outbox.note(LAST_FRAME_NOTE) == "f-0002.png"
    assert "edgeloop_agent_frames_total{" in agent.metrics_text()


def test_a_bad_file_is_rejected_counted_and_the_agent_goes_on(camera_spec: PipelineSpec, tmp_path: Path) -> None:
    agent = camera_agent(camera_spec, tmp_path)
    spool = tmp_path / "spool"
    drop(spool, "a.png", frames(1)[0])
    drop(spool, "b.png", b"not a png")
    drop(spool, "c.png", frames(1, start=1)[0])

    assert agent.take_frames(NOW) == 2

    assert len(queued(agent)) == 4
    assert (spool / "rejected" / "b.png").exists()
    assert (spool / "rejected" / "b.png.reason").read_text().startswith("not_png: b.png: not a PNG image")
    assert 'edgeloop_agent_frames_rejected_total{device="cam-1",group="hall-east",reason="not_png"} 1' in (
        agent.metrics_text()
    )


def test_after_a_crash_between_queueing_and_removing_the_file_is_not_queued_twice(
    camera_spec: PipelineSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 after the queue commit, before the file is removed: the next start removes it and queues nothing."""
    agent = camera_agent(camera_spec, tmp_path)
    spool = tmp_path / "spool"
    drop(spool, "f-0001.png", frames(1)[0])

    class Killed(BaseException):
        pass

    def killed(self: ImageSpool, path: Path) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(ImageSpool, "finish", killed)
        with pytest.raises(Killed):
            agent.take_frames(NOW)
    before = queued(agent)
    agent.outbox.close()
    assert len(before) == 2
    assert (spool / "f-0001.png").exists(), "the crash came before the file was removed"

    restarted = camera_agent(camera_spec, tmp_path)
    drop(spool, "f-0002.png", frames(1, start=1)[0])
    assert restarted.take_frames(NOW + 1) == 1

    after = queued(restarted)
    assert after[:2] == before, "the first frame is queued once"
    record_ids = [json.loads(v)["record_id"] for t, v in after if t.endswith(".telemetry")]
    assert len(record_ids) == len(set(record_ids)) == 2
    assert restarted.spool is not None
    assert restarted.spool.pending(10) == []


def test_frames_wait_in_the_spool_while_no_model_serves(camera_spec: PipelineSpec, tmp_path: Path) -> None:
    raw = camera_raw(camera_spec, tmp_path)
    del raw["initial_model"]
    agent = Agent(parse_config(raw))
    agent.open_source()
    drop(tmp_path / "spool", "f.png", frames(1)[0])
    assert agent.take_frames(NOW) == 0
    assert (tmp_path / "spool" / "f.png").exists()
    assert queued(agent) == []


def test_a_sensor_model_on_a_camera_is_a_config_error(
    camera_spec: PipelineSpec, tmp_path: Path, baseline_model: bytes
) -> None:
    (tmp_path / "sensor.onnx").write_bytes(baseline_model)
    agent = Agent(
        parse_config(
            camera_raw(camera_spec, tmp_path, initial_model={"path": str(tmp_path / "sensor.onnx"), "version": "0"})
        )
    )
    with pytest.raises(ConfigError, match=r"^initial_model: model version 0: features"):
        agent._load_current_model()


@pytest.mark.parametrize("kind", ["replay", "stdin"])
def test_a_camera_with_a_sensor_source_is_a_config_error(camera_spec: PipelineSpec, tmp_path: Path, kind: str) -> None:
    raw = camera_raw(camera_spec, tmp_path, source={"kind": kind, "path": str(tmp_path / "r.jsonl")})
    with pytest.raises(ConfigError, match=r"^source\.kind: .* cameras"):
        parse_config(raw)


def test_an_images_source_on_a_sensor_pipeline_is_a_config_error(spec: PipelineSpec, tmp_path: Path) -> None:
    raw = agent_config(spec, "plant-north", "gw-1", {"bootstrap.servers": "x:1"}, tmp_path)
    raw["source"] = {"kind": "images", "path": str(tmp_path / "spool")}
    with pytest.raises(ConfigError, match=r"^source\.kind: an images source needs a camera pipeline"):
        parse_config(raw)


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"kind": "images"}, "source.path"),
        ({"kind": "images", "path": "/spool", "frame_shape": [64]}, "source.frame_shape"),
        ({"kind": "images", "path": "/spool", "frame_shape": [64, 0]}, "source.frame_shape"),
    ],
)
def test_images_source_errors_name_the_field(
    camera_spec: PipelineSpec, tmp_path: Path, source: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{field}"):
        parse_config(camera_raw(camera_spec, tmp_path, source=source))


def test_the_cli_writes_a_cameras_images_source_and_refuses_a_sensor_source_for_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import yaml

    from edgeloop.cli import main

    args = ["agent", "config", "--pipeline", "visual_inspection", "--group", "hall-east", "--device-id", "cam-1"]
    args += ["--bootstrap", "k:9092"]
    assert main([*args, "--source", "images:/var/spool/camera"]) == 0
    config = parse_config(yaml.safe_load(capsys.readouterr().out))
    assert (config.source.kind, config.source.path, config.source.frame_shape) == ("images", "/var/spool/camera", SHAPE)
    with pytest.raises(SystemExit, match=r"^agent config: source\.kind: stdin .* cameras"):
        main(args)


def test_a_spool_the_agent_cannot_write_is_a_config_error(
    camera_spec: PipelineSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taken frames are removed and bad ones moved aside: from a read-only spool they would be sent again."""
    agent = Agent(parse_config(camera_raw(camera_spec, tmp_path)))
    monkeypatch.setattr("edgeloop.edge.agent.os.access", lambda path, mode: False)  # a directory mounted read-only
    with pytest.raises(ConfigError, match=r"^source\.path: .* must be readable and writable"):
        agent.open_source()


def test_once_rejected_is_full_bad_files_are_deleted_so_garbage_cannot_fill_the_disk(tmp_path: Path) -> None:
    ImageSpool(tmp_path, SHAPE).reject(drop(tmp_path, "a.png", b"junk"), "not_png")
    spool = ImageSpool(tmp_path, SHAPE, max_rejected=2)  # a restart counts what rejected/ already holds
    assert spool.reject(drop(tmp_path, "b.png", b"junk"), "not_png")
    assert not spool.reject(drop(tmp_path, "c.png", b"junk"), "not_png")
    assert sorted(p.name for p in (tmp_path / "rejected").iterdir()) == [
        "a.png",
        "a.png.reason",
        "b.png",
        "b.png.reason",
    ]
    assert spool.pending(10) == []
