"""The annotation stage against the stack's real Label Studio and S3.

Story: raw telemetry of two groups is in storage; a drift alert names one group. The batch
is chosen from that group, opened in Label Studio with the model's predictions as
pre-annotations, labelled by the simulated annotator, and exported as a curated version
whose labels are the hidden true labels. Re-running any step changes nothing.
"""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest
from airflow.sdk import PokeReturnValue
from annotation_testkit import telemetry_table, true_label, unique_spec, write_raw

from edgeloop.annotation.backend import BackendUnavailable
from edgeloop.annotation.batch import open_batch, project_ref
from edgeloop.annotation.bot import annotate_bot
from edgeloop.annotation.export import NothingToExport, export_dataset, list_versions
from edgeloop.annotation.label_studio import (
    RECORD_KEY,
    LabelStudioBackend,
    LabelStudioSettings,
    batch_filter,
    choices_result,
)
from edgeloop.annotation.manifest import export_record_key, load_manifest, opened_key
from edgeloop.annotation.selection import EmptySelection, select_batch, selection_request
from edgeloop.annotation.sensor import AnnotationBatchSensor
from edgeloop.annotation.trigger import AnnotationSlaMissed, BatchCompletionTrigger, wait_outcome
from edgeloop.spec import PipelineSpec
from edgeloop.storage import RetryPolicy

pytestmark = pytest.mark.integration

BUCKET = "edgeloop"


def _raw_two_groups(s3: Any, spec: PipelineSpec, now: datetime, per_device: int = 30) -> None:
    start = now - timedelta(minutes=29)
    for partition, group in enumerate(["plant-north", "plant-south"]):
        table = telemetry_table(
            spec, group=group, devices=6, per_device=per_device, start=start, span=timedelta(minutes=28), seed=partition
        )
        write_raw(s3, spec, table, partition=partition, first_offset=0)


def _tasks_of_batch(backend: LabelStudioBackend, project_id: int, batch_id: str) -> list[Any]:
    query = json.dumps({"filters": {"conjunction": "and", "items": [batch_filter(batch_id)]}})
    return list(backend.client.tasks.list(project=project_id, query=query, fields="all", page_size=1000))


def _run_trigger(trigger: BatchCompletionTrigger) -> dict[str, Any]:
    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first_event(), timeout=120))


def _trigger_for(spec: PipelineSpec, opened: dict[str, Any], conn_id: str, poll: float = 1.0) -> BatchCompletionTrigger:
    return BatchCompletionTrigger(
        conn_id=conn_id,
        project_id=opened["project_id"],
        batch_id=opened["batch_id"],
        expected=opened["expected"],
        completion_ratio=spec.annotation.completion_ratio,
        deadline=opened["deadline"],
        poll_interval=poll,
        url=opened["url"],
    )


def _read_version(s3: Any, result: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    data = pq.read_table(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=result["data_key"])["Body"].read())).to_pandas()
    lineage = json.loads(s3.get_object(Bucket=BUCKET, Key=result["lineage_key"])["Body"].read())
    return data, lineage


