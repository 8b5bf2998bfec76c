"""The model artifact a device runs: one ONNX file, identified by its sha256 and size.

Training exports every candidate to ONNX (`edgeloop.training.onnx_export`) with:
- one float32 input named `features`, shape [N, len(features)], columns in the order of
  the metadata entry `edgeloop.features`;
- an output named `probabilities`, shape [N, len(labels)], columns in the order of
  `edgeloop.labels`; `edgeloop.features` and `edgeloop.labels` are JSON lists of strings,
  the labels in the classifier's `classes_` order;
- an image model (inputs: a frame's pixels) has a second output, `image_features`, shape
  [N, len(columns)]: the image statistics and embedding a camera reports as its record's
  features, columns named by `columns` in the JSON of `edgeloop.image`;
- a golden batch in `edgeloop.golden` (`{"rows": [[...]], "probabilities": [[...]]}`):
  a few validation rows and what the source model answered for them, so a device can
  self-test a model after loading it and before it serves;
- optionally the reference profile in `edgeloop.reference` (see `edgeloop.contract.profile`).

Everything a device needs is inside the one file, so one digest covers it. The digest
and size are recorded on the registry's model version at registration and carried in the
signed assignment (`ArtifactRef`); a device loads nothing whose bytes do not match.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ARTIFACT_FORMAT = "onnx"
INPUT_NAME = "features"
PROBABILITIES_OUTPUT = "probabilities"
META_FEATURES = "edgeloop.features"
META_LABELS = "edgeloop.labels"
META_GOLDEN = "edgeloop.golden"
META_IMAGE = "edgeloop.image"
IMAGE_FEATURES_OUTPUT = "image_features"
# The reference profile: `{feature: base64 KLL floats sketch}` of the validation rows (see contract.profile);
# a device in profiles mode scores each window against it (optional: older artifacts have none).
META_REFERENCE = "edgeloop.reference"
# A device's self-test: the golden batch's probabilities within this absolute tolerance.
GOLDEN_TOLERANCE = 1e-4
MAX_ARTIFACT_BYTES = 256 * 1024 * 1024

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_URL_RE = re.compile(r"^(https?|file)://[^\s]{1,4000}$")


class BadArtifactRef(ValueError):
    """An artifact reference that is not well formed; the message names the field."""


@dataclass(frozen=True)
class ArtifactRef:
    """Where a model artifact is and what its bytes must be."""

    url: str
    sha256: str
    size: int
    format: str = ARTIFACT_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "sha256": self.sha256, "size": self.size, "format": self.format}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "artifact") -> ArtifactRef:
        """Validate a dict from the wire; raise BadArtifactRef naming `where.<field>`."""
        if not isinstance(raw, Mapping):
            raise BadArtifactRef(f"{where}: not an object")
        unknown = sorted(set(raw) - {"url", "sha256", "size", "format"})
        if unknown:
            raise BadArtifactRef(f"{where}: unknown fields {unknown}")
        url, digest, size, fmt = raw.get("url"), raw.get("sha256"), raw.get("size"), raw.get("format")
        if not isinstance(url, str) or not _URL_RE.match(url):
            raise BadArtifactRef(f"{where}.url: not an http(s) or file URL")
        if not isinstance(digest, str) or not _SHA256_RE.match(digest):
            raise BadArtifactRef(f"{where}.sha256: not 64 lowercase hex digits")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_ARTIFACT_BYTES:
            raise BadArtifactRef(f"{where}.size: not an integer in [1, {MAX_ARTIFACT_BYTES}]")
        if fmt != ARTIFACT_FORMAT:
            raise BadArtifactRef(f"{where}.format: {fmt!r} is not {ARTIFACT_FORMAT!r}")
        return cls(url, digest, size, fmt)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_key(prefix: str, sha256: str) -> str:
    """The object key of an artifact in the model repository: content-addressed, so re-uploads are no-ops."""
    return f"{prefix.rstrip('/')}/models/sha256/{sha256}.onnx" if prefix else f"models/sha256/{sha256}.onnx"
