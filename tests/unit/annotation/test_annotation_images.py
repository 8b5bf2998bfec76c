"""Image batches: the image classification labelling config, results that name the image, and presigned
URLs that let the annotator's browser load a frame from the bucket without a copy."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from defusedxml.ElementTree import fromstring

from edgeloop.annotation.backend import AnnotationBackend
from edgeloop.annotation.batch import MAX_PRESIGN, presigned_image_url
from edgeloop.annotation.label_studio import (
    IMAGE_TAG,
    LabelStudioBackend,
    _choices_in_config,
    choices_result,
    image_label_config,
    labels_of,
)
from edgeloop.vision.frames import LABELS


@pytest.fixture(scope="module")
def s3() -> Any:
    return boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
    )


def test_the_image_config_labels_the_image_with_one_choice() -> None:
    config = image_label_config(LABELS)
    root = fromstring(config)
    image = root.find("Image")
    assert image.get("name") == "image" and image.get("value") == "$image"
    assert root.find("Table") is None
    choices = root.find("Choices")
    assert choices.get("name") == "label" and choices.get("toName") == "image"
    assert choices.get("choice") == "single-radio" and choices.get("required") == "true"
    assert [c.get("value") for c in choices.iter("Choice")] == list(LABELS)
    assert _choices_in_config(config) == list(LABELS)  # what ensure_project compares


def test_the_image_config_escapes_labels_and_refuses_bad_label_sets() -> None:
    labels = ['bad "seal"', "ok & clean", "<dent>"]
    assert _choices_in_config(image_label_config(labels)) == labels
    for bad in ([], ["ok", "ok"], ["ok", " "]):
        with pytest.raises(ValueError, match="distinct, non-empty"):
            image_label_config(bad)


def test_an_image_result_names_the_image_and_reads_back_as_its_label() -> None:
    result = choices_result("dent", IMAGE_TAG)
    assert result[0]["to_name"] == "image" and result[0]["from_name"] == "label"
    assert labels_of(result) == ("dent",)
    assert choices_result("dent")[0]["to_name"] == "record"  # tabular batches as before


def _expires_at(url: str) -> int:
    """When a presigned URL stops working (epoch seconds), from its query (the client's default signer)."""
    return int(parse_qs(urlsplit(url).query)["Expires"][0])


def test_a_presigned_url_gets_the_frame_and_expires(s3: Any) -> None:
    key = "frames/visual_inspection/ab/" + "ab" * 32 + ".png"
    before = int(time.time())
    url = presigned_image_url(s3, "edgeloop", key, timedelta(hours=2))
    after = int(time.time())
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"http://127.0.0.1:1/edgeloop/{key}"
    query = parse_qs(parts.query)
    assert query["AWSAccessKeyId"] == ["k"] and query["Signature"][0]
    assert before + 7200 <= _expires_at(url) <= after + 7200 + 1
    assert "=s&" not in url and not url.endswith("=s")  # the secret key never appears


def test_presigned_urls_refuse_missing_objects_and_expiries_out_of_range(s3: Any) -> None:
    with pytest.raises(ValueError, match="bucket and a key"):
        presigned_image_url(s3, "edgeloop", "", timedelta(hours=1))
    for expires in (timedelta(0), MAX_PRESIGN + timedelta(seconds=1)):
        with pytest.raises(ValueError, match="expiry"):
            presigned_image_url(s3, "edgeloop", "frames/a.png", expires)
    longest = presigned_image_url(s3, "edgeloop", "frames/a.png", MAX_PRESIGN)
    assert _expires_at(longest) >= int(time.time()) + int(MAX_PRESIGN.total_seconds()) - 5


def test_label_studio_is_one_implementation_of_the_backend_protocol() -> None:
    backend = LabelStudioBackend(client=object(), url="http://ls")
    assert isinstance(backend, AnnotationBackend)
    assert backend.kind == "label_studio"
