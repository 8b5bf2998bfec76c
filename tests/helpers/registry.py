"""Registry moves the e2e stories make by hand: a copy of a registered version, ONNX file included."""

from __future__ import annotations

from typing import Any

from edgeloop.training.tracking import TAG_TRAINING_RUN

ONNX_TAG_PREFIX = "edgeloop.artifact."
GATE_TAG_PREFIX = "edgeloop.gate."  # the evaluation gate's record: the copy is the model it judged


def copy_version(client: Any, model_name: str, version: str, note: str) -> str:
    """Register the same model again as a new version, with the records of its ONNX file and of the
    evaluation gate's decision on it, so it can be rolled out."""
    source = client.get_model_version(model_name, version)
    assert source.source, f"version {version} names no model source"
    tags = source.tags or {}
    onnx_record = {k: v for k, v in tags.items() if k.startswith(ONNX_TAG_PREFIX) or k == TAG_TRAINING_RUN}
    assert onnx_record, f"version {version} has no ONNX file recorded"
    gate_record = {k: v for k, v in tags.items() if k.startswith(GATE_TAG_PREFIX)}
    # the registry does not return model_id on a version; its source is `models:/<model id>`
    model_id = getattr(source, "model_id", None) or str(source.source).removeprefix("models:/")
    copy = client.create_model_version(
        model_name,
        source.source,
        run_id=source.run_id,
        tags={**onnx_record, **gate_record, "e2e": note},
        model_id=model_id,
    )
    return str(copy.version)
