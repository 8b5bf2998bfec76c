"""Drift against real object storage: windows read from raw/ with pruning, reports, open-alert state.

Each test writes under its own storage prefix in the stack's bucket, so runs never see each other.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgeloop.drift.alert_state import (
    AlertStateConflict,
    alert_state_key,
    change_alert_state,
    close_drift_alerts,
    confirm_published,
    load_alert_state,
    save_alert_state,
)
from edgeloop.drift.columns import MissingColumnsError
from edgeloop.drift.reference import read_reference_objects, read_reference_window
from edgeloop.drift.reports import render_pending_reports
from edgeloop.drift.run import run_drift_check
from edgeloop.drift.synthetic import SensorDrift, make_telemetry, synthetic_spec
from edgeloop.drift.window import WindowBounds, read_window
from edgeloop.ingest.keys import OffsetRange, raw_object_key
from edgeloop.spec import PipelineSpec

pytestmark = pytest.mark.integration

FEATURES = ["vibration_rms", "vibration_peak", "temperature_c", "motor_current_a", "rpm", "acoustic_db"]
GROUPS = ("line-canary", "plant-north", "plant-south")
NOW = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


@pytest.fixture
def spec(stack_env: dict[str, str], s3_client: Any) -> Iterator[PipelineSpec]:
    """A pipeline of its own under a fresh storage prefix, removed again after the test."""
    prefix = f"it-drift-{uuid.uuid4().hex[:10]}"
    spec = synthetic_spec(
        FEATURES,
        GROUPS,
        name=f"drift_it_{prefix[-10:]}",
        bucket=stack_env.get("EDGELOOP_BUCKET", "edgeloop"),
        storage_prefix=prefix,
        drift={"window": "1h", "min_rows": 300, "sample_per_group": 3000, "drift_share": 0.3},
    )
    yield spec
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=spec.storage.bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            s3_client.delete_object(Bucket=spec.storage.bucket, Key=item["Key"])


def _parquet(frame: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def put_raw(s3: Any, spec: PipelineSpec, frame: pd.DataFrame, partitions: int = 2) -> list[str]:
    """Write records the way ingest does: one object per (hour of timestamp, partition), named by offsets."""
    keys = []
    hours = frame["ts"].dt.floor("h")
    for hour, in_hour in frame.groupby(hours, sort=True):
        for partition in range(partitions):
            part = in_hour.iloc[partition::partitions]
            if part.empty:
                continue
            first = int(part.index.min())
            key = raw_object_key(
                spec,
                spec.topic("telemetry"),
                hour.to_pydatetime(),
                OffsetRange(partition, first, first + len(part) - 1),
            )
            s3.put_object(Bucket=spec.storage.bucket, Key=key, Body=_parquet(part))
            keys.append(key)
    return keys


def _telemetry(rows_per_group: int, seed: int, start: datetime, minutes: int, **kwargs: Any) -> pd.DataFrame:
    return make_telemetry(
        FEATURES,
        dict.fromkeys(GROUPS, rows_per_group),
        seed=seed,
        start=start,
        duration=timedelta(minutes=minutes),
        **kwargs,
    )


def test_a_time_window_reads_only_its_partitions_and_records(s3_client: Any, spec: PipelineSpec) -> None:
    old = _telemetry(200, seed=1, start=datetime(2026, 3, 1, 9, 0, tzinfo=UTC), minutes=120)  # 09:00-11:00
    recent = _telemetry(400, seed=2, start=datetime(2026, 3, 1, 11, 0, tzinfo=UTC), minutes=90)  # 11:00-12:30
    put_raw(s3_client, spec, old)
    put_raw(s3_client, spec, recent.set_axis(range(10_000, 10_000 + len(recent))))
    stray = f"{spec.storage_prefix('raw')}/{spec.topic('telemetry')}/dt=2026-03-01/hour=12/README.txt"
    s3_client.put_object(Bucket=spec.storage.bucket, Key=stray, Body=b"not data")

    window = read_window(s3_client, spec.storage.bucket, spec, NOW, seed=1)

    assert window.objects and all("/hour=11/" in k or "/hour=12/" in k for k in window.objects)
    inside = recent[(recent["ts"] >= NOW - timedelta(hours=1)) & (recent["ts"] < NOW)]
    assert window.rows == len(inside)
    assert window.rows_outside_window == len(recent) - len(inside)  # 11:00-11:30 in a partition the window touches
    assert window.unexpected_keys == [stray]
    assert window.corrupt == []
    assert window.describe()["sample_size"] == 3000


def test_a_record_count_window_reads_the_newest_objects_until_it_has_enough(s3_client: Any, spec: PipelineSpec) -> None:
    frame = _telemetry(300, seed=3, start=datetime(2026, 3, 1, 8, 0, tzinfo=UTC), minutes=240)  # 08:00-12:00
    keys = put_raw(s3_client, spec, frame)  # about 112 records per object, two objects per hour
    bounds = WindowBounds(end=NOW, records=400)

    window = read_window(s3_client, spec.storage.bucket, spec, NOW, bounds=bounds)

    newest_first = sorted(keys, reverse=True)
    assert window.objects == newest_first[: len(window.objects)]
    assert {k.split("/hour=")[1][:2] for k in window.objects} == {"10", "11"}
    assert 400 <= window.rows < 400 + 150  # whole objects: the last one read crosses 400


def test_a_corrupt_object_is_reported_with_its_key_and_skipped(s3_client: Any, spec: PipelineSpec) -> None:
    frame = _telemetry(300, seed=4, start=datetime(2026, 3, 1, 11, 40, tzinfo=UTC), minutes=40)
    keys = put_raw(s3_client, spec, frame)
    broken = keys[0]
    body = s3_client.get_object(Bucket=spec.storage.bucket, Key=broken)["Body"].read()
    s3_client.put_object(Bucket=spec.storage.bucket, Key=broken, Body=body[: len(body) // 2])

    window = read_window(s3_client, spec.storage.bucket, spec, NOW)

    assert [c.key for c in window.corrupt] == [broken]
    assert "Parquet" in window.corrupt[0].error or "Error" in window.corrupt[0].error
    assert sorted(window.objects) == sorted(k for k in keys if k != broken)
    assert window.rows > 0
    assert window.describe()["corrupt_objects"][0]["key"] == broken


def test_missing_columns_fail_with_the_object_and_their_names(s3_client: Any, spec: PipelineSpec) -> None:
    frame = _telemetry(100, seed=5, start=datetime(2026, 3, 1, 12, 0, tzinfo=UTC), minutes=20)
    keys = put_raw(s3_client, spec, frame.drop(columns=["rpm", "group_id"]), partitions=1)

    with pytest.raises(MissingColumnsError) as caught:
        read_window(s3_client, spec.storage.bucket, spec, NOW)
    assert caught.value.missing == ["group_id", "rpm"]
    assert keys[0] in str(caught.value)


def test_an_empty_window_ends_as_skipped_with_a_summary_and_no_alert(s3_client: Any, spec: PipelineSpec) -> None:
    reference = _reference(s3_client, spec)
    result = run_drift_check(s3_client, spec.storage.bucket, spec, "empty-run", NOW, reference=reference)

    assert result["status"] == "skipped: not enough data"
    assert result["rows"] == 0 and result["publish"] == []
    summary = _json(s3_client, spec, result["summary_key"])
    assert summary["status"] == "skipped: not enough data"
    assert summary["overall"]["sample_size"] == {"current": 0, "reference": 0}
    assert load_alert_state(s3_client, spec.storage.bucket, alert_state_key(spec)) == (None, None)


def _reference(s3: Any, spec: PipelineSpec) -> Any:
    """The champion's training data: curated Parquet objects (one of them corrupt)."""
    frame = make_telemetry(FEATURES, dict.fromkeys(GROUPS, 2000), seed=0)
    keys = []
    for i, part in enumerate((frame.iloc[0::2], frame.iloc[1::2])):
        key = f"{spec.storage_prefix('curated')}/v1/part-{i}.parquet"
        s3.put_object(Bucket=spec.storage.bucket, Key=key, Body=_parquet(part))
        keys.append(key)
    corrupt = f"{spec.storage_prefix('curated')}/v1/part-9.parquet"
    s3.put_object(Bucket=spec.storage.bucket, Key=corrupt, Body=b"PAR1 truncated")
    reference = read_reference_objects(s3, spec.storage.bucket, [*keys, corrupt], spec, seed=0)
    assert reference.rows == len(frame)
    assert [c.key for c in reference.corrupt] == [corrupt]
    return reference


