"""Camera telemetry for drift tests: one camera per group, a record per frame, each frame at its content address."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from edgeloop.spec import PipelineSpec
from edgeloop.vision.claim import put_frame
from edgeloop.vision.features import Embedding, feature_table, fit_embedding
from edgeloop.vision.frames import group_conditions, inject_drift, make_frames

GROUPS = ("cell-canary", "hall-east", "hall-west")


@cache
def clean_embedding(components: int = 8) -> Embedding:
    """What the records' `emb_..` features project through: fitted once on clean frames of every group."""
    clean = np.concatenate([make_frames(f"{g}-fit", 0, 60, group_conditions(g))[0] for g in GROUPS])
    return fit_embedding(clean, components)


def camera_records(
    spec: PipelineSpec, s3: Any, start: pd.Timestamp, per_group: int, *, failed_lamp: str | None = None
) -> pd.DataFrame:
    """Records of one camera per group, a frame a second from `start`; `failed_lamp` names a group whose lamp failed.

    Each frame is put under its content address (`vision.claim.put_frame`) in the spec's bucket.
    """
    from edgeloop.vision.frames import encode_png

    rows = []
    pixels = []
    for group in GROUPS:
        conditions = group_conditions(group)
        if group == failed_lamp:
            conditions = inject_drift(conditions, "lighting")
        device = f"{group}-cam-0"
        frames, labels = make_frames(device, int(start.timestamp()), per_group, conditions)
        for index, (frame, label) in enumerate(zip(frames, labels, strict=True)):
            ref = put_frame(s3, spec.storage.bucket, spec.name, encode_png(frame), storage_prefix=spec.storage.prefix)
            rows.append(
                {
                    "record_id": f"{device}-{int(start.timestamp()) + index}",
                    "device_id": device,
                    "group_id": group,
                    "ts": start + pd.Timedelta(seconds=index),
                    **ref.record_fields(),
                    "prediction": label,
                    "confidence": 0.9,
                    "model_version": "1",
                }
            )
            pixels.append(frame)
    return pd.DataFrame(rows).join(feature_table(np.stack(pixels), clean_embedding()))
