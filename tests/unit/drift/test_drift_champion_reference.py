"""The reference follows the data the champion was trained for.

Story: plant-north's sensors change halfway through a window; the drift alert raised on
that window leads to an annotation batch drawn from it (curated v000001), and to a model
trained on the seed plus v000001 that becomes champion. From then on plant-north's new
normal is accepted: its shifted data is not flagged again, a further change is; the groups
without curated data keep the champion's training rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from champion_fakes import BUCKET, History, MemoryS3

from edgeloop.drift.columns import drift_columns
from edgeloop.drift.detect import check_drift
from edgeloop.drift.lineage import champion_lineage
from edgeloop.drift.reference import TRAINING_SOURCE, champion_reference, read_reference_objects
from edgeloop.drift.results import build_summary
from edgeloop.drift.sample import Stratum
from edgeloop.drift.synthetic import SensorDrift, make_telemetry
from edgeloop.drift.window import WindowBounds, frame_sample, read_window
from edgeloop.spec import PipelineSpec

GROUPS = ("line-canary", "plant-north", "plant-south")
CHECKED = ["vibration_rms", "temperature_c", "rpm"]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the batch's window: [T0, T0 + 10 min)
WINDOW = timedelta(minutes=10)
ROWS = 1500  # per group and 5 minutes


def shifted(offset: float) -> dict[str, dict[str, SensorDrift]]:
    return {"plant-north": {c: SensorDrift(offset=offset) for c in CHECKED}}


@pytest.fixture
def spec(demo_spec: PipelineSpec) -> PipelineSpec:
    # three checked columns keep Evidently quick; the demo spec's min_rows (300) and PSI method stay
    drift = demo_spec.drift.model_copy(update={"columns": CHECKED, "window": WINDOW})
    return demo_spec.model_copy(update={"drift": drift})


def telemetry(spec: PipelineSpec, start: datetime, *, seed: int, offset: float = 0.0, rows: int = ROWS) -> pd.DataFrame:
    return make_telemetry(
        spec.features,
        dict.fromkeys(GROUPS, rows),
        seed=seed,
        start=start,
        duration=timedelta(minutes=5),
        drift=shifted(offset) if offset else None,
    )


def training_rows(spec: PipelineSpec) -> pd.DataFrame:
    """The champion's train.parquet: clean rows of every group (the seed) and the batch's 200 labelled rows."""
    seed = telemetry(spec, datetime(2026, 1, 1, tzinfo=UTC), seed=100, rows=3000)
    labelled = telemetry(spec, T0 + timedelta(minutes=5), seed=101, offset=2.0, rows=70)
    frame = pd.concat([seed, labelled[labelled["group_id"] == "plant-north"]], ignore_index=True)
    columns = ["device_id", "group_id", "ts", *spec.features]
    return frame[columns].assign(label="normal", edgeloop_source="seed")


@pytest.fixture
def history(spec: PipelineSpec) -> dict[str, Any]:
    """Raw telemetry around plant-north's change, curated v000001 from the window of the alert, the champion."""
    s3 = MemoryS3()
    store = History(s3, spec)
    store.raw(telemetry(spec, T0 - timedelta(minutes=5), seed=1))  # before the batch's window: clean
    store.raw(telemetry(spec, T0, seed=2))  # first half of the batch's window: clean
    store.raw(telemetry(spec, T0 + timedelta(minutes=5), seed=3, offset=2.0), partition=1)  # the change
    store.raw(telemetry(spec, T0 + WINDOW, seed=4, offset=2.0))  # the window after the batch's
    store.raw(telemetry(spec, T0 + WINDOW + timedelta(minutes=5), seed=5, offset=2.0), partition=1)
    v1 = store.curated("v000001", ["plant-north"], T0, T0 + WINDOW)
    training = store.training(training_rows(spec), [v1])
    return {"s3": s3, "store": store, "training": training}


def current(spec: PipelineSpec, seed: int, offset: float = 0.0, south: float = 0.0) -> Any:
    """The newest window: plant-north shifted by `offset`, plant-south by `south` spreads."""
    drift = shifted(offset) if offset else {}
    if south:
        drift["plant-south"] = {c: SensorDrift(offset=south) for c in CHECKED}
    frame = make_telemetry(
        spec.features,
        dict.fromkeys(GROUPS, ROWS),
        seed=seed,
        start=T0 + timedelta(hours=1),
        duration=timedelta(minutes=5),
        drift=drift,
    )
    return frame_sample(frame, drift_columns(spec), spec.drift.sample_per_group, seed=seed)


def group_status(check: Any, group: str) -> str:
    scope = check.scope(Stratum("group", group))
    assert scope is not None
    return str(scope.status)


