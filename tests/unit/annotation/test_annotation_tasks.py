"""The annotate tasks: selection, opened batch, the wait's outcome and the export, read back strictly."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowSkipException

from edgeloop.annotation import batch, export, selection
from edgeloop.annotation import tasks as annotate_tasks
from edgeloop.annotation.tasks import BatchOpened, BatchSelected, BatchWaited, DatasetExported
from edgeloop.annotation.trigger import wait_outcome
from edgeloop.metrics.push import TaskMetrics
from edgeloop.spec import PipelineSpec, load_spec
from edgeloop.xcom import XComContractError

DEMO = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "factory_maintenance.yaml"
NOW = datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
NO_METRICS = TaskMetrics(gateway=None, dag_id="factory_maintenance__annotate", task_id="export_dataset")

SELECTED = BatchSelected(
    batch_id="drift-1",
    alert_id="drift:1",
    groups=["plant-north"],
    size=50,
    requested_size=50,
    strategy=["uncertainty"],
    strategy_notes={},
    candidates=400,
    excluded_already_selected=0,
    devices=4,
    source_objects=3,
    manifest_key="annotations/factory_maintenance/drift-1/manifest.json",
    created=True,
)
OPENED = BatchOpened(
    batch_id="drift-1",
    backend="label_studio",
    project_id=7,
    project_title="factory_maintenance",
    project_url="http://ls/projects/7",
    url="http://ls/projects/7/data?tab=3",
    expected=50,
    tasks=50,
    imported=50,
    reused=0,
    opened_at="2026-01-02T03:00:00+00:00",
    deadline="2026-01-03T03:00:00+00:00",
)
EXPORTED = DatasetExported(
    batch_id="drift-1",
    version="v20260102T030000-drift-1",
    data_key="curated/v1/data.parquet",
    lineage_key="curated/v1/lineage.json",
    uri="s3://edgeloop/curated/v1",
    rows=48,
    label_distribution={"normal": 40, "fault": 8},
    left_out={"no_label": 2},
    partial=False,
    created=True,
)


@pytest.fixture
def spec() -> PipelineSpec:
    return load_spec(DEMO)


class FakeClients:
    def s3(self) -> object:
        return object()

    def annotation_backend(self) -> object:
        return object()


@pytest.mark.parametrize("result", [SELECTED, OPENED, EXPORTED])
def test_results_survive_their_xcom_round_trip(result: Any) -> None:
    assert type(result).from_xcom(result.to_xcom()) == result


def test_the_wait_outcome_reads_back_with_and_without_an_action() -> None:
    base = {"batch_id": "drift-1", "project_id": 7, "progress": {"expected": 50, "labelled": 20, "ratio": 0.4}}
    complete = BatchWaited.from_xcom(wait_outcome({**base, "status": "complete"}, on_sla="fail", pipeline="p"))
    assert complete.partial is False and "action" not in complete.to_xcom()
    late = wait_outcome({**base, "status": "sla_missed"}, on_sla="export_partial", pipeline="p")
    assert BatchWaited.from_xcom(late).to_xcom() == late


def test_a_renamed_key_of_the_opened_batch_is_named() -> None:
    data = OPENED.to_xcom()
    data["id"] = data.pop("batch_id")
    with pytest.raises(XComContractError, match=r"BatchOpened.from_xcom: missing key\(s\) \['batch_id'\]"):
        BatchOpened.from_xcom(data)


def test_the_curated_event_carries_the_version_and_its_counts_only() -> None:
    assert EXPORTED.asset_extra() == {
        "version": EXPORTED.version,
        "uri": EXPORTED.uri,
        "rows": 48,
        "batch_id": "drift-1",
        "label_distribution": {"normal": 40, "fault": 8},
    }


def test_the_alert_comes_from_the_newest_event() -> None:
    class Event:
        def __init__(self, alert_id: str) -> None:
            self.extra = {"payload": {"id": alert_id}}

    assert annotate_tasks.alert_of([Event("a"), Event("b")]) == {"id": "b"}
    assert annotate_tasks.alert_of([]) is None


def test_an_empty_selection_skips_the_run(spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    def nothing(*args: Any, **kwargs: Any) -> Any:
        raise selection.EmptySelection("no record in the window")

    monkeypatch.setattr(selection, "select_batch", nothing)
    clients: Any = FakeClients()
    with pytest.raises(AirflowSkipException, match="no record in the window"):
        annotate_tasks.select_batch(spec, clients, alert=None, group=None, size=None, run_id="manual__1", now=NOW)


def test_open_batch_opens_the_selected_batch(spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr(
        batch, "open_batch", lambda spec, s3, backend, batch_id: opened.append(batch_id) or OPENED.to_xcom()
    )
    clients: Any = FakeClients()
    assert annotate_tasks.open_batch(spec, clients, SELECTED, metrics=NO_METRICS) == OPENED
    assert opened == ["drift-1"]


def test_export_passes_the_partial_flag_and_skips_when_nothing_is_labelled(
    spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    waited = BatchWaited(
        batch_id="drift-1", project_id=7, progress={}, status="sla_missed", partial=True, action="export_partial"
    )
    calls: list[bool] = []

    def exported(spec: PipelineSpec, s3: Any, backend: Any, batch_id: str, *, partial: bool) -> dict[str, Any]:
        calls.append(partial)
        return EXPORTED.to_xcom()

    monkeypatch.setattr(export, "export_dataset", exported)
    clients: Any = FakeClients()
    assert annotate_tasks.export_dataset(spec, clients, waited, metrics=NO_METRICS) == EXPORTED
    assert calls == [True]

    def unlabelled(*args: Any, **kwargs: Any) -> Any:
        raise export.NothingToExport("no record has a usable label", {"no_label": 50})

    monkeypatch.setattr(export, "export_dataset", unlabelled)
    with pytest.raises(AirflowSkipException, match="no record has a usable label"):
        annotate_tasks.export_dataset(spec, clients, waited, metrics=NO_METRICS)
