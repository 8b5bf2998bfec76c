"""Tag keys edgeloop writes on MLflow runs and model versions: the lineage of every model, in one place.

Training runs carry the candidate's identity and data; a registered version copies them and adds
the dataset location, the ONNX file's record, the evaluation gate's decision and the alias history.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeloop.contract.artifact import ARTIFACT_FORMAT

# A training candidate's identity and lineage (on runs and on the version registered from them).
TAG_PIPELINE = "edgeloop.pipeline"
TAG_CANDIDATE = "edgeloop.candidate"
TAG_DATASET_VERSION = "edgeloop.dataset_version"
TAG_DATASET_DIGEST = "edgeloop.dataset_digest"
TAG_CODE_VERSION = "edgeloop.code_version"
TAG_CONFIG_DIGEST = "edgeloop.config_digest"
TAG_RUN_KIND = "edgeloop.run_kind"
TAG_MODEL_ID = "edgeloop.model_id"
TAG_TRAIN_DATA = "edgeloop.dataset.train"
TAG_EVAL_DATA = "edgeloop.dataset.eval"
TAG_SPLIT = "edgeloop.dataset.split"
TAG_EDGE_FIT = "edgeloop.edge_fit"
TAG_EDGE_VIOLATIONS = "edgeloop.edge_violations"
TAG_TRAINING_RUN = "edgeloop.training_run"
TAG_SUMMARY = "edgeloop.summary"  # on a training run: JSON summary a retried task reads back
TAG_DATASET = "edgeloop.dataset"  # JSON: bucket and keys of the train/eval split
TAG_EDGE = "edgeloop.edge"  # JSON: the edge-fitness figures
PARENT_RUN_TAG = "mlflow.parentRunId"

# Where a training run records its ONNX file, and the tags the model version copies.
TAG_ARTIFACT_SHA256 = "edgeloop.artifact.sha256"
TAG_ARTIFACT_SIZE = "edgeloop.artifact.size"
TAG_ARTIFACT_OPSET = "edgeloop.artifact.opset"
TAG_ARTIFACT_FORMAT = "edgeloop.artifact.format"
TAG_ARTIFACT_PATH = "edgeloop.artifact.path"

# The shadow wave's decision on a version (the whole decision is logged to its run as shadow/<rollout id>.json).
TAG_SHADOW_STATE = "edgeloop.shadow.state"
TAG_SHADOW_AGREEMENT = "edgeloop.shadow.agreement"
TAG_SHADOW_ROLLOUT = "edgeloop.shadow.rollout"

# The evaluation gate's record on a version.
TAG_DECISION = "edgeloop.gate.decision"
TAG_REASON = "edgeloop.gate.reason"
TAG_FIRST_RUN = "edgeloop.gate.first_run"
TAG_GATE_KEY = "edgeloop.gate.key"
TAG_AGAINST = "edgeloop.gate.champion_version"

# Copies of a version (`registry.register.copy_version`).
TAG_COPY_OF = "edgeloop.copy_of"  # on a copy: the version it copies
TAG_COPY_NOTE = "edgeloop.copy_note"  # on a copy: why it was made
# What a copy carries over: the ONNX file's record and the evaluation gate's record on the version.
COPIED_TAG_PREFIXES = ("edgeloop.artifact.", "edgeloop.gate.")

# The `champion` alias' history on a version.
TAG_PREVIOUS_CHAMPION = "edgeloop.previous_champion"
TAG_CHAMPION_SINCE = "edgeloop.champion_since"  # Unix seconds at which the alias moved to this version


def artifact_tags(record: Mapping[str, Any]) -> dict[str, str]:
    """Run and model-version tags for an ONNX file record (`OnnxModel.record`)."""
    return {
        TAG_ARTIFACT_SHA256: str(record["sha256"]),
        TAG_ARTIFACT_SIZE: str(int(record["size"])),
        TAG_ARTIFACT_OPSET: str(record["opset"]),
        TAG_ARTIFACT_FORMAT: str(record.get("format", ARTIFACT_FORMAT)),
        TAG_ARTIFACT_PATH: str(record["path"]),
    }
