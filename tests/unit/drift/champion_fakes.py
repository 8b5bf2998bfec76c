"""An in-memory object store and a fleet's stored history, for the champion-reference unit tests.

The store answers the few S3 calls the drift stage makes (get, put and delete_object, the
list_objects_v2 paginator); the history writes what the other stages would have left in it: raw
telemetry objects in the ingest layout, a training split (train.parquet, split.json) and
curated versions (data.parquet, lineage.json) in the annotation export's layout.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from edgeloop.annotation.export import data_key, lineage_key
from edgeloop.ingest.keys import hour_dir, raw_prefix
from edgeloop.spec import PipelineSpec

BUCKET = "edgeloop"


def no_such_key(key: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": "NoSuchKey", "Message": key}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "GetObject"
    )


class _Exceptions:
    NoSuchKey = ClientError  # the fake raises a ClientError only for a missing key


class _Paginator:
    def __init__(self, store: MemoryS3) -> None:
        self.store = store

    def paginate(self, *, Bucket: str, Prefix: str, **_: Any) -> Iterator[dict[str, Any]]:
        keys = sorted(k for b, k in self.store.objects if b == Bucket and k.startswith(Prefix))
        yield {"Contents": [{"Key": k} for k in keys]}


class MemoryS3:
    """Objects in a dict; `gets` counts the objects read."""

    exceptions = _Exceptions

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.gets: list[str] = []

    def put(self, key: str, body: bytes, bucket: str = BUCKET) -> None:
        self.objects[(bucket, key)] = body

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:
        self.objects[(Bucket, Key)] = Body
        return {}

    def delete_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self.objects.pop((Bucket, Key), None)
        return {}

    def keys(self, prefix: str = "", bucket: str = BUCKET) -> list[str]:
        return sorted(k for b, k in self.objects if b == bucket and k.startswith(prefix))

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self.gets.append(Key)
        if (Bucket, Key) not in self.objects:
            raise no_such_key(Key)
        return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}

    def get_paginator(self, name: str) -> _Paginator:
        assert name == "list_objects_v2", name
        return _Paginator(self)


def parquet(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue()


class History:
    """Writes a pipeline's stored history into a `MemoryS3`."""

    def __init__(self, s3: MemoryS3, spec: PipelineSpec) -> None:
        self.s3, self.spec = s3, spec
        self._offset = 0

    def raw(self, frame: pd.DataFrame, partition: int = 0) -> str:
        """One raw telemetry object holding `frame` (filed under the hour of its first record)."""
        first = self._offset
        self._offset += len(frame)
        hour = pd.Timestamp(frame["ts"].min()).floor("h").to_pydatetime()
        prefix = raw_prefix(self.spec, self.spec.topic("telemetry"))
        key = f"{prefix}/{hour_dir(hour)}/{partition}-{first}-{self._offset - 1}.parquet"
        self.s3.put(key, parquet(frame))
        return key

    def curated(
        self, version: str, groups: Sequence[str], start: datetime, end: datetime, data: pd.DataFrame | None = None
    ) -> dict[str, Any]:
        """A curated version with the lineage the annotation export writes (the parts drift reads)."""
        if data is not None:
            self.s3.put(data_key(self.spec, version), parquet(data))
        lineage = {
            "lineage_version": 1,
            "pipeline": self.spec.name,
            "version": version,
            "groups": list(groups),
            "window": {"start": start.isoformat(), "end": end.isoformat()},
            "source_objects": [],
        }
        self.s3.put(lineage_key(self.spec, version), json.dumps(lineage).encode())
        return {"version": version, "bucket": BUCKET, "key": data_key(self.spec, version), "digest": "", "records": 0}

    def training(self, train: pd.DataFrame, curated: Sequence[dict[str, Any]] = (), name: str = "v") -> dict[str, Any]:
        """A stored training split and the location `champion_training_data` returns for it."""
        prefix = f"training/{self.spec.name}/{name}/0123456789abcdef"
        self.s3.put(f"{prefix}/train.parquet", parquet(train))
        seed = {"version": "seed", "bucket": BUCKET, "key": "curated/x/seed/data.parquet", "digest": "", "records": 0}
        split = {"dataset_version": curated[-1]["version"] if curated else "seed", "sources": [seed, *curated]}
        self.s3.put(f"{prefix}/split.json", json.dumps(split).encode())
        return {
            "bucket": BUCKET,
            "train_key": f"{prefix}/train.parquet",
            "eval_key": f"{prefix}/eval.parquet",
            "split_key": f"{prefix}/split.json",
            "version": "2",
        }
