"""The seed set, the checks on curated data, and the time-and-device split."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from edgeloop.spec import PipelineSpec
from edgeloop.training.dataset import (
    SOURCE_COLUMN,
    DataSource,
    SplitSettings,
    dataset_digest,
    split_by_time_and_device,
    validate_labelled_frame,
)
from edgeloop.training.errors import DatasetError
from edgeloop.training.seed import make_seed_frame


def curated(spec: PipelineSpec, version: str, records: int = 400, seed: int = 3, devices: int = 8) -> pd.DataFrame:
    frame = make_seed_frame(spec, records=records, seed=seed)
    frame["group_id"] = "plant-north"
    frame["device_id"] = [f"north-{i % devices:02d}" for i in range(len(frame))]
    frame["ts"] = frame["ts"] + timedelta(days=2)
    return frame.assign(**{SOURCE_COLUMN: version})


def combined(spec: PipelineSpec) -> pd.DataFrame:
    seed = validate_labelled_frame(spec, make_seed_frame(spec, records=1200), "seed").assign(**{SOURCE_COLUMN: "seed"})
    batch = validate_labelled_frame(spec, curated(spec, "v1"), "v1").assign(**{SOURCE_COLUMN: "v1"})
    return pd.concat([seed, batch], ignore_index=True)


def test_seed_is_deterministic_labelled_and_class_conditional(training_spec: PipelineSpec) -> None:
    first, again = make_seed_frame(training_spec, records=2000), make_seed_frame(training_spec, records=2000)
    pd.testing.assert_frame_equal(first, again)
    assert not make_seed_frame(training_spec, records=2000, seed=1).equals(first)
    assert set(first["label"]) == set(training_spec.annotation.labels)
    assert set(first["group_id"]) == {g.name for g in training_spec.groups}
    medians = first.groupby("label")["vibration_rms"].median()
    assert medians["normal"] < medians["wear"] < medians["fault"]
    assert validate_labelled_frame(training_spec, first, "seed").shape[0] == 2000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.iloc[0:0], "seed: has no records"),
        (lambda f: f.drop(columns=["rpm"]), r"missing column\(s\) \['rpm'\]"),
        (lambda f: f.assign(rpm=f["rpm"].astype(str)), "feature column 'rpm' has type object, expected a number"),
        (lambda f: f.assign(label=f["label"].where(f.index != 5, None)), r"column 'label' is empty at row 5"),
        (lambda f: f.assign(label=f["label"].where(f.index != 9, "broken")), r"\['broken'\] .* \(first at row 9\)"),
        (lambda f: f.assign(temperature_c=f["temperature_c"].where(f.index != 3)), "'temperature_c' is null at row 3"),
        (lambda f: f.assign(ts=f.index.astype(float)), "column 'ts' has type float64, expected a timestamp"),
        (lambda f: f.assign(ts="yesterday"), "not ISO 8601 timestamps"),
    ],
    ids=["empty", "schema", "type", "null-label", "unknown-label", "null-feature", "numeric-ts", "text-ts"],
)
def test_bad_labelled_data_is_named(training_spec: PipelineSpec, change, message: str) -> None:  # type: ignore[no-untyped-def]
    frame = change(make_seed_frame(training_spec, records=50))
    with pytest.raises(DatasetError, match=message):
        validate_labelled_frame(training_spec, frame, "seed")


def test_iso_text_timestamps_are_accepted_as_utc(training_spec: PipelineSpec) -> None:
    frame = make_seed_frame(training_spec, records=20)
    frame["ts"] = frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert str(validate_labelled_frame(training_spec, frame, "seed")["ts"].dt.tz) == "UTC"


def test_split_holds_out_the_newest_records_of_the_new_version_from_some_of_its_devices(
    training_spec: PipelineSpec,
) -> None:
    frame = combined(training_spec)
    split = split_by_time_and_device(training_spec, frame, "v1", SplitSettings(0.3, 0.5, 20))
    evaluation, train = split.eval, split.train
    assert len(evaluation) + len(train) == len(frame)
    assert set(evaluation[SOURCE_COLUMN]) == {"v1"}
    cutoff = pd.Timestamp(split.info["cutoff"])
    assert evaluation["ts"].min() >= cutoff
    held = set(split.info["eval_devices"])
    assert len(held) == 4  # half of the version's 8 devices
    # No record of a held-out device at or after the cutoff is trained on.
    assert train[(train["device_id"].isin(held)) & (train["ts"] >= cutoff)].empty
    # The other devices' recent records do train: the new data is not wasted.
    assert not train[(train[SOURCE_COLUMN] == "v1") & (train["ts"] >= cutoff)].empty
    assert split.info["eval_groups"] == ["plant-north"]
    assert split.info["train"]["records"] == len(train) and split.info["eval"]["by_group"] == {
        "plant-north": len(evaluation)
    }
    again = split_by_time_and_device(training_spec, frame, "v1", SplitSettings(0.3, 0.5, 20))
    pd.testing.assert_frame_equal(again.eval, evaluation)


def test_split_of_the_seed_alone_evaluates_every_group(training_spec: PipelineSpec) -> None:
    seed = validate_labelled_frame(training_spec, make_seed_frame(training_spec, records=1500), "seed")
    split = split_by_time_and_device(training_spec, seed.assign(**{SOURCE_COLUMN: "seed"}), "seed")
    assert split.info["eval_groups"] == sorted(g.name for g in training_spec.groups)


def test_split_refuses_too_little_evaluation_data_and_a_single_class(training_spec: PipelineSpec) -> None:
    frame = combined(training_spec)
    with pytest.raises(DatasetError, match=r"held-out recent split has .* fewer than min_eval_records=500"):
        split_by_time_and_device(training_spec, frame, "v1", SplitSettings(min_eval_records=500))
    single = frame.assign(label="wear")
    with pytest.raises(DatasetError, match=r"single class \['wear'\]"):
        split_by_time_and_device(training_spec, single, "v1")


def test_dataset_digest_changes_with_sources_and_split_settings() -> None:
    sources = [DataSource("seed", "b", "k", "abc", 10), DataSource("v1", "b", "k2", "def", 5)]
    base = dataset_digest(sources, SplitSettings())
    assert base == dataset_digest(list(sources), SplitSettings())
    assert base != dataset_digest(sources[:1], SplitSettings())
    assert base != dataset_digest(sources, SplitSettings(holdout_fraction=0.2))