def test_a_group_retrained_on_its_shifted_data_is_not_flagged_on_it_again(
    spec: PipelineSpec, history: dict[str, Any]
) -> None:
    s3, training = history["s3"], history["training"]
    now = current(spec, 50, offset=2.0)
    # before: the champion's training rows (mostly seed) flag plant-north after every retraining
    rows_only = read_reference_objects(s3, BUCKET, [training["train_key"]], spec, seed=3)
    assert group_status(check_drift(now, rows_only.sample, spec, keep_report_input=False), "plant-north") == "drift"
    # so would the batch's own window: the alert fired while half of it was still the old normal
    batch = read_window(s3, BUCKET, spec, T0 + WINDOW, bounds=WindowBounds(end=T0 + WINDOW, start=T0), seed=3)
    assert group_status(check_drift(now, batch.sample, spec, keep_report_input=False), "plant-north") == "drift"

    reference = champion_reference(s3, spec, training, seed=3)
    north = reference.describe()["groups"]["plant-north"]
    assert north["source"] == "curated v000001 post-change window"
    assert north["window"]["start"] == (T0 + WINDOW).isoformat()
    assert north["window"]["end"] == (T0 + 2 * WINDOW).isoformat()
    assert north["rows"] == 2 * ROWS  # every plant-north record of that window, nothing from before the change

    check = check_drift(now, reference.sample, spec, keep_report_input=False)
    assert check.status == "no drift", {s.stratum.label: s.drifted_columns for s in check.scopes}

    # only a further change alerts again
    further = check_drift(current(spec, 51, offset=4.5), reference.sample, spec, keep_report_input=False)
    assert further.drifted_groups == ["plant-north"]
    scope = further.scope(Stratum("group", "plant-north"))
    assert scope is not None and set(scope.drifted_columns) == set(CHECKED)


def test_a_group_without_curated_data_keeps_the_champions_training_rows(
    spec: PipelineSpec, history: dict[str, Any]
) -> None:
    s3, training = history["s3"], history["training"]
    reference = champion_reference(s3, spec, training, seed=3)
    rows_only = read_reference_objects(s3, BUCKET, [training["train_key"]], spec, seed=3)
    for group in ("plant-south", "line-canary"):
        assert reference.describe()["groups"][group] == {"source": TRAINING_SOURCE, "rows": 3000}
        mine, before = (
            reference.sample.sample(Stratum("group", group)),
            rows_only.sample.sample(Stratum("group", group)),
        )
        assert mine is not None and before is not None
        pd.testing.assert_frame_equal(mine[CHECKED], before[CHECKED])  # the very same rows as before the change
    check = check_drift(current(spec, 52, offset=2.0, south=2.0), reference.sample, spec, keep_report_input=False)
    assert check.drifted_groups == ["plant-south"]


def test_the_summary_names_the_reference_each_group_used(spec: PipelineSpec, history: dict[str, Any]) -> None:
    reference = champion_reference(history["s3"], spec, history["training"], seed=3)
    check = check_drift(current(spec, 53, offset=2.0), reference.sample, spec, keep_report_input=False)
    summary = build_summary(
        check, spec, "run-1", window={}, reference=reference.describe(), created_at=T0 + timedelta(hours=1)
    )
    assert summary["groups"]["plant-north"]["reference_source"] == "curated v000001 post-change window"
    assert summary["groups"]["plant-north"]["reference_scope"] == "group"
    assert summary["groups"]["plant-south"]["reference_source"] == TRAINING_SOURCE
    assert summary["reference"]["groups"]["plant-north"]["batch_window"]["start"] == T0.isoformat()
    assert summary["reference"]["curated_versions"] == ["v000001"]
    assert summary["overall"]["reference_source"] == "champion training data (curated windows for plant-north)"


def test_the_reference_leaves_out_the_old_models_outputs(spec: PipelineSpec, history: dict[str, Any]) -> None:
    # raw records carry the prediction and confidence of the model that ran then, not the champion's
    reference = champion_reference(history["s3"], spec, history["training"], seed=3)
    north = reference.sample.sample(Stratum("group", "plant-north"))
    assert north is not None
    assert "confidence" not in north.columns and "prediction" not in north.columns
    assert reference.sample.stats[Stratum("group", "plant-north")].confidence_mean is None


def test_the_reference_is_the_same_for_the_same_seed(spec: PipelineSpec, history: dict[str, Any]) -> None:
    s3, training = history["s3"], history["training"]
    first = champion_reference(s3, spec, training, seed=8, sample_size=500)
    again = champion_reference(s3, spec, training, seed=8, sample_size=500)
    other = champion_reference(s3, spec, training, seed=9, sample_size=500)
    north = Stratum("group", "plant-north")
    a, b, c = (r.sample.sample(north) for r in (first, again, other))
    assert a is not None and b is not None and c is not None
    assert len(a) == 500  # bounded like the current window: sample_size records per stratum
    pd.testing.assert_frame_equal(a, b)
    assert not a["ts"].equals(c["ts"])


