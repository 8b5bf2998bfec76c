"""The training dataset: every curated version up to the triggering one, plus the seed, split for honesty.

Curated versions live at `<curated prefix>/<version>/data.parquet` (complete once its
`lineage.json` exists), each with the spec's schema columns and a `label`. The seed lives at
`<curated prefix>/seed/data.parquet`; when it is missing, it is generated
deterministically and stored there (create-only), so every model's lineage names
real objects and digests.

The split holds out the newest records of the triggering version (the freshly annotated,
usually drifted, data) from a subset of its devices: readings of one machine close in
time are strongly correlated, so a device whose recent records are evaluated contributes
none of them to training. Everything else trains. The split is stored next to the data
(`<training prefix>/<version>/<digest>/{train,eval}.parquet` and `split.json`); the key
carries a digest of the sources and split settings, so a re-run writes nothing new and
a changed input never overwrites an older split.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from edgeloop.spec import PipelineSpec
from edgeloop.storage import get_bytes, list_keys, put_if_absent
from edgeloop.training.errors import DatasetError
from edgeloop.training.images import camera_seed_frame, frame_columns
from edgeloop.training.seed import LABEL_COLUMN, SEED_VERSION, SeedSource, make_seed_frame

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

S3Client = Any  # a boto3 S3 client (boto3 ships no type stubs)
SOURCE_COLUMN = "edgeloop_source"
SPLIT_FORMAT = 1  # bump when the split rule changes: the digest (and so the keys) change with it
_NUMERIC_KINDS = "biuf"


@dataclass(frozen=True)
class SplitSettings:
    """How much recent data to hold out, and from how many devices."""

    holdout_fraction: float = 0.3  # newest share of the triggering version's records
    holdout_devices: float = 0.5  # share of its devices (per group, at least one) whose recent records are held out
    min_eval_records: int = 20

    def __post_init__(self) -> None:
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction: {self.holdout_fraction} must be between 0 and 1")
        if not 0 < self.holdout_devices <= 1:
            raise ValueError(f"holdout_devices: {self.holdout_devices} must be in (0, 1]")


@dataclass(frozen=True)
class DataSource:
    """One stored labelled dataset: a curated version or the seed."""

    version: str
    bucket: str
    key: str
    digest: str = ""  # sha256 of the Parquet object
    records: int = 0

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def curated_key(spec: PipelineSpec, version: str) -> str:
    return f"{spec.storage_prefix('curated')}/{version}/data.parquet"


def training_prefix(spec: PipelineSpec, dataset_version: str, digest: str) -> str:
    return f"{spec.storage_prefix('training')}/{dataset_version}/{digest}"


def list_curated_versions(s3: S3Client, spec: PipelineSpec) -> list[DataSource]:
    """Complete curated versions (data.parquet and lineage.json; not the seed), oldest first.

    The annotation stage publishes data.parquet, then lineage.json: a version without its
    lineage is still being written and is not used. Versions are ordered by name (the
    annotation stage names them v000001, v000002, ... in the order it claims them).
    """
    bucket = spec.storage.bucket
    prefix = f"{spec.storage_prefix('curated')}/"
    files: dict[str, set[str]] = {}
    for key in list_keys(s3, bucket, prefix):
        parts = key[len(prefix) :].split("/")
        if len(parts) == 2 and parts[0] != SEED_VERSION:
            files.setdefault(parts[0], set()).add(parts[1])
    complete = [v for v, names in files.items() if {"data.parquet", "lineage.json"} <= names]
    return [DataSource(version=v, bucket=bucket, key=curated_key(spec, v)) for v in sorted(complete)]


def _read_parquet(data: bytes, where: str) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        frame: pd.DataFrame = pq.read_table(io.BytesIO(data)).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise DatasetError(f"{where}: not a readable Parquet file: {exc}") from exc
    return frame


def frame_to_parquet(frame: pd.DataFrame) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink, compression="zstd")
    return sink.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_source(s3: S3Client, source: DataSource) -> tuple[pd.DataFrame, DataSource]:
    """Read one stored dataset; the returned source carries its digest and record count."""
    try:
        data = get_bytes(s3, source.bucket, source.key)
    except KeyError as exc:
        raise DatasetError(f"curated version {source.version!r}: {source.uri} does not exist") from exc
    frame = _read_parquet(data, source.uri)
    return frame, DataSource(source.version, source.bucket, source.key, _sha256(data), len(frame))


def load_seed(
    s3: S3Client, spec: PipelineSpec, seed_source: SeedSource | None = None
) -> tuple[pd.DataFrame, DataSource]:
    """The stored seed dataset; generated with `seed_source` and stored (create-only) when missing.

    Without `seed_source`: `make_seed_frame`, or for a camera pipeline the seed frames stored
    under their content addresses (`edgeloop.training.images.camera_seed_frame`).
    """
    source = DataSource(SEED_VERSION, spec.storage.bucket, curated_key(spec, SEED_VERSION))
    try:
        return load_source(s3, source)
    except DatasetError:
        pass
    if seed_source is not None:
        frame = seed_source(spec)
    elif frame_columns(spec) is not None:
        frame = camera_seed_frame(s3, spec)
    else:
        frame = make_seed_frame(spec)
    if put_if_absent(s3, source.bucket, source.key, frame_to_parquet(frame), content_type="application/x-parquet"):
        log.info("stored the generated seed dataset at %s (%d records)", source.uri, len(frame))
    return load_source(s3, source)  # read back: a concurrent writer may have stored it first


def required_columns(spec: PipelineSpec) -> list[str]:
    """Device, group, time, the features, a camera pipeline's frame key and digest, and the label."""
    roles = [spec.field_with_role("device_id"), spec.field_with_role("group_id"), spec.field_with_role("timestamp")]
    frames = list(frame_columns(spec) or ())
    return [str(r) for r in roles] + list(spec.features) + frames + [LABEL_COLUMN]


