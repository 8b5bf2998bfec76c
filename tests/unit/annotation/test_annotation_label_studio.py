"""The Label Studio backend's pure parts: label config, task JSON, connection settings, retries."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from defusedxml.ElementTree import fromstring
from label_studio_sdk.core.api_error import ApiError

from edgeloop.annotation.backend import BackendError, BackendUnavailable, TaskPayload
from edgeloop.annotation.batch import image_url, task_payloads
from edgeloop.annotation.label_studio import (
    BATCH_KEY,
    RECORD_KEY,
    LabelStudioBackend,
    _choices_in_config,
    label_config,
    labels_of,
    settings_from_connection,
    task_json,
)
from edgeloop.spec import PipelineSpec, load_spec
from edgeloop.storage import RetryPolicy

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
FAST = RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0)


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(DEMO)


def image_spec(spec: PipelineSpec, labels: list[str]) -> PipelineSpec:
    data = spec.model_dump(by_alias=True)
    data["schema"].append({"name": "frame", "type": "string", "role": "image_ref"})
    data["annotation"]["labels"] = labels
    return PipelineSpec.model_validate(data)


def test_label_config_shows_the_record_as_a_table_with_the_spec_labels(spec: PipelineSpec) -> None:
    root = fromstring(label_config(spec))
    assert root.find("Table").get("value") == "$record"
    assert root.find("Image") is None
    choices = root.find("Choices")
    assert choices.get("toName") == "record" and choices.get("name") == "label"
    assert [c.get("value") for c in choices.iter("Choice")] == ["normal", "wear", "fault"]


def test_label_config_shows_images_and_escapes_labels(spec: PipelineSpec) -> None:
    config = label_config(image_spec(spec, ['bad "seal"', "ok & clean"]))
    root = fromstring(config)
    assert root.find("Image").get("value") == "$image"
    assert _choices_in_config(config) == ['bad "seal"', "ok & clean"]


def test_task_json_carries_batch_record_and_a_known_prediction() -> None:
    payload = TaskPayload(
        record_id="r1",
        batch_id="b1",
        fields={"device_id": "d1", "ts": "2026", "rpm": 1.0},
        prediction="wear",
        confidence=0.4,
        model_version="7",
        image_url="http://img/1.png",
    )
    body = task_json(payload, ["normal", "wear"])
    assert body["data"][BATCH_KEY] == "b1" and body["data"][RECORD_KEY] == "r1"
    assert body["data"]["record"] == {"device_id": "d1", "ts": "2026", "rpm": 1.0}
    assert body["data"]["image"] == "http://img/1.png"
    (prediction,) = body["predictions"]
    assert prediction["model_version"] == "7" and prediction["score"] == 0.4
    assert labels_of(prediction["result"]) == ("wear",)
    # a prediction outside the label set is no pre-annotation
    assert "predictions" not in task_json(payload, ["normal", "fault"])


def test_labels_of_reads_only_our_choices() -> None:
    result = [
        {"from_name": "label", "type": "choices", "value": {"choices": ["wear"]}},
        {"from_name": "other", "type": "choices", "value": {"choices": ["x"]}},
    ]
    assert labels_of(result) == ("wear",)
    assert labels_of(None) == ()


def test_task_payloads_presign_image_refs_and_show_fields(spec: PipelineSpec) -> None:
    with_image = image_spec(spec, ["normal", "wear", "fault"])
    s3 = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
    )
    row = {f.name: None for f in with_image.schema_} | {
        "record_id": "r1",
        "device_id": "d1",
        "prediction": "fault",
        "confidence": float("nan"),
        "frame": "s3://imgs/a/b.png",
    }
    (payload,) = task_payloads(with_image, s3, "b1", [row], presign_for=timedelta(hours=1))
    assert payload.image_url is not None and payload.image_url.startswith("http://127.0.0.1:1/imgs/a/b.png?")
    assert "Signature" in payload.image_url
    assert "record_id" not in payload.fields and "frame" not in payload.fields
    assert payload.fields["device_id"] == "d1" and payload.confidence is None and payload.prediction == "fault"
    assert image_url(s3, with_image, "https://cdn/x.png", timedelta(hours=1)) == "https://cdn/x.png"
    assert image_url(s3, with_image, "frames/1.png", timedelta(hours=1)).startswith(
        f"http://127.0.0.1:1/{with_image.storage.bucket}/frames/1.png?"
    )


class Conn:
    def __init__(self, **kw: Any) -> None:
        self.conn_id = "ls"
        self.host = kw.get("host")
        self.schema = kw.get("schema")
        self.port = kw.get("port")
        self.password = kw.get("password")
        self.extra_dejson = kw.get("extra", {})


def test_settings_from_connection_forms() -> None:
    assert settings_from_connection(Conn(host="http://ls:8080/", password="t")).url == "http://ls:8080"
    assert settings_from_connection(Conn(host="ls", port=8080, schema="https", password="t")).url == "https://ls:8080"
    settings = settings_from_connection(Conn(host="http://ls", extra={"token": "x", "timeout": 5}))
    assert (settings.token, settings.timeout) == ("x", 5.0)
    assert "x" not in repr(settings)
    with pytest.raises(BackendError, match="connection 'ls': no API token"):
        settings_from_connection(Conn(host="http://ls"))
    with pytest.raises(BackendError, match="no host"):
        settings_from_connection(Conn(password="t"))


class Flaky:
    """Fails `failures` times with `error`, then returns 'ok'."""

    def __init__(self, failures: int, error: BaseException) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def backend() -> LabelStudioBackend:
    return LabelStudioBackend(client=None, url="http://ls:1", retry=FAST)


def test_transient_failures_are_retried() -> None:
    call = Flaky(2, httpx.ReadTimeout("slow"))
    assert backend()._call("list things", call) == "ok" and call.calls == 3
    call = Flaky(2, ApiError(status_code=503, body="busy"))
    assert backend()._call("list things", call) == "ok"


def test_giving_up_names_the_server_and_the_operation() -> None:
    call = Flaky(5, httpx.ConnectError("refused"))
    with pytest.raises(BackendUnavailable, match=r"http://ls:1: list things: gave up after 3 attempts.*ConnectError"):
        backend()._call("list things", call)
    assert call.calls == 3


def test_client_errors_are_not_retried_and_html_is_cut() -> None:
    call = Flaky(1, ApiError(status_code=404, body="<html><head><title>404 | Label Studio</title></head>...</html>"))
    with pytest.raises(BackendError, match=r"read project 9: HTTP 404: 404 \| Label Studio$") as raised:
        backend()._call("read project 9", call)
    assert not isinstance(raised.value, BackendUnavailable) and call.calls == 1


def test_creates_are_retried_only_when_the_request_never_arrived() -> None:
    refused = Flaky(1, httpx.ConnectError("refused"))
    assert backend()._call("import", refused, creates=True) == "ok"
    timed_out = Flaky(1, httpx.ReadTimeout("slow"))
    with pytest.raises(BackendUnavailable, match="import: ReadTimeout"):
        backend()._call("import", timed_out, creates=True)
    assert timed_out.calls == 1