def _json(s3: Any, spec: PipelineSpec, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=spec.storage.bucket, Key=key)["Body"].read())


def test_drift_in_one_group_makes_reports_and_one_open_alert_over_three_runs(
    s3_client: Any, spec: PipelineSpec
) -> None:
    bucket = spec.storage.bucket
    reference = _reference(s3_client, spec)
    change = {c: SensorDrift(offset=0.6) for c in FEATURES[:2]} | {c: SensorDrift(gain=1.5) for c in FEATURES[2:4]}
    results = []
    for run in range(3):
        # each run sees a new window of its own, with the same sensor fault in plant-north
        now = NOW + timedelta(hours=run)
        frame = _telemetry(
            500, seed=10 + run, start=now - timedelta(minutes=50), minutes=50, drift={"plant-north": change}
        )
        put_raw(s3_client, spec, frame.set_axis(range(run * 100_000, run * 100_000 + len(frame))))
        result = run_drift_check(s3_client, bucket, spec, f"scheduled__{now.isoformat()}", now, reference=reference)
        confirm_published(s3_client, bucket, spec, [m["alert_id"] for m in result["publish"]], now)
        results.append(result)

    first = results[0]
    assert first["status"] == "drift" and first["drifted_groups"] == ["plant-north"]
    summary = _json(s3_client, spec, first["summary_key"])
    north = summary["groups"]["plant-north"]
    assert sorted(north["drifted_columns"]) == sorted(FEATURES[:4])
    assert north["sample_size"] == {"current": 500, "reference": 2000}
    assert north["health"]["versions"]["config_version"] == {"cfg-plant-north-1": 500}
    assert {summary["groups"][g]["status"] for g in ("line-canary", "plant-south")} == {"no drift"}
    assert summary["overall"]["reference_scope"] == "group mix"
    assert summary["reference"]["source"] == "champion training data"

    html = s3_client.get_object(Bucket=bucket, Key=north["report_key"])["Body"].read()
    assert html.lstrip().lower().startswith(b"<!doctype html>") and b"vibration_rms" in html
    # the drifted scopes' reports are written before the alert, the others are left pending
    drifted = {f"group={g}" for g in first["drifted_groups"]} | (
        {"fleet"} if summary["overall"]["status"] == "drift" else set()
    )
    assert set(first["reports"]) == drifted and first["reports"]["group=plant-north"] == north["report_key"]
    assert set(first["pending_reports"]) == {"fleet", *(f"group={g}" for g in GROUPS)} - drifted
    assert summary["pending_reports"] == first["pending_reports"]

    # after the alert, the DAG's render_reports task writes the other scopes' reports
    rendered = render_pending_reports(s3_client, bucket, spec, f"scheduled__{NOW.isoformat()}")
    assert rendered == {"reports": first["pending_reports"], "disagreements": []}
    for key in first["pending_reports"].values():
        assert s3_client.get_object(Bucket=bucket, Key=key)["Body"].read().lstrip().lower().startswith(b"<!doctype")
    assert _json(s3_client, spec, first["summary_key"])["pending_reports"] == {}

    assert [len(r["publish"]) for r in results] == [1, 0, 0]
    (message,) = first["publish"]
    assert message["groups"] == ["plant-north"] and message["report_key"] == north["report_key"]
    state, _ = load_alert_state(s3_client, bucket, alert_state_key(spec))
    assert state is not None and list(state["open"]) == [message["alert_id"]]
    assert state["open"][message["alert_id"]]["updates"] == 2
    assert state["open"][message["alert_id"]]["published"] is True

    closed = close_drift_alerts(
        s3_client, bucket, spec, NOW + timedelta(days=1), reason="retrained", groups=["plant-north"]
    )
    assert closed == [message["alert_id"]]


