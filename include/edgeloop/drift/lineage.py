"""Which curated versions the champion was trained on, and which raw windows their batches came from.

The champion's training dataset names its sources in `split.json` (the seed and every
curated version up to the triggering one, see `edgeloop.training.dataset`). Each curated
version's `lineage.json` (written by `edgeloop.annotation.export`) names the edge groups
its annotation batch was selected for and the raw time window it was selected from. For
each group, the newest curated version covering it says where that group's "new normal"
is: the drift reference follows it (`edgeloop.drift.reference.champion_reference`).

Problems with the lineage (a missing split.json or lineage.json, a lineage without a
window) never fail the drift check: they end up in `notes` and the groups concerned keep
the champion's training rows as their reference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edgeloop.drift.window import S3Client, WindowBounds
from edgeloop.spec import PipelineSpec

ALL_GROUPS = "*"  # what a batch selected from every group names as its groups (edgeloop.annotation.selection)


@dataclass(frozen=True)
class CuratedWindow:
    """The raw window one curated version's batch was drawn from, and the groups it covers."""

    version: str
    groups: tuple[str, ...]
    start: datetime
    end: datetime
    lineage_key: str

    @property
    def batch(self) -> WindowBounds:
        """The window the batch was selected from: [start, end)."""
        return WindowBounds(end=self.end, start=self.start)

    @property
    def after(self) -> WindowBounds:
        """The window of the same length that follows the batch's window: [end, end + (end - start)).

        A drift alert fires while its window still holds records from before the change
        (the window is flagged once enough of it has changed), so the batch's window mixes
        the old and the new normal; the window after it holds the new normal only.
        """
        return WindowBounds(end=self.end + (self.end - self.start), start=self.end)


@dataclass
class ChampionLineage:
    """The curated versions in the champion's training data and, per group, the newest one covering it."""

    dataset_version: str | None
    curated_versions: list[str]
    windows: dict[str, CuratedWindow]  # group -> newest curated version covering it
    notes: list[str]

    def describe(self) -> dict[str, Any]:
        return {
            "dataset_version": self.dataset_version,
            "curated_versions": list(self.curated_versions),
            "notes": list(self.notes),
        }


def _read_json(s3: S3Client, bucket: str, key: str) -> dict[str, Any]:
    """A JSON object; KeyError when the object does not exist, ValueError when it is not a JSON object."""
    from edgeloop.storage import get_bytes

    data = json.loads(get_bytes(s3, bucket, key))
    if not isinstance(data, dict):
        raise ValueError(f"s3://{bucket}/{key}: not a JSON object")
    return data


def _time(value: Any, where: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{where}: {value!r} is not an ISO 8601 time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _groups_in_data(s3: S3Client, bucket: str, key: str, group_column: str) -> tuple[str, ...]:
    """The groups that have labelled records in a curated version's data (for a batch of every group)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from edgeloop.storage import get_bytes

    body = get_bytes(s3, bucket, key)
    try:
        table = pq.read_table(pa.BufferReader(body), columns=[group_column])
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"s3://{bucket}/{key}: no readable column {group_column!r} ({exc})") from exc
    return tuple(sorted(str(g) for g in pc.unique(table[group_column]).to_pylist() if g is not None))


def curated_window(
    lineage: Mapping[str, Any], version: str, lineage_key: str, groups: tuple[str, ...]
) -> CuratedWindow:
    """The window of one curated version from its lineage; ValueError naming the key when it has none."""
    window = lineage.get("window") or {}
    if not window.get("start") or not window.get("end"):
        raise ValueError(f"{lineage_key}: the lineage names no batch window (window.start / window.end)")
    start = _time(window["start"], f"{lineage_key}: window.start")
    end = _time(window["end"], f"{lineage_key}: window.end")
    if start >= end:
        raise ValueError(f"{lineage_key}: window {start.isoformat()}..{end.isoformat()} is empty")
    return CuratedWindow(version=version, groups=groups, start=start, end=end, lineage_key=lineage_key)


def champion_lineage(s3: S3Client, spec: PipelineSpec, training: Mapping[str, Any]) -> ChampionLineage:
    """The curated versions the champion was trained on and the newest one covering each group.

    `training` is what `edgeloop.registry.aliases.champion_training_data` returns (bucket,
    train/eval/split keys). Versions are read newest first until every group of the spec
    is covered. A batch selected from every group ('*') covers the groups that have
    labelled records in its data.
    """
    from edgeloop.annotation.export import lineage_key
    from edgeloop.training.seed import SEED_VERSION

    notes: list[str] = []
    bucket = str(training["bucket"])
    split_key = training.get("split_key")
    if not split_key:
        notes.append("the champion's training data names no split.json: no curated lineage to follow")
        return ChampionLineage(None, [], {}, notes)
    try:
        split = _read_json(s3, bucket, str(split_key))
    except (KeyError, ValueError) as exc:
        notes.append(f"s3://{bucket}/{split_key}: unreadable ({exc}): no curated lineage to follow")
        return ChampionLineage(None, [], {}, notes)
    sources = [s for s in split.get("sources") or [] if isinstance(s, Mapping) and s.get("version") != SEED_VERSION]
    curated = sorted(sources, key=lambda s: str(s.get("version")), reverse=True)  # v000002 before v000001
    wanted = {g.name for g in spec.groups}
    group_column = spec.field_with_role("group_id")
    windows: dict[str, CuratedWindow] = {}
    for source in curated:
        if wanted and wanted <= set(windows):
            break
        version = str(source["version"])
        source_bucket = str(source.get("bucket") or bucket)
        key = lineage_key(spec, version)
        try:
            lineage = _read_json(s3, source_bucket, key)
            groups = tuple(str(g) for g in lineage.get("groups") or [])
            if ALL_GROUPS in groups:
                if group_column is None or not source.get("key"):
                    raise ValueError(f"{key}: a batch of every group, and its data's groups cannot be read")
                groups = _groups_in_data(s3, source_bucket, str(source["key"]), group_column)
            if not groups:
                raise ValueError(f"{key}: the lineage names no groups")
            window = curated_window(lineage, version, key, groups)
        except (KeyError, ValueError) as exc:
            notes.append(f"curated {version}: {exc}; its groups keep an older reference")
            continue
        for group in groups:
            windows.setdefault(group, window)
    return ChampionLineage(
        dataset_version=split.get("dataset_version"),
        curated_versions=sorted(str(s["version"]) for s in curated),
        windows=windows,
        notes=notes,
    )