def test_a_short_window_after_the_batch_falls_back_to_the_batch_window_then_to_the_training_rows(
    spec: PipelineSpec,
) -> None:
    s3 = MemoryS3()
    store = History(s3, spec)
    store.raw(telemetry(spec, T0, seed=2))
    store.raw(telemetry(spec, T0 + timedelta(minutes=5), seed=3, offset=2.0), partition=1)
    store.raw(telemetry(spec, T0 + WINDOW, seed=4, offset=2.0, rows=100))  # 100 < min_rows after the batch
    v1 = store.curated("v000001", ["plant-north"], T0, T0 + WINDOW)
    training = store.training(training_rows(spec), [v1])
    reference = champion_reference(s3, spec, training, seed=3)
    north = reference.describe()["groups"]["plant-north"]
    assert north["source"] == "curated v000001 batch window" and north["rows"] == 2 * ROWS
    assert any("plant-north: the curated v000001 post-change window" in n for n in reference.describe()["notes"])

    sparse = MemoryS3()
    store = History(sparse, spec)
    store.raw(telemetry(spec, T0 + WINDOW, seed=4, offset=2.0, rows=100))
    training = store.training(training_rows(spec), [store.curated("v000001", ["plant-north"], T0, T0 + WINDOW)])
    reference = champion_reference(sparse, spec, training, seed=3)
    assert reference.describe()["groups"]["plant-north"] == {"source": TRAINING_SOURCE, "rows": 3070}


def test_a_champion_trained_on_the_seed_alone_compares_every_group_with_its_training_rows(
    spec: PipelineSpec,
) -> None:
    s3 = MemoryS3()
    store = History(s3, spec)
    store.raw(telemetry(spec, T0, seed=2, offset=2.0))
    training = store.training(training_rows(spec))
    reference = champion_reference(s3, spec, training, seed=3)
    rows_only = read_reference_objects(s3, BUCKET, [training["train_key"]], spec, seed=3)
    assert {g: d["source"] for g, d in reference.describe()["groups"].items()} == dict.fromkeys(GROUPS, TRAINING_SOURCE)
    assert reference.rows == rows_only.rows
    assert s3.gets.count(training["train_key"]) == 2 and not any(k.startswith("raw/") for k in s3.gets)


def test_the_newest_curated_version_covering_a_group_decides_its_window(spec: PipelineSpec) -> None:
    s3 = MemoryS3()
    store = History(s3, spec)
    hour = timedelta(hours=1)
    v1 = store.curated("v000001", ["plant-north"], T0, T0 + WINDOW)
    v2 = store.curated("v000002", ["plant-south"], T0 + hour, T0 + hour + WINDOW)
    v3 = store.curated("v000003", ["plant-north"], T0 + 2 * hour, T0 + 2 * hour + WINDOW)
    labelled = telemetry(spec, T0, seed=9, rows=10)
    v4 = store.curated(
        "v000004", ["*"], T0 + 3 * hour, T0 + 3 * hour + WINDOW, data=labelled[labelled.group_id != "plant-south"]
    )
    lineage = champion_lineage(s3, spec, store.training(training_rows(spec), [v1, v2, v3]))
    assert {g: w.version for g, w in lineage.windows.items()} == {"plant-north": "v000003", "plant-south": "v000002"}
    assert lineage.curated_versions == ["v000001", "v000002", "v000003"] and lineage.notes == []

    # a batch of every group covers the groups with labelled records in it; older versions keep the rest
    lineage = champion_lineage(s3, spec, store.training(training_rows(spec), [v1, v2, v3, v4], name="w"))
    versions = {g: w.version for g, w in lineage.windows.items()}
    assert versions == {"line-canary": "v000004", "plant-north": "v000004", "plant-south": "v000002"}


def test_a_broken_lineage_is_noted_and_the_groups_keep_their_training_rows(
    spec: PipelineSpec, history: dict[str, Any]
) -> None:
    s3, training = history["s3"], history["training"]
    del s3.objects[(BUCKET, training["split_key"])]
    reference = champion_reference(s3, spec, training, seed=3)
    assert reference.describe()["groups"]["plant-north"]["source"] == TRAINING_SOURCE
    assert "split.json: unreadable" in reference.describe()["notes"][0]

    store = History(s3, spec)
    broken = store.curated("v000001", ["plant-north"], T0, T0 + WINDOW)
    s3.put("curated/factory_maintenance/v000001/lineage.json", b'{"groups": ["plant-north"]}')
    lineage = champion_lineage(s3, spec, store.training(training_rows(spec), [broken], name="b"))
    assert lineage.windows == {}
    assert lineage.notes == [
        "curated v000001: curated/factory_maintenance/v000001/lineage.json: the lineage names no batch window "
        "(window.start / window.end); its groups keep an older reference"
    ]