def test_drift_alert_to_curated_version(
    s3_client: Any, backend: LabelStudioBackend, ls_connection: str, cleanup: list
) -> None:
    spec = unique_spec(BUCKET, batch_size=40, sla="1h", completion_ratio=1.0)
    cleanup.append(spec)
    now = datetime.now(UTC)
    _raw_two_groups(s3_client, spec, now)
    alert = {"kind": "drift", "pipeline": spec.name, "alert_id": "drift-0001", "groups": ["plant-north"]}

    # select: the right size, only the drifted group, records spread over its devices
    request = selection_request(spec, now=now, alert=alert)
    selected = select_batch(spec, s3_client, request)
    assert selected["size"] == 40 and selected["candidates"] == 180 and selected["created"]
    manifest = load_manifest(spec, s3_client, selected["batch_id"])
    assert {r["group_id"] for r in manifest["records"]} == {"plant-north"}
    assert len({r["device_id"] for r in manifest["records"]}) == 6
    assert manifest["alert_id"] == "drift-0001" and manifest["strategy"] == ["low_confidence", "diversity"]
    assert all(key in manifest["source_objects"] for key in {r["source"] for r in manifest["records"]})
    assert select_batch(spec, s3_client, request)["created"] is False

    # open: one task per record with the model's prediction as pre-annotation
    opened = open_batch(spec, s3_client, backend, selected["batch_id"])
    assert (opened["tasks"], opened["imported"]) == (40, 40)
    tasks = _tasks_of_batch(backend, opened["project_id"], selected["batch_id"])
    by_record = {r["record_id"]: r for r in manifest["records"]}
    assert sorted(t.data[RECORD_KEY] for t in tasks) == sorted(by_record)
    for task in tasks:
        (item,) = task.predictions
        prediction = item if isinstance(item, dict) else item.model_dump()
        record = by_record[task.data[RECORD_KEY]]
        assert prediction["model_version"] == record["model_version"]
        assert prediction["result"] == choices_result(record["prediction"])
        assert task.data["record"]["device_id"] == record["device_id"]

    # re-running the open step imports nothing, also when it stopped before recording the batch
    assert open_batch(spec, s3_client, backend, selected["batch_id"])["imported"] == 0
    s3_client.delete_object(Bucket=BUCKET, Key=opened_key(spec, selected["batch_id"]))
    again = open_batch(spec, s3_client, backend, selected["batch_id"])
    assert (again["imported"], again["reused"]) == (0, 40)
    assert len(_tasks_of_batch(backend, opened["project_id"], selected["batch_id"])) == 40

    # the simulated annotator labels the batch; the trigger sees it complete
    bot = annotate_bot(spec, backend, lambda rid: true_label(spec, rid), batch_id=selected["batch_id"])
    assert bot["labelled"] == 40
    event = _run_trigger(_trigger_for(spec, again, ls_connection))
    assert event["status"] == "complete" and event["progress"]["labelled"] == 40
    outcome = wait_outcome(event, on_sla=spec.annotation.on_sla, pipeline=spec.name)
    assert outcome["partial"] is False
    # the same check as one poke of the sensor in reschedule mode (reading the Airflow connection)
    sensor = AnnotationBatchSensor.for_spec(spec, batch=again, conn_id=ls_connection, deferrable=False)
    poked = sensor.poke({})
    assert isinstance(poked, PokeReturnValue) and poked.is_done and poked.xcom_value["status"] == "complete"

    # export: the curated version holds the true labels, with lineage
    result = export_dataset(spec, s3_client, backend, selected["batch_id"])
    assert (result["version"], result["rows"], result["created"]) == ("v000001", 40, True)
    data, lineage = _read_version(s3_client, result)
    assert all(row["label"] == true_label(spec, row["record_id"]) for _, row in data.iterrows())
    assert set(data["group_id"]) == {"plant-north"}
    assert lineage["batch_id"] == selected["batch_id"] and lineage["alert_id"] == "drift-0001"
    assert lineage["counts"] == {"selected": 40, "exported": 40, "left_out": 0}
    assert lineage["label_distribution"] == data["label"].value_counts().to_dict()
    assert set(lineage["source_objects"]) <= set(manifest["source_objects"])
    assert sum(lineage["annotators"].values()) == 40

    # re-running the export, also after it stopped before recording its version, makes no second version
    assert export_dataset(spec, s3_client, backend, selected["batch_id"])["created"] is False
    s3_client.delete_object(Bucket=BUCKET, Key=export_record_key(spec, selected["batch_id"]))
    rerun = export_dataset(spec, s3_client, backend, selected["batch_id"])
    assert (rerun["version"], rerun["rows"]) == ("v000001", 40)
    assert list_versions(spec, s3_client) == ["v000001"]

    # the next alert never picks a labelled record again
    second = select_batch(spec, s3_client, selection_request(spec, now=now, alert={**alert, "alert_id": "drift-0002"}))
    second_ids = {r["record_id"] for r in load_manifest(spec, s3_client, second["batch_id"])["records"]}
    assert second["size"] == 40 and not second_ids & set(by_record)


def test_left_out_annotations_are_counted_with_reasons(
    s3_client: Any, backend: LabelStudioBackend, cleanup: list
) -> None:
    spec = unique_spec(BUCKET, batch_size=10, strategy=["low_confidence"])
    cleanup.append(spec)
    now = datetime.now(UTC)
    _raw_two_groups(s3_client, spec, now, per_device=5)
    selected = select_batch(spec, s3_client, selection_request(spec, now=now, group="plant-south", run_id="r1"))
    opened = open_batch(spec, s3_client, backend, selected["batch_id"])
    manifest = load_manifest(spec, s3_client, selected["batch_id"])
    confidences = [r["confidence"] for r in manifest["records"]]
    assert confidences == sorted(confidences)
    task_of = {
        t.data[RECORD_KEY]: int(t.id) for t in _tasks_of_batch(backend, opened["project_id"], selected["batch_id"])
    }
    ids = [r["record_id"] for r in manifest["records"]]
    annotate = backend.client.annotations.create
    annotate(task_of[ids[0]], result=[], was_cancelled=True)  # skipped
    annotate(task_of[ids[1]], result=choices_result("not-a-label"))  # unknown label
    annotate(task_of[ids[2]], result=choices_result("wear"))  # a tie: no majority
    annotate(task_of[ids[2]], result=choices_result("fault"))
    for label in ("wear", "wear", "fault"):  # two of three agree
        annotate(task_of[ids[3]], result=choices_result(label))
    backend.client.tasks.delete(str(task_of[ids[4]]))  # deleted by a user
    rejected = backend.client._client_wrapper.httpx_client.request(
        f"api/tasks/{task_of[ids[5]]}/annotations/",
        method="POST",
        json={"result": choices_result("normal"), "last_action": "rejected"},
    )
    assert rejected.status_code == 201
    # ids[6] stays open; the bot labels the rest
    truth = {rid: true_label(spec, rid) for rid in ids[7:]}
    assert annotate_bot(spec, backend, truth.get, batch_id=selected["batch_id"])["labelled"] == 3

    progress = backend.progress(project_ref(opened), selected["batch_id"])
    assert (progress.tasks, progress.labelled, progress.skipped) == (9, 7, 1)

    result = export_dataset(spec, s3_client, backend, selected["batch_id"], partial=True)
    data, lineage = _read_version(s3_client, result)
    assert lineage["left_out"]["reasons"] == {
        "task_deleted": 1,
        "not_annotated": 1,
        "skipped": 1,
        "rejected": 1,
        "unknown_label": 1,
        "no_majority": 1,
    }
    assert sorted(data["record_id"]) == sorted([ids[3], *ids[7:]])
    row = data.set_index("record_id").loc[ids[3]]
    assert (row["label"], round(row["label_agreement"], 3), row["label_votes"]) == ("wear", 0.667, 3)
    assert lineage["agreement"]["records_with_several_annotations"] == 1
    assert lineage["annotations"]["unknown_label"] == 1 and lineage["partial"] is True