def test_state_writes_are_conditional_and_retried_on_conflict(s3_client: Any, spec: PipelineSpec) -> None:
    bucket, key = spec.storage.bucket, alert_state_key(spec)
    first = save_alert_state(s3_client, bucket, key, {"n": 1}, None)
    with pytest.raises(AlertStateConflict):
        save_alert_state(s3_client, bucket, key, {"n": 0}, None)  # someone created it first
    save_alert_state(s3_client, bucket, key, {"n": 2}, first)
    with pytest.raises(AlertStateConflict):
        save_alert_state(s3_client, bucket, key, {"n": 3}, first)  # stale ETag

    calls = []

    def increment(state: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
        assert state is not None
        calls.append(state["n"])
        if len(calls) == 1:  # another writer slips in between our read and our write
            _, etag = load_alert_state(s3_client, bucket, key)
            save_alert_state(s3_client, bucket, key, {"n": state["n"] + 10}, etag)
        return {"n": state["n"] + 1}, state["n"] + 1

    assert change_alert_state(s3_client, bucket, key, increment) == 13
    assert calls == [2, 12]
    assert load_alert_state(s3_client, bucket, key)[0] == {"n": 13}


def test_a_reference_window_is_read_like_a_current_window(s3_client: Any, spec: PipelineSpec) -> None:
    frame = _telemetry(300, seed=6, start=datetime(2026, 2, 1, 0, 0, tzinfo=UTC), minutes=180)
    put_raw(s3_client, spec, frame)
    start, end = datetime(2026, 2, 1, 1, 0, tzinfo=UTC), datetime(2026, 2, 1, 2, 0, tzinfo=UTC)

    reference = read_reference_window(s3_client, spec.storage.bucket, spec, start, end)

    expected = frame[(frame["ts"] >= start) & (frame["ts"] < end)]
    assert reference.source == "window"
    assert reference.rows == len(expected)
    assert reference.describe()["start"] == start.isoformat()


def test_a_reference_key_that_does_not_exist_is_named(s3_client: Any, spec: PipelineSpec) -> None:
    missing = f"{spec.storage_prefix('curated')}/v9/part-0.parquet"
    with pytest.raises(FileNotFoundError, match=missing):
        read_reference_objects(s3_client, spec.storage.bucket, [missing], spec)


def test_in_profiles_mode_drift_is_decided_on_profiles_and_reported_on_the_sampled_records(
    s3_client: Any, spec: PipelineSpec
) -> None:
    """Profiles of every record land under the profiles prefix, 5% of the records beside them; the run
    flags plant-north's drifted columns from the profiles and builds its report from the sample."""
    from edgeloop.contract.profile import encode_profile
    from edgeloop.ingest.profiles import ProfileCodec
    from edgeloop.simulator.replay import replay_profiles
    from edgeloop.spec import with_profiles

    spec = with_profiles(spec)
    bucket = spec.storage.bucket
    reference = _reference(s3_client, spec)
    change = {c: SensorDrift(offset=0.6) for c in FEATURES[:2]} | {c: SensorDrift(gain=1.5) for c in FEATURES[2:4]}
    frame = _telemetry(3000, seed=21, start=NOW - timedelta(minutes=50), minutes=50, drift={"plant-north": change})
    profiles, _ = replay_profiles(frame, FEATURES, pipeline=spec.name, window_s=60.0)
    wire = [encode_profile(p) for p in profiles]
    table = ProfileCodec(spec.name, GROUPS).decode(wire, [0] * len(wire)).table
    key = raw_object_key(spec, spec.topic("profiles"), NOW - timedelta(minutes=50), OffsetRange(0, 0, len(wire) - 1))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    s3_client.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    sampled = frame.iloc[::20].assign(sample_reason="uniform")
    put_raw(s3_client, spec, sampled)

    result = run_drift_check(s3_client, bucket, spec, "scheduled__profiles", NOW, reference=reference)

    assert result["telemetry"] == "profiles" and result["status"] == "drift"
    assert result["drifted_groups"] == ["plant-north"]
    assert (result["records"], result["sampled_records"], result["profiles"]) == (len(frame), len(sampled), len(wire))
    summary = _json(s3_client, spec, result["summary_key"])
    assert sorted(summary["groups"]["plant-north"]["drifted_columns"]) == sorted(FEATURES[:4])
    assert {summary["groups"][g]["status"] for g in ("line-canary", "plant-south")} == {"no drift"}
    html = s3_client.get_object(Bucket=bucket, Key=result["reports"]["group=plant-north"])["Body"].read()
    assert b"Profiles mode: the drift verdict comes from the devices' merged profiles" in html
    assert f"the {len(sampled[sampled.group_id == 'plant-north']):,} records the devices sampled".encode() in html
