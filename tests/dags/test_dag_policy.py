"""Every DAG the factory makes: imports cleanly, carries tags/retries/owner/docs, parses without I/O."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgeloop.spec import STAGES, default_pipelines_dir

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
DEMO = REPO / "include" / "pipelines" / "factory_maintenance.yaml"
# The specs the DAG files load (the bundle's include/pipelines, or EDGELOOP_PIPELINES_DIR), by name.
SHIPPED = {path.stem: yaml.safe_load(path.read_text()) for path in sorted(default_pipelines_dir().glob("*.y*ml"))}
HEAVY = ("pandas", "mlflow", "evidently", "sklearn", "kubernetes", "pyarrow", "boto3", "label_studio_sdk")


def load_dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(DAGS))


@pytest.fixture(scope="module")
def dagbag():
    return load_dagbag()


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_one_dag_per_stage_for_every_shipped_pipeline(dagbag) -> None:
    assert set(dagbag.dag_ids) == {f"{name}__{s}" for name in SHIPPED for s in STAGES}


def test_every_dag_has_tags_retries_owner_and_docs(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        pipeline, stage = dag_id.split("__")
        assert {"edgeloop", pipeline, stage} <= set(dag.tags), dag_id
        assert dag.doc_md and pipeline in dag.doc_md, dag_id
        assert dag.max_active_runs == 1, dag_id
        assert not dag.catchup, dag_id
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"
            assert task.owner == SHIPPED[pipeline]["owner"], f"{dag_id}.{task.task_id}"


def assets_of(dag) -> list[tuple[str, object]]:
    """The assets a DAG is scheduled on, flattened out of any AssetAll/AssetAny."""
    found = []
    stack = [dag.timetable.asset_condition]
    while stack:
        node = stack.pop()
        if hasattr(node, "objects"):
            stack.extend(node.objects)
        else:
            found.append((node.name, node))
    return found


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_stages_are_chained_by_assets(dagbag, name: str) -> None:
    ingest = dagbag.dags[f"{name}__ingest"]
    drift = dagbag.dags[f"{name}__drift"]
    annotate = dagbag.dags[f"{name}__annotate"]
    train = dagbag.dags[f"{name}__train"]
    rollout = dagbag.dags[f"{name}__rollout"]

    def outlets(dag) -> set[str]:
        return {o.name for t in dag.tasks for o in t.outlets}

    def inlets(dag) -> set[str]:
        return {a.name for _, a in assets_of(dag)}

    assert f"{name}.raw" in outlets(ingest) & inlets(drift)
    assert f"{name}.curated" in outlets(annotate) & inlets(train)
    assert f"{name}.model" in outlets(train) & inlets(rollout)
    # event-driven: Kafka alerts become asset events through watchers
    drift_asset = next(a for _, a in assets_of(annotate))
    assert drift_asset.watchers and drift_asset.watchers[0].trigger.kinds == ["drift"]
    backlog = {a.name: a for _, a in assets_of(ingest)}[f"{name}.backlog"]
    assert backlog.watchers[0].trigger.topics == [f"{name}.alerts"]


def test_the_drift_dag_renders_clean_scopes_reports_after_the_alert(dagbag) -> None:
    drift = dagbag.dags["factory_maintenance__drift"]
    assert drift.get_task("check_drift").downstream_task_ids == {"publish_alerts"}
    assert drift.get_task("publish_alerts").downstream_task_ids == {"render_reports"}
    assert drift.get_task("render_reports").downstream_task_ids == set()


def test_parsing_opens_no_connection_and_runs_no_db_query(monkeypatch: pytest.MonkeyPatch) -> None:
    """Like Airflow's own example-DAG guard: no network I/O, connection lookup or DB query at parse time."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    attempts: list[str] = []

    def refuse_connect(self, address):
        attempts.append(f"socket connect to {address}")
        raise OSError("network access at DAG parse time")

    def refuse_lookup(*args, **kwargs):
        attempts.append(f"connection lookup {args} {kwargs}")
        raise RuntimeError("connection lookup at DAG parse time")

    queries: list[str] = []

    def count_query(conn, cursor, statement, *args):
        queries.append(statement)

    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    from airflow.sdk import BaseHook, Connection

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(refuse_lookup))
    monkeypatch.setattr(Connection, "get", classmethod(refuse_lookup))
    event.listen(Engine, "before_cursor_execute", count_query)
    try:
        bag = load_dagbag()
    finally:
        event.remove(Engine, "before_cursor_execute", count_query)
    assert bag.import_errors == {}
    assert len(bag.dag_ids) == len(STAGES) * len(SHIPPED)
    assert attempts == []
    assert queries == []


def test_dag_files_import_no_heavy_library() -> None:
    code = (
        "import sys, json, runpy, glob\n"
        f"for f in sorted(glob.glob({str(DAGS)!r} + '/*.py')): runpy.run_path(f)\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_a_broken_spec_leaves_the_other_pipelines_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = yaml.safe_load(DEMO.read_text())
    (tmp_path / "factory_maintenance.yaml").write_text(DEMO.read_text())
    (tmp_path / "packaging_line.yaml").write_text(yaml.safe_dump(data | {"name": "packaging_line"}))
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(data | {"name": "broken", "groups": "none"}))
    monkeypatch.setenv("EDGELOOP_PIPELINES_DIR", str(tmp_path))
    bag = load_dagbag()
    assert bag.import_errors == {}
    pipelines = {dag_id.split("__")[0] for dag_id in bag.dag_ids}
    assert pipelines == {"factory_maintenance", "packaging_line"}


def test_parse_time_per_pipeline_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    """Informational: the figure is gated by `make bench-parse`, not by this test."""
    load_dagbag()  # warm imports, as the dag-processor has them
    started = time.perf_counter()
    bag = load_dagbag()
    elapsed = time.perf_counter() - started
    assert len(bag.dag_ids) == len(STAGES) * len(SHIPPED)
    with capsys.disabled():
        print(f"\n  dags folder parse (warm, {len(SHIPPED)} pipelines): {elapsed * 1000:.1f} ms")