@pytest.mark.parametrize("policy", ["export_partial", "fail"])
def test_sla_passes_with_the_bot_stopped(
    policy: str, s3_client: Any, backend: LabelStudioBackend, ls_connection: str, cleanup: list
) -> None:
    spec = unique_spec(BUCKET, batch_size=8, sla="4s", on_sla=policy, completion_ratio=0.9)
    cleanup.append(spec)
    now = datetime.now(UTC)
    _raw_two_groups(s3_client, spec, now, per_device=4)
    selected = select_batch(spec, s3_client, selection_request(spec, now=now, group="plant-north", run_id="sla"))
    opened = open_batch(spec, s3_client, backend, selected["batch_id"])
    # the bot labels three tasks, then stops
    annotate_bot(spec, backend, lambda rid: true_label(spec, rid), batch_id=selected["batch_id"], max_tasks=3)

    event = _run_trigger(_trigger_for(spec, opened, ls_connection))
    assert event["status"] == "sla_missed"
    assert datetime.now(UTC) >= datetime.fromisoformat(opened["deadline"])
    assert event["progress"]["labelled"] == 3 and event["progress"]["expected"] == 8

    if policy == "fail":
        with pytest.raises(AnnotationSlaMissed, match="missed its SLA") as raised:
            wait_outcome(event, on_sla="fail", pipeline=spec.name)
        assert raised.value.alert["batch_id"] == selected["batch_id"]
        return
    outcome = wait_outcome(event, on_sla="export_partial", pipeline=spec.name)
    assert outcome["partial"] is True
    result = export_dataset(spec, s3_client, backend, selected["batch_id"], partial=outcome["partial"])
    assert result["rows"] == 3 and result["left_out"] == {"not_annotated": 5} and result["partial"] is True


def test_empty_selection_and_nothing_to_export(s3_client: Any, backend: LabelStudioBackend, cleanup: list) -> None:
    spec = unique_spec(BUCKET, batch_size=50)
    cleanup.append(spec)
    now = datetime.now(UTC)
    with pytest.raises(EmptySelection, match="no raw objects"):
        select_batch(spec, s3_client, selection_request(spec, now=now, group="plant-north", run_id="a"))
    _raw_two_groups(s3_client, spec, now, per_device=2)
    with pytest.raises(EmptySelection, match="no records"):
        select_batch(spec, s3_client, selection_request(spec, now=now, group="line-canary", run_id="b"))
    first = select_batch(spec, s3_client, selection_request(spec, now=now, group="plant-north", run_id="c"))
    assert first["size"] == 12
    with pytest.raises(EmptySelection, match="already labelled or waiting"):
        select_batch(spec, s3_client, selection_request(spec, now=now, group="plant-north", run_id="d"))
    open_batch(spec, s3_client, backend, first["batch_id"])
    with pytest.raises(NothingToExport) as nothing:
        export_dataset(spec, s3_client, backend, first["batch_id"])
    assert nothing.value.left_out == {"not_annotated": 12}
    assert list_versions(spec, s3_client) == []


def test_label_studio_down_fails_clearly_after_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    down = LabelStudioBackend.connect(
        LabelStudioSettings("http://127.0.0.1:9", "token", timeout=2.0),
        retry=RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.1),
    )
    spec = unique_spec(BUCKET)
    with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1:9.*find project.*gave up after 3 attempts"):
        down.ensure_project(spec)
    deadline = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    trigger = BatchCompletionTrigger(
        conn_id="unused",
        project_id=1,
        batch_id="b",
        expected=1,
        completion_ratio=1.0,
        deadline=deadline,
        poll_interval=0.1,
        max_failures=1,
    )

    async def quick_backend() -> LabelStudioBackend:
        return down

    monkeypatch.setattr(trigger, "make_backend", quick_backend)
    event = _run_trigger(trigger)
    assert event["status"] == "error" and "gave up after 3 attempts" in event["message"]
    with pytest.raises(BackendUnavailable, match="waiting for batch b"):
        wait_outcome(event, on_sla="export_partial", pipeline=spec.name)