def validate_labelled_frame(spec: PipelineSpec, frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """The frame reduced to the columns training needs, checked against the spec.

    Raises DatasetError naming the dataset (`where`), the column and the first bad row
    offset for: no records, missing columns (a schema change), non-numeric features,
    nulls in non-nullable fields, labels missing or outside the spec's label set, and
    timestamps that are not timestamps.
    """
    import pandas as pd

    if frame.empty:
        raise DatasetError(f"{where}: has no records")
    columns = required_columns(spec)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"{where}: missing column(s) {missing} required by the spec schema "
            f"(has {sorted(map(str, frame.columns))}): the dataset's schema does not match the spec"
        )
    out = frame[columns].reset_index(drop=True).copy()
    nullable = {f.name: f.nullable for f in spec.schema_}
    for name in spec.features:
        if out[name].dtype.kind not in _NUMERIC_KINDS:
            raise DatasetError(f"{where}: feature column {name!r} has type {out[name].dtype}, expected a number")
    for name in columns:
        if name == LABEL_COLUMN or nullable.get(name, False):
            continue
        nulls = out[name].isna().to_numpy().nonzero()[0]
        if len(nulls):
            raise DatasetError(f"{where}: column {name!r} is null at row {int(nulls[0])} ({len(nulls)} rows)")
    labels = out[LABEL_COLUMN]
    unlabelled = labels.isna().to_numpy().nonzero()[0]
    if len(unlabelled):
        raise DatasetError(f"{where}: column 'label' is empty at row {int(unlabelled[0])} ({len(unlabelled)} rows)")
    out[LABEL_COLUMN] = labels.astype(str)
    known = set(spec.annotation.labels)
    unknown_mask = ~out[LABEL_COLUMN].isin(known)
    if unknown_mask.any():
        first = int(unknown_mask.to_numpy().nonzero()[0][0])
        unknown = sorted(set(out.loc[unknown_mask, LABEL_COLUMN]))
        raise DatasetError(
            f"{where}: label(s) {unknown} are not in the spec's label set {list(spec.annotation.labels)} "
            f"(first at row {first})"
        )
    ts = str(spec.field_with_role("timestamp"))
    if out[ts].dtype.kind == "M":
        stamps = out[ts]
        out[ts] = stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
    elif out[ts].dtype.kind == "O":
        try:
            out[ts] = pd.to_datetime(out[ts], utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise DatasetError(f"{where}: column {ts!r} holds values that are not ISO 8601 timestamps: {exc}") from exc
    else:
        raise DatasetError(f"{where}: column {ts!r} has type {out[ts].dtype}, expected a timestamp")
    for role in ("device_id", "group_id"):
        name = str(spec.field_with_role(role))
        out[name] = out[name].astype(str)
    return out


def _device_rank(salt: str, device: str) -> str:
    return hashlib.sha256(f"{salt}|{device}".encode()).hexdigest()


@dataclass
class DatasetSplit:
    train: pd.DataFrame
    eval: pd.DataFrame
    info: dict[str, Any]


def _counts(frame: pd.DataFrame, spec: PipelineSpec) -> dict[str, Any]:
    group = str(spec.field_with_role("group_id"))
    return {
        "records": len(frame),
        "devices": int(frame[str(spec.field_with_role("device_id"))].nunique()),
        "by_group": {str(k): int(v) for k, v in frame[group].value_counts().sort_index().items()},
        "by_label": {str(k): int(v) for k, v in frame[LABEL_COLUMN].value_counts().sort_index().items()},
    }


def split_by_time_and_device(
    spec: PipelineSpec, frame: pd.DataFrame, recent_version: str, settings: SplitSettings = SplitSettings()
) -> DatasetSplit:
    """Hold out the newest records of `recent_version` from a per-group subset of its devices.

    Evaluation: records of `recent_version` at or after the time cutoff (the newest
    `holdout_fraction` of that version) from the chosen devices. Training: all the rest.
    Devices are chosen by a hash of the version and the device id, so the split is
    deterministic and a different version picks different devices.
    """
    ts, device, group = (str(spec.field_with_role(r)) for r in ("timestamp", "device_id", "group_id"))
    recent = frame[SOURCE_COLUMN] == recent_version
    stamps = frame.loc[recent, ts].sort_values(ignore_index=True)
    if len(stamps) == 0:
        raise DatasetError(f"curated version {recent_version!r}: has no records to evaluate on")
    cutoff = stamps.iloc[min(len(stamps) - 1, math.floor(len(stamps) * (1 - settings.holdout_fraction)))]
    window = recent & (frame[ts] >= cutoff)
    held_out: list[str] = []
    for _, devices in frame.loc[recent].groupby(group)[device]:
        ranked = sorted(set(devices), key=lambda d: _device_rank(recent_version, d))
        held_out.extend(ranked[: max(1, math.ceil(len(ranked) * settings.holdout_devices))])
    eval_mask = window & frame[device].isin(held_out)
    train, evaluation = frame.loc[~eval_mask].reset_index(drop=True), frame.loc[eval_mask].reset_index(drop=True)
    if len(evaluation) < settings.min_eval_records:
        raise DatasetError(
            f"curated version {recent_version!r}: the held-out recent split has {len(evaluation)} records, "
            f"fewer than min_eval_records={settings.min_eval_records} ({int(recent.sum())} records in the version)"
        )
    classes = sorted(set(train[LABEL_COLUMN]))
    if len(classes) < 2:
        raise DatasetError(
            f"dataset up to {recent_version!r}: the training split has a single class {classes}: "
            "a classifier needs at least two"
        )
    info = {
        "rule": "eval = newest records of the triggering version from a per-group subset of its devices",
        "dataset_version": recent_version,
        "cutoff": cutoff.isoformat(),
        **asdict(settings),
        "eval_devices": sorted(set(evaluation[device])),
        "eval_groups": sorted(set(evaluation[group])),
        "train": _counts(train, spec),
        "eval": _counts(evaluation, spec),
    }
    return DatasetSplit(train, evaluation, info)


def assemble_dataset(
    s3: S3Client,
    spec: PipelineSpec,
    dataset_version: str | None = None,
    *,
    seed_source: SeedSource | None = None,
) -> tuple[pd.DataFrame, list[DataSource], str]:
    """The seed plus every curated version up to `dataset_version` (default: the newest), validated.

    Returns the frame (spec columns, `label`, and the source version per row), the
    sources in order, and the resolved dataset version.
    """
    import pandas as pd

    versions = list_curated_versions(s3, spec)
    if dataset_version is None:
        dataset_version = versions[-1].version if versions else SEED_VERSION
    if dataset_version == SEED_VERSION:
        chosen: list[DataSource] = []
    else:
        names = [v.version for v in versions]
        if dataset_version not in names:
            key = curated_key(spec, dataset_version)
            raise DatasetError(
                f"curated version {dataset_version!r} not found: s3://{spec.storage.bucket}/{key} "
                "does not exist or has no lineage.json yet (a version is complete when its lineage is written)"
            )
        chosen = versions[: names.index(dataset_version) + 1]
    seed_frame, seed = load_seed(s3, spec, seed_source)
    frames = [
        validate_labelled_frame(spec, seed_frame, f"seed dataset {seed.uri}").assign(**{SOURCE_COLUMN: seed.version})
    ]
    sources = [seed]
    for version in chosen:
        raw, loaded = load_source(s3, version)
        where = f"curated version {version.version!r} ({version.uri})"
        frames.append(validate_labelled_frame(spec, raw, where).assign(**{SOURCE_COLUMN: version.version}))
        sources.append(loaded)
    frame = pd.concat(frames, ignore_index=True)
    return frame, sources, dataset_version


def dataset_digest(sources: Sequence[DataSource], settings: SplitSettings) -> str:
    payload = {
        "format": SPLIT_FORMAT,
        "sources": [[s.version, s.digest] for s in sources],
        "split": asdict(settings),
    }
    return _sha256(json.dumps(payload, sort_keys=True).encode())[:16]


def build_dataset(
    s3: S3Client,
    spec: PipelineSpec,
    dataset_version: str | None = None,
    *,
    settings: SplitSettings = SplitSettings(),
    seed_source: SeedSource | None = None,
) -> dict[str, Any]:
    """Assemble, validate, split and store the training dataset for `dataset_version`.

    Idempotent: the stored objects are named by a digest of the sources and the split
    settings and written create-only. Returns a small dict for XCom: the version, the
    digest, the bucket and keys of the train/eval Parquet objects and of split.json,
    the record counts, the sources (version, key, digest, records) and the eval groups.
    """
    frame, sources, version = assemble_dataset(s3, spec, dataset_version, seed_source=seed_source)
    split = split_by_time_and_device(spec, frame, version, settings)
    digest = dataset_digest(sources, settings)
    prefix = training_prefix(spec, version, digest)
    bucket = spec.storage.bucket
    info = {**split.info, "digest": digest, "sources": [asdict(s) for s in sources]}
    keys = {"train": f"{prefix}/train.parquet", "eval": f"{prefix}/eval.parquet", "split": f"{prefix}/split.json"}
    put_if_absent(s3, bucket, keys["train"], frame_to_parquet(split.train), content_type="application/x-parquet")
    put_if_absent(s3, bucket, keys["eval"], frame_to_parquet(split.eval), content_type="application/x-parquet")
    split_json = json.dumps(info, indent=2, sort_keys=True).encode()
    put_if_absent(s3, bucket, keys["split"], split_json, content_type="application/json")
    return {
        "pipeline": spec.name,
        "dataset_version": version,
        "digest": digest,
        "bucket": bucket,
        "train_key": keys["train"],
        "eval_key": keys["eval"],
        "split_key": keys["split"],
        "records": {"train": len(split.train), "eval": len(split.eval)},
        "eval_groups": info["eval_groups"],
        "cutoff": info["cutoff"],
        "sources": [{"version": s.version, "key": s.key, "digest": s.digest, "records": s.records} for s in sources],
    }


def read_split(s3: S3Client, dataset: Mapping[str, Any], part: Literal["train", "eval"]) -> pd.DataFrame:
    """One stored part of a dataset built by `build_dataset`."""
    bucket, key = dataset["bucket"], dataset[f"{part}_key"]
    try:
        data = get_bytes(s3, bucket, key)
    except KeyError as exc:
        raise DatasetError(f"dataset {dataset.get('dataset_version')!r}: s3://{bucket}/{key} does not exist") from exc
    return _read_parquet(data, f"s3://{bucket}/{key}")


def read_split_json(s3: S3Client, dataset: Mapping[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(get_bytes(s3, dataset["bucket"], dataset["split_key"]))
    return info
