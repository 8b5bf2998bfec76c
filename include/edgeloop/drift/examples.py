"""Example frames in a camera pipeline's drift report: what the group's cameras saw now, and before.

A drifted scope's Evidently report says which image statistics moved; a person wants to see
the frames. For a camera pipeline (`DriftColumns.frame`: the records' frame key and digest)
the report opens with a section of a few frames of the current window beside a few of the
reference rows the scope was compared with, picked from the rows the check compared
(`ReportInput`), evenly spaced by timestamp (ties by key), so the same run shows the same
frames. Each frame is read as training reads it (`training.images.read_frame`: only the
content address of the record's digest, at most `contract.frame.MAX_FRAME_PNG_BYTES`, digest-checked) and
embedded as a `data:image/png;base64` URL: the report stays one self-contained file that the
plugin serves from S3 and that still shows its frames when downloaded (a presigned URL
would expire). A frame that cannot be shown is left out and counted by reason in the
section; it never fails the report. A sensor pipeline's report gets no section.
"""

from __future__ import annotations

import base64
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from edgeloop.drift.columns import DriftColumns, drift_columns
from edgeloop.drift.detect import ReportInput
from edgeloop.drift.sample import Stratum
from edgeloop.drift.window import S3Client
from edgeloop.spec import PipelineSpec

log = logging.getLogger(__name__)

EXAMPLES_PER_SIDE = 8
_SHOWN_PX = 128  # frames are 64x64: shown at twice their size, pixels kept sharp


@dataclass(frozen=True)
class ExampleFrame:
    """One frame to show: its PNG bytes and the caption fields of its record."""

    key: str
    png: bytes
    timestamp: str | None = None
    prediction: str | None = None
    confidence: float | None = None


@dataclass
class ExampleFrames:
    """The frames shown on each side, and the frames left out by reason (missing, digest, key, ...)."""

    current: list[ExampleFrame] = field(default_factory=list)
    reference: list[ExampleFrame] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def pick_examples(rows: pd.DataFrame, columns: DriftColumns, count: int = EXAMPLES_PER_SIDE) -> pd.DataFrame:
    """Up to `count` rows with a frame key and digest, evenly spaced by timestamp (ties and no timestamp: by key)."""
    if not columns.frame or count < 1 or any(c not in rows.columns for c in columns.frame):
        return rows.iloc[0:0]
    key, digest = columns.frame
    framed = rows[rows[key].notna() & rows[digest].notna()]
    order = [c for c in (columns.timestamp, key) if c is not None and c in framed.columns]
    framed = framed.assign(**{key: framed[key].astype(str)}).sort_values(order, kind="stable", na_position="last")
    if len(framed) <= count:
        return framed
    positions = np.unique(np.linspace(0, len(framed) - 1, num=count).round().astype(int))
    return framed.iloc[positions]


def fetch_examples(
    s3: S3Client, bucket: str, spec: PipelineSpec, rows: pd.DataFrame, columns: DriftColumns, skipped: Counter[str]
) -> list[ExampleFrame]:
    """The frames of `rows` that pass training's checks; each one that does not is counted in `skipped` by reason."""
    from botocore.exceptions import BotoCoreError, ClientError

    from edgeloop.training.images import FrameRejected, check_frame_address, read_frame

    key_column, digest_column = columns.frame
    shown: list[ExampleFrame] = []
    for row in rows.to_dict("records"):
        key, sha256 = str(row[key_column]), str(row[digest_column])
        try:
            check_frame_address(spec, key, sha256)
            png = read_frame(s3, bucket, key, sha256)
        except FrameRejected as exc:
            skipped[exc.reason] += 1
            log.warning("drift report: example frame left out: %s", exc)
            continue
        except (BotoCoreError, ClientError) as exc:
            skipped["unreadable"] += 1
            log.warning("drift report: example frame s3://%s/%s left out: %s", bucket, key, exc)
            continue
        shown.append(ExampleFrame(key, png, *_caption_fields(row, columns)))
    return shown


def _caption_fields(row: Mapping[str, Any], columns: DriftColumns) -> tuple[str | None, str | None, float | None]:
    stamp = row.get(columns.timestamp) if columns.timestamp else None
    prediction = row.get(columns.prediction) if columns.prediction else None
    confidence = row.get(columns.confidence) if columns.confidence else None
    return (
        None if stamp is None or pd.isna(stamp) else pd.Timestamp(stamp).strftime("%Y-%m-%d %H:%M:%S"),
        None if prediction is None or pd.isna(prediction) else str(prediction),
        None if confidence is None or pd.isna(confidence) else float(confidence),
    )


def collect_examples(
    s3: S3Client, bucket: str, spec: PipelineSpec, report: ReportInput, count: int = EXAMPLES_PER_SIDE
) -> ExampleFrames | None:
    """Example frames of a scope's current rows and reference rows; None for a pipeline without frames."""
    columns = drift_columns(spec)
    if not columns.frame:
        return None
    examples = ExampleFrames()
    examples.current = fetch_examples(
        s3, bucket, spec, pick_examples(report.current, columns, count), columns, examples.skipped
    )
    examples.reference = fetch_examples(
        s3, bucket, spec, pick_examples(report.reference, columns, count), columns, examples.skipped
    )
    return examples


def scope_title(stratum: Stratum) -> str:
    """'group hall-east', 'model version 3', 'the fleet'."""
    if stratum.kind == "fleet":
        return "the fleet"
    return f"{stratum.kind.replace('_', ' ')} {stratum.name}"


def window_title(window: Mapping[str, Any] | None) -> str:
    """The window as a heading says it: 'window 2026-03-01T12:25:00+00:00 to 2026-03-01T12:30:00+00:00'."""
    if not window or not window.get("end"):
        return "the current window"
    if window.get("start"):
        return f"window {window['start']} to {window['end']}"
    return f"window of the newest {window.get('records')} records up to {window['end']}"


def examples_html(examples: ExampleFrames, stratum: Stratum, window: Mapping[str, Any] | None) -> str:
    """The report's section of example frames: a heading naming the scope and window, then both rows of frames."""
    heading = f"Example frames of {scope_title(stratum)}, {window_title(window)}"
    parts = [
        '<section id="edgeloop-example-frames" style="padding:12px 16px;border-bottom:1px solid #ccc;'
        'font:14px sans-serif">',
        f'<h2 style="margin:0 0 6px">{escape(heading)}</h2>',
        '<p style="margin:0 0 8px">Frames of the rows the check compared, evenly spaced by time: the current'
        " window above, the reference (what the champion was trained on) below.</p>",
        _frame_row("Current window", "current", examples.current),
        _frame_row("Reference", "reference", examples.reference),
    ]
    if examples.skipped:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(examples.skipped.items()))
        parts.append(f'<p class="skipped">Frames not shown: {escape(reasons)}.</p>')
    parts.append("</section>")
    return "\n".join(parts)


def _frame_row(title: str, side: str, frames: list[ExampleFrame]) -> str:
    figures = [_figure(frame) for frame in frames] or ["<p>No frame to show.</p>"]
    return (
        f'<h3 style="margin:8px 0 4px">{escape(title)} ({len(frames)})</h3>'
        f'<div class="edgeloop-frames" data-side="{side}" style="display:flex;flex-wrap:wrap;gap:8px">'
        + "".join(figures)
        + "</div>"
    )


def _figure(frame: ExampleFrame) -> str:
    caption = " · ".join(
        part
        for part in (
            frame.timestamp,
            frame.prediction,
            None if frame.confidence is None else f"{frame.confidence:.2f}",
        )
        if part
    )
    data = base64.b64encode(frame.png).decode("ascii")
    return (
        '<figure style="margin:0;text-align:center">'
        f'<img src="data:image/png;base64,{data}" width="{_SHOWN_PX}" height="{_SHOWN_PX}"'
        f' style="image-rendering:pixelated" alt="{escape(frame.key)}" title="{escape(frame.key)}">'
        f'<figcaption style="font-size:11px">{escape(caption)}</figcaption></figure>'
    )


def example_frames_section(
    s3: S3Client,
    bucket: str,
    spec: PipelineSpec,
    stratum: Stratum,
    report: ReportInput,
    window: Mapping[str, Any] | None = None,
) -> str:
    """The HTML section of example frames for a scope's report; "" for a pipeline without frames."""
    examples = collect_examples(s3, bucket, spec, report)
    if examples is None:
        return ""
    if examples.skipped:
        log.warning("drift report of %s: frames not shown: %s", stratum.label, dict(examples.skipped))
    return examples_html(examples, stratum, window)
